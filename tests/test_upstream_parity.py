"""Checkpoints of the public FastKAN and efficient-KAN (and the forum's nn.Sequential) load into ours.

The upstream forward passes are rebuilt here as plain functions of a state_dict, written independently
of models/ from the published description (2-D inputs only, like upstream's basis). A state_dict with
upstream's keys and shapes and random values loads with strict=True, and outputs and Jacobians agree.
Tolerances: float32 outputs 1e-6 relative to the largest output, float64 1e-12; Jacobians 1e-5 / 1e-10.
"""

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacrev, vmap

import models

DTYPES = [(torch.float32, 1e-6, 1e-5), (torch.float64, 1e-12, 1e-10)]
LAYERS = [4, 30, 30, 4]


# ---- upstream FastKAN, from its description -------------------------------------------------------------
def fastkan_state_dict(layers, num_grids, use_layernorm, g):
    sd = {}
    for i, (a, b) in enumerate(pairwise(layers)):
        if use_layernorm:
            sd[f"layers.{i}.layernorm.weight"] = 1 + 0.3 * torch.randn(a, generator=g)
            sd[f"layers.{i}.layernorm.bias"] = 0.3 * torch.randn(a, generator=g)
        sd[f"layers.{i}.rbf.grid"] = torch.linspace(-2, 2, num_grids)
        sd[f"layers.{i}.spline_linear.weight"] = 0.1 * torch.randn(b, a * num_grids, generator=g)
        sd[f"layers.{i}.base_linear.weight"] = torch.randn(b, a, generator=g) / a**0.5
        sd[f"layers.{i}.base_linear.bias"] = 0.1 * torch.randn(b, generator=g)
    return sd


def fastkan_reference(sd, x, n_layers, use_layernorm, h):
    for i in range(n_layers):
        p = {k.split(f"layers.{i}.", 1)[1]: v for k, v in sd.items() if k.startswith(f"layers.{i}.")}
        z = x
        if use_layernorm:
            mu = x.mean(-1, keepdim=True)
            var = ((x - mu) ** 2).mean(-1, keepdim=True)
            z = (x - mu) / torch.sqrt(var + 1e-5) * p["layernorm.weight"] + p["layernorm.bias"]
        phi = torch.exp(-(((z[:, :, None] - p["rbf.grid"][None, None, :]) / h) ** 2))  # (B, in, G)
        spline = phi.reshape(x.shape[0], -1) @ p["spline_linear.weight"].T
        base = F.silu(x) @ p["base_linear.weight"].T + p["base_linear.bias"]
        x = spline + base
    return x


# ---- upstream efficient-KAN, from its description -------------------------------------------------------
def efficient_kan_state_dict(layers, G, k, g):
    sd = {}
    h = 2.0 / G
    knots = torch.arange(-k, G + k + 1, dtype=torch.float64) * h - 1.0
    for i, (a, b) in enumerate(pairwise(layers)):
        sd[f"layers.{i}.grid"] = knots.expand(a, -1).clone()
        sd[f"layers.{i}.base_weight"] = torch.randn(b, a, generator=g) / a**0.5
        sd[f"layers.{i}.spline_weight"] = 0.3 * torch.randn(b, a, G + k, generator=g)
        sd[f"layers.{i}.spline_scaler"] = 0.5 + torch.rand(b, a, generator=g)
    return sd


def upstream_b_splines(x, grid, k):
    """x (B, in), grid (in, m) -> (B, in, m - 1 - k); asserts 2-D input as upstream does."""
    assert x.dim() == 2 and x.size(1) == grid.size(0)
    x = x.unsqueeze(-1)
    bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
    for q in range(1, k + 1):
        bases = (x - grid[:, : -(q + 1)]) / (grid[:, q:-1] - grid[:, : -(q + 1)]) * bases[:, :, :-1] + (
            grid[:, q + 1 :] - x
        ) / (grid[:, q + 1 :] - grid[:, 1:(-q)]) * bases[:, :, 1:]
    return bases.contiguous()


def efficient_kan_reference(sd, x, n_layers, k):
    for i in range(n_layers):
        grid, bw = sd[f"layers.{i}.grid"], sd[f"layers.{i}.base_weight"]
        scaled = sd[f"layers.{i}.spline_weight"] * sd[f"layers.{i}.spline_scaler"].unsqueeze(-1)
        base = F.linear(F.silu(x), bw)
        spline = F.linear(upstream_b_splines(x, grid, k).view(x.size(0), -1), scaled.view(bw.size(0), -1))
        x = base + spline
    return x


def batch_jacobian(fn, x):
    """Jacobian of a per-sample-independent batched fn: (B, in) -> (B, out, in)."""
    return torch.autograd.functional.jacobian(lambda z: fn(z).sum(0), x).permute(1, 0, 2)


def check_parity(ours, reference, x, rtol_y, rtol_j):
    y_ref, y = reference(x), ours(x)
    assert (y - y_ref).abs().max() <= rtol_y * y_ref.abs().max()
    J_ref, J = batch_jacobian(reference, x), vmap(jacrev(ours))(x)
    assert (J - J_ref).abs().max() <= rtol_j * J_ref.abs().max()


@pytest.mark.parametrize(("dtype", "rtol_y", "rtol_j"), DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["fastkan", "fastkan_noln"])
def test_fastkan_upstream_checkpoint_loads_and_agrees(name, dtype, rtol_y, rtol_j):
    use_ln = name == "fastkan"
    g = torch.Generator().manual_seed(0)
    sd = {k: v.to(dtype) for k, v in fastkan_state_dict(LAYERS, 8, use_ln, g).items()}
    ours = models.create_model(name, layers=LAYERS).to(dtype)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    ours.load_state_dict(sd, strict=True)
    assert not ours.layers[0].rbf.grid.requires_grad  # upstream's frozen Parameter
    x = (torch.rand(16, 4, generator=g, dtype=torch.float64) * 4 - 2).to(dtype)
    check_parity(ours, lambda z: fastkan_reference(sd, z, 3, use_ln, 4 / 7), x, rtol_y, rtol_j)


@pytest.mark.parametrize(("dtype", "rtol_y", "rtol_j"), DTYPES, ids=["f32", "f64"])
def test_efficient_kan_upstream_checkpoint_loads_and_agrees(dtype, rtol_y, rtol_j):
    g = torch.Generator().manual_seed(0)
    sd = {k: v.to(dtype) for k, v in efficient_kan_state_dict(LAYERS, 5, 3, g).items()}
    ours = models.create_model("efficient_kan", layers=LAYERS).to(dtype)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    ours.load_state_dict(sd, strict=True)
    # inside the grid, in the extension, and beyond the extended knots (spline term 0 there)
    x = (torch.rand(24, 4, generator=g, dtype=torch.float64) * 6 - 3).to(dtype)
    check_parity(ours, lambda z: efficient_kan_reference(sd, z, 3, 3), x, rtol_y, rtol_j)


def test_efficient_kan_custom_grid_checkpoint():
    g = torch.Generator().manual_seed(1)
    sd = {k: v.double() for k, v in efficient_kan_state_dict([3, 7, 2], 8, 2, g).items()}
    ours = models.create_model("efficient_kan", n_in=3, n_out=2, hidden=[7], grid_size=8, spline_order=2).double()
    ours.load_state_dict(sd, strict=True)
    x = torch.rand(10, 3, generator=g, dtype=torch.float64) * 2 - 1
    check_parity(ours, lambda z: efficient_kan_reference(sd, z, 2, 2), x, 1e-12, 1e-10)


def forum_sequential():
    return nn.Sequential(
        nn.Linear(4, 100), nn.Sigmoid(), nn.Linear(100, 100), nn.Sigmoid(), nn.Linear(100, 100), nn.Sigmoid(),
        nn.Linear(100, 100), nn.Sigmoid(), nn.Linear(100, 4),
    )  # fmt: skip


def test_forum_checkpoint_round_trip(tmp_path):
    """``torch.save(model.state_dict(), 'trained_model.pth')`` from the forum's nn.Sequential loads into ours."""
    torch.manual_seed(0)
    theirs = forum_sequential()
    path = tmp_path / "trained_model.pth"
    torch.save(theirs.state_dict(), path)
    ours = models.create_model("mlp_forum", seed=5)
    ours.load_state_dict(torch.load(path), strict=True)
    x = torch.rand(32, 4) * 2 - 1
    assert torch.equal(ours(x), theirs(x))
    # and back: ours saved the same way loads into the plain nn.Sequential
    torch.save(ours.state_dict(), path)
    fresh = forum_sequential()
    fresh.load_state_dict(torch.load(path), strict=True)
    assert torch.equal(fresh(x), ours(x))


@pytest.mark.parametrize("name", ["fastkan", "efficient_kan"])
def test_our_checkpoint_runs_in_the_reference(name, tmp_path):
    ours = models.create_model(name, layers=LAYERS, seed=0).double()
    path = tmp_path / "trained_model.pth"
    torch.save(ours.state_dict(), path)
    sd = torch.load(path)
    x = torch.rand(8, 4, dtype=torch.float64) * 2 - 1
    if name == "fastkan":
        ref = fastkan_reference(sd, x, 3, True, 4 / 7)
    else:
        ref = efficient_kan_reference(sd, x, 3, 3)
    torch.testing.assert_close(ours(x), ref, rtol=1e-12, atol=1e-12)
