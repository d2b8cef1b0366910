"""The FLOP limit of a Jacobian: what one Jacobian costs and what the device can do per second.

Forward mode gets a Jacobian of f: R^n_in -> R^n_out from the primal and n_in tangents, about
(1 + n_in) forward passes. The device's limit is the measured FLOP/s of a large square matmul in the
same dtype, TF32 off unless asked for. An engine's fraction of the limit is
jac_per_s * flops_per_jac / peak_flops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from bench.engines.gemm import linear
from bench.run.machine import usable_cores
from bench.speed.timing import time_callable
from models.base import linear_flops as layer_flops


def linear_flops(model: nn.Module) -> int:
    """FLOPs of the nn.Linear layers of one sample's forward pass (2 * in * out + out each, the zoo's count).

    Elementwise activations are left out (their cost per element is unknown here; it is O(width), the
    matmuls O(width^2)). Used for models without `flops_per_sample()`, such as a plain nn.Sequential.
    """
    return sum(
        layer_flops(m.in_features, m.out_features, m.bias is not None)
        for m in model.modules()
        if isinstance(m, nn.Linear)
    )


def forward_flops(model: nn.Module) -> int:
    """FLOPs of one sample's forward pass: the model's own `flops_per_sample()`, else `linear_flops`."""
    own = getattr(model, "flops_per_sample", None)
    return int(own()) if callable(own) else linear_flops(model)


def jacobian_flops(model: nn.Module, n_in: int | None = None) -> int:
    """FLOPs of one Jacobian by forward mode: (1 + n_in) forward passes (primal and n_in tangents)."""
    n_in = n_in if n_in is not None else int(model.n_in)
    return (1 + n_in) * forward_flops(model)


@contextlib.contextmanager
def tf32_mode(allow: bool) -> Iterator[None]:
    """Allow or forbid TF32 in CUDA matmuls and convolutions inside the block, then restore the old flags."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    torch.set_float32_matmul_precision("high" if allow else "highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
        torch.set_float32_matmul_precision(old[2])


_PEAK_CACHE: dict[tuple[str, str, bool, int], float] = {}


def default_matmul_size(device: torch.device) -> int:
    """Big enough to be compute-bound, small enough to take well under a second per call."""
    return 8192 if device.type == "cuda" else 2048


def peak_flops(
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    n: int | None = None,
    budget_s: float = 1.0,
    allow_tf32: bool = False,
) -> float:
    """Measured FLOP/s of an (n x n) @ (n x n) matmul in `dtype` on `device`: the device's limit.

    On CPU in float32 the faster of MKL's (torch.mm) and oneDNN's GEMM (the one the tangent passes use) counts:
    which one wins depends on the CPU, and a limit below what an engine's own kernels reach would read > 100%.

    The fastest repeat counts (a limit, not a typical speed: on a shared machine the median drifts with
    the neighbours' load), and on CPU all usable cores work on it, whatever torch's thread setting: the
    limit is the machine's, and JAX uses every core too. Cached per (device, dtype, TF32, n).
    """
    dev = torch.device(device)
    n = n if n is not None else default_matmul_size(dev)
    key = (str(dev), str(dtype), allow_tf32, n)
    if key not in _PEAK_CACHE:
        gen = torch.Generator(device=dev).manual_seed(0)
        a = torch.randn(n, n, generator=gen, device=dev, dtype=dtype)
        b = torch.randn(n, n, generator=gen, device=dev, dtype=dtype)
        out = torch.empty(n, n, device=dev, dtype=dtype)
        threads = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(usable_cores())
        try:
            calls = [lambda: torch.mm(a, b, out=out)]
            if dev.type == "cpu" and dtype == torch.float32:  # the tangent passes' oneDNN GEMM may beat MKL's
                calls.append(lambda: linear(a, b))
            with tf32_mode(allow_tf32), torch.no_grad():
                best = min(min(time_callable(c, device=dev, warmup=2, budget_s=budget_s).seconds) for c in calls)
        finally:
            torch.set_num_threads(threads)
        _PEAK_CACHE[key] = 2.0 * n**3 / best
    return _PEAK_CACHE[key]
