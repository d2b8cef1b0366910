"""The throughput machinery (not its numbers): sweep rows, statuses, ratios, the FLOP count, the JAX peer."""

import argparse
import math

import pandas as pd
import pytest
import torch
from torch import nn

import models
from bench.commands import throughput as cmd
from bench.engines.base import UnsupportedEngine
from bench.speed import jax_peer, roofline
from bench.speed import sweep as throughput
from bench.speed.sweep import COLUMNS, FORWARD, SweepConfig, Timed, sweep
from bench.speed.table import summary, write_csv
from models.mlp import Sine


class FakeEngine:
    def __init__(self, fn, reason=None):
        self.fn, self._reason = fn, reason

    def supports(self, model, device, dtype):
        if isinstance(self._reason, Exception):
            raise self._reason
        return self._reason


def vmap_jacrev(model, x):
    return torch.func.vmap(torch.func.jacrev(model))(x)


def boom(model, x):
    raise RuntimeError("boom")


def cannot_compile(model, x):
    raise UnsupportedEngine("could not compile model Sequential: LayerNorm under vmap(jacfwd)")


ENGINES = {
    "loop": FakeEngine(lambda m, x: torch.stack([torch.autograd.functional.jacobian(m, xi) for xi in x])),
    "vmap_jacrev": FakeEngine(vmap_jacrev),
    "explodes": FakeEngine(boom),
    "cannot_compile": FakeEngine(cannot_compile),
    "refuses": FakeEngine(boom, reason="needs a batch-independent model"),
    "supports_raises": FakeEngine(vmap_jacrev, reason=TypeError("bad supports")),
}


def forum_mlp(width=100, depth=4, n_in=4, n_out=4, act=nn.Sigmoid):
    """The forum's nn.Sequential: n_in -> width x depth (act) -> n_out."""
    layers, d = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, n_out))


def small_mlp(name="tiny"):
    torch.manual_seed(0)
    return forum_mlp(width=8, depth=2, n_in=3, n_out=2)


def fast_cfg(**kw):
    base = dict(
        models=("tiny",),
        batch_sizes=(2, 8),
        device="cpu",
        repeats=2,
        warmup=1,
        jax=False,
        max_batch=(("loop", 4),),
        measure_peak=False,
    )
    return SweepConfig(**{**base, **kw})


def run_sweep(cfg, engines=ENGINES, factory=small_mlp):
    return sweep(cfg, model_factory=factory, engines=engines)


def test_sweep_records_every_status_and_goes_on():
    rows = run_sweep(fast_cfg())
    assert all(tuple(r) == COLUMNS for r in rows)
    status = {(r["engine"], r["batch_size"]): r["status"] for r in rows}
    engines = [*ENGINES, FORWARD]
    assert len(rows) == len(engines) * 2  # every (engine, batch) has a row, failures included
    assert status["vmap_jacrev", 2] == status["vmap_jacrev", 8] == "ok"  # measured after "explodes" failed
    assert status["explodes", 8] == "failed"
    assert status["refuses", 2] == "unsupported"
    assert status["cannot_compile", 2] == "unsupported"  # raised on the first call, as compiled engines do
    assert status["supports_raises", 2] == "failed"
    assert status["loop", 2] == "ok" and status["loop", 8] == "unsupported"  # capped at max_batch
    by = {(r["engine"], r["batch_size"]): r for r in rows}
    assert by["explodes", 8]["error"] == "RuntimeError: boom"
    assert by["refuses", 2]["error"] == "needs a batch-independent model"
    assert "max_batch 4 for loop" in by["loop", 8]["error"]
    ok = by["vmap_jacrev", 8]
    assert ok["jac_per_s"] > 0 and ok["jac_per_s_q25"] <= ok["jac_per_s"] <= ok["jac_per_s_q75"]
    assert ok["repeats"] == 2 and ok["error"] == ""
    assert ok["device"] == "cpu" and ok["dtype"] == "float32" and ok["tf32"] is False
    assert ok["flops"] == 2 * (3 * 8 + 8 * 8 + 8 * 2) + (8 + 8 + 2) and ok["flops_per_jac"] == 4 * ok["flops"]
    assert by[FORWARD, 8]["flops_per_jac"] == ok["flops"]  # a forward pass, not a Jacobian
    assert math.isnan(by["explodes", 8]["jac_per_s"])


def wrong_in_late_rows(model, x):
    """Right on the first rows, 1% off on the last quarter of the batch (e.g. a bad tail of a chunked kernel)."""
    J = vmap_jacrev(model, x)
    J[3 * len(x) // 4 :] *= 1.01
    return J


def test_an_engine_whose_jacobian_disagrees_is_never_timed():
    engines = {**ENGINES, "wrong": FakeEngine(wrong_in_late_rows)}
    rows = run_sweep(fast_cfg(engines=("vmap_jacrev", "wrong"), batch_sizes=(400,), forward=False), engines=engines)
    by = {r["engine"]: r for r in rows}
    assert by["vmap_jacrev"]["status"] == "ok"
    wrong = by["wrong"]
    assert wrong["status"] == "mismatch" and math.isnan(wrong["jac_per_s"])
    assert "differs from the float64 reference by 0.0" in wrong["error"] and "tolerance 0.0001" in wrong["error"]


def test_sweep_with_a_failing_model_factory_records_failed_rows():
    def factory(spec):
        raise KeyError(f"no model {spec.name!r}")

    rows = run_sweep(fast_cfg(engines=("vmap_jacrev",), forward=False), factory=factory)
    assert [(r["engine"], r["batch_size"], r["status"]) for r in rows] == [
        ("vmap_jacrev", 2, "failed"),
        ("vmap_jacrev", 8, "failed"),
    ]
    assert "no model 'tiny'" in rows[0]["error"]


def test_sweep_in_float64_times_a_float64_model():
    seen = []

    def spy(model, x):
        seen.append((x.dtype, next(model.parameters()).dtype, next(model.parameters()).requires_grad))
        return vmap_jacrev(model, x)

    rows = run_sweep(fast_cfg(dtype="float64", engines=("spy",), forward=False), engines={"spy": FakeEngine(spy)})
    assert {r["status"] for r in rows} == {"ok"}
    assert set(seen) == {(torch.float64, torch.float64, False)}  # frozen: Jacobians w.r.t. the inputs only


def test_unknown_engine_names_suggest_close_ones():
    with pytest.raises(KeyError, match="vmap_jacrev"):
        throughput.timed_set(("vmap_jacrv",), fast_cfg(), ENGINES)


def test_unknown_dtype_and_absent_cuda_are_clear_errors():
    with pytest.raises(ValueError, match="float16"):
        throughput.resolve_dtype("float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            throughput.resolve_device("cuda")
        assert throughput.resolve_device("auto").type == "cpu"


def test_inputs_lie_in_the_models_input_range():
    model = small_mlp()
    model.input_range = (-2.0, -1.0)
    x = throughput.make_inputs(model, 1000, torch.device("cpu"), torch.float32, seed=0)
    assert x.shape == (1000, 3) and x.dtype == torch.float32
    assert x.min() >= -2.0 and x.max() <= -1.0
    assert torch.equal(x, throughput.make_inputs(model, 1000, torch.device("cpu"), torch.float32, seed=0))


def row(engine, batch, jps, status="ok", **kw):
    base = {c: "" for c in COLUMNS}
    base.update(model="m", device="cpu", dtype="float32", engine=engine, batch_size=batch, jac_per_s=jps,
                jac_per_s_q25=jps, jac_per_s_q75=jps, status=status, flops_per_jac=100, peak_flops=1e6)  # fmt: skip
    return {**base, **kw}


def test_summary_ratios():
    rows = [
        row("loop", 64, 10.0),
        row("loop", 4096, math.nan, status="unsupported"),
        row("fast", 64, 200.0),
        row("fast", 4096, 5000.0),
        row("jax_jit_vmap_jacfwd", 4096, 2500.0),
        row(FORWARD, 4096, 50000.0, flops_per_jac=20),
        row("broken", 4096, math.nan, status="failed", error="boom"),
    ]
    s = summary(rows).set_index(["engine", "batch_size"])
    assert s.loc[("fast", 64), "x_loop"] == 20.0
    assert s.loc[("fast", 4096), "x_loop"] == 500.0  # the loop's rate at its largest measured batch
    assert s.loc[("fast", 4096), "x_jax"] == 2.0
    assert s.loc[("fast", 4096), "jac_over_fwd"] == 10.0  # forward 50000/s, Jacobians 5000/s
    assert s.loc[("fast", 4096), "roofline"] == 0.5  # 5000 * 100 FLOP / 1e6 FLOP/s
    assert math.isnan(s.loc[("fast", 64), "x_jax"])  # no JAX row at that batch
    assert math.isnan(s.loc[(FORWARD, 4096), "x_loop"])
    assert s.loc[(FORWARD, 4096), "roofline"] == 50000 * 20 / 1e6
    assert math.isnan(s.loc[("broken", 4096), "x_loop"]) and s.loc[("broken", 4096), "error"] == "boom"


def test_write_csv_keeps_the_schema(tmp_path):
    rows = run_sweep(fast_cfg(engines=("vmap_jacrev", "explodes"), batch_sizes=(2,)))
    path = tmp_path / "run" / "throughput.csv"
    write_csv(rows, path)
    df = pd.read_csv(path, keep_default_na=False)
    assert list(df.columns) == list(COLUMNS)
    assert list(df.status) == ["ok", "failed", "ok"]
    assert not list(tmp_path.glob("run/*.tmp*"))
    write_csv(rows[:1], path, append=True)
    df = pd.read_csv(path, keep_default_na=False)
    assert list(df.status) == ["ok", "failed", "ok", "ok"] and list(df.columns) == list(COLUMNS)


# --- roofline ---------------------------------------------------------------------------------------------


MATMULS = 2 * (4 * 100 + 3 * 100 * 100 + 100 * 4)  # the forum MLP's multiply-adds: 61,600 FLOP per sample
BIASES = 4 * 100 + 4


def test_forum_mlp_flops_by_hand():
    model = forum_mlp()  # a plain nn.Sequential: Linear layers counted, activations not
    assert roofline.linear_flops(model) == roofline.forward_flops(model) == MATMULS + BIASES
    assert roofline.jacobian_flops(model, n_in=4) == 5 * (MATMULS + BIASES)  # primal + 4 tangents


def test_zoo_forum_mlp_jacobian_flops_by_hand():
    model = models.create_model("mlp_forum")
    sigmoids = 3 * 4 * 100  # exp, add, div per hidden unit (models/mlp.py)
    assert roofline.jacobian_flops(model) == 5 * (MATMULS + BIASES + sigmoids)  # about 5 x 62k of ANCHORS


def test_a_models_own_flop_count_wins():
    model = forum_mlp()
    model.flops_per_sample = lambda: 12345
    model.n_in = 4
    assert roofline.jacobian_flops(model) == 5 * 12345


def test_peak_flops_is_measured_once_per_key(monkeypatch):
    threads = torch.get_num_threads()
    first = roofline.peak_flops("cpu", torch.float64, n=64, budget_s=0.01)
    assert first > 0 and torch.get_num_threads() == threads  # all cores while measuring, then restored
    monkeypatch.setattr(roofline, "time_callable", lambda *a, **k: pytest.fail("measured twice"))
    assert roofline.peak_flops("cpu", torch.float64, n=64) == first
    assert roofline.fraction_of_limit(1e3, 1e6, first) == pytest.approx(1e9 / first)


def test_tf32_mode_sets_and_restores_the_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    with roofline.tf32_mode(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with roofline.tf32_mode(False):
        assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
    assert (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()) == before
    from bench.run.machine import tf32_enabled

    assert tf32_enabled("cpu") is False


# --- the JAX peer -----------------------------------------------------------------------------------------


def test_jax_missing_gives_unsupported_rows(monkeypatch):
    monkeypatch.setattr(jax_peer, "_jax", lambda: None)
    assert jax_peer.supports(small_mlp(), "cpu", torch.float32) == jax_peer.MISSING
    rows = run_sweep(fast_cfg(engines=(jax_peer.ENGINE,), forward=False))
    assert {(r["status"], r["error"]) for r in rows} == {
        ("unsupported", "jax not installed (pip install 'jacbench[jax]')")
    }


needs_jax = pytest.mark.skipif(jax_peer._jax() is None, reason="jax not installed (pip install 'jacbench[jax]')")

ACTIVATIONS = [nn.Sigmoid, nn.Tanh, nn.SiLU, nn.ReLU, nn.GELU, lambda: nn.GELU("tanh"), nn.Softplus, lambda: Sine(2.0)]


@needs_jax
@pytest.mark.parametrize(
    "act", ACTIVATIONS, ids=["sigmoid", "tanh", "silu", "relu", "gelu", "gelu_tanh", "softplus", "sine"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_jax_peer_gives_torchs_jacobian(act, dtype):
    torch.manual_seed(0)
    model = forum_mlp(width=16, depth=3, act=act).to(dtype)
    x = torch.rand(33, 4, dtype=dtype) * 4 - 2
    call = jax_peer.prepare(model, x)  # checks the first samples against torch before returning
    j = torch.from_numpy(jax_peer._jax().device_get(call()).copy())
    assert j.shape == (33, 4, 4) and j.dtype == dtype
    ref = jax_peer.reference_jacobian(model, x)
    assert (j.double() - ref).abs().max() <= jax_peer.TOLERANCE[dtype] * ref.abs().max()


@needs_jax
def test_jax_peer_refuses_what_it_cannot_rebuild():
    class Wrapped(nn.Module):
        def forward(self, x):
            return x

    assert "nn.Sequential" in jax_peer.supports(Wrapped(), "cpu", torch.float32)
    assert "LayerNorm" in jax_peer.supports(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "cpu", torch.float32)
    assert "float16" in jax_peer.supports(small_mlp(), "cpu", torch.float16)
    with pytest.raises(ValueError, match="LayerNorm"):
        jax_peer.prepare(nn.Sequential(nn.LayerNorm(4)), torch.rand(2, 4))


@needs_jax
def test_jax_peer_check_catches_a_wrong_jacobian():
    model = small_mlp()
    x = torch.rand(5, 3)
    j = jax_peer.reference_jacobian(model, x).float()
    assert jax_peer.check_against_torch(model, x, j, torch.float32) < 1e-6
    with pytest.raises(AssertionError, match="differs"):
        jax_peer.check_against_torch(model, x, j * 1.01, torch.float32)


@needs_jax
def test_sweep_times_the_jax_peer():
    rows = run_sweep(fast_cfg(engines=(jax_peer.ENGINE,), forward=False))
    assert [(r["engine"], r["status"]) for r in rows] == [(jax_peer.ENGINE, "ok")] * 2


# --- the CLI command --------------------------------------------------------------------------------------


def test_cli_command_writes_csv_and_prints_the_table(tmp_path, monkeypatch, capsys):
    real_sweep = throughput.sweep
    monkeypatch.setattr(throughput, "sweep", lambda cfg, **kw: real_sweep(cfg, model_factory=small_mlp,
                                                                         engines=ENGINES, **kw))  # fmt: skip
    monkeypatch.setattr(cmd, "expand_models", lambda names: names)  # "tiny" is this test's own model
    monkeypatch.setattr(cmd, "expand_engines", lambda names: names)  # and so are its engines
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    out = tmp_path / "throughput.csv"
    args = parser.parse_args(
        ["--models", "tiny", "--engines", "loop,vmap_jacrev,explodes", "--batch-sizes", "2,8", "--device", "cpu",
         "--repeats", "2", "--no-jax", "--max-batch", "loop=4", "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert cmd.run(args) == 1  # "explodes" failed: the sweep finished, the exit code says so
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "tiny 3->2  batch 8" in text and "x loop" in text and "failed: RuntimeError: boom" in text
    assert "best jacbench engine: vmap_jacrev" in text
    df = pd.read_csv(out, keep_default_na=False)
    assert set(df.engine) == {"loop", "vmap_jacrev", "explodes", FORWARD} and set(df.threads) == {1}
    assert (tmp_path / "env.json").exists()


def test_cli_model_patterns_expand_through_the_registry():
    assert cmd.expand_models(("mlp_forum", "fastkan*", "mlp_forum")) == ("mlp_forum", "fastkan", "fastkan_noln")


def test_cli_model_pattern_that_matches_nothing_is_a_clear_error(capsys):
    from bench.cli import main

    assert main(["throughput", "--models", "fastkn*", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error: model pattern 'fastkn*' matches nothing" in err and "fastkan" in err


def test_engine_patterns_expand_and_a_typo_is_a_clear_error(capsys):
    assert cmd.expand_engines(("vmap*", "loop")) == ("vmap_jacrev", "vmap_jacfwd", "loop")
    assert cmd.expand_engines(()) == ()
    from bench.cli import main

    assert main(["throughput", "--engines", "vmap_jacrevv", "--device", "cpu"]) == 2
    assert "did you mean 'vmap_jacrev'" in capsys.readouterr().err


def test_an_internal_key_error_keeps_its_traceback(monkeypatch):
    from bench import cli

    def broken(args):
        return {}["missing"]  # a bug inside the code, not a user mistake

    parser, modules = cli.build_parser()
    monkeypatch.setattr(modules["list"], "run", broken)
    monkeypatch.setattr(cli, "build_parser", lambda: (parser, modules))
    with pytest.raises(KeyError, match="missing"):
        cli.main(["list", "models"])


def test_cli_max_batch_parses():
    assert cmd._caps("loop=64, functional_forward=8") == (("loop", 64), ("functional_forward", 8))
    with pytest.raises(argparse.ArgumentTypeError):
        cmd._caps("loop")


def test_cli_batch_sizes_parse():
    assert cmd._sizes("1,64, 2e3") == (1, 64, 2000)
    with pytest.raises(argparse.ArgumentTypeError):
        cmd._sizes("1,x")
    with pytest.raises(argparse.ArgumentTypeError):
        cmd._sizes("0")


def test_timed_set_exposes_forward_and_jax_by_config():
    names = throughput.timed_set(("vmap_jacrev",), fast_cfg(jax=True), ENGINES)
    assert list(names) == ["vmap_jacrev", FORWARD, jax_peer.ENGINE]
    assert all(isinstance(t, Timed) for t in names.values())


class MixesRowOneIntoTwo(nn.Module):
    """Every row also sees the previous row's input (so row 2 sees row 1): batch-sum Jacobians of it are wrong,
    while per sample (one row, under vmap) it is an ordinary function."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        y = torch.tanh(self.lin(x))
        other = torch.roll(x, 1, dims=0) if x.dim() == 2 else x  # one sample (vmap) has no other row
        return y + 0.5 * other[..., :2]


def test_a_batch_sum_engine_is_refused_on_a_model_that_mixes_the_measured_batch():
    from bench.engines import ENGINES as REAL

    cfg = fast_cfg(engines=("batch_sum_reverse", "vmap_jacrev"), batch_sizes=(256,), forward=False)
    rows = sweep(cfg, model_factory=lambda spec: MixesRowOneIntoTwo(), engines=REAL)
    by = {r["engine"]: r for r in rows}
    assert by["batch_sum_reverse"]["status"] == "unsupported" and "mixes them" in by["batch_sum_reverse"]["error"]
    assert by["vmap_jacrev"]["status"] == "ok"  # per-sample engines are right for any model


class BranchesOnData(nn.Module):
    """Python control flow on the data: torch.func cannot transform it, autograd one sample at a time can."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return torch.tanh(self.lin(x)) if float(x.detach().max()) > -10 else self.lin(x)


def test_the_reference_falls_back_to_autograd_when_torch_func_cannot_transform_the_model():
    from bench.engines import ENGINES as REAL

    cfg = fast_cfg(engines=("loop", "batch_sum_reverse"), batch_sizes=(4,), forward=False)
    rows = sweep(cfg, model_factory=lambda spec: BranchesOnData(), engines=REAL)
    assert {r["engine"]: r["status"] for r in rows} == {"loop": "ok", "batch_sum_reverse": "ok"}  # verified, timed
