"""Central differences in float64, for surrogates whose derivatives come from their own API (the peers).

    central_jacobian(f, x, h): f x (B, n_in) -> (B, n_out...); J[..., k] = (f(x + h_k e_k) - f(x - h_k e_k)) / 2 h_k
    fd_check(values, jacobian, x, h): max_b ||J_api - J_fd||_F / the split's typical ||J_fd||_F

Error budget, float64: truncation ~ h^2 |f'''|, rounding ~ 1e-16 |f| / h. With h = 1e-6 of each input's range
(Jacobian check) both stay below ~1e-9 of the Jacobian's scale for smooth networks on standardized inputs;
with h = 1e-4 (Hessians from Jacobians) below ~1e-7.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

JAC_STEP = 1e-6  # of each input's range: the check of an API Jacobian against its own values
HESS_STEP = 1e-4  # of each input's range: Hessians as central differences of API Jacobians
FD_CHECK_TOL = 1e-5  # the API Jacobian must match central differences of the values to this (relative)


def central_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x (B, n_in), h (n_in,) -> (B, *f's trailing shape, n_in): d f / d x_k by central differences."""
    x = np.asarray(x, dtype=np.float64)
    cols = []
    for k in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, k] = h[k]
        cols.append((f(x + step) - f(x - step)) / (2.0 * h[k]))
    return np.stack(cols, axis=-1)


def fd_check(values: Callable[[np.ndarray], np.ndarray], jac: np.ndarray, x: np.ndarray, h: np.ndarray) -> float:
    """max over samples of ||J_api - J_fd||_F over the median ||J_fd||_F (1 where that is 0): x (B, n_in)."""
    fd = central_jacobian(values, x, h)
    err = np.linalg.norm((np.asarray(jac) - fd).reshape(len(x), -1), axis=1)
    scale = float(np.median(np.linalg.norm(fd.reshape(len(x), -1), axis=1))) or 1.0
    return float(err.max() / scale)


def central_hessian(jacobian: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x (B, n_in) -> H (B, n_out, n_in, n_in) from a Jacobian function (B, n_out, n_in), symmetrized."""
    H = central_jacobian(jacobian, x, h)
    return 0.5 * (H + np.swapaxes(H, -1, -2))
