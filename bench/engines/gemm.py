"""F.linear for the no-graph tangent passes: oneDNN for float32 on CPU, torch elsewhere.

On one core of the AMD EPYC (Zen 5), oneDNN's linear, the kernel inductor uses on CPU, reaches about twice the
GFLOP/s of MKL's sgemm for the tangent passes' shapes ((1 + n_in) rows x 100) @ (100 x 100), with identical results
on those shapes (measured: results/measurements/README.md, "The fused MLP's kernels"). oneDNN has no float64
kernels and this entry point no autograd, so float64, GPUs, graphs and torch.compile traces stay on F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ONEDNN = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ w (N, K).T (+ b) -> (..., N)."""
    if (
        ONEDNN is not None
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()  # inductor picks its own kernels (and cannot lower this call)
    ):
        y = ONEDNN(x.reshape(-1, x.shape[-1]), w, b, "none", [], "")
        return y.view(*x.shape[:-1], w.shape[0])
    return F.linear(x, w, b)
