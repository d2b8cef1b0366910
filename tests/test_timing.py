"""The timer's machinery (not its numbers): sync inside the timed call, repeat counts, statistics."""

import gc

import pytest
import torch

from bench.speed.timing import Timing, choose_repeats, synchronizer, time_callable, time_interleaved


class FakeClock:
    """A clock that advances only when the work runs: each fn() call takes `step` seconds."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += self.step


def test_every_call_is_followed_by_sync_inside_the_timed_region():
    log = []
    clock_reads = []

    def clock():
        clock_reads.append(len(log))
        return float(len(log))

    t = time_callable(lambda: log.append("fn"), sync=lambda: log.append("sync"), warmup=2, repeats=3, clock=clock)
    assert log == ["fn", "sync"] * 5
    # each call reads the clock before fn and after sync: the sync is inside the timed region
    assert clock_reads == [i for k in range(5) for i in (2 * k, 2 * k + 2)]
    assert t.repeats == 3 and t.warmup == 2
    assert t.seconds == (2.0, 2.0, 2.0)


def test_fixed_repeats_are_counted():
    calls = []
    t = time_callable(lambda: calls.append(1), warmup=1, repeats=7)
    assert len(calls) == 8 and t.repeats == 7


@pytest.mark.parametrize(
    ("step", "budget", "expected"),
    [(0.1, 1.0, 10), (1.0, 1.0, 3), (1e-6, 1.0, 50)],
    ids=["fits-budget", "min-repeats", "max-repeats"],
)
def test_adaptive_repeats_fit_the_budget(step, budget, expected):
    clock = FakeClock(step)
    t = time_callable(clock.work, warmup=1, budget_s=budget, min_repeats=3, max_repeats=50, clock=clock)
    assert t.repeats == expected
    assert t.median == pytest.approx(step)


def test_adaptive_repeats_need_one_call_even_without_warmup():
    clock = FakeClock(0.25)
    t = time_callable(clock.work, warmup=0, budget_s=1.0, clock=clock)
    assert t.warmup == 1 and t.repeats == 4


def test_choose_repeats_bounds():
    assert choose_repeats(0.0, 1.0, 3, 9) == 9
    assert choose_repeats(10.0, 1.0, 3, 9) == 3
    assert choose_repeats(0.2, 1.0, 3, 9) == 5


def test_median_quartiles_and_rates():
    t = Timing(seconds=(4.0, 1.0, 3.0, 2.0, 5.0), warmup=0)
    assert t.median == 3.0
    assert t.quantile(0.25) == 2.0 and t.quantile(0.75) == 4.0
    assert t.quantile(0.0) == 1.0 and t.quantile(1.0) == 5.0
    assert Timing(seconds=(1.0, 2.0), warmup=0).quantile(0.5) == 1.5
    med, q25, q75 = t.rate(12.0)
    assert (med, q25, q75) == (4.0, 3.0, 6.0)  # the slow quartile of time is the low quartile of rate


def test_gc_is_restored_after_timing():
    assert gc.isenabled()
    time_callable(lambda: None, repeats=2)
    assert gc.isenabled()


def test_cpu_synchronizer_is_a_no_op(monkeypatch):
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("synchronized a CPU device"))
    synchronizer("cpu")()
    synchronizer(None)()


def test_cuda_synchronizer_waits_for_its_device(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: seen.append(dev))
    time_callable(lambda: None, device="cuda:1", warmup=1, repeats=2)
    assert seen == [torch.device("cuda:1")] * 3


def test_interleaved_calls_alternate_and_rotate_who_goes_first():
    """Round r times every call once, starting one further along: no call always follows another."""
    log = []
    fns = {k: (lambda k=k: log.append(k)) for k in "abc"}
    out = time_interleaved(fns, warmup=1, repeats=3)
    assert log == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up round, then 3 rotated rounds
    assert {k: t.repeats for k, t in out.items()} == {"a": 3, "b": 3, "c": 3}


def test_interleaved_repeats_fit_each_calls_own_budget():
    """A slow call gets few repeats, a fast one many: each fits budget_s, as if timed alone."""
    now = [0.0]
    steps = {"slow": 0.5, "fast": 1 / 128}  # exact in binary: 1 / step repeats fit the budget
    fns = {k: (lambda k=k: now.__setitem__(0, now[0] + steps[k])) for k in steps}
    out = time_interleaved(fns, warmup=1, budget_s=1.0, min_repeats=3, max_repeats=500, clock=lambda: now[0])
    assert out["slow"].repeats == 3 and out["fast"].repeats == 128
    assert out["slow"].median == pytest.approx(0.5) and out["fast"].median == pytest.approx(1 / 128)


def test_interleaved_failure_is_that_calls_result_and_the_others_go_on():
    calls = {"ok": 0, "bad": 0}

    def bad():
        calls["bad"] += 1
        if calls["bad"] == 3:
            raise RuntimeError("out of memory at the third call")

    out = time_interleaved({"ok": lambda: calls.__setitem__("ok", calls["ok"] + 1), "bad": bad}, warmup=1, repeats=5)
    assert isinstance(out["bad"], RuntimeError) and calls["bad"] == 3  # never called again after failing
    assert isinstance(out["ok"], Timing) and out["ok"].repeats == 5
