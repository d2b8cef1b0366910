"""``surrogate_stack``: four classic 4-input surrogate test functions on one badly scaled box.

The common box is Friedman #2's native box with x1 starting at 1 instead of 0:
x1 in [1, 100], x2 in [40 pi, 560 pi], x3 in [0, 1], x4 in [1, 11] (input ranges 99, 1634, 1 and 10).
With u_j = (x_j - lo_j) / (hi_j - lo_j) in [0, 1], each function sees its native domain through an affine map:

- Park91a (Park 1991), native [0, 1)^4: p = (0.1 + 0.9 u1, u2, u3, u4). Park91a divides by x1^2, so its
  first input starts at 0.1 instead of 0 (the function is undefined at x1 = 0).
- Park91b, native [0, 1)^4: p = u.
- Hartmann-4 (scaled, (1.1 - sum ...) / 0.839), native [0, 1]^4: p = u.
- Friedman #2, native x1 in [0, 100], x2 in [40 pi, 560 pi], x3 in [0, 1], x4 in [1, 11]: p = x. Its square
  root has a kink where x1 = 0 and x2 x3 = 1 / (x2 x4); starting x1 at 1 keeps the root's argument >= 1.

Every function is smooth on the closed box. Outputs differ by orders of magnitude (Hartmann-4 about -3.1..1.3,
Park91b about 0.7..5.9, Park91a about 0.3..26, Friedman #2 about 1..1760) and so do the Jacobian's columns
(the chain rule divides by input ranges from 1 to 1634).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from equations.base import EquationSet
from equations.sets._common import columns, jacobian_from_rows, stack_outputs

LOWER = (1.0, 40 * math.pi, 0.0, 1.0)
UPPER = (100.0, 560 * math.pi, 1.0, 11.0)
_WIDTH = tuple(hi - lo for lo, hi in zip(LOWER, UPPER, strict=True))
PARK91A_X1_LOW = 0.1  # Park91a's first input runs over [0.1, 1] instead of [0, 1): x1 = 0 divides by zero

# Hartmann-4: the first four columns of the Hartmann-6 constants (Picheny et al. 2013; SFU library's "hart4").
HART_ALPHA = (1.0, 1.2, 3.0, 3.2)
HART_A = ((10.0, 3.0, 17.0, 3.5), (0.05, 10.0, 17.0, 0.1), (3.0, 3.5, 1.7, 10.0), (17.0, 8.0, 0.05, 10.0))
HART_P = (
    (0.1312, 0.1696, 0.5569, 0.0124),
    (0.2329, 0.4135, 0.8307, 0.3736),
    (0.2348, 0.1451, 0.3522, 0.2883),
    (0.4047, 0.8828, 0.8732, 0.5743),
)


def _unit(x: Tensor) -> tuple[Tensor, ...]:
    """x: (..., 4) in the common box -> 4 tensors u_j in [0, 1]."""
    return tuple((xj - lo) / w for xj, lo, w in zip(columns(x), LOWER, _WIDTH, strict=True))


def _park91a_inputs(u: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (PARK91A_X1_LOW + (1 - PARK91A_X1_LOW) * u[0], u[1], u[2], u[3])


def _park91a(p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor) -> Tensor:
    root = torch.sqrt(1 + (p2 + p3**2) * p4 / p1**2)
    return p1 / 2 * (root - 1) + (p1 + 3 * p4) * torch.exp(1 + torch.sin(p3))


def _park91a_grad(p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor) -> list[Tensor]:
    q = (p2 + p3**2) * p4 / p1**2
    s = torch.sqrt(1 + q)
    e = torch.exp(1 + torch.sin(p3))
    return [
        (s - 1) / 2 - q / (2 * s) + e,
        p4 / (4 * s * p1),
        p3 * p4 / (2 * s * p1) + (p1 + 3 * p4) * e * torch.cos(p3),
        (p2 + p3**2) / (4 * s * p1) + 3 * e,
    ]


def _park91b(p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor) -> Tensor:
    return 2 / 3 * torch.exp(p1 + p2) - p4 * torch.sin(p3) + p3


def _park91b_grad(p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor) -> list[Tensor]:
    e = 2 / 3 * torch.exp(p1 + p2)
    return [e, e, 1 - p4 * torch.cos(p3), -torch.sin(p3)]


def _hartmann_terms(p: tuple[Tensor, ...]) -> list[Tensor]:
    """alpha_i exp(-sum_j A_ij (p_j - P_ij)^2), one tensor per i."""
    terms = []
    for alpha, a_row, p_row in zip(HART_ALPHA, HART_A, HART_P, strict=True):
        inner = sum(a * (pj - c) ** 2 for a, pj, c in zip(a_row, p, p_row, strict=True))
        terms.append(alpha * torch.exp(-inner))
    return terms


def _hartmann4(*p: Tensor) -> Tensor:
    return (1.1 - sum(_hartmann_terms(p))) / 0.839


def _hartmann4_grad(*p: Tensor) -> list[Tensor]:
    terms = _hartmann_terms(p)
    return [
        sum(t * 2 * a_row[j] * (p[j] - p_row[j]) for t, a_row, p_row in zip(terms, HART_A, HART_P, strict=True)) / 0.839
        for j in range(4)
    ]


def _friedman2(x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor) -> Tensor:
    return torch.sqrt(x1**2 + (x2 * x3 - 1 / (x2 * x4)) ** 2)


def _friedman2_grad(x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor) -> list[Tensor]:
    g = x2 * x3 - 1 / (x2 * x4)
    y = torch.sqrt(x1**2 + g**2)
    return [x1 / y, g / y * (x3 + 1 / (x2**2 * x4)), g / y * x2, g / y / (x2 * x4**2)]


def surrogate_stack_fn(x: Tensor) -> Tensor:
    """x: (..., 4) in the common box -> (park91a, park91b, hartmann4, friedman2): (..., 4)."""
    u = _unit(x)
    return stack_outputs(_park91a(*_park91a_inputs(u)), _park91b(*u), _hartmann4(*u), _friedman2(*columns(x)))


def surrogate_stack_jacobian(x: Tensor) -> Tensor:
    """Hand-derived: native gradients times the affine maps' slopes dp_j/dx_j. x (..., 4) -> J (..., 4, 4)."""
    u = _unit(x)
    unit_slope = [1 / w for w in _WIDTH]
    park_a_slope = [(1 - PARK91A_X1_LOW) / _WIDTH[0], *unit_slope[1:]]
    rows = [
        [g * s for g, s in zip(_park91a_grad(*_park91a_inputs(u)), park_a_slope, strict=True)],
        [g * s for g, s in zip(_park91b_grad(*u), unit_slope, strict=True)],
        [g * s for g, s in zip(_hartmann4_grad(*u), unit_slope, strict=True)],
        _friedman2_grad(*columns(x)),
    ]
    return jacobian_from_rows(rows, like=u[0])


SURROGATE_STACK = EquationSet(
    name="surrogate_stack",
    fn=surrogate_stack_fn,
    lower=LOWER,
    upper=UPPER,
    input_names=("x1", "x2", "x3", "x4"),
    output_names=("park91a", "park91b", "hartmann4", "friedman2"),
    doc=(
        "Park91a, Park91b, Hartmann-4 and Friedman #2 on one badly scaled box. Classic 4-input "
        "surrogate-modelling test functions, stacked on Friedman #2's box: x1 in [1, 100], x2 in [40 pi, 560 pi], "
        "x3 in [0, 1], x4 in [1, 11], with u = (x - lower) / (upper - lower). Park91a sees (0.1 + 0.9 u1, u2, u3, "
        "u4) (it divides by its x1^2), Park91b and Hartmann-4 see u, Friedman #2 sees x (x1 >= 1 keeps its square "
        "root away from the kink at 0). Badly scaled inputs (ranges 1 to 1634) and outputs of very different "
        "magnitude (Hartmann-4 about -3.1..1.3, Friedman #2 about 1..1760): a stress test for normalization and "
        "Jacobian de-normalization."
    ),
    jacobian_fn=surrogate_stack_jacobian,
    formulas=(
        "park91a = p1/2*(sqrt(1 + (p2 + p3**2)*p4/p1**2) - 1) + (p1 + 3*p4)*exp(1 + sin(p3)), "
        "p = (0.1 + 0.9*u1, u2, u3, u4)",
        "park91b = 2/3*exp(u1 + u2) - u4*sin(u3) + u3",
        "hartmann4 = (1.1 - sum_i alpha_i*exp(-sum_j A_ij*(u_j - P_ij)**2))/0.839",
        "friedman2 = sqrt(x1**2 + (x2*x3 - 1/(x2*x4))**2)",
    ),
)
