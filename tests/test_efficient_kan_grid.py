"""efficient-KAN's B-spline machinery: knots, bases, the zero spline outside the grid, grid update, regularization."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import BSpline
from torch.func import jacrev, vmap

import models
from models.efficient_kan import KANLinear, bspline_basis, uniform_knots

F64 = torch.float64


def layer64(n_in=3, n_out=2, seed=0, **kw):
    torch.manual_seed(seed)
    layer = KANLinear(n_in, n_out, **kw).double()
    with torch.no_grad():
        layer.spline_weight.normal_(0, 0.5)
        layer.spline_scaler.uniform_(0.5, 2.0)  # a non-trivial scaler: the case upstream gets wrong
    return layer


def test_knots_extend_k_intervals_each_side():
    knots = uniform_knots(-1.0, 1.0, 5, 3, n_in=2)
    assert knots.shape == (2, 5 + 2 * 3 + 1)
    expected = torch.tensor([-2.2, -1.8, -1.4, -1.0, -0.6, -0.2, 0.2, 0.6, 1.0, 1.4, 1.8, 2.2])
    torch.testing.assert_close(knots[0], expected.to(knots.dtype))
    assert torch.equal(knots[0], knots[1])


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_bases_match_scipy_and_sum_to_one_inside_the_grid(order):
    knots = uniform_knots(-1.0, 1.0, 6, order, n_in=1).double()
    x = torch.linspace(-1, 1, 101, dtype=F64)[:-1]  # [t_k, t_{G+k}): half-open at the right end
    ours = bspline_basis(x[:, None], knots, order)[:, 0, :]
    ref = BSpline.design_matrix(x.numpy(), knots[0].numpy(), order).toarray()
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(ours.sum(-1), torch.ones_like(x), rtol=0, atol=1e-13)


def test_spline_term_is_exactly_zero_outside_the_extended_knots():
    layer = layer64()
    first, last = layer.grid[:, 0], layer.grid[:, -1]  # -2.2 and 2.2 up to rounding
    x = torch.stack([last, first - 1e-9, last + 0.01, first - 3.0, last + 10.0])  # the last knot: open end
    base = F.silu(x) @ layer.base_weight.T
    assert torch.equal(layer(x), base)
    J = vmap(jacrev(layer))(x)
    assert torch.equal(J, vmap(jacrev(lambda z: F.silu(z) @ layer.base_weight.T))(x))
    inside = torch.zeros(1, 3, dtype=F64)
    assert not torch.equal(layer(inside), F.silu(inside) @ layer.base_weight.T)


def test_single_sample_under_vmap_matches_batch():
    model = models.create_model("efficient_kan", seed=0).double()
    x = torch.rand(6, 4, dtype=F64) * 2 - 1
    torch.testing.assert_close(vmap(model)(x), model(x), rtol=1e-14, atol=1e-14)
    assert model(x[0]).shape == (4,)


def test_update_grid_moves_the_output_by_at_most_the_least_squares_error():
    layer = layer64()
    g = torch.Generator().manual_seed(1)
    x = (0.4 * torch.randn(256, 3, generator=g, dtype=F64)).clamp(-0.99, 0.99)
    before = layer(x).detach()
    scaler = layer.spline_scaler.detach().clone()
    bound = layer.update_grid(x)
    after = layer(x).detach()
    moved = (after - before).abs().max().item()
    assert moved <= bound * (1 + 1e-9) + 1e-12
    assert torch.equal(layer.spline_scaler, scaler)  # kept; the weights absorb the refit
    # the published update keeps the scaler *and* stores scaled coefficients: the scaler applies twice
    with torch.no_grad():
        layer.spline_weight.mul_(layer.spline_scaler[..., None])
    assert (layer(x) - before).abs().max() > 3 * bound


def test_update_grid_is_exact_when_the_function_is_representable():
    """Cubic polynomials are cubic splines on any knots: refitting them must lose nothing."""
    layer = layer64()
    pts = torch.linspace(-1, 0.999, 200, dtype=F64)[:, None].expand(-1, 3)
    c = torch.randn(4, 3, 2, dtype=F64)  # edge (i, o) is sum_p c[p, i, o] x_i^p
    poly = sum(c[p] * pts[..., None] ** p for p in range(4))  # (200, in, out)
    coef, resid = layer._fit_coefficients(pts, poly)
    assert resid.abs().max() < 1e-12
    with torch.no_grad():
        layer.spline_weight.copy_(coef / layer.spline_scaler[..., None])
    x = torch.rand(300, 3, dtype=F64) * 1.2 - 0.7  # inside the old grid, off-centre
    before = layer(x).detach()
    assert layer.update_grid(x) < 1e-10
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-10)


def test_update_grid_knots_follow_the_data():
    layer = layer64(grid_size=5, spline_order=3)
    x = torch.rand(500, 3, dtype=F64) * 0.5 + 0.2  # data in [0.2, 0.7]
    layer.update_grid(x)
    knots = layer.grid
    assert knots.shape == (3, 5 + 2 * 3 + 1)
    assert (knots.diff(dim=1) > 0).all()
    assert (knots[:, 3] <= x.min(0).values).all() and (knots[:, -4] >= x.max(0).values).all()


def test_model_update_grid_in_float32():
    model = models.create_model("efficient_kan", seed=0)
    x = torch.rand(128, 4) * 2 - 1
    before = model(x).detach()
    bounds = model.update_grid(x)
    assert len(bounds) == 3 and all(np.isfinite(bounds))
    assert model.layers[0].grid.dtype == torch.float32
    assert (model(x) - before).abs().max() <= sum(bounds) * 10 + 1e-4  # layer errors propagate, loosely
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        model.update_grid(x[0])


def test_regularization_loss():
    layer = layer64()
    with torch.no_grad():
        layer.spline_weight[0, 0] = 0.0  # an edge with zero weight: entropy must stay finite
    per_edge = layer.spline_weight.abs().mean(-1)
    p = per_edge / per_edge.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    torch.testing.assert_close(layer.regularization_loss(1.0, 0.0), per_edge.sum())
    torch.testing.assert_close(layer.regularization_loss(0.0, 1.0), entropy)
    loss = layer.regularization_loss(0.5, 2.0)
    loss.backward()
    assert torch.isfinite(layer.spline_weight.grad).all()
    model = models.create_model("efficient_kan", seed=0)
    total = model.regularization_loss(l1=1.0, entropy=1.0)
    torch.testing.assert_close(total, sum(lay.regularization_loss() for lay in model.layers))
