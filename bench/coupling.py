"""The coupling check: does sample b's output depend on another sample's input?

For a model whose samples do not interact, the full Jacobian of the batched forward, (B, n_out, B, n_in), is
zero off the diagonal blocks, exactly (no arithmetic mixes the rows). Batch-sum engines rely on that: they
differentiate sum_b f(x_b) and read row b as J_b. A model that mixes samples breaks it silently: the first forum
post packed 8 collocation points into one 8-wide input vector, and BatchNorm in train mode normalizes with batch
statistics. `check_coupling` measures the largest cross-sample entry on a small batch; `require_batch_independent`
refuses batch-sum engines for a coupled model.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.functional import jacobian as autograd_jacobian

from bench.engines.base import UnsupportedEngine, model_name

CHECK_SAMPLES = 8  # enough to see coupling inside one packed row of the forum's 8-point network
PITFALLS = (
    "usual causes: several points packed into one input vector (the dense layers then mix them, as in the "
    "first forum post), or BatchNorm in train mode (call model.eval())"
)


@dataclass(frozen=True)
class CouplingReport:
    """Largest |dy_b / dx_c| over c != b (cross) and c == b (diagonal) on a small batch."""

    model: str
    batch: int  # samples in the check
    max_cross: float  # max |cross-sample block entry|
    max_diag: float  # max |diagonal block entry|
    tol: float  # coupled when max_cross > tol * max_diag (0: cross blocks must be exactly zero)

    @property
    def relative(self) -> float:
        """max_cross / max_diag (0 when both are 0)."""
        if self.max_cross == 0:
            return 0.0
        return self.max_cross / self.max_diag if self.max_diag > 0 else math.inf

    @property
    def coupled(self) -> bool:
        return not (self.relative <= self.tol)  # NaN (non-finite Jacobian) counts as coupled

    def message(self, engine: str) -> str:
        return (
            f"engine '{engine}' differentiates the sum over the batch, which is only valid when samples do not "
            f"interact, but model {self.model} mixes them: max |cross-sample Jacobian entry| = {self.max_cross:.3g} "
            f"({self.relative:.3g} x the largest per-sample entry) on {self.batch} samples; {PITFALLS}. "
            f"Fix the model, or use a per-sample engine (forward_tangents, vmap_jacrev, vmap_jacfwd, loop)."
        )


def full_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, n_out, B, n_in) Jacobian of the batched forward; the model's buffers (BatchNorm statistics) are restored."""
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        try:
            return autograd_jacobian(model, x, vectorize=True)
        except RuntimeError:  # an op without a batching rule: one backward per output entry instead
            return autograd_jacobian(model, x)
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved, strict=True):
                b.copy_(s)


def check_coupling(model: nn.Module, x_small: torch.Tensor, tol: float = 0.0) -> CouplingReport:
    """Full Jacobian of the batched forward on x_small (B, n_in); reports the largest cross-sample block entry."""
    J = full_jacobian(model, x_small.detach()).detach()
    if J.dim() != 4:
        raise UnsupportedEngine(
            f"model {model_name(model)} maps x {tuple(x_small.shape)} to outputs of shape {tuple(J.shape[:-2])}; "
            f"the coupling check needs (B, n_out)"
        )
    B = x_small.shape[0]
    eye = torch.eye(B, dtype=torch.bool, device=J.device)[:, None, :, None]  # (B, 1, B, 1): diagonal blocks
    absJ = J.abs()
    return CouplingReport(
        model=model_name(model),
        batch=B,
        max_cross=float(absJ.masked_fill(eye, 0).max()),
        max_diag=float(absJ.masked_fill(~eye, 0).max()),
        tol=tol,
    )


# Cache: model -> {(training flags of all modules): report}; weights do not decide coupling, structure does.
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def require_batch_independent(model: nn.Module, x: torch.Tensor, engine: str) -> CouplingReport | None:
    """Raise UnsupportedEngine if `model` mixes samples (checked on up to 8 rows of x, once per model and mode)."""
    n = min(x.shape[0], CHECK_SAMPLES)
    if n < 2:
        return None  # one sample cannot be mixed with another
    key = tuple(m.training for m in model.modules())
    cached = _CHECKED.setdefault(model, {})
    if key not in cached:
        cached[key] = check_coupling(model, x[:n])
    report = cached[key]
    if report.coupled:
        raise UnsupportedEngine(report.message(engine))
    return report
