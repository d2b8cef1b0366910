"""The fused Triton MLP Jacobian kernel (bench.engines.triton_mlp), checked on the CPU by Triton's interpreter."""

import itertools

import pytest
import torch
from torch import nn

from bench.engines import ENGINES, jacobian, triton_mlp

pytestmark = pytest.mark.skipif(triton_mlp._triton() is None, reason="triton not installed (pip install triton)")
TOL32 = 2e-6  # max |J - J_ref| / max |J_ref|: float32 rounding through 2-4 layers (measured 1.5e-7 .. 3e-7)


@pytest.fixture
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def mlp(n_in, widths, n_out, act, bias=True, seed=0, first_bias=True):
    torch.manual_seed(seed)
    dims = [n_in, *widths, n_out]
    mods = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        mods.append(nn.Linear(a, b, bias=first_bias if i == 0 else bias))
        if i < len(dims) - 2:
            mods.append(act())
    return nn.Sequential(*mods)


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh, nn.SiLU, nn.ReLU])
@pytest.mark.parametrize(("n_in", "widths", "n_out", "batch", "bias"), [
    (4, [100, 100, 100, 100], 4, 37, True),  # the forum MLP's shape; 37 = 2 full blocks of 16 + 5
    (3, [20], 1, 16, True),  # n_in 3 padded to 4 tangents, width 20 padded to 32, one exact block
    (5, [33, 17], 2, 1, False),  # n_in 5 padded to 8, bias-free hidden layers, a single sample
])  # fmt: skip
def test_fused_kernel_equals_reverse_mode(interpreter, act, n_in, widths, n_out, batch, bias):
    m = mlp(n_in, widths, n_out, act, bias)
    x = torch.randn(batch, n_in, generator=torch.Generator().manual_seed(1))
    J = jacobian(m, x, engine="triton_fused_mlp")
    ref = jacobian(m.double(), x.double(), engine="vmap_jacrev")
    assert J.shape == (batch, n_out, n_in) and J.dtype == torch.float32
    assert (J.double() - ref).abs().max() <= TOL32 * ref.abs().max()


def test_fused_kernel_without_any_bias(interpreter):
    m = mlp(2, [24, 24], 3, nn.Tanh, bias=False, first_bias=False)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(2))
    ref = jacobian(m.double(), x.double(), engine="vmap_jacrev")
    J = jacobian(m.float(), x, engine="triton_fused_mlp")
    assert (J.double() - ref).abs().max() <= TOL32 * ref.abs().max()


def test_fused_kernel_refuses_what_it_cannot_run(interpreter, monkeypatch):
    e = ENGINES["triton_fused_mlp"]
    cpu = torch.device("cpu")
    assert "float32 only" in e.supports(mlp(2, [8], 1, nn.Tanh), cpu, torch.float64)
    mixed = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 1))
    assert "one activation" in e.supports(mixed, cpu, torch.float32)
    assert "one activation" in e.supports(mlp(2, [8], 1, nn.GELU), cpu, torch.float32)
    assert "widths up to" in e.supports(mlp(2, [129], 1, nn.Tanh), cpu, torch.float32)
    assert "parameters must be" in e.supports(mlp(2, [8], 1, nn.Tanh).double(), cpu, torch.float32)
    assert "plain MLPs" in e.supports(nn.Sequential(nn.Linear(2, 8), nn.LayerNorm(8)), cpu, torch.float32)
    with pytest.raises(Exception, match="create_graph"):
        jacobian(mlp(2, [8], 1, nn.Tanh), torch.rand(3, 2), engine="triton_fused_mlp", create_graph=True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA only" in e.supports(mlp(2, [8], 1, nn.Tanh), cpu, torch.float32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh])
def test_fused_kernel_on_the_gpu_equals_reverse_mode(act, monkeypatch):
    """The compiled kernel itself (no interpreter) on the forum MLP's shape, 10,000 samples."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    m = mlp(4, [100, 100, 100, 100], 4, act)
    x = torch.randn(10_000, 4, generator=torch.Generator().manual_seed(1))
    J = jacobian(m.cuda(), x.cuda(), engine="triton_fused_mlp").cpu()
    ref = jacobian(m.cpu().double(), x.double(), engine="vmap_jacrev")
    assert (J.double() - ref).abs().max() <= TOL32 * ref.abs().max()
