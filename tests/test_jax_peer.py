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
