"""Fidelity metrics: how well a surrogate's values and Jacobians match the truth, in physical units.

Every function here is pure: float64 arrays (numpy or torch, converted once) in physical (raw) units in,
numbers out. Shapes: x (B, n_in), y (B, n_out), J (B, n_out, n_in). A value that is undefined is NaN with
a reason, never a crash and never a fake 0. The headline Jacobian and Hessian errors are
``jacobian_error`` / ``hessian_error`` (defined in bench.fidelity.headline); the per-entry NRMSE, R², sign and
spurious-derivative metrics here are breakdowns beside it. ``fidelity_rows`` turns them into the rows of metrics.csv
(see results/README.md); ``denorm_check`` is the one function here that runs a model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import r2_score

# The headline (its definition: bench.fidelity.headline), public here: metrics.jacobian_error / hessian_error.
from bench.fidelity.headline import (  # noqa: F401
    DerivativeError,
    _f64,
    derivative_error,
    hessian_error,
    jacobian_error,
    summarize,
)
from bench.run.results import HESS_PER_OUTPUT, HESS_STATS, JAC_BY_EDGE, JAC_PER_OUTPUT, JAC_STATS

EDGE_BIN_WIDTH = 0.1  # bins of normalized distance to the box boundary: [0, .1), [.1, .2), ..., [.4, .5]
ZERO_REL_TOL = 1e-10  # a true Jacobian entry whose RMS is below this fraction of its row's RMS counts as ~0
SIGN_REL_TOL = 1e-3  # sign agreement skips |J_true| below this fraction of the RMS of its row
# A derivative is spurious where the truth is exactly 0 and |J_pred| exceeds this fraction of the RMS of its true
# row (the output's typical derivative): the model invents a sensitivity that the equations do not have.
SPURIOUS_REL_TOL = 1e-2


def _pair(true: Any, pred: Any, ndim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    t, p = _f64(true, f"{what}_true"), _f64(pred, f"{what}_pred")
    if t.ndim != ndim or t.shape != p.shape:
        raise ValueError(
            f"{what}_true {t.shape} and {what}_pred {p.shape} must have the same shape with {ndim} axes "
            f"({'(B, n_out)' if ndim == 2 else '(B, n_out, n_in)'})"
        )
    return t, p


# ---------------------------------------------------------------------------------------------- values
def r2_per_output(y_true: Any, y_pred: Any) -> tuple[np.ndarray, list[str]]:
    """R² of each output over the samples (scikit-learn's ``r2_score``, raw values per output).

    Returns ``(r2 (n_out,), reasons)``: an output that is constant over the samples has no variance to
    explain, so its R² is NaN (``force_finite=False``, not scikit-learn's default fake 1.0/0.0); a
    prediction with NaN/inf gives NaN. ``reasons[k]`` says why entry k is NaN ("" when it is defined).
    """
    t, p = _pair(y_true, y_pred, 2, "y")
    r2 = np.full(t.shape[1], np.nan)
    reasons = [""] * t.shape[1]
    for k in range(t.shape[1]):
        if not np.isfinite(p[:, k]).all():
            reasons[k] = "prediction has NaN/inf values"
        elif np.ptp(t[:, k]) == 0.0 or len(t) < 2:
            reasons[k] = "true output is constant over the samples: R² undefined"
        else:
            r2[k] = r2_score(t[:, k], p[:, k], force_finite=False)
    return r2, reasons


def rmse_per_output(y_true: Any, y_pred: Any) -> np.ndarray:
    """Root-mean-square error of each output over the samples: (n_out,)."""
    t, p = _pair(y_true, y_pred, 2, "y")
    return np.sqrt(np.mean((p - t) ** 2, axis=0))


# ------------------------------------------------------------------------------------------- Jacobians
def _rms(a: np.ndarray, axis: Any) -> np.ndarray:
    return np.sqrt(np.mean(a**2, axis=axis))


def entry_scales(J_true: Any) -> tuple[np.ndarray, list[list[str]]]:
    """The scale each Jacobian entry's error is divided by, (n_out, n_in), and a note per entry.

    The scale of entry (i, j) is the RMS of the true entry over the samples, sqrt(mean_s J_true[s, i, j]²).
    Unlike the standard deviation it is not zero for a constant entry (df2/dx3 = 5 has scale 5). An entry
    that is identically ~0 (RMS <= 1e-10 x the RMS of its row) falls back to the RMS of the whole true row
    i over samples and inputs; a row that is identically zero to the RMS of the whole true Jacobian; an
    all-zero Jacobian to 1 (the absolute error). Every fallback is named in the note.
    """
    t = _f64(J_true, "J_true")
    scale = _rms(t, axis=0)
    row = _rms(t, axis=(0, 2))
    whole = float(_rms(t, axis=None))
    notes = [[""] * t.shape[2] for _ in range(t.shape[1])]
    for i in range(t.shape[1]):
        for j in range(t.shape[2]):
            if scale[i, j] > ZERO_REL_TOL * row[i]:
                continue
            if row[i] > 0:
                scale[i, j], notes[i][j] = row[i], f"true entry ~0: scaled by the RMS of true row {i}"
            elif whole > 0:
                scale[i, j], notes[i][j] = whole, "true row ~0: scaled by the RMS of the whole true Jacobian"
            else:
                scale[i, j], notes[i][j] = 1.0, "true Jacobian is 0: absolute RMSE"
    return scale, notes


def jac_entry_rmse(J_true: Any, J_pred: Any) -> np.ndarray:
    """RMSE of each Jacobian entry over the samples: (n_out, n_in), physical units."""
    t, p = _pair(J_true, J_pred, 3, "J")
    return _rms(p - t, axis=0)


def jac_entry_nrmse(J_true: Any, J_pred: Any) -> tuple[np.ndarray, list[list[str]]]:
    """Per-entry RMSE divided by ``entry_scales`` (never zero): (n_out, n_in) and a note per entry."""
    scale, notes = entry_scales(J_true)
    return jac_entry_rmse(J_true, J_pred) / scale, notes


def jac_entry_r2(J_true: Any, J_pred: Any) -> tuple[np.ndarray, list[list[str]]]:
    """R² of each Jacobian entry over the samples (as JENN reports on partials): (n_out, n_in), notes.

    Undefined (NaN, with the reason) where the true entry is constant over the samples, e.g. df2/dx3 = 5:
    it has no variance to explain. ``jac_entry_nrmse`` is defined there.
    """
    t, p = _pair(J_true, J_pred, 3, "J")
    r2 = np.full(t.shape[1:], np.nan)
    notes = [[""] * t.shape[2] for _ in range(t.shape[1])]
    for i in range(t.shape[1]):
        for j in range(t.shape[2]):
            if not np.isfinite(p[:, i, j]).all():
                notes[i][j] = "model Jacobian has NaN/inf values"
            elif np.ptp(t[:, i, j]) == 0.0 or len(t) < 2:
                notes[i][j] = "true entry is constant over the samples (variance 0): R² undefined"
            else:
                r2[i, j] = r2_score(t[:, i, j], p[:, i, j], force_finite=False)
    return r2, notes


def jac_spurious(J_true: Any, J_pred: Any, rel_tol: float = SPURIOUS_REL_TOL) -> tuple[float, float, np.ndarray, str]:
    """Spurious derivatives: predictions on entries whose true value is exactly 0 (structural zeros).

    An entry J_true[s, i, j] == 0 counts as spurious when |J_pred[s, i, j]| > rel_tol x (RMS of true row i over
    samples and inputs; the whole Jacobian's RMS for an all-zero row, 1 for an all-zero Jacobian). Returns
    (fraction spurious over all zero entries, largest |J_pred| on a zero entry in units of its row's RMS,
    per-entry fraction (n_out, n_in) with NaN where the entry is never 0, note). NaN where no entry is 0.
    """
    t, p = _pair(J_true, J_pred, 3, "J")
    row = _rms(t, axis=(0, 2))
    whole = float(_rms(t, axis=None))
    scale = np.where(row > 0, row, whole if whole > 0 else 1.0)[None, :, None]
    zero = t == 0.0
    if not zero.any():
        nan_entries = np.full(t.shape[1:], np.nan)
        return float("nan"), float("nan"), nan_entries, "no true entry is exactly 0"
    if not np.isfinite(p[zero]).all():
        nan_entries = np.full(t.shape[1:], np.nan)
        return float("nan"), float("nan"), nan_entries, "model Jacobian has NaN/inf values"
    size = np.abs(p) / scale
    spurious = zero & (size > rel_tol)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_entry = spurious.sum(axis=0) / zero.sum(axis=0)
    per_entry = np.where(zero.any(axis=0), per_entry, np.nan)
    return float(spurious.sum() / zero.sum()), float(size[zero].max()), per_entry, ""


def jac_sign_agreement(J_true: Any, J_pred: Any, rel_tol: float = SIGN_REL_TOL) -> tuple[float, str]:
    """Fraction of Jacobian entries (over samples and (i, j)) whose predicted sign equals the true sign.

    An entry whose true value is near zero has no meaningful sign: entries with |J_true[s, i, j]| <=
    rel_tol x (RMS of true row i over samples and inputs) are excluded (relative to the row, so the
    tolerance does not depend on the output's units). A predicted exact 0 disagrees. NaN if nothing is left.
    """
    t, p = _pair(J_true, J_pred, 3, "J")
    tol = rel_tol * _rms(t, axis=(0, 2))[None, :, None]
    keep = np.abs(t) > tol
    if not keep.any():
        return float("nan"), "every true entry is ~0: no sign to compare"
    agree = np.sign(p[keep]) == np.sign(t[keep])
    return float(agree.mean()), ""


def edge_distance(x: Any, lower: Any, upper: Any) -> np.ndarray:
    """Normalized distance of each sample to the nearest face of the box, (B,) in [0, 0.5].

    The box [lower, upper] is mapped to [0, 1]^n_in; the distance is min_k min(u_k, 1 - u_k), clipped.
    """
    xs = _f64(x, "x")
    lo, hi = _f64(lower, "lower"), _f64(upper, "upper")
    if xs.ndim != 2 or lo.shape != (xs.shape[1],) or hi.shape != lo.shape:
        raise ValueError(f"x {xs.shape} must be (B, n_in) with lower {lo.shape} and upper {hi.shape} of (n_in,)")
    u = (xs - lo) / (hi - lo)
    return np.clip(np.minimum(u, 1.0 - u).min(axis=1), 0.0, 0.5)


def jac_error_by_edge(
    x: Any, lower: Any, upper: Any, J_true: Any, J_pred: Any, width: float = EDGE_BIN_WIDTH
) -> list[tuple[float, float, int, str]]:
    """Median headline Jacobian error (``jacobian_error``, scaled over the whole split) per bin of ``edge_distance``.

    Bins [0, w), [w, 2w), ... with the last one closed at 0.5. Returns one ``(upper edge, median error,
    samples in bin, note)`` per bin; an empty bin has NaN and says so.
    """
    ranges = _f64(upper, "upper") - _f64(lower, "lower")
    return errors_by_edge(x, lower, upper, jacobian_error(J_true, J_pred, ranges), width)


def errors_by_edge(
    x: Any, lower: Any, upper: Any, err: np.ndarray, width: float = EDGE_BIN_WIDTH
) -> list[tuple[float, float, int, str]]:
    """Median of per-sample errors err (B,) per bin of ``edge_distance``: (upper edge, median, count, note)."""
    d = edge_distance(x, lower, upper)
    if len(d) != len(err):
        raise ValueError(f"x has {len(d)} samples but the derivatives have {len(err)}")
    n_bins = round(0.5 / width)
    idx = np.minimum((d / width).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        edge = round((b + 1) * width, 12)
        if not m.any():
            out.append((edge, float("nan"), 0, "no samples in this bin"))
        else:
            out.append((edge, float(np.median(err[m])), int(m.sum()), ""))
    return out


# -------------------------------------------------------------------------------- de-normalization check
def denorm_check(physical_model: torch.nn.Module, x: torch.Tensor, model=None, scaler=None) -> float:
    """Max |J of the raw-in/raw-out wrapper - chain-rule J| over x (B, n_in), in float64.

    The wrapper's Jacobian is torch.func's ``vmap(jacrev)`` of ``physical_model`` on raw x; the chain-rule
    one is ``scaler.jacobian_to_physical`` of the normalized model's Jacobian at ``scaler.transform_x(x)``.
    ``model`` and ``scaler`` default to the wrapper's ``.model`` and ``.scaler``. Everything runs on a
    float64 copy, so the result measures the chain rule (expect ~1e-12 relative), not float32 rounding.
    """
    model = physical_model.model if model is None else model
    scaler = physical_model.scaler if scaler is None else scaler
    wrapper = copy.deepcopy(physical_model).to(torch.float64)
    inner = copy.deepcopy(model).to(torch.float64)
    x64 = x.detach().to(torch.float64)
    with torch.no_grad():  # torch.func transforms ignore an outer no_grad; this only keeps results detached
        J_wrap = torch.func.vmap(torch.func.jacrev(wrapper))(x64)
        J_norm = torch.func.vmap(torch.func.jacrev(inner))(scaler.transform_x(x64))
        J_chain = scaler.jacobian_to_physical(J_norm)
    return float((J_wrap - J_chain).abs().max())


# ---------------------------------------------------------------------------------------- metrics.csv
def _row(metric: str, value: float, output: str = "", input: str = "", bin: Any = "", error: str = "") -> dict:
    value = float(value)
    if np.isnan(value) and not error:
        error = "undefined"
    return {"metric": metric, "output": output, "input": input, "bin": bin, "value": value, "error": error}


def value_rows(y_true: Any, y_pred: Any, output_names: tuple[str, ...] | list[str]) -> list[dict]:
    """Fit metrics of one split as metrics.csv rows: R² and RMSE per output, and the lowest R²."""
    rows = []
    r2, why = r2_per_output(y_true, y_pred)
    rows += [_row("r2", r2[k], output=o, error=why[k]) for k, o in enumerate(output_names)]
    finite = r2[np.isfinite(r2)]
    r2_note = "" if len(finite) == len(r2) else "over outputs with a defined R² only"
    rows.append(_row("r2_min", finite.min() if len(finite) else np.nan, error=r2_note))
    rmse = rmse_per_output(y_true, y_pred)
    rows += [_row("rmse", rmse[k], output=o) for k, o in enumerate(output_names)]
    return rows


def unavailable_jacobian_rows(reason: str) -> list[dict]:
    """The Jacobian summary rows, NaN with ``reason``, for a set without reference derivatives (fit rows still run)."""
    return [_row(n, np.nan, error=reason) for n in JAC_STATS]


def headline_rows(res: DerivativeError, output_names: Sequence[str], input_names: Sequence[str]) -> list[dict]:
    """The headline's rows of one split: ``{jac,hess}_err_{rms,median,p90,max}``, per output ``*_out_err`` (RMS
    over samples) and ``*_out_scale`` (the output's typical range-scaled derivative, its own units), and for
    Jacobians ``jac_entry_err`` per entry (its squares over the inputs sum to the output's ``jac_out_err``²)."""
    pre = "jac" if res.order == 1 else "hess"
    names, per_output = (JAC_STATS, JAC_PER_OUTPUT) if res.order == 1 else (HESS_STATS, HESS_PER_OUTPUT)
    rows = [_row(n, v, error=res.note) for n, v in zip(names, res.summary().values(), strict=True)]
    out_rms = res.output_rms()
    for i, o in enumerate(output_names):
        rows.append(_row(per_output, out_rms[i], output=o, error=res.output_notes[i]))
        rows.append(_row(f"{pre}_out_scale", res.output_scale[i], output=o))
    if res.order == 1:
        rows += [
            _row("jac_entry_err", res.per_entry[i, j], output=o, input=n, error=res.output_notes[i])
            for i, o in enumerate(output_names)
            for j, n in enumerate(input_names)
        ]
    return rows


def fidelity_rows(
    x: Any,
    y_true: Any,
    y_pred: Any,
    J_true: Any,
    J_pred: Any,
    lower: Any,
    upper: Any,
    input_names: tuple[str, ...] | list[str],
    output_names: tuple[str, ...] | list[str],
    include_entry_r2: bool = False,
) -> list[dict]:
    """All per-split fidelity metrics as metrics.csv rows (metric, output, input, bin, value, error).

    Physical units: x (B, n_in), y (B, n_out), J (B, n_out, n_in). The runner adds the cell columns,
    ``split`` and ``status``. Metric names are those of results/README.md; ``include_entry_r2`` adds
    ``jac_entry_r2`` rows (NaN with the reason for constant true entries).
    """
    t, _ = _pair(J_true, J_pred, 3, "J")
    n_out, n_in = t.shape[1:]
    if len(output_names) != n_out or len(input_names) != n_in:
        raise ValueError(
            f"Jacobians are (B, {n_out}, {n_in}) but got {len(output_names)} output names {list(output_names)} "
            f"and {len(input_names)} input names {list(input_names)}"
        )
    rows = value_rows(y_true, y_pred, output_names)
    head = derivative_error(J_true, J_pred, _f64(upper, "upper") - _f64(lower, "lower"), order=1)
    rows += headline_rows(head, output_names, input_names)
    nrmse, notes = jac_entry_nrmse(J_true, J_pred)
    rows += [
        _row("jac_entry_nrmse", nrmse[i, j], output=o, input=n, error=notes[i][j])
        for i, o in enumerate(output_names)
        for j, n in enumerate(input_names)
    ]
    if include_entry_r2:
        er2, notes = jac_entry_r2(J_true, J_pred)
        rows += [
            _row("jac_entry_r2", er2[i, j], output=o, input=n, error=notes[i][j])
            for i, o in enumerate(output_names)
            for j, n in enumerate(input_names)
        ]
    sign, note = jac_sign_agreement(J_true, J_pred)
    rows.append(_row("jac_sign_agree", sign, error=note))
    frac, worst, per_entry, note = jac_spurious(J_true, J_pred)
    rows.append(_row("jac_spurious", frac, error=note))
    rows.append(_row("jac_spurious_max", worst, error=note))
    rows += [
        _row("jac_entry_spurious", per_entry[i, j], output=o, input=n)
        for i, o in enumerate(output_names)
        for j, n in enumerate(input_names)
        if np.isfinite(per_entry[i, j])
    ]
    for edge, med, _count, note in errors_by_edge(x, lower, upper, head.per_sample):
        rows.append(_row(JAC_BY_EDGE, med, bin=edge, error=note))
    return rows
