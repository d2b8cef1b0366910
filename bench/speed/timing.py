"""The timer behind every throughput number: warm-up, device synchronization, repeats, median and quartiles.

A timing is the distribution of wall-clock seconds of single calls. On CUDA the timed callable ends with
``torch.cuda.synchronize`` (kernels are asynchronous: without it we would time the launch, not the work).
The number of repeats is either fixed or chosen to fit a time budget from the warm-up calls' duration.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call of each timed repeat (warm-up calls excluded)."""

    seconds: tuple[float, ...]
    warmup: int  # untimed calls before the first timed one (compilation, caches, allocator)

    @property
    def repeats(self) -> int:
        return len(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def quantile(self, q: float) -> float:
        """Linear-interpolated quantile of the per-call seconds (q in [0, 1])."""
        s = sorted(self.seconds)
        pos = q * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def rate(self, items: float) -> tuple[float, float, float]:
        """Items per second: (median, q25, q75) of the rate. The fast quartile of time is the q75 of rate."""
        return items / self.median, items / self.quantile(0.75), items / self.quantile(0.25)


def synchronizer(device: torch.device | str | None) -> Callable[[], None]:
    """The call that waits for `device` to finish its queued work (a no-op on CPU)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def choose_repeats(seconds_per_call: float, budget_s: float, min_repeats: int, max_repeats: int) -> int:
    """As many repeats as fit in `budget_s`, clamped to [min_repeats, max_repeats]."""
    if seconds_per_call <= 0:
        return max_repeats
    return max(min_repeats, min(max_repeats, int(budget_s / seconds_per_call)))


def time_callable(
    fn: Callable[[], Any],
    *,
    sync: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    budget_s: float = 1.0,
    min_repeats: int = 3,
    max_repeats: int = 200,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time `fn()` call by call; every call, warm-up included, ends with `sync()`.

    Args:
        fn: the work, called with no arguments; its result is dropped after the sync.
        sync: waits for the device; default `synchronizer(device)`.
        device: where `fn` runs, used only to pick the default `sync`.
        warmup: untimed calls first (the first call of a compiled function compiles it).
        repeats: fixed number of timed calls; None chooses it from the warm-up time to fit `budget_s`.
        budget_s: seconds of timed calls to aim for when `repeats` is None.
        min_repeats, max_repeats: bounds on the chosen number of repeats.
        clock: the wall clock (injectable for tests).
    """
    out = time_interleaved({"fn": fn}, sync=sync, device=device, warmup=warmup, repeats=repeats, budget_s=budget_s,
                           min_repeats=min_repeats, max_repeats=max_repeats, clock=clock)["fn"]  # fmt: skip
    if isinstance(out, Exception):
        raise out  # with its own traceback
    return out


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    sync: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    budget_s: float = 1.0,
    min_repeats: int = 3,
    max_repeats: int = 200,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing | Exception]:
    """Time several calls alternately: round r times each once, starting from a different one each round.

    A shared machine's slow spells then fall on every call alike, so ratios of the medians compare the calls
    and not the moments they ran at (timed one after the other, the same call's median moved by a large factor
    between two runs on the 2-core CPU: results/measurements/README.md, "Timing noise"). Arguments as
    `time_callable`, per call: each call gets the repeats that fit `budget_s` (a round skips the calls that have
    theirs). A call that raises gets its exception instead of a Timing; the others go on.
    """
    sync = sync if sync is not None else synchronizer(device)
    out: dict[str, Timing | Exception] = {}

    def call(name: str) -> float | None:
        t0 = clock()
        try:
            fns[name]()
            sync()
        except Exception as err:  # one failing call is its own row; the others are still timed
            out[name] = err
            return None
        return clock() - t0

    names = list(fns)
    last: dict[str, float] = {}
    warm = max(warmup, 1 if repeats is None else 0)  # choosing the repeats needs one call's duration
    for _ in range(warm):
        for name in [n for n in names if n not in out]:
            t = call(name)
            if t is not None:
                last[name] = t
    live = [n for n in names if n not in out]
    # each call its own number of repeats (a slow engine must not starve the fast ones of repeats)
    target = {n: repeats if repeats is not None else choose_repeats(last[n], budget_s, min_repeats, max_repeats)
              for n in live}  # fmt: skip
    seconds: dict[str, list[float]] = {n: [] for n in live}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # like timeit: a collection inside one repeat is noise, not the work's cost
    try:
        for r in range(max(target.values(), default=0)):
            k = r % len(live)
            for name in live[k:] + live[:k]:
                if name not in out and len(seconds[name]) < target[name]:
                    t = call(name)
                    if t is not None:
                        seconds[name].append(t)
    finally:
        if gc_was_enabled:
            gc.enable()
    for name in live:
        if name not in out:
            out[name] = Timing(seconds=tuple(seconds[name]), warmup=warm)
    return {n: out[n] for n in names}
