"""`triton_fused_mlp`: the Jacobian of a plain MLP in one GPU kernel, activations kept on chip (Triton).

One program takes BLOCK samples through every layer: the primal h (BLOCK, P) and the n_in tangents T
(n_in x BLOCK, P) stay in registers and shared memory from the input to J; only x, the weights and J touch
global memory. Per layer, two `tl.dot`s (primal and all tangents), then the activation and its derivative
d = act'(z) once, the tangents scaled by d. The first layer's tangents are its weight's columns (no dot);
the last layer computes tangents only. Widths are zero-padded to one power of two P >= 16 (a padded unit
has zero weights in and out, so it changes nothing) and n_in to a power of two (its extra tangents are zero).
Matmuls run in IEEE FP32 (`input_precision="ieee"`, no TF32), as the rest of the suite.

Supports: a fusable alternating MLP (bench.engines.fused_mlp: Linear, act, ..., Linear) with sigmoid, tanh,
SiLU or ReLU, float32, widths up to MAX_WIDTH, on CUDA; on the CPU only under Triton's interpreter
(`TRITON_INTERPRET=1`), which is how CI checks it against torch. No graph (create_graph).

Measured on a GPU: nothing yet; the session that wrote this had no GPU (results/gpu/README.md).
"""

from __future__ import annotations

import importlib
import os

import torch
from torch import nn

from bench.engines.base import Engine, UnsupportedEngine, model_name
from bench.engines.fused_mlp import alternating, fusable

ACTS = {nn.Sigmoid: 0, nn.Tanh: 1, nn.SiLU: 2, nn.ReLU: 3}  # the kernel's ACT codes
MAX_WIDTH = 128  # a padded weight tile (P x P float32: 64 KiB at 128) must fit in shared memory (~227 KiB)
BLOCK = 16  # samples per program: the tangents are n_in x 16 rows (a dot needs at least 16)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def _kernel():
    """The jitted kernel (bench.engines.triton_kernels), imported on first use and re-imported when
    TRITON_INTERPRET changed: Triton reads it when the module's functions are jitted."""
    from bench.engines import triton_kernels  # Triton itself: optional, imported only where it runs

    if triton_kernels.INTERPRETED != interpreting():
        triton_kernels = importlib.reload(triton_kernels)
    return triton_kernels.mlp_jacobian_kernel


def _pow2(n: int, least: int = 1) -> int:
    return max(least, 1 << max(0, n - 1).bit_length())


def reason(model: nn.Module, device: torch.device, dtype: torch.dtype) -> str | None:
    """None if the fused kernel can run `model` on `device` in `dtype`, else why not."""
    if _triton() is None:
        return "triton not installed (pip install triton; its interpreter, TRITON_INTERPRET=1, runs on the CPU)"
    if torch.device(device).type != "cuda" and not interpreting():
        return "a GPU kernel: CUDA only (on the CPU only under Triton's interpreter, TRITON_INTERPRET=1)"
    if dtype != torch.float32:
        return f"float32 only, not {dtype}"
    mods = fusable(model)
    if mods is not None and any(p.dtype != dtype for p in model.parameters()):
        got = sorted({str(p.dtype) for p in model.parameters()})
        return f"the model's parameters must be {dtype} like x (got {got})"
    if mods is None or not alternating(mods):
        return "plain MLPs only: an nn.Sequential of Linear, activation, ..., Linear"
    acts = {type(m) for m in mods[1::2]}
    if not acts <= set(ACTS) or len(acts) != 1:
        names = sorted(a.__name__ for a in acts)
        return f"one activation of {', '.join(a.__name__ for a in ACTS)} throughout (got {names})"
    width = max(max(m.in_features, m.out_features) for m in mods[0::2])
    if width > MAX_WIDTH:
        return f"widths up to {MAX_WIDTH} (got {width})"
    return None


def pack(mods: list[nn.Module], P: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (LAYERS, P, P) weights and (LAYERS, P) biases of the MLP's Linears."""
    lins = mods[0::2]
    W = torch.zeros((len(lins), P, P), device=device, dtype=dtype)
    b = torch.zeros((len(lins), P), device=device, dtype=dtype)
    for i, m in enumerate(lins):
        W[i, : m.out_features, : m.in_features] = m.weight.detach()
        if m.bias is not None:
            b[i, : m.out_features] = m.bias.detach()
    return W, b


def triton_fused_mlp(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    if create_graph:
        raise UnsupportedEngine("engine 'triton_fused_mlp' cannot keep the graph (create_graph=True)")
    why = reason(model, x.device, x.dtype)
    if why is not None:
        raise UnsupportedEngine(f"engine 'triton_fused_mlp' does not support model {model_name(model)}: {why}")
    mods = fusable(model)
    B, n = x.shape
    n_out = mods[-1].out_features
    P = _pow2(max(max(m.in_features, m.out_features) for m in mods[0::2]), 16)
    W, b = pack(mods, P, x.device, x.dtype)
    J = torch.empty((B, n_out, n), device=x.device, dtype=x.dtype)
    if B == 0:
        return J
    grid = ((B + BLOCK - 1) // BLOCK,)
    _kernel()[grid](x.contiguous(), W, b, J, B, N_IN=n, N_OUT=n_out, NIN_P=_pow2(n), P=P, LAYERS=len(mods[0::2]),
                    ACT=ACTS[type(mods[1])], BLOCK=BLOCK)  # fmt: skip
    return J


ENGINES = [
    Engine("triton_fused_mlp", triton_fused_mlp, batch_sum=False, differentiable=False, supports=reason,
           doc="one Triton kernel per batch: primal and n_in tangents through every layer on chip (plain MLPs, GPU)"),
]  # fmt: skip
