"""ChebyKAN: a KAN whose edge functions are Chebyshev series of the tanh-squashed input (SS et al. 2024).

Per layer ``in -> out`` of degree D::

    t = tanh(x)                                   in (-1, 1), so any input is in the polynomials' domain
    T_0 = 1, T_1 = t, T_{n+1} = 2 t T_n - T_{n-1}  (the recurrence: the popular cos(n acos t) form has
                                                   NaN gradients where tanh rounds to +-1)
    y_o = sum_{i, n} cheby_coeffs[i, o, n] T_n(t_i)

One coefficient tensor per layer (in, out, D + 1), initialized N(0, 1 / (in (D + 1))); no bias. With
``layernorm=True`` a LayerNorm(in) sits before every layer but the first (between layers; off by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.base import KANStack, check_positive_int, layernorm_flops, resolve_widths
from models.registry import register_model

TANH_FLOPS = 1
RECURRENCE_FLOPS = 3  # 2 t T_n - T_{n-1}: two multiplies and a subtract


def chebyshev_basis(t: torch.Tensor, degree: int) -> torch.Tensor:
    """``t: (...)`` -> ``(..., degree + 1)``: T_0(t), ..., T_degree(t) by the three-term recurrence."""
    T = [torch.ones_like(t), t]
    for _ in range(2, degree + 1):
        T.append(2 * t * T[-1] - T[-2])
    return torch.stack(T[: degree + 1], dim=-1)


class ChebyKANLayer(nn.Module):
    def __init__(self, n_in: int, n_out: int, degree: int, layernorm: bool = False) -> None:
        super().__init__()
        self.degree = degree
        if layernorm:
            self.layernorm = nn.LayerNorm(n_in)
        else:
            self.layernorm = None
        self.cheby_coeffs = nn.Parameter(torch.empty(n_in, n_out, degree + 1))
        nn.init.normal_(self.cheby_coeffs, std=1.0 / (n_in * (degree + 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layernorm is not None:
            x = self.layernorm(x)
        basis = chebyshev_basis(torch.tanh(x), self.degree)  # (..., in, D + 1)
        return torch.einsum("...in,ion->...o", basis, self.cheby_coeffs)


class ChebyKAN(KANStack):
    """``ChebyKAN([4, 30, 30, 4], degree=4)``."""

    family = "chebykan"
    input_range = (-1.0, 1.0)  # tanh squashes anything; (-1, 1) keeps tanh in its non-saturated part

    def __init__(self, layers_hidden: Sequence[int], degree: int = 4, layernorm: bool = False) -> None:
        check_positive_int(degree, "degree", "chebykan")
        super().__init__(
            layers_hidden, lambda i, a, b: ChebyKANLayer(a, b, degree, layernorm=layernorm and i > 0), "chebykan"
        )
        self.degree, self.layernorm = degree, layernorm

    def param_count(self) -> int:
        ln = sum(2 * a for a, _ in self.pairs()[1:]) if self.layernorm else 0
        return ln + sum(a * b * (self.degree + 1) for a, b in self.pairs())

    def flops_per_sample(self) -> int:
        total = 0
        for i, (a, b) in enumerate(self.pairs()):
            total += layernorm_flops(a) if (self.layernorm and i > 0) else 0
            total += a * (TANH_FLOPS + RECURRENCE_FLOPS * max(self.degree - 1, 0))
            total += 2 * a * (self.degree + 1) * b  # the contraction with the coefficients
        return total


@register_model
def chebykan(
    n_in: int = 4,
    n_out: int = 4,
    width: int | None = None,
    depth: int | None = None,
    hidden: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    degree: int = 4,
    layernorm: bool = False,
) -> ChebyKAN:
    """ChebyKAN (Chebyshev KAN on tanh(x)), degree 4, no LayerNorm; [n_in, 30, 30, n_out]"""
    widths = resolve_widths(
        "chebykan", n_in, n_out, width=width, depth=depth, hidden=hidden, layers=layers,
        default_width=30, default_depth=2,
    )  # fmt: skip
    return ChebyKAN(widths, degree, layernorm)
