"""JAX as a peer in the throughput benchmark: the same model and weights, `jax.jit(jax.vmap(jax.jacfwd(f)))`.

Optional: jax is an extra (`pip install 'jacbench[jax]'`); without it every JAX row is `unsupported`.
Plain MLPs and the FastKAN, efficient-KAN and ChebyKAN stacks are rebuilt (bench.speed.jax_models); anything
else is `unsupported` with the reason. Every matmul runs at
`jax.lax.Precision.HIGHEST` (what `jax.default_matmul_precision("highest")` sets; on GPU JAX's default
is a faster, less precise mode). Before any timing, the JAX Jacobian is checked against torch's in
float64 on the first samples of the batch.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.engines import hessian
from bench.speed import jax_models

# JAX grabs 75% of GPU memory at start-up by default; torch shares the GPU in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

ENGINE = "jax_jit_vmap_jacfwd"
MISSING = "jax not installed (pip install 'jacbench[jax]')"
CHECK_SAMPLES = 256  # samples compared with torch's float64 Jacobian before timing
# max |J_jax - J_torch64| / max |J_torch64| allowed, per dtype
# max |J - J_ref| / max |J_ref| against torch's float64 vmap(jacrev): float32 rounding through the zoo's depths
# stays under 1e-5 (TOL32 in tests/test_engines.py, which checks it and says what it has seen), float64 rounding
# far under 1e-10 (TOL64 there); TF32 matmuls (10-bit mantissa) reach ~1e-3.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
TF32_TOLERANCE = 1e-2


def _jax():
    """The jax module, or None where it is not installed."""
    try:
        import jax
    except ImportError:
        return None
    return jax


def supports(model: nn.Module, device: torch.device | str, dtype: torch.dtype) -> str | None:
    """None if the JAX peer can run `model` on `device` in `dtype`, else the reason."""
    jax = _jax()
    if jax is None:
        return MISSING
    if dtype not in TOLERANCE:
        return f"the JAX peer runs float32 and float64 only, not {dtype}"
    if _jax_device(torch.device(device)) is None:
        return f"jax has no {torch.device(device).type} backend here (jax devices: {jax.devices()})"
    return jax_models.why_not(model)


def _jax_device(device: torch.device):
    """The JAX device matching a torch device type, or None."""
    platform = "gpu" if device.type == "cuda" else "cpu"
    try:
        return _jax().devices(platform)[0]
    except RuntimeError:
        return None


def _precision_context(dtype: torch.dtype):
    """64-bit JAX types inside the block for float64 (JAX is 32-bit by default)."""
    return _jax().enable_x64(True) if dtype == torch.float64 else contextlib.nullcontext()


def reference_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torch's float64 Jacobian (B, n_out, n_in) on the CPU, by `vmap(jacrev)`: the yardstick."""
    ref = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).requires_grad_(False)
    return torch.func.vmap(torch.func.jacrev(ref))(x.detach().to(device="cpu", dtype=torch.float64)).detach()


def relative_error(J: torch.Tensor, j_ref: torch.Tensor) -> float:
    """max |J - J_ref| / max |J_ref| (NaN in J gives NaN: never within a tolerance)."""
    scale = j_ref.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return float((J.detach().cpu().to(torch.float64) - j_ref).abs().max() / scale)


def check_against_torch(model: nn.Module, x: torch.Tensor, j_jax: torch.Tensor, dtype: torch.dtype) -> float:
    """Relative max error of `j_jax` against torch's float64 Jacobian; raises AssertionError beyond tolerance."""
    err = relative_error(j_jax, reference_jacobian(model, x))
    if not err <= TOLERANCE[dtype]:
        raise AssertionError(f"JAX Jacobian differs from torch's by {err:.3g} relative (tolerance {TOLERANCE[dtype]})")
    return err


def _compiled(model: nn.Module, x: torch.Tensor, transform: Callable, check: Callable) -> Callable[[], Any]:
    """jit(vmap(transform(f))) of the rebuilt MLP for `x`'s shape, compiled, checked by `check(x_first, out_first)`
    against torch, and the call to time (the whole batch, blocking until ready)."""
    jax = _jax()
    reason = supports(model, x.device, x.dtype)
    if reason is not None:
        raise ValueError(reason)
    device = _jax_device(x.device)
    with _precision_context(x.dtype):
        f, params = jax_models.to_jax(model, device)
        fn = jax.jit(jax.vmap(transform(f, argnums=1), in_axes=(None, 0)))
        xj = jax.device_put(x.detach().cpu().numpy(), device)
        first = fn(params, xj).block_until_ready()  # compiles for this shape
    n = min(CHECK_SAMPLES, x.shape[0])
    check(x[:n], torch.from_numpy(jax.device_get(first)[:n].copy()))

    def call():
        with _precision_context(x.dtype):
            return fn(params, xj).block_until_ready()

    return call


def prepare(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """Compile the JAX Jacobian for `x`'s shape, check it against torch, return the call to time.

    The returned callable computes J (B, n_out, n_in) for the whole batch and blocks until it is ready.
    """
    return _compiled(model, x, _jax().jacfwd, lambda xs, j: check_against_torch(model, xs, j, x.dtype))


def version() -> str:
    """'jax <version> (<backend>)' or 'jax not installed'."""
    jax = _jax()
    return "jax not installed" if jax is None else f"jax {jax.__version__} ({jax.default_backend()})"


HESSIAN_ENGINE = "jax_jit_vmap_hessian"
# max |H_jax - H_torch64| / max |H_torch64|: float32 rounding one derivative further than the Jacobian's
HESSIAN_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-10}


def reference_hessian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torch's float64 Hessians (B, n_out, n_in, n_in) on the CPU (bench.engines.hessian, reverse over reverse)."""
    ref = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).requires_grad_(False)
    return hessian(ref, x.detach().to(device="cpu", dtype=torch.float64), engine="vmap_jacrev_jacrev").detach()


def prepare_hessian(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """Compile `jax.jit(jax.vmap(jax.hessian(f)))` for `x`'s shape, check it against torch in float64, return the
    call to time (H (B, n_out, n_in, n_in) for the whole batch, blocking until ready)."""

    def check(xs: torch.Tensor, h: torch.Tensor) -> None:
        err = relative_error(h, reference_hessian(model, xs))
        if not err <= HESSIAN_TOLERANCE[x.dtype]:
            raise AssertionError(
                f"JAX Hessian differs from torch's by {err:.3g} relative ({HESSIAN_TOLERANCE[x.dtype]})"
            )

    return _compiled(model, x, _jax().hessian, check)
