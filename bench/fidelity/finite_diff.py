"""Central differences in float64, for surrogates whose derivatives come from their own API (the peers).

    central_jacobian(f, x, h): f x (B, n_in) -> (B, n_out...); J[..., k] = (f(x + h_k e_k) - f(x - h_k e_k)) / 2 h_k
    fd_check(values, jacobian, x, h): (max_b ||J_api - J_fd||_F / the split's typical ||J_fd||_F, its tolerance)

Error budget, float64: truncation ~ h^2 |f'''|, rounding ~ 1e-16 |f| / h. With h = 1e-6 of each input's range
(Jacobian check) both stay below ~1e-9 of the Jacobian's scale for smooth networks on standardized inputs;
with h = 1e-4 (Hessians from Jacobians) below ~1e-7. An output with a large offset over its variation
(absolute pressure: 101325 Pa +- 0.1 Pa) rounds at eps |f| / h no matter how exact its Jacobian is, so the
check's tolerance is FD_CHECK_TOL plus that rounding bound (ROUNDING x eps x max |f| x sqrt(n_out n_in) / min h,
relative to the Jacobian's scale).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

JAC_STEP = 1e-6  # of each input's range: the check of an API Jacobian against its own values
HESS_STEP = 1e-4  # of each input's range: Hessians as central differences of API Jacobians
# The check tries these steps (of each input's range) and keeps the one that agrees best: a model whose values carry
# more round-off than eps |f| (kriging's ill-conditioned correlation solve: results/measurements/README.md, "Kriging
# against its own differences") needs a larger step than 1e-6, and a Jacobian that is wrong by more than the
# tolerance disagrees at every step.
CHECK_STEPS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
FD_CHECK_TOL = 1e-5  # the API Jacobian must match central differences of the values to this (relative) ...
ROUNDING = 10.0  # ... plus this many times the differences' rounding bound


def central_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x (B, n_in), h (n_in,) -> (B, *f's trailing shape, n_in): d f / d x_k by central differences."""
    x = np.asarray(x, dtype=np.float64)
    B, n_in = x.shape
    h = np.asarray(h, dtype=np.float64)
    steps = np.eye(n_in) * h  # row k is h_k e_k
    # every shifted copy in one call (2 n_in B points): a peer's API pays its per-call cost once, not 2 n_in times
    shifted = np.concatenate([x[None] + steps[:, None, :], x[None] - steps[:, None, :]]).reshape(2 * n_in * B, n_in)
    out = np.asarray(f(shifted))
    out = out.reshape(2, n_in, B, *out.shape[1:])
    diffs = (out[0] - out[1]) / (2.0 * h).reshape(n_in, *([1] * (out.ndim - 2)))  # (n_in, B, ...)
    return np.moveaxis(diffs, 0, -1)


def fd_check(
    values: Callable[[np.ndarray], np.ndarray],
    jac: np.ndarray,
    x: np.ndarray,
    h: np.ndarray,
    tol: float = FD_CHECK_TOL,
) -> tuple[float, float]:
    """(max over samples of ||J_api - J_fd||_F over the median ||J_fd||_F (1 where that is 0), the tolerance it
    must stay below: ``tol`` (FD_CHECK_TOL, or a peer's own) plus the central differences' rounding bound on the
    same scale). x (B, n_in)."""
    fd = central_jacobian(values, x, h)
    err = np.linalg.norm((np.asarray(jac) - fd).reshape(len(x), -1), axis=1)
    scale = float(np.median(np.linalg.norm(fd.reshape(len(x), -1), axis=1))) or 1.0
    y = np.abs(values(np.asarray(x, dtype=np.float64))).max()
    rounding = ROUNDING * np.finfo(np.float64).eps * y * np.sqrt(fd[0].size) / float(np.min(h))
    return float(err.max() / scale), tol + float(rounding / scale)


def fd_check_steps(
    values: Callable[[np.ndarray], np.ndarray],
    jac: np.ndarray,
    x: np.ndarray,
    widths: np.ndarray,
    tol: float = FD_CHECK_TOL,
) -> tuple[float, float, float]:
    """``fd_check`` at each step of CHECK_STEPS (fractions of ``widths``, each input's range): (error, tolerance,
    step) of the step whose error is smallest against its own tolerance. Passes when error <= tolerance."""
    best = None
    for step in CHECK_STEPS:
        err, bound = fd_check(values, jac, x, step * np.asarray(widths, dtype=np.float64), tol)
        if best is None or err / bound < best[0] / best[1]:
            best = (err, bound, step)
    return best


def central_hessian(jacobian: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x (B, n_in) -> H (B, n_out, n_in, n_in) from a Jacobian function (B, n_out, n_in), symmetrized."""
    H = central_jacobian(jacobian, x, h)
    return 0.5 * (H + np.swapaxes(H, -1, -2))
