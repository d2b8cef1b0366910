"""Engine "auto" from measurements (bench.engines.auto): the table's fastest supported engine, never one that
cannot serve the call, the fixed order where nothing was measured."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import models
from bench.engines import AUTO_ORDER, ENGINES, auto, choose, jacobian
from equations.scaling import PhysicalModel, Scaler


def write_table(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=auto.COLUMNS)
        w.writeheader()
        for model, family, batch, engine, rate in rows:
            w.writerow({"model": model, "family": family, "device": "cpu", "dtype": "float32",
                        "batch_size": batch, "engine": engine, "jac_per_s": rate})  # fmt: skip


@pytest.fixture
def user_table(monkeypatch, tmp_path):
    path = tmp_path / "auto_table.csv"
    monkeypatch.setenv(auto.ENV, str(path))
    monkeypatch.setattr(auto, "SHIPPED", tmp_path / "no_shipped_table.csv")  # only this test's rows
    monkeypatch.setattr(auto, "RECHECK_S", 0.0)  # tests rewrite their table at once: look at it on every call
    return path


def tanh_mlp():
    return models.create_model("mlp_tanh", width=8, depth=2, seed=0)


def test_auto_follows_the_measured_fastest_at_the_nearest_batch(user_table):
    write_table(user_table, [
        ("mlp_tanh", "mlp", 64, "vmap_jacrev", 9e5), ("mlp_tanh", "mlp", 64, "forward_tangents", 5e5),
        ("mlp_tanh", "mlp", 4096, "forward_tangents", 2e6), ("mlp_tanh", "mlp", 4096, "vmap_jacrev", 1e6),
    ])  # fmt: skip
    m = tanh_mlp()
    assert choose(m, torch.rand(50, 4)).name == "vmap_jacrev"  # nearest measured batch: 64
    assert choose(m, torch.rand(3000, 4)).name == "forward_tangents"  # nearest: 4096
    assert choose(m, torch.rand(50, 4, dtype=torch.float64)).name == AUTO_ORDER[0]  # float64 was not measured
    assert choose(m, torch.rand(50, 4), create_graph=True).name == AUTO_ORDER[0]  # rates are without a graph


def test_auto_never_picks_an_engine_that_cannot_serve_the_call(user_table):
    """Measured fastest but unusable: unknown, batch-sum (needs the coupling check), compiled (not allowed),
    unsupported by this model. auto skips each and takes the fastest that can serve the call."""
    write_table(user_table, [
        ("mlp_tanh", "mlp", 64, "gone_engine", 9e9), ("mlp_tanh", "mlp", 64, "functional_vectorized", 8e9),
        ("mlp_tanh", "mlp", 64, "compiled_forward_tangents", 7e9), ("mlp_tanh", "mlp", 64, "vmap_jacfwd", 6e9),
        ("mlp_tanh", "mlp", 64, "forward_tangents", 1e5),
    ])  # fmt: skip
    m = tanh_mlp()
    x = torch.rand(64, 4)
    assert choose(m, x).name == "vmap_jacfwd"
    assert choose(m, x, compiled=True).name == "compiled_forward_tangents"

    class NoTangents(nn.Module):  # no tangent rule: compiled_forward_tangents does not support it
        family, zoo_name, n_in, n_out = "mlp", "mlp_tanh", 4, 4

        def __init__(self):
            super().__init__()
            self.net = tanh_mlp()

        def forward(self, x):
            return self.net(x)

    other = NoTangents()
    assert ENGINES["compiled_forward_tangents"].supports(other, x.device, x.dtype) is not None
    assert choose(other, x, compiled=True).name == "vmap_jacfwd"


def test_lookup_by_family_and_through_the_physical_wrapper(user_table):
    write_table(user_table, [("some_other_mlp", "mlp", 64, "vmap_jacrev", 9e5),
                             ("some_other_mlp", "mlp", 64, "forward_tangents", 1e5)])  # fmt: skip
    m = tanh_mlp()  # mlp_tanh itself was not measured: its family was
    assert choose(m, torch.rand(64, 4)).name == "vmap_jacrev"
    scaler = Scaler(torch.zeros(4), torch.ones(4), torch.zeros(4), torch.ones(4))
    assert choose(PhysicalModel(m, scaler), torch.rand(64, 4)).name == "vmap_jacrev"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_shipped_table_picks_only_engines_each_zoo_model_supports(dtype):
    """With the shipped table (the tests' own user table is empty), every zoo model at every measured batch size:
    the chosen engine supports the model, is batch-independent, not compiled, differentiable for create_graph,
    and gives the reverse-mode Jacobian."""
    assert auto.SHIPPED.exists() and auto.table(), "bench/engines/auto_table.csv is shipped with the package"
    for name in models.list_models():
        m = models.create_model(name, seed=0).to(dtype)
        for batch in (1, 64, 4096, 65536):
            x = torch.rand(batch, m.n_in, dtype=dtype)
            for create_graph in (False, True):
                e = choose(m, x, create_graph=create_graph)
                assert e.supports(m, x.device, dtype) is None, (name, batch, e.name)
                assert not e.batch_sum and not e.compiled and (e.differentiable or not create_graph)
        x = torch.rand(5, m.n_in, dtype=dtype)
        tol = 1e-12 if dtype == torch.float64 else 1e-4
        ref = jacobian(m.double(), x.double(), engine="vmap_jacrev")
        assert (jacobian(m.to(dtype), x).double() - ref).abs().max() <= tol * ref.abs().max().clamp_min(1), name


def test_refresh_merges_a_sweeps_rates(tmp_path):
    path = tmp_path / "t.csv"
    row = {"model": "mlp_tanh", "family": "mlp", "device": "cpu", "dtype": "float32", "order": 1, "status": "ok"}
    first = [{**row, "batch_size": 64, "engine": "vmap_jacrev", "jac_per_s": 1e5},
             {**row, "batch_size": 64, "engine": "forward_tangents", "jac_per_s": 2e5},
             {**row, "batch_size": 8, "engine": "forward_tangents", "jac_per_s": 1e4}]  # fmt: skip
    assert auto.refresh(first, path) == 3
    second = [{**row, "batch_size": 64, "engine": "vmap_jacrev", "jac_per_s": 3e5},
              {**row, "batch_size": 64, "engine": "forward", "jac_per_s": 9e9},  # the forward pass: no engine
              {**row, "batch_size": 64, "engine": "jax_jit_vmap_jacfwd", "jac_per_s": 9e9},  # the peer: no engine
              {**row, "batch_size": 64, "engine": "vmap_jacfwd", "jac_per_s": 9e9, "status": "failed"}]  # fmt: skip
    assert auto.refresh(second, path) == 1
    rows = {(r["batch_size"], r["engine"]): r["jac_per_s"] for r in auto.read(path)}
    # vmap_jacrev at 64 re-measured: that row replaced; the other engines' rows stay (a sweep of one engine must not
    # leave it the only one measured, hence the fastest)
    assert rows == {(64, "vmap_jacrev"): 3e5, (64, "forward_tangents"): 2e5, (8, "forward_tangents"): 1e4}


def test_damaged_tables_count_as_no_measurement(user_table):
    """Bad rows are skipped (zero or missing batch, NaN or negative rate, missing columns); an unreadable file is
    ignored with a warning: auto falls back to the fixed order, it never fails the Jacobian."""
    user_table.write_text(
        "model,family,device,dtype,batch_size,engine,jac_per_s\n"
        "mlp_tanh,mlp,cpu,float32,0,vmap_jacrev,9e9\n"
        "mlp_tanh,mlp,cpu,float32,64,vmap_jacrev,nan\n"
        "mlp_tanh,mlp,cpu,float32,64,vmap_jacfwd,-1\n"
        "mlp_tanh,mlp,cpu,float32,,vmap_jacrev,9e9\n"
        "mlp_tanh,mlp,cpu\n"
    )
    assert auto.read(user_table) == []
    assert choose(tanh_mlp(), torch.rand(64, 4)).name == AUTO_ORDER[0]
    user_table.write_bytes(b"\xff\xfe not a csv \x00")
    with pytest.warns(UserWarning, match="unreadable"):
        assert choose(tanh_mlp(), torch.rand(64, 4)).name == AUTO_ORDER[0]


def test_other_dimensions_do_not_decide(user_table):
    """A 1 -> 8 configuration's measurement does not pick the engine of the 4 -> 4 model of the same name."""
    with open(user_table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=auto.COLUMNS)
        w.writeheader()
        w.writerow({"model": "mlp_tanh", "family": "mlp", "n_in": 1, "n_out": 8, "device": "cpu", "dtype": "float32",
                    "batch_size": 64, "engine": "vmap_jacrev", "jac_per_s": 9e9})  # fmt: skip
    assert choose(tanh_mlp(), torch.rand(64, 4)).name == AUTO_ORDER[0]
    one_to_eight = models.create_model("mlp_tanh", n_in=1, n_out=8, width=8, depth=2, seed=0)
    assert choose(one_to_eight, torch.rand(64, 1)).name == "vmap_jacrev"
