"""The coupling check finds models that mix samples, and batch-sum engines refuse them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_fixtures import small_overrides

import models
from bench.engines import UnsupportedEngine, coupling, jacobian
from bench.engines.coupling import check_coupling, require_batch_independent, verify_batch_independent


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
    assert "PackedPoints" in msg and f"{verify_batch_independent(m, points()).max_cross:.3g}" in msg
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


@pytest.mark.parametrize(
    "check, batch", [(check_coupling, 6), (verify_batch_independent, 37)], ids=["full_jacobian", "every_pair"]
)
@pytest.mark.parametrize("name", models.list_models())
def test_zoo_models_do_not_mix_samples(name, check, batch):
    """Both checks, the full Jacobian of a small batch and the pairwise one on a larger batch, find zero mixing."""
    torch.manual_seed(0)
    m = models.create_model(name, n_in=3, n_out=2, **small_overrides(name)).double()
    report = check(m, torch.rand(batch, 3, dtype=torch.float64) * 2 - 1)
    assert report.max_cross == 0.0 and report.max_diag > 0 and not report.coupled


class MixesBeyondRow8(nn.Module):
    """Mixes samples only where the input says so: rows with x[:, 0] > 0.9 also see the previous row.

    A check that looks at the first 8 rows passes it whenever those rows stay below 0.9.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = (x[:, :1] > 0.9).to(x.dtype)
        return torch.tanh(self.lin(x)) + 0.5 * gate * torch.roll(x, 1, dims=0)


class MixingGate(nn.Module):
    """y_b = tanh(W x_b) + alpha * mean_c x_c: independent while alpha = 0 (its initial value), coupled once trained."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x)) + self.alpha * x.mean(0, keepdim=True)


def _rows_then_mixing(n: int = 40) -> torch.Tensor:
    x = torch.rand(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.8  # all below 0.9
    x[25, 0] = 0.95  # only row 25 mixes (with row 24)
    return x


@pytest.mark.parametrize("engine", ["batch_sum_reverse", "functional_vectorized", "functional_forward"])
def test_input_dependent_mixing_beyond_the_first_rows_is_caught(engine):
    torch.manual_seed(0)
    m = MixesBeyondRow8().double()
    x = _rows_then_mixing()
    assert not check_coupling(m, x[:8]).coupled  # the old check (first 8 rows) saw nothing here
    with pytest.raises(UnsupportedEngine, match="mixes them"):
        jacobian(m, x, engine=engine)
    clean = x.clone()
    clean[25, 0] = 0.5  # no row mixes: the batch-sum engine is trusted, and right
    assert torch.allclose(jacobian(m, clean, engine=engine), jacobian(m, clean, engine="loop"), rtol=0, atol=1e-14)


@pytest.mark.parametrize("pair", [(0, 1), (7, 8), (0, 39), (38, 39), (31, 32), (13, 26)])
def test_every_pair_of_rows_is_checked(pair):
    """A model coupling exactly one ordered pair (a -> b) anywhere in the batch is caught."""
    a, b = pair

    class OnePair(nn.Module):
        def forward(self, x):
            out = torch.sin(x)
            return out.index_add(0, torch.tensor([b]), 1e-3 * x[a : a + 1] ** 2)

    x = torch.rand(40, 3, dtype=torch.float64) + 0.5
    assert require_batch_independent(nn.Sequential(nn.Identity()), x, "batch_sum_reverse") is not None
    with pytest.raises(UnsupportedEngine):
        require_batch_independent(OnePair(), x, "batch_sum_reverse")


def test_weight_dependent_mixing_is_checked_again_after_training():
    torch.manual_seed(0)
    m = MixingGate().double()
    x = torch.rand(12, 2, dtype=torch.float64)
    J0 = jacobian(m, x, engine="batch_sum_reverse")  # alpha = 0: independent, and the batch-sum J is right
    assert torch.allclose(J0, jacobian(m, x, engine="loop"), rtol=0, atol=1e-14)
    with torch.no_grad():
        m.alpha.fill_(0.5)  # "training" opens the gate: a cached verdict would now be stale
    with pytest.raises(UnsupportedEngine, match="mixes them"):
        jacobian(m, x, engine="batch_sum_reverse")


def test_each_chunk_is_checked_and_a_nan_derivative_is_refused():
    torch.manual_seed(0)
    m = MixesBeyondRow8().double()
    x = _rows_then_mixing()
    with pytest.raises(UnsupportedEngine):
        jacobian(m, x, engine="batch_sum_reverse", chunk_size=16)  # row 25 lies in the second chunk

    class SqrtAtZero(nn.Module):
        def forward(self, x):
            return torch.sqrt(x)  # infinite derivative at 0: 0 * inf in the check is NaN

    x = torch.rand(6, 2, dtype=torch.float64)
    x[2, 1] = 0.0
    with pytest.raises(UnsupportedEngine, match="NaN/inf derivative"):
        jacobian(SqrtAtZero(), x, engine="batch_sum_reverse")
    assert require_batch_independent(SqrtAtZero(), x[:1], "batch_sum_reverse") is None  # one sample cannot mix


def test_relative_handles_zero_and_nan():
    r = coupling.CouplingReport("m", 4, max_cross=0.0, max_diag=0.0, tol=0.0)
    assert r.relative == 0.0 and not r.coupled
    assert coupling.CouplingReport("m", 4, max_cross=float("nan"), max_diag=1.0, tol=0.0).coupled
