"""The equation sets' self-check: is every exact Jacobian really exact, batched, vmap-able and float32-safe?

Per set, on ``n`` seeded points strictly inside the box (float64):

- ``fd_rel_err``: torch.func Jacobian vs five-point central finite differences,
- ``hand_rel_err``: torch.func Jacobian vs the hand-derived one (NaN where there is none),
- ``hess_fd_rel_err``: torch.func Hessian vs five-point central differences of the exact Jacobian, and
  ``hess_hand_rel_err`` vs the hand-derived Hessian (NaN where there is none); the Hessian is symmetric,
- ``vmap``: evaluating under ``torch.func.vmap`` per sample gives the batched values, and forward mode
  (``vmap(jacfwd)``) agrees with reverse mode,
- ``f32_rel_err`` / ``float32``: values and Jacobian computed in float32 vs float64,
- finiteness on the box's corners (all of them up to 10 inputs, else 1024 seeded ones).

Relative errors are measured output by output in box-normalized units: entry (i, j) of J is multiplied by
the width of input j, and the worst deviation is divided by the largest such entry of output i over the
samples. That is scale-free in both inputs and outputs, and well defined where entries are exactly zero.
Hessian entries (i, j, k) are multiplied by both widths and divided by output i's largest such entry; an output
whose Hessian is identically zero (a linear output) is judged against its box-normalized Jacobian scale.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor

from equations.base import EquationSet
from equations.registry import domain_str, get, list_names
from equations.user import corners

# Five-point central differences, f'(x) ~ (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h: error = h^4 f^(5)/30
# (truncation) + ~1.5 eps |f| / h (rounding). A step of 1e-4 of each input's width gives truncation ~3e-18 for a
# function varying on the box's scale (~3e-10 for one varying 100x faster than that, beyond the hard generated
# family) and rounding ~1.5 * 2.2e-16 / 1e-4 = 3e-12 relative to the output's range: 1e-6 is a bound that
# rounding and truncation never reach and a wrong derivative (an O(1) error) cannot meet.
FD_STEP = 1e-4
FD_TOL = 1e-6
HAND_TOL = 1e-10  # two exact float64 computations of one Jacobian: differences are rounding only
# Hessian vs differences of the exact Jacobian: the same five-point rule one derivative up. Rounding grows to
# ~1.5 eps |J| / h relative to the Hessian's scale (|J w| / |H w w| ~ 1 on the box for the sets here, up to ~1e2
# for a nearly linear output): ~3e-10 at worst, well under 1e-6; a wrong second derivative is an O(1) error.
HESS_FD_TOL = 1e-6
SYMMETRY_TOL = 1e-12  # H[i, j, k] and H[i, k, j] are the same float64 numbers up to rounding
VMAP_TOL = 1e-12  # vmap and forward mode compute the same numbers up to rounding
# float32 eps is 1.2e-7; compositions amplify it, to below this on the generated sets (measured:
# results/measurements/README.md, "The equation sets in float32")
F32_TOL = 1e-4
INTERIOR = 1e-3  # samples keep this fraction of each width from the faces, so x +- h stays inside the box


def jacobian_rel_error(J: Tensor, J_ref: Tensor, widths: Tensor) -> float:
    """Worst output-wise relative deviation of J from J_ref (B, n_out, n_in), in box-normalized units."""
    diff = ((J - J_ref) * widths).abs().amax(dim=(0, 2))
    scale = (J_ref * widths).abs().amax(dim=(0, 2))
    return float((diff / torch.where(scale > 0, scale, torch.ones_like(scale))).max())


def hessian_rel_error(H: Tensor, H_ref: Tensor, widths: Tensor, J_ref: Tensor) -> float:
    """Worst output-wise deviation of H from H_ref (B, n_out, n_in, n_in), in box-normalized units.

    Entry (i, j, k) is multiplied by widths j and k; the worst deviation of output i is divided by output i's
    largest such entry of H_ref, or, where output i's Hessian is identically 0, by its largest box-normalized
    Jacobian entry (J_ref (B, n_out, n_in)), so a linear output is not judged in absolute units.
    """
    w2 = widths[:, None] * widths[None, :]
    diff = ((H - H_ref) * w2).abs().amax(dim=(0, 2, 3))
    scale = (H_ref * w2).abs().amax(dim=(0, 2, 3))
    j_scale = (J_ref * widths).abs().amax(dim=(0, 2))
    scale = torch.where(scale > 0, scale, torch.where(j_scale > 0, j_scale, torch.ones_like(j_scale)))
    return float((diff / scale).max())


def value_rel_error(y: Tensor, y_ref: Tensor) -> float:
    """Worst output-wise deviation of y from y_ref (B, n_out), relative to each output's largest |value|."""
    scale = y_ref.abs().amax(dim=0)
    return float(((y - y_ref).abs().amax(dim=0) / torch.where(scale > 0, scale, torch.ones_like(scale))).max())


def interior_samples(eq: EquationSet, n: int, seed: int, device: str = "cpu") -> Tensor:
    """n seeded uniform points inside the box, INTERIOR away from its faces: (n, n_in) float64."""
    gen = torch.Generator().manual_seed(seed)
    u = INTERIOR + (1 - 2 * INTERIOR) * torch.rand(n, eq.n_in, generator=gen, dtype=torch.float64)
    lo, hi = eq.bounds()
    return (lo + (hi - lo) * u).to(device)


def central_differences(eq: EquationSet, x: Tensor, step: float = FD_STEP, fn=None) -> Tensor:
    """Five-point central differences, step ``step`` x each input's width, of ``fn`` (default: the set itself).

    fn maps (N, n_in) to (N, *shape); the result is (B, *shape, n_in), the derivative along input j last:
    J (B, n_out, n_in) for the set's values, H (B, n_out, n_in, n_in) for ``eq.jacobian``.
    """
    fn = eq if fn is None else fn
    lo, hi = eq.bounds(x.dtype, x.device)
    h = step * (hi - lo)  # (n_in,)
    steps = torch.diag(h)  # (n_in, n_in): row j steps input j
    B, n = x.shape

    def f(k: int) -> Tensor:  # fn(x + k h_j e_j) for every j: (B, n_in, *shape)
        out = fn((x[:, None, :] + k * steps).reshape(B * n, n))
        return out.reshape(B, n, *out.shape[1:])

    d = (f(-2) - 8 * f(-1) + 8 * f(1) - f(2)) / (12 * h.reshape(n, *[1] * (x.dim() + f(0).dim() - 4)))
    return d.movedim(1, -1)


def check(eq: EquationSet, n: int = 64, seed: int = 0, device: str = "cpu") -> dict:
    """One row of the self-check table for ``eq`` (see the module docstring)."""
    row = {
        "name": eq.name,
        "dims": f"{eq.n_in}x{eq.n_out}",
        "domain": domain_str(eq),
        "fd_rel_err": math.nan,
        "hand_rel_err": math.nan,
        "hess_fd_rel_err": math.nan,
        "hess_hand_rel_err": math.nan,
        "vmap": False,
        "f32_rel_err": math.nan,
        "float32": False,
        "status": "FAIL",
        "error": "",
    }
    if hasattr(eq, "draw"):  # a data set (equations.datafile): nothing to differentiate, its file was read and checked
        row.update(status="ok", error=f"data set, {eq.n_rows} rows: no formula to check; the file's values and "
                   "derivatives were checked on reading (finite, inside its domain)")  # fmt: skip
        return row
    try:
        problems = _run_checks(eq, n, seed, device, row)
    except Exception as err:  # a set that crashes is a FAIL row with the reason, not a crashed self-check
        problems = [f"{type(err).__name__}: {err}"]
    row["status"] = "FAIL" if problems else "ok"
    row["error"] = "; ".join(problems)
    return row


def _run_checks(eq: EquationSet, n: int, seed: int, device: str, row: dict) -> list[str]:
    problems = []
    box = corners(eq, seed, device)
    if not bool(torch.isfinite(eq(box)).all()):
        problems.append("non-finite values on the box's corners")
    x = interior_samples(eq, n, seed, device)
    lo, hi = eq.bounds(device=device)
    widths = hi - lo  # (n_in,)
    y, J = eq(x), eq.jacobian(x)
    if not bool(torch.isfinite(J).all()):
        problems.append("non-finite Jacobian inside the box")

    row["fd_rel_err"] = jacobian_rel_error(central_differences(eq, x), J, widths)
    if not row["fd_rel_err"] <= FD_TOL:
        problems.append(f"Jacobian vs finite differences {row['fd_rel_err']:.2e} > {FD_TOL:g}")
    if eq.jacobian_fn is not None:
        row["hand_rel_err"] = jacobian_rel_error(eq.jacobian_fn(x), J, widths)
        if not row["hand_rel_err"] <= HAND_TOL:
            problems.append(f"Jacobian vs hand-derived {row['hand_rel_err']:.2e} > {HAND_TOL:g}")

    problems += _hessian_checks(eq, x, J, widths, row)

    y_vmap = torch.func.vmap(eq)(x)
    J_fwd = torch.func.vmap(torch.func.jacfwd(eq))(x)
    row["vmap"] = value_rel_error(y_vmap, y) <= VMAP_TOL and jacobian_rel_error(J_fwd, J, widths) <= VMAP_TOL
    if not row["vmap"]:
        problems.append("vmap values or forward-mode Jacobian disagree with the batched reverse-mode ones")

    x32 = x.to(torch.float32)
    y32, J32 = eq(x32), torch.func.vmap(torch.func.jacrev(eq))(x32)
    if y32.dtype != torch.float32 or J32.dtype != torch.float32:
        problems.append(f"float32 input gave {y32.dtype} values and a {J32.dtype} Jacobian")
    row["f32_rel_err"] = max(value_rel_error(y32.double(), y), jacobian_rel_error(J32.double(), J, widths))
    row["float32"] = y32.dtype == torch.float32 and row["f32_rel_err"] <= F32_TOL
    if not row["float32"]:
        problems.append(f"float32 vs float64 {row['f32_rel_err']:.2e} > {F32_TOL:g}")
    return problems


def _hessian_checks(eq: EquationSet, x: Tensor, J: Tensor, widths: Tensor, row: dict) -> list[str]:
    """The exact Hessian against differences of the exact Jacobian, its symmetry, and the hand-derived one."""
    problems = []
    H = eq.hessian(x)
    if tuple(H.shape) != (len(x), eq.n_out, eq.n_in, eq.n_in) or not bool(torch.isfinite(H).all()):
        return [f"Hessian of shape {tuple(H.shape)} or non-finite inside the box"]
    if hessian_rel_error(H.transpose(-1, -2), H, widths, J) > SYMMETRY_TOL:
        problems.append("Hessian is not symmetric in its two input axes")
    row["hess_fd_rel_err"] = hessian_rel_error(central_differences(eq, x, fn=eq.jacobian), H, widths, J)
    if not row["hess_fd_rel_err"] <= HESS_FD_TOL:
        problems.append(f"Hessian vs finite differences of the Jacobian {row['hess_fd_rel_err']:.2e} > {HESS_FD_TOL:g}")
    if eq.hessian_fn is not None:
        row["hess_hand_rel_err"] = hessian_rel_error(eq.hessian_fn(x), H, widths, J)
        if not row["hess_hand_rel_err"] <= HAND_TOL:
            problems.append(f"Hessian vs hand-derived {row['hess_hand_rel_err']:.2e} > {HAND_TOL:g}")
    return problems


def selfcheck(pattern: str = "*", n: int = 64, seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """Check every set matching ``pattern``: one row each (name, dims, domain, errors, vmap, float32, status)."""
    rows = []
    for name in list_names(pattern):
        row = check(get(name), n=n, seed=seed, device=device)
        rows.append({**row, "name": name})  # the name as listed ("file:my_eq.py"), which get() accepts
    return pd.DataFrame(rows)
