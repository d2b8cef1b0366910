"""The JAX peer: the same Jacobian as torch (checked), refused where it cannot rebuild the model."""

import pytest
import torch
from speed_fixtures import fast_cfg, forum_mlp, run_sweep, small_mlp
from torch import nn

from bench.speed import jax_peer
from models.mlp import Sine


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


def _kan_variants():
    """Every KAN family and layout the peer rebuilds: layer norms on and off, a refitted (non-uniform) grid."""
    from models import create_model

    torch.manual_seed(0)
    out = {
        "fastkan": create_model("fastkan", width=12, depth=2),
        "fastkan_noln": create_model("fastkan_noln", width=12, depth=2),
        "efficient_kan": create_model("efficient_kan", width=12, depth=2),
        "chebykan": create_model("chebykan", width=12, depth=2),
        "chebykan_layernorm": create_model("chebykan", width=12, depth=2, layernorm=True),
    }
    refit = create_model("efficient_kan", width=12, depth=2)
    refit.update_grid(torch.rand(200, 4) * 1.6 - 0.8)  # knots from data: no longer uniform
    out["efficient_kan_refit"] = refit
    return out


@needs_jax
@pytest.mark.parametrize("name", list(_kan_variants()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_jax_kan_rebuilds_give_torchs_values_and_jacobians(name, dtype):
    """The JAX rebuild of each KAN family, with our weights: its forward equals ours, its Jacobian torch's.

    float64: rounding only (1e-13 relative); float32: the peer's own tolerance against the float64 reference.
    """
    from bench.speed import jax_models

    jax = jax_peer._jax()
    model = _kan_variants()[name].to(dtype).eval().requires_grad_(False)
    lo, hi = model.input_range
    x = (torch.rand(40, 4, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
    with jax_peer._precision_context(dtype):
        f, params = jax_models.to_jax(model, jax.devices("cpu")[0])
        y = jax.device_get(jax.vmap(f, in_axes=(None, 0))(params, x.numpy()))
    y_ref = model.double()(x.double()).detach()
    model.to(dtype)
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    assert (torch.from_numpy(y.copy()).double() - y_ref).abs().max() <= tol * y_ref.abs().max(), name
    j = torch.from_numpy(jax.device_get(jax_peer.prepare(model, x)()).copy())
    ref = jax_peer.reference_jacobian(model, x)
    bound = 1e-13 if dtype == torch.float64 else jax_peer.TOLERANCE[dtype]
    assert (j.double() - ref).abs().max() <= bound * ref.abs().max(), name


@needs_jax
def test_jax_peer_refuses_a_kan_stack_it_cannot_rebuild():
    from models import create_model

    class Scaled(type(create_model("fastkan"))):
        def forward(self, x):
            return 2 * super().forward(x)

    m = create_model("fastkan", width=8, depth=1)
    m.__class__ = Scaled
    assert "overrides" in jax_peer.supports(m, "cpu", torch.float32)
    m2 = create_model("efficient_kan", width=8, depth=1)
    m2.layers[0] = nn.Linear(4, 8)
    assert "KAN layer 0 (Linear)" in jax_peer.supports(m2, "cpu", torch.float32)
