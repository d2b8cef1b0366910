"""The sweep (not its numbers): rows and statuses, the float64 reference check, the coupling guard, ratios, the CSV."""

import math

import pandas as pd
import pytest
import torch
from speed_fixtures import ENGINES, FakeEngine, fast_cfg, run_sweep, small_mlp, vmap_jacrev
from torch import nn

from bench.speed import jax_peer
from bench.speed import sweep as throughput
from bench.speed.sweep import COLUMNS, FORWARD, Timed, sweep
from bench.speed.table import summary, write_csv


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


def test_an_order_2_sweep_times_hessian_engines_against_the_float64_hessian():
    from bench.engines import HESSIAN_ENGINES
    from bench.engines.hessians import ideal_passes

    def wrong_hessian(model, x):  # right but for one entry of the last row, 1% off
        H = HESSIAN_ENGINES["forward_hessian"].fn(model, x).clone()
        H[-1, 0, 1, 1] *= 1.01
        return H

    engines = {"forward_hessian": HESSIAN_ENGINES["forward_hessian"], "loop": HESSIAN_ENGINES["loop"],
               "wrong": FakeEngine(wrong_hessian)}  # fmt: skip
    cfg = fast_cfg(engines=(), batch_sizes=(4, 16), order=2, jax=True)
    rows = run_sweep(cfg, engines=engines)
    by = {(r["engine"], r["batch_size"]): r for r in rows}
    assert by["forward_hessian", 16]["status"] == "ok" and by["loop", 4]["status"] == "ok"
    assert by["loop", 16]["status"] == "unsupported"  # capped at max_batch, as in a Jacobian sweep
    assert (
        by["wrong", 16]["status"] == "mismatch"
        and "Hessian differs from the float64 reference" in by["wrong", 16]["error"]
    )
    n_in = 3  # small_mlp: 3 -> 2; forward mode's ideal Hessian cost, 1 + 3 + 6 = 10 forward passes
    assert (
        by["forward_hessian", 16]["flops_per_jac"]
        == ideal_passes(n_in) * by["forward_hessian", 16]["flops"]
        == (10 * by["forward_hessian", 16]["flops"])
    )
    peer = by[jax_peer.HESSIAN_ENGINE, 16]  # the JAX Hessian peer, checked against torch's float64 Hessian
    assert peer["status"] == "ok", peer["error"]
    s = summary(rows, peer=jax_peer.HESSIAN_ENGINE).set_index(["engine", "batch_size"])
    assert s.loc[("forward_hessian", 16), "x_jax"] == pytest.approx(
        by["forward_hessian", 16]["jac_per_s"] / peer["jac_per_s"], rel=1e-12
    )
    with pytest.raises(ValueError, match="order = 3"):
        fast_cfg(order=3)


def test_hessian_rows_never_join_a_jacobian_table(tmp_path):
    jac = run_sweep(fast_cfg(engines=("vmap_jacrev",), batch_sizes=(2,), forward=False))
    from bench.engines import HESSIAN_ENGINES

    hess = run_sweep(fast_cfg(engines=("loop",), batch_sizes=(2,), forward=False, order=2), engines=HESSIAN_ENGINES)
    assert {r["order"] for r in jac} == {1} and {r["order"] for r in hess} == {2}
    path = tmp_path / "throughput.csv"
    write_csv(jac, path)
    with pytest.raises(ValueError, match="Jacobians/s and Hessians/s do not belong in one table"):
        write_csv(hess, path, append=True)
    write_csv(jac, path, append=True)  # the same order appends
    assert len(pd.read_csv(path)) == 2
