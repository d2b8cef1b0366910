"""Second-derivative fidelity: how well a surrogate's Hessians and Laplacians match the truth, in physical units.

Pure functions like `bench.fidelity.metrics`, whose rules they reuse one derivative up. Shapes: x (B, n_in),
H (B, n_out, n_in, n_in) symmetric in its last two axes, L (B, n_out) = trace of H per output.

- the headline ``hess_err_*``: ``bench.fidelity.headline.hessian_error`` (H scaled by r_j r_k, output by output,
  each output's error relative to its typical range-scaled curvature, the outputs' squares pooled);
- ``hess_entry_nrmse``: per entry (i, j <= k) RMSE over samples divided by the RMS of the true entry, with the
  Jacobian entries' fallbacks (`metrics.jac_entry_nrmse`: a structurally zero entry by its output's RMS curvature).
- ``lap_nrmse``: per output RMSE of the Laplacian divided by the RMS of the true Laplacian (its output's RMS
  Hessian entry where the true Laplacian is ~0, as for a harmonic output; 1 where the output has no curvature).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.fidelity.headline import derivative_error
from bench.fidelity.metrics import ZERO_REL_TOL, _f64, _row, errors_by_edge, headline_rows, jac_entry_nrmse
from bench.run.results import HESS_BY_EDGE


def _pair(H_true: Any, H_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _f64(H_true, "H_true"), _f64(H_pred, "H_pred")
    if t.ndim != 4 or t.shape != p.shape or t.shape[2] != t.shape[3]:
        raise ValueError(f"H_true {t.shape} and H_pred {p.shape} must both be (B, n_out, n_in, n_in)")
    return t, p


def _flat(H: np.ndarray) -> np.ndarray:
    """(B, n_out, n_in, n_in) -> (B, n_out, n_in * n_in): Frobenius norms and entry rules are the Jacobian's."""
    return H.reshape(*H.shape[:2], -1)


def hess_entry_nrmse(H_true: Any, H_pred: Any) -> tuple[np.ndarray, list[list[str]]]:
    """RMSE of each entry over the samples / its scale: (n_out, n_in, n_in) and a note per (i, j * n_in + k)."""
    t, p = _pair(H_true, H_pred)
    nrmse, notes = jac_entry_nrmse(_flat(t), _flat(p))
    notes = [[n.replace("Jacobian", "Hessian") for n in row] for row in notes]  # the entry rules' words, for H
    return nrmse.reshape(t.shape[1:]), notes


def lap_nrmse(H_true: Any, L_pred: Any) -> tuple[np.ndarray, list[str]]:
    """Per output RMSE of the predicted Laplacian L_pred (B, n_out) against the trace of H_true, normalized."""
    t = _f64(H_true, "H_true")
    lp = _f64(L_pred, "L_pred")
    lt = np.trace(t, axis1=2, axis2=3)
    if lp.shape != lt.shape:
        raise ValueError(f"L_pred {lp.shape} must be (B, n_out) = {lt.shape}")
    rmse = np.sqrt(np.mean((lp - lt) ** 2, axis=0))
    scale = np.sqrt(np.mean(lt**2, axis=0))
    entry = np.sqrt(np.mean(t**2, axis=(0, 2, 3)))
    notes = [""] * len(scale)
    for i in range(len(scale)):
        if scale[i] > ZERO_REL_TOL * entry[i] and scale[i] > 0:
            continue
        if entry[i] > 0:
            scale[i], notes[i] = entry[i], "true Laplacian ~0: scaled by the RMS of the output's true Hessian entries"
        else:
            scale[i], notes[i] = 1.0, "output has no curvature: absolute RMSE"
    return rmse / scale, notes


def pair_names(input_names: list[str] | tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(j, k, "xj,xk") for every pair j <= k: the ``input`` column of a Hessian entry's row."""
    n = len(input_names)
    return [(j, k, f"{input_names[j]},{input_names[k]}") for j in range(n) for k in range(j, n)]


def hessian_rows(
    x: Any,
    H_true: Any,
    H_pred: Any,
    L_pred: Any,
    lower: Any,
    upper: Any,
    input_names: tuple[str, ...] | list[str],
    output_names: tuple[str, ...] | list[str],
) -> list[dict]:
    """Second-derivative metrics as metrics.csv rows (metric, output, input, bin, value, error), physical units."""
    t, _ = _pair(H_true, H_pred)
    if len(output_names) != t.shape[1] or len(input_names) != t.shape[2]:
        raise ValueError(f"Hessians are {t.shape} but got outputs {list(output_names)} and inputs {list(input_names)}")
    rows = []
    head = derivative_error(H_true, H_pred, _f64(upper, "upper") - _f64(lower, "lower"), order=2)
    rows += headline_rows(head, output_names, input_names)
    nrmse, notes = hess_entry_nrmse(H_true, H_pred)
    n = len(input_names)
    for i, o in enumerate(output_names):
        for j, k, pair in pair_names(input_names):
            rows.append(_row("hess_entry_nrmse", nrmse[i, j, k], output=o, input=pair, error=notes[i][j * n + k]))
    lap, lap_notes = lap_nrmse(H_true, L_pred)
    rows += [_row("lap_nrmse", lap[i], output=o, error=lap_notes[i]) for i, o in enumerate(output_names)]
    for edge, med, _count, note in errors_by_edge(x, lower, upper, head.per_sample):
        rows.append(_row(HESS_BY_EDGE, med, bin=edge, error=note))
    return rows
