"""The coupling check finds models that mix samples, and batch-sum engines refuse them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from bench import coupling
from bench.coupling import check_coupling, require_batch_independent
from bench.engines import UnsupportedEngine, jacobian


class PackedPoints(nn.Module):
    """The first forum post's network: n_nodes collocation points packed into one n_nodes-wide input vector.

    As a per-point model it maps (B, 1) -> (B, 1), B a multiple of n_nodes, by reshaping the points into rows
    of n_nodes; the dense layers then mix the points of a row, so du_b/dx_c != 0 for b != c.
    """

    def __init__(self, n_nodes: int = 8) -> None:
        super().__init__()
        self.n_nodes = n_nodes
        self.net = nn.Sequential(nn.Linear(n_nodes, n_nodes), nn.Tanh(), nn.Linear(n_nodes, n_nodes), nn.Tanh(),
                                 nn.Linear(n_nodes, n_nodes))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, self.n_nodes)).reshape(-1, 1)


def points(n: int = 16) -> torch.Tensor:
    return torch.linspace(0, 3, n, dtype=torch.float64)[:, None]


def with_batchnorm() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2)).double()


def test_forum_packed_points_are_flagged():
    torch.manual_seed(0)
    m = PackedPoints().double()
    report = check_coupling(m, points())
    assert report.coupled and report.batch == 16
    assert report.max_cross > 0.01 * report.max_diag
    with pytest.raises(UnsupportedEngine) as err:
        jacobian(m, points(), engine="batch_sum_reverse")
    msg = str(err.value)
    assert "PackedPoints" in msg and f"{report.max_cross:.3g}" in msg
    assert "packed into one input vector" in msg and "BatchNorm in train mode" in msg


def test_one_point_per_vector_is_not_coupled():
    """With n_nodes = 1 (the forum's working case) no point sees another."""
    torch.manual_seed(0)
    report = check_coupling(PackedPoints(n_nodes=1).double(), points())
    assert not report.coupled and report.max_cross == 0.0 and report.max_diag > 0


@pytest.mark.parametrize("engine", ["batch_sum_reverse", "functional_vectorized", "functional_forward"])
def test_batchnorm_train_mode_is_flagged_and_state_is_kept(engine):
    m = with_batchnorm().train()
    bn = m[1]
    before = [b.clone() for b in bn.buffers()]
    x = torch.rand(10, 3, dtype=torch.float64)
    with pytest.raises(UnsupportedEngine, match="mixes them"):
        jacobian(m, x, engine=engine)
    for b, b0 in zip(bn.buffers(), before, strict=True):  # the check's forward passes left no trace
        assert torch.equal(b, b0)


def test_batchnorm_eval_mode_is_not_flagged():
    m = with_batchnorm().eval()
    x = torch.rand(10, 3, dtype=torch.float64)
    report = check_coupling(m, x[:8])
    assert not report.coupled and report.max_cross == 0.0
    assert torch.allclose(jacobian(m, x, engine="batch_sum_reverse"), jacobian(m, x, engine="loop"), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", models.list_models())
def test_zoo_models_do_not_mix_samples(name):
    torch.manual_seed(0)
    m = models.create_model(name, n_in=3, n_out=2, width=8).double()
    report = check_coupling(m, torch.rand(6, 3, dtype=torch.float64) * 2 - 1)
    assert report.max_cross == 0.0 and report.max_diag > 0 and not report.coupled


def test_check_is_cached_per_model_and_mode(monkeypatch):
    calls = []
    real = coupling.check_coupling
    monkeypatch.setattr(coupling, "check_coupling", lambda m, x, tol=0.0: calls.append(1) or real(m, x, tol))
    m = with_batchnorm().eval()
    x = torch.rand(10, 3, dtype=torch.float64)
    for _ in range(3):
        require_batch_independent(m, x, "batch_sum_reverse")
    assert len(calls) == 1
    m.train()  # a different mode is a different model as far as coupling goes
    with pytest.raises(UnsupportedEngine):
        require_batch_independent(m, x, "batch_sum_reverse")
    assert len(calls) == 2
    assert require_batch_independent(m, x[:1], "batch_sum_reverse") is None  # one sample cannot be mixed


def test_relative_handles_zero_and_nan():
    r = coupling.CouplingReport("m", 4, max_cross=0.0, max_diag=0.0, tol=0.0)
    assert r.relative == 0.0 and not r.coupled
    assert coupling.CouplingReport("m", 4, max_cross=float("nan"), max_diag=1.0, tol=0.0).coupled
