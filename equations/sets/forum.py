"""The two equation sets from the forum posts jacbench grew out of: ``forum4x4`` and ``sine1d``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from equations.base import EquationSet
from equations.sets._common import columns, hessian_from_entries, jacobian_from_rows, stack_outputs

FORUM_LOWER, FORUM_UPPER = 0.1, 3.0  # the box [0.1, 3]^4 the project's fidelity probe used


def forum4x4_fn(x: Tensor) -> Tensor:
    """x: (..., 4) -> (..., 4), the forum post's equations verbatim."""
    x1, x2, x3, x4 = columns(x)
    f1 = 0.4 * x1**2 + 0.2 * x2**2 + 0.1 * x3**3.5 + 0.3 * x4**1.5
    f2 = 3 * x1 + 4 * x2 + 5 * x3 + 6 * x4 + torch.sin(x1) * torch.cos(x2)
    f3 = torch.sin(x1) + torch.cos(x2) + 0.05 * torch.exp(x3) + 0.1 * torch.exp(x4)
    f4 = 200 * x1**2 + 6 * torch.exp(x2) + x1**3 + 4 * torch.exp(x4)
    return stack_outputs(f1, f2, f3, f4)


def forum4x4_jacobian(x: Tensor) -> Tensor:
    """Hand-derived: x (..., 4) -> J (..., 4, 4)."""
    x1, x2, x3, x4 = columns(x)
    s1, c1, s2, c2 = torch.sin(x1), torch.cos(x1), torch.sin(x2), torch.cos(x2)
    e2, e3, e4 = torch.exp(x2), torch.exp(x3), torch.exp(x4)
    rows = [
        [0.8 * x1, 0.4 * x2, 0.35 * x3**2.5, 0.45 * x4**0.5],
        [3 + c1 * c2, 4 - s1 * s2, 5.0, 6.0],
        [c1, -s2, 0.05 * e3, 0.1 * e4],
        [400 * x1 + 3 * x1**2, 6 * e2, 0.0, 4 * e4],
    ]
    return jacobian_from_rows(rows, like=x1)


def forum4x4_hessian(x: Tensor) -> Tensor:
    """Hand-derived: x (..., 4) -> H (..., 4, 4, 4); every output is separable but f2's sin(x1) cos(x2)."""
    x1, x2, x3, x4 = columns(x)
    s1, c1, s2, c2 = torch.sin(x1), torch.cos(x1), torch.sin(x2), torch.cos(x2)
    e2, e3, e4 = torch.exp(x2), torch.exp(x3), torch.exp(x4)
    entries = {
        (0, 0, 0): 0.8, (0, 1, 1): 0.4, (0, 2, 2): 0.875 * x3**1.5, (0, 3, 3): 0.225 * x4**-0.5,
        (1, 0, 0): -s1 * c2, (1, 0, 1): -c1 * s2, (1, 1, 1): -s1 * c2,
        (2, 0, 0): -s1, (2, 1, 1): -c2, (2, 2, 2): 0.05 * e3, (2, 3, 3): 0.1 * e4,
        (3, 0, 0): 400 + 6 * x1, (3, 1, 1): 6 * e2, (3, 3, 3): 4 * e4,
    }  # fmt: skip
    return hessian_from_entries(4, 4, entries, like=x1)


FORUM4X4 = EquationSet(
    name="forum4x4",
    fn=forum4x4_fn,
    lower=(FORUM_LOWER,) * 4,
    upper=(FORUM_UPPER,) * 4,
    input_names=("x1", "x2", "x3", "x4"),
    output_names=("f1", "f2", "f3", "f4"),
    doc=(
        "The forum post's 4-in/4-out equations, verbatim, on [0.1, 3]^4. The post's surrogates fit them well, "
        "but their de-normalized Jacobians disagreed with the equations'. The post gives no domain; x3^(7/2) "
        "and x4^(3/2) need "
        "x >= 0, and over this box the outputs span very different ranges (f1 about 0..12, f2 about 2..54, "
        "f3 about -0.7..5, f4 about 13..2030), which is exactly what makes Jacobian de-normalization matter. "
        "One structural zero: df4/dx3 = 0."
    ),
    jacobian_fn=forum4x4_jacobian,
    hessian_fn=forum4x4_hessian,
    formulas=(
        "f1 = 0.4*x1**2 + 0.2*x2**2 + 0.1*x3**3.5 + 0.3*x4**1.5",
        "f2 = 3*x1 + 4*x2 + 5*x3 + 6*x4 + sin(x1)*cos(x2)",
        "f3 = sin(x1) + cos(x2) + 0.05*exp(x3) + 0.1*exp(x4)",
        "f4 = 200*x1**2 + 6*exp(x2) + x1**3 + 4*exp(x4)",
    ),
)


SINE1D = EquationSet(
    name="sine1d",
    fn=torch.sin,  # (..., 1) -> (..., 1), elementwise
    lower=(0.0,),
    upper=(2 * math.pi,),
    input_names=("x",),
    output_names=("u",),
    doc=(
        "u = sin x on [0, 2 pi]: the first forum post's ODE toy (u' = cos x). Its author packed collocation "
        "points into one input vector and read derivatives off the diagonal of a mixed Jacobian. The smallest "
        "possible check that a surrogate's derivative is the derivative."
    ),
    jacobian_fn=lambda x: torch.cos(x).unsqueeze(-1),  # (..., 1) -> (..., 1, 1)
    hessian_fn=lambda x: (-torch.sin(x))[..., None, None],  # (..., 1) -> (..., 1, 1, 1): u'' = -sin x
    formulas=("u = sin(x)",),
)
