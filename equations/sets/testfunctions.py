"""Gradient fields and a dynamical system whose Jacobians have a known structure.

- ``styblinski_tang_grad``: diagonal Jacobian (a separable function's Hessian).
- ``rosenbrock_grad``: symmetric tridiagonal Jacobian (a chained function's Hessian).
- ``lorenz96`` (N = 4) and ``lorenz96_8`` (N = 8): the right-hand side of the Lorenz-96 system. With N = 4
  every row of the Jacobian is structurally full (the stencil i-2, i-1, i, i+1 covers all four indices);
  with N = 8 each row has 4 nonzeros out of 8, a genuinely sparse Jacobian.
"""

from __future__ import annotations

import torch
from torch import Tensor

from equations.base import EquationSet
from equations.sets._common import columns, hessian_from_entries, jacobian_from_rows, stack_outputs


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i + 1}" for i in range(n))


# --- Styblinski-Tang: f(x) = 1/2 sum_i (x_i^4 - 16 x_i^2 + 5 x_i) --------------------------------------------


def styblinski_tang_grad_fn(x: Tensor) -> Tensor:
    """x: (..., n) -> grad f: (..., n), g_i = 2 x_i^3 - 16 x_i + 2.5 (elementwise, so any n works)."""
    return 2 * x**3 - 16 * x + 2.5


def styblinski_tang_hessian(x: Tensor) -> Tensor:
    """Hand-derived: x (..., n) -> diag(6 x_i^2 - 16): (..., n, n)."""
    return torch.diag_embed(6 * x**2 - 16)


def styblinski_tang_third(x: Tensor) -> Tensor:
    """Hand-derived second derivatives of the gradient: d^2 g_i / dx_i^2 = 12 x_i, all else 0: (..., n, n, n)."""
    n = x.shape[-1]
    return hessian_from_entries(n, n, {(i, i, i): 12 * x[..., i] for i in range(n)}, like=x[..., 0])


STYBLINSKI_TANG_GRAD = EquationSet(
    name="styblinski_tang_grad",
    fn=styblinski_tang_grad_fn,
    lower=(-5.0,) * 4,
    upper=(5.0,) * 4,
    input_names=_names("x", 4),
    output_names=_names("g", 4),
    doc=(
        "Gradient of 4-D Styblinski-Tang: a diagonal Jacobian. f(x) = 1/2 sum_i (x_i^4 - 16 x_i^2 + 5 x_i) on "
        "its usual box [-5, 5]^4, g_i = 2 x_i^3 - 16 x_i + 2.5. The Jacobian is the Hessian diag(6 x_i^2 - 16): "
        "exactly diagonal, with diagonal entries that change sign at |x_i| = sqrt(8/3). A surrogate that fits "
        "the values but leaks off-diagonal derivatives shows it here."
    ),
    jacobian_fn=styblinski_tang_hessian,
    hessian_fn=styblinski_tang_third,
    formulas=tuple(f"g{i} = 2*x{i}**3 - 16*x{i} + 2.5" for i in range(1, 5)),
)


# --- Rosenbrock: f(x) = sum_{i<n} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 ------------------------------------------


def rosenbrock_grad_fn(x: Tensor) -> Tensor:
    """x: (..., 4) -> grad f: (..., 4)."""
    x1, x2, x3, x4 = columns(x)
    g1 = -400 * x1 * (x2 - x1**2) - 2 * (1 - x1)
    g2 = 200 * (x2 - x1**2) - 400 * x2 * (x3 - x2**2) - 2 * (1 - x2)
    g3 = 200 * (x3 - x2**2) - 400 * x3 * (x4 - x3**2) - 2 * (1 - x3)
    g4 = 200 * (x4 - x3**2)
    return stack_outputs(g1, g2, g3, g4)


def rosenbrock_hessian(x: Tensor) -> Tensor:
    """Hand-derived: x (..., 4) -> the symmetric tridiagonal Hessian (..., 4, 4)."""
    x1, x2, x3, x4 = columns(x)
    rows = [
        [1200 * x1**2 - 400 * x2 + 2, -400 * x1, 0.0, 0.0],
        [-400 * x1, 1200 * x2**2 - 400 * x3 + 202, -400 * x2, 0.0],
        [0.0, -400 * x2, 1200 * x3**2 - 400 * x4 + 202, -400 * x3],
        [0.0, 0.0, -400 * x3, 200.0],
    ]
    return jacobian_from_rows(rows, like=x1)


def rosenbrock_third(x: Tensor) -> Tensor:
    """Hand-derived second derivatives of the gradient (third derivatives of f): (..., 4, 4, 4)."""
    x1, x2, x3, _ = columns(x)
    entries = {
        (0, 0, 0): 2400 * x1, (0, 0, 1): -400.0,
        (1, 0, 0): -400.0, (1, 1, 1): 2400 * x2, (1, 1, 2): -400.0,
        (2, 1, 1): -400.0, (2, 2, 2): 2400 * x3, (2, 2, 3): -400.0,
        (3, 2, 2): -400.0,
    }  # fmt: skip
    return hessian_from_entries(4, 4, entries, like=x1)


ROSENBROCK_GRAD = EquationSet(
    name="rosenbrock_grad",
    fn=rosenbrock_grad_fn,
    lower=(-2.0,) * 4,
    upper=(2.0,) * 4,
    input_names=_names("x", 4),
    output_names=_names("g", 4),
    doc=(
        "Gradient of 4-D Rosenbrock: a symmetric tridiagonal Jacobian. f(x) = sum_{i=1..3} 100 (x_{i+1} - "
        "x_i^2)^2 + (1 - x_i)^2 on [-2, 2]^4. The Jacobian is the Hessian: symmetric and tridiagonal, with "
        "entries from about -800 to 5800 in one matrix (badly conditioned near the curved valley x_{i+1} = "
        "x_i^2). A surrogate's Jacobian is generally neither symmetric nor banded; this set measures how far "
        "off it is."
    ),
    jacobian_fn=rosenbrock_hessian,
    hessian_fn=rosenbrock_third,
    formulas=(
        "g1 = -400*x1*(x2 - x1**2) - 2*(1 - x1)",
        "g2 = 200*(x2 - x1**2) - 400*x2*(x3 - x2**2) - 2*(1 - x2)",
        "g3 = 200*(x3 - x2**2) - 400*x3*(x4 - x3**2) - 2*(1 - x3)",
        "g4 = 200*(x4 - x3**2)",
    ),
)


# --- Lorenz-96: dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, indices mod N ---------------------------------

LORENZ96_FORCING = 8.0  # F = 8: the classic chaotic regime (for N = 4 the flow settles on a periodic orbit)


def _lorenz96_fn(x: Tensor) -> Tensor:
    """x: (..., N) -> dx/dt: (..., N); torch.roll on the last axis gives the cyclic neighbours."""
    xp1, xm1, xm2 = x.roll(-1, dims=-1), x.roll(1, dims=-1), x.roll(2, dims=-1)
    return (xp1 - xm2) * xm1 - x + LORENZ96_FORCING


def _lorenz96_jacobian(x: Tensor) -> Tensor:
    """Hand-derived: row i has -1 at i, x_{i-1} at i+1, -x_{i-1} at i-2 and x_{i+1} - x_{i-2} at i-1."""
    n = x.shape[-1]
    xs = columns(x)
    rows = []
    for i in range(n):
        row: list[Tensor | float] = [0.0] * n
        row[i] = -1.0
        row[(i + 1) % n] = xs[(i - 1) % n]
        row[(i - 2) % n] = -xs[(i - 1) % n]
        row[(i - 1) % n] = xs[(i + 1) % n] - xs[(i - 2) % n]
        rows.append(row)
    return jacobian_from_rows(rows, like=xs[0])


def _lorenz96_hessian(x: Tensor) -> Tensor:
    """Hand-derived, constant (bilinear map): d2 f_i / dx_{i+1} dx_{i-1} = 1, d2 f_i / dx_{i-2} dx_{i-1} = -1."""
    n = x.shape[-1]
    entries: dict[tuple[int, int, int], float] = {}
    for i in range(n):
        entries[(i, (i + 1) % n, (i - 1) % n)] = 1.0
        entries[(i, (i - 2) % n, (i - 1) % n)] = -1.0
    return hessian_from_entries(n, n, entries, like=x[..., 0])


def _lorenz96(n: int, name: str, doc: str) -> EquationSet:
    assert n >= 4, "the stencil i-2, i-1, i, i+1 must hit distinct indices"
    formulas = tuple(
        f"d{i + 1} = (x{(i + 1) % n + 1} - x{(i - 2) % n + 1})*x{(i - 1) % n + 1} - x{i + 1} + {LORENZ96_FORCING:g}"
        for i in range(n)
    )
    return EquationSet(
        name=name,
        fn=_lorenz96_fn,
        lower=(-10.0,) * n,
        upper=(15.0,) * n,
        input_names=_names("x", n),
        output_names=_names("d", n),
        doc=doc,
        jacobian_fn=_lorenz96_jacobian,
        hessian_fn=_lorenz96_hessian,
        formulas=formulas,
    )


_LORENZ_COMMON = (
    "dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F with F = 8 and cyclic indices, as a map from the state to "
    "its time derivative, on [-10, 15]^N (the F = 8 trajectories stay within about -2.9..8.9 for N = 4 and "
    "-7.8..12.0 for N = 8). Bilinear: every Jacobian entry is -1, +-x_{i-1} or x_{i+1} - x_{i-2}, so a "
    "surrogate's Jacobian must reproduce a constant diagonal and exactly opposite entries J[i, i+1] = "
    "-J[i, i-2]."
)
LORENZ96 = _lorenz96(
    4,
    "lorenz96",
    "Lorenz-96 right-hand side, N = 4, F = 8: a bilinear map with a structured Jacobian. "
    + _LORENZ_COMMON
    + " With N = 4 the stencil covers every index, so each row is structurally full; see lorenz96_8 for the "
    "sparse case.",
)
LORENZ96_8 = _lorenz96(
    8,
    "lorenz96_8",
    "Lorenz-96 right-hand side, N = 8, F = 8: a sparse Jacobian (4 nonzeros of 8 per row). "
    + _LORENZ_COMMON
    + " Each row has 4 structural nonzeros out of 8: half the Jacobian is exactly zero, which a dense "
    "surrogate only approximates.",
)
