"""The headline derivative error: unit-invariant, every output weighing the same, nothing floored.

Every headline number in jacbench (tables, figures, ranking, ``compare``, ``evaluate``) comes from the two public
functions here, ``jacobian_error`` and ``hessian_error``, re-exported by ``bench.fidelity.metrics``.

Definition (first derivatives; shapes J (B, n_out, n_in), r (n_in,) the widths of the input box):

1. Range-scaled sensitivities S[s, i, j] = J[s, i, j] x r_j: the change of output i across input j's whole range,
   in output i's units. Rescaling input j (and its box with it) leaves S unchanged.
2. Each output's typical gradient over the samples: sigma_i = sqrt(mean_s ||S_true[s, i, :]||²).
3. Per sample and output: e[s, i] = ||S_pred[s, i, :] - S_true[s, i, :]|| / sigma_i. Dividing by the output's
   typical gradient, not the sample's own, keeps a sample whose gradient is ~0 honest (a constant offset scores
   the same everywhere) without a floor; dividing output by output makes every output weigh the same whatever
   its units (rescaling output i scales both sides).
4. Per sample: err[s] = sqrt(mean_i e[s, i]²), the outputs' squares pooled.

The headline of a split is the RMS over samples of err, printed beside its median, p90 and max. Pooling squares
makes it exact: RMS_s err = sqrt(mean_i RMS_s(e[:, i])²), so a prediction of 0 or of 2 x J_true scores exactly
1 (100%) on any set, zeroing one of n outputs scores sqrt(1/n) whichever output it is, and the exact Jacobian 0.
Second derivatives: the same, output by output, with H[s, i, j, k] scaled by r_j r_k and the Frobenius norm
over (j, k).

An output whose true derivatives are identically 0 over the samples (sigma_i = 0: a constant output, or a linear
one's Hessian) has no scale to be relative to: its per-output error is NaN with the reason (its absolute
range-scaled RMS error in the note), and the per-sample error pools the other outputs, saying so. Where no output
has a scale, the headline is NaN with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _f64(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one sample")
    return arr


@dataclass(frozen=True)
class DerivativeError:
    """The headline and its breakdowns for one split; ``order`` 1 (Jacobians) or 2 (Hessians).

    per_sample (B,): the headline's per-sample errors (the outputs with a scale pooled).
    per_output (B, n_out): e[s, i]; a column of NaN for an output without a scale.
    per_entry (n_out, n_in) or (n_out, n_in, n_in): RMS over samples of the entry's range-scaled error / sigma_i;
        its squares summed over the inputs give per-output RMS², so it says which entries the error comes from.
    output_scale (n_out,): sigma_i, the output's typical range-scaled gradient (curvature), in its own units.
    output_notes: why an output's error is NaN ("" where defined); note: what the per-sample error left out.
    """

    order: int
    per_sample: np.ndarray
    per_output: np.ndarray
    per_entry: np.ndarray
    output_scale: np.ndarray
    output_notes: list[str]
    note: str

    def summary(self) -> dict[str, float]:
        """rms (the headline), median, p90 and max of the per-sample errors; NaN/inf where they are."""
        return summarize(self.per_sample)

    def output_rms(self) -> np.ndarray:
        """(n_out,): each output's RMS over samples of e[s, i] (1 = as wrong as predicting 0); NaN without scale."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.mean(self.per_output**2, axis=0))


def summarize(err: np.ndarray) -> dict[str, float]:
    """rms, median, p90 and max over samples of per-sample errors (B,). Non-finite errors propagate (a NaN/inf
    prediction makes every statistic non-finite instead of vanishing from it)."""
    if not np.isfinite(err).all():
        bad = float("nan") if np.isnan(err).any() else float("inf")
        return {"rms": bad, "median": bad, "p90": bad, "max": bad}
    return {
        "rms": float(np.sqrt(np.mean(err**2))),
        "median": float(np.median(err)),
        "p90": float(np.percentile(err, 90)),
        "max": float(np.max(err)),
    }


def _ranges(input_ranges: Any, n_in: int) -> np.ndarray:
    r = _f64(input_ranges, "input_ranges").reshape(-1)
    if r.shape != (n_in,):
        raise ValueError(
            f"input_ranges has {r.size} entries but the derivatives have {n_in} inputs: pass the (n_in,) widths "
            "of the input box, upper - lower"
        )
    if not (np.isfinite(r).all() and (r > 0).all()):
        raise ValueError(
            f"input_ranges must be finite and > 0 (the widths upper - lower of the input box), got {r.tolist()}"
        )
    return r


def derivative_error(D_true: Any, D_pred: Any, input_ranges: Any, order: int) -> DerivativeError:
    """The headline and its breakdowns for derivatives of ``order`` 1 (B, n_out, n_in) or 2 (B, n_out, n_in, n_in)."""
    what = "J" if order == 1 else "H"
    t, p = _f64(D_true, f"{what}_true"), _f64(D_pred, f"{what}_pred")
    shape = "(B, n_out, n_in)" if order == 1 else "(B, n_out, n_in, n_in)"
    if t.ndim != order + 2 or t.shape != p.shape or (order == 2 and t.shape[2] != t.shape[3]):
        raise ValueError(f"{what}_true {t.shape} and {what}_pred {p.shape} must both be {shape}")
    if not np.isfinite(t).all():
        bad = np.argwhere(~np.isfinite(t))[0]
        raise ValueError(
            f"{what}_true has NaN/inf values (first at index {tuple(int(i) for i in bad)}): the reference "
            "derivatives must be finite; drop those samples or fix the reference"
        )
    r = _ranges(input_ranges, t.shape[2])
    scale = r if order == 1 else r[:, None] * r[None, :]
    B, n_out = t.shape[:2]
    st = (t * scale).reshape(B, n_out, -1)  # range-scaled, entries flattened: (B, n_out, n_in^order)
    diff = (p * scale).reshape(B, n_out, -1) - st
    sigma = np.sqrt(np.mean(np.sum(st**2, axis=2), axis=0))  # (n_out,)
    has = sigma > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_output = np.linalg.norm(diff, axis=2) / np.where(has, sigma, np.nan)[None, :]
        per_entry = np.sqrt(np.mean(diff**2, axis=0)) / np.where(has, sigma, np.nan)[:, None]
    name = "derivatives" if order == 1 else "second derivatives"
    notes = [""] * n_out
    for i in np.flatnonzero(~has):
        abs_err = float(np.sqrt(np.mean(np.sum(diff[:, i] ** 2, axis=1))))
        notes[i] = (
            f"true {name} of output {i} are identically 0 over the samples: no scale to be relative to "
            f"(absolute range-scaled RMS error {abs_err:.3g})"
        )
    note = ""
    if not has.any():
        per_sample = np.full(B, np.nan)
        note = f"every output's true {name} are identically 0 over the samples: no scale to be relative to"
    else:
        per_sample = np.sqrt(np.mean(per_output[:, has] ** 2, axis=1))
        if not has.all():
            left = ", ".join(str(i) for i in np.flatnonzero(~has))
            note = f"over the outputs with non-zero true {name} only (left out: output {left})"
    bad = ~np.isfinite(p.reshape(B, -1)).all(axis=1)
    if bad.any():  # a NaN/inf prediction never vanishes, not even on an output left out for want of a scale
        per_sample = np.where(bad, np.nan, per_sample)
        note = "; ".join(filter(None, [f"model {what} has NaN/inf values at {int(bad.sum())} of {B} samples", note]))
    return DerivativeError(order, per_sample, per_output, per_entry.reshape(t.shape[1:]), sigma, notes, note)


def jacobian_error(J_true: Any, J_pred: Any, input_ranges: Any) -> np.ndarray:
    """Per-sample headline Jacobian errors (B,): see the module docstring for the definition.

    J_true, J_pred: (B, n_out, n_in) in physical units, numpy or torch (float64 inside); input_ranges: (n_in,)
    widths of the input box (upper - lower). The split's headline is the RMS of the result (``summarize``);
    ``derivative_error(..., order=1)`` gives the per-output and per-entry breakdowns.
    """
    return derivative_error(J_true, J_pred, input_ranges, 1).per_sample


def hessian_error(H_true: Any, H_pred: Any, input_ranges: Any) -> np.ndarray:
    """Per-sample headline Hessian errors (B,): H (B, n_out, n_in, n_in) scaled by r_j r_k, output by output."""
    return derivative_error(H_true, H_pred, input_ranges, 2).per_sample
