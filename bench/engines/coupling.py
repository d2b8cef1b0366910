"""The coupling check: does sample b's output depend on another sample's input?

For a model whose samples do not interact, the full Jacobian of the batched forward, (B, n_out, B, n_in), is
zero off the diagonal blocks, exactly (no arithmetic mixes the rows). Batch-sum engines rely on that: they
differentiate sum_b f(x_b) and read row b as J_b. A model that mixes samples breaks it silently: the first forum
post packed 8 collocation points into one 8-wide input vector, and BatchNorm in train mode normalizes with batch
statistics.

`require_batch_independent` (run by `bench.engines.jacobian` before every batch-sum call, on the very batch, or
chunk, being differentiated) checks **every ordered pair of rows** of that batch with one forward and 2 *
ceil(log2 B) reverse passes (`verify_batch_independent`): for each bit k of the row index, the rows whose bit k
is 1 (then 0) get random Gaussian output weights and the others 0; a reverse pass then gives rows outside the
weighted set exactly 0 unless some weighted row depends on them. Every pair (a, b) differs in some bit, so some
pass weights b and not a.

What is guaranteed: a batch-sum Jacobian is returned only when every cross-sample derivative d y_b / d x_a (a !=
b) of the batch it was computed on came out exactly zero in this check, which is precisely the condition for row
b of the batch-sum gradient to equal J_b; the verdict is never cached, so new weights (a trained mixing gate) or
new inputs (mixing that switches on only for some rows) are checked afresh. The random weights could hide a
coupling only by cancelling it exactly (probability 0 for Gaussian weights). What is not guaranteed:
independence on other inputs or other batches; with create_graph=True, the gradient of J with respect to the
parameters (a mixing gate at zero has no cross derivative but a parameter gradient of one: Sobolev training
through a batch-sum engine can take a wrong first step); a model whose behaviour changes between calls (the
check is one more call); and dependence that carries no derivative (values of other rows through .detach(),
integer indexing or a sort: y_b may then still depend on x_a, but J_b as the batched forward defines it is what
the engine returns). A non-finite derivative anywhere makes the check fail (0 * inf is NaN): such a batch is
refused, not trusted. Cost: about 2 log2(B) backward passes on top of the engine (B = 500: 18); per-sample
engines (auto's choices) need no check.

`check_coupling` (the full (B, n_out, B, n_in) Jacobian of a small batch) remains for reports that want the
largest single cross entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.functional import jacobian as autograd_jacobian

from bench.engines.base import UnsupportedEngine, model_name

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
        if math.isnan(self.max_cross):
            return (
                f"engine '{engine}' differentiates the sum over the batch, which is only valid when samples do not "
                f"interact; the check of model {self.model} on {self.batch} samples met a NaN/inf derivative, so "
                "independence could not be verified and the batch-sum Jacobian is refused. Use a per-sample engine "
                "(forward_tangents, vmap_jacrev, vmap_jacfwd, loop)."
            )
        return (
            f"engine '{engine}' differentiates the sum over the batch, which is only valid when samples do not "
            f"interact, but model {self.model} mixes them: cross-sample derivatives up to {self.max_cross:.3g} "
            f"({self.relative:.3g} x the per-sample scale) on {self.batch} samples; {PITFALLS}. "
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


def verify_batch_independent(model: nn.Module, x: torch.Tensor, seed: int = 0, order: int = 1) -> CouplingReport:
    """Check every ordered pair of rows of x (B, n_in) for cross-sample derivatives (see the module doc).

    max_cross: the largest |gradient| a row receives from the other rows' randomly weighted outputs (exactly 0
    when samples do not interact); max_diag: the largest |gradient| of the weighted rows themselves, for scale.

    order=2 checks the second derivatives a batch-sum Hessian relies on: each pass differentiates once more,
    along a random direction v (B, n_in), so row c gets sum_{a, b in S} w_b v_a d2 y_b / dx_a dx_c. For c outside
    the weighted set S that is zero unless some second derivative couples two different rows (by the symmetry
    of second derivatives every such term, whichever of a, b, c differ, reaches an unweighted row in some pass).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    B = x.shape[0]
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            y = model(xg)
            if y.dim() != 2 or y.shape[0] != B:
                raise UnsupportedEngine(
                    f"model {model_name(model)} maps x {tuple(x.shape)} to {tuple(y.shape)}; the coupling check "
                    "needs outputs (B, n_out)"
                )
            gen = torch.Generator().manual_seed(seed)
            w = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device=y.device, dtype=y.dtype)
            v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device=y.device, dtype=y.dtype)
            rows = torch.arange(B, device=y.device)
            max_cross = max_diag = 0.0
            passes = [(rows >> k) & 1 == bit for k in range(max(1, math.ceil(math.log2(B)))) for bit in (1, 0)]
            for n, weighted in enumerate(passes):
                keep = order == 2 or n < len(passes) - 1
                (g,) = torch.autograd.grad(
                    y, xg, grad_outputs=w * weighted[:, None], retain_graph=keep, create_graph=order == 2,
                    allow_unused=True,
                )  # fmt: skip
                if g is not None and order == 2:
                    (g,) = torch.autograd.grad(g, xg, grad_outputs=v, retain_graph=True, allow_unused=True)
                if g is None:  # the outputs do not depend on x at all
                    continue
                g = g.detach().abs()
                if bool((~weighted).any()):
                    cross = float(g[~weighted].max())  # torch's max propagates NaN (Python's max would drop it)
                    max_cross = cross if math.isnan(cross) else max(max_cross, cross)
                if bool(weighted.any()):
                    max_diag = max(max_diag, float(g[weighted].max()))
                if math.isnan(max_cross):
                    break  # counts as coupled: independence cannot be verified
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved, strict=True):
                b.copy_(s)
    return CouplingReport(model=model_name(model), batch=B, max_cross=max_cross, max_diag=max_diag, tol=0.0)


def require_batch_independent(model: nn.Module, x: torch.Tensor, engine: str, order: int = 1) -> CouplingReport | None:
    """Raise UnsupportedEngine unless no row of x depends on another (every pair checked, never cached).

    order=2: the second derivatives too (what a batch-sum Hessian needs; see verify_batch_independent).
    """
    if x.shape[0] < 2:
        return None  # one sample cannot be mixed with another
    report = verify_batch_independent(model, x, order=order)
    if report.coupled:
        raise UnsupportedEngine(report.message(engine))
    return report
