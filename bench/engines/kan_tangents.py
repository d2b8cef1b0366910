"""Hand-written tangent rules for the zoo's KAN layers (see `bench.engines.tangents` for the state layout).

Each basis is evaluated once with its derivative along its own input (RBF bumps, B-splines, Chebyshev
polynomials); the n_in tangents of the basis are that derivative times the incoming tangents, and the layer's
linear maps take the primal and all tangents in one GEMM each. The primal bases use the models' own formulas,
so the primal agrees with the forward to the last bit; every derivative is checked against autograd in tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.engines.gemm import linear
from bench.engines.tangents import as_rows, children_reason, layernorm_tangents, propagate, register_tangent_rule
from models.base import KANStack
from models.chebykan import ChebyKANLayer
from models.efficient_kan import KANLinear, bspline_basis
from models.fastkan import FastKANLayer


def _stack_reason(m: nn.Module) -> str | None:
    return children_reason(m.layers)


@register_tangent_rule(KANStack, reason=_stack_reason)
def _layer_stack(m: nn.Module, h, t, need_h: bool, inplace: bool):
    layers = list(m.layers)
    for i, layer in enumerate(layers):
        h, t = propagate(layer, h, t, need_h or i < len(layers) - 1, inplace)
    return h, t


def _silu_tangents(h: torch.Tensor, t: torch.Tensor):
    """silu(h) and its tangents: silu' = s (1 + h (1 - s)), s = sigmoid(h)."""
    s = torch.sigmoid(h)
    return F.silu(h), as_rows(t) * (s * (1 + h * (1 - s)))


def _basis_layer(basis, dbasis, tz, silu, t_silu, w_basis, w_base, bias, need_h):
    """y = basis.flatten @ w_basis.T + silu @ w_base.T (+ bias) and its tangents.

    basis, dbasis: (B, in, K) values and derivatives along their input; tz: (n_in, [1|B], in) tangents of that
    input. The basis tangents (n_in, B, in K) go through one GEMM; the base branch's is added onto it.
    """
    t_basis = (dbasis * tz[..., None]).flatten(-2)  # (n_in, B, in K), contiguous
    t_out = linear(t_basis, w_basis) + linear(t_silu, w_base)  # (n_in, B, out)
    if not need_h:
        return None, t_out
    return linear(basis.flatten(-2), w_basis) + linear(silu, w_base, bias), t_out


def _input_layernorm_reason(m: nn.Module) -> str | None:
    """FastKAN's and ChebyKAN's optional LayerNorm before the basis: its rule covers one normalized axis."""
    ln = m.layernorm
    return None if ln is None or len(ln.normalized_shape) == 1 else f"{type(m).__name__}: LayerNorm over several axes"


@register_tangent_rule(FastKANLayer, reason=_input_layernorm_reason)
def _fastkan_layer(m: FastKANLayer, h, t, need_h: bool, inplace: bool):
    """LayerNorm -> Gaussian bumps exp(-u^2), u = (z - g) / den, d/dz = -2 u / den exp(-u^2)."""
    ln = m.layernorm
    z, tz = (h, as_rows(t)) if ln is None else layernorm_tangents(h, t, ln.weight, ln.bias, ln.eps)
    u = (z[..., None] - m.rbf.grid) / m.rbf.denominator
    phi = torch.exp(-(u**2))  # the model's formula, so the primal is bit-identical
    scale = -2.0 / m.rbf.denominator
    dphi = u.mul_(scale).mul_(phi) if inplace else u * scale * phi
    silu, t_silu = _silu_tangents(h, t)
    base = m.base_linear
    return _basis_layer(phi, dphi, tz, silu, t_silu, m.spline_linear.weight, base.weight, base.bias, need_h)


def bspline_with_derivative(x: torch.Tensor, knots: torch.Tensor, order: int):
    """B-spline bases of `order` at x (..., in) and their derivatives, both (..., in, m - 1 - order).

    The last Cox-de Boor step is written out; the derivative comes from the order - 1 bases:
    B_j^k' = k (B_j^{k-1} / (t_{j+k} - t_j) - B_{j+1}^{k-1} / (t_{j+k+1} - t_{j+1})).
    """
    if order == 0:
        basis = bspline_basis(x, knots, 0)
        return basis, torch.zeros_like(basis)
    k = order
    low = bspline_basis(x, knots, k - 1)  # (..., in, m - k)
    x = x.unsqueeze(-1)
    left_den = knots[:, k:-1] - knots[:, : -(k + 1)]
    right_den = knots[:, k + 1 :] - knots[:, 1:-k]
    basis = (x - knots[:, : -(k + 1)]) / left_den * low[..., :-1] + (knots[:, k + 1 :] - x) / right_den * low[..., 1:]
    dbasis = k * (low[..., :-1] / left_den - low[..., 1:] / right_den)
    return basis, dbasis


@register_tangent_rule(KANLinear)
def _efficient_kan_layer(m: KANLinear, h, t, need_h: bool, inplace: bool):
    basis, dbasis = bspline_with_derivative(h, m.grid, m.spline_order)
    silu, t_silu = _silu_tangents(h, t)
    w_spline = m.scaled_spline_weight.flatten(1)
    return _basis_layer(basis, dbasis, as_rows(t), silu, t_silu, w_spline, m.base_weight, None, need_h)


def chebyshev_with_derivative(u: torch.Tensor, degree: int):
    """T_0..T_degree at u (..., in) and dT_n/du, both (..., degree + 1, in): degree-major, so each T_n is a
    contiguous row of `in` values (stacking along the last axis, of size degree + 1, measured slower).

    Recurrences T_{n+1} = 2u T_n - T_{n-1} (as the model evaluates it) and T'_{n+1} = 2 T_n + 2u T'_n - T'_{n-1}.
    """
    T = [torch.ones_like(u), u]
    dT = [torch.zeros_like(u), torch.ones_like(u)]
    u2 = 2 * u
    for _ in range(2, degree + 1):
        dT.append(2 * T[-1] + u2 * dT[-1] - dT[-2])
        T.append(u2 * T[-1] - T[-2])
    return torch.stack(T[: degree + 1], dim=-2), torch.stack(dT[: degree + 1], dim=-2)


@register_tangent_rule(ChebyKANLayer, reason=_input_layernorm_reason)
def _chebykan_layer(m: ChebyKANLayer, h, t, need_h: bool, inplace: bool):
    """(LayerNorm ->) u = tanh(x) -> Chebyshev T_n(u); dT_n/dx = T_n'(u) (1 - u^2)."""
    ln = m.layernorm
    z, tz = (h, as_rows(t)) if ln is None else layernorm_tangents(h, t, ln.weight, ln.bias, ln.eps)
    u = torch.tanh(z)
    T, dT = chebyshev_with_derivative(u, m.degree)  # (B, K, in)
    dT = dT * (1 - u * u)[..., None, :]
    n_in, n_out, K = m.cheby_coeffs.shape
    W = m.cheby_coeffs.permute(1, 2, 0).reshape(n_out, K * n_in)  # y = T.flatten(-2) @ W.T, degree-major
    t_out = linear((dT * tz[..., None, :]).flatten(-2), W)
    return (linear(T.flatten(-2), W) if need_h else None), t_out
