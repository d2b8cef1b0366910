"""Before an engine is timed, its Jacobian of the measured model and batch is checked against a float64 reference:
an engine that disagrees is recorded as ``mismatch`` and never timed (the JAX peer checks itself the same way)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.autograd.functional import jacobian

from bench.speed import jax_peer

VERIFY_ROWS = 64  # rows of each timed batch compared with the float64 reference, spread over the whole batch


def reference_rows(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The float64 reference J (B, n_out, n_in): torch.func vmap(jacrev) of a float64 CPU copy, or, for a model
    that torch.func cannot transform (data-dependent Python control flow), autograd one sample at a time."""
    try:
        return jax_peer.reference_jacobian(model, x)
    except RuntimeError:
        ref = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).requires_grad_(False)
        rows = x.detach().to(device="cpu", dtype=torch.float64)
        return torch.stack([jacobian(lambda v: ref(v[None])[0], r) for r in rows])


class Reference:
    """The float64 reference Jacobian (torch.func vmap(jacrev) of a float64 CPU copy; ``order=2``: the Hessian,
    reverse over reverse) on rows spread across one batch, computed once per (model, batch) and shared by every
    engine timed on it."""

    def __init__(self, model: nn.Module, x: torch.Tensor, tolerance: float, order: int = 1):
        B = x.shape[0]
        spread = torch.linspace(0, B - 1, min(VERIFY_ROWS, B)).round().long()
        ends = torch.cat([torch.arange(min(8, B)), torch.arange(max(B - 8, 0), B)])  # where batch tails go wrong
        self.rows = torch.cat([spread, ends]).unique()
        self.model, self.x, self.tolerance, self.order = model, x, tolerance, order
        self._J: torch.Tensor | None = None

    def mismatch(self, J: Any) -> str | None:
        """None when the engine's J (B, n_out, n_in), or H (B, n_out, n_in, n_in), agrees on the reference rows,
        else the reason."""
        what, shape = ("Jacobian", "(B, n_out, n_in)") if self.order == 1 else ("Hessian", "(B, n_out, n_in, n_in)")
        if not isinstance(J, torch.Tensor) or J.shape[0] != self.x.shape[0]:
            return f"the engine returned {type(J).__name__} {tuple(getattr(J, 'shape', ()))}, not {shape}"
        if self._J is None:
            rows = self.x[self.rows]
            ref = reference_rows if self.order == 1 else jax_peer.reference_hessian
            self._J = ref(self.model, rows)
        if J.shape[1:] != self._J.shape[1:]:
            return f"{what} shape {tuple(J.shape)} differs from the reference's (B, {tuple(self._J.shape[1:])})"
        err = jax_peer.relative_error(J[self.rows.to(J.device)], self._J)
        if not err <= self.tolerance:
            return (
                f"{what} differs from the float64 reference by {err:.3g} relative (max |Δ| / max |ref|, tolerance "
                f"{self.tolerance:g}) on {len(self.rows)} rows spread over the batch: not timed"
            )
        return None
