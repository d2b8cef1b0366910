"""Second-order rules for the zoo's KAN layers (state layout and `Pairs`: `bench.engines.second_order`).

Every basis is evaluated with its first and second derivative along its own input z: Gaussian bumps
exp(-u^2) (FastKAN), B-splines (efficient-KAN; cubic ones are C^2, so the second derivative is piecewise linear
and exact at the knots as autograd defines it, on the interval the knot opens), Chebyshev T_n(tanh z)
(ChebyKAN). A basis phi(z) then carries t_phi = phi' t_z and s_phi = phi' s_z + phi'' t_zj t_zk, and the
layer's linear maps take the primal, the tangents and the second-order tangents in one GEMM each. The
SiLU base branch of FastKAN and efficient-KAN goes through `silu2`. Each rule is checked against float64
torch.func Hessians in tests/test_hessian_engines.py, at the knots and outside the grid too.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.engines.kan_tangents import _input_layernorm_reason, bspline_with_derivative, chebyshev_with_derivative
from bench.engines.second_order import (
    Pairs,
    affine,
    apply_activation2,
    children_reason,
    layernorm2,
    propagate2,
    register_second_rule,
    silu2,
)
from models.base import KANStack
from models.chebykan import ChebyKANLayer
from models.efficient_kan import KANLinear
from models.fastkan import FastKANLayer


@register_second_rule(KANStack, reason=lambda m: children_reason(m.layers))
def _stack(m: nn.Module, h, t, s, pairs: Pairs):
    for layer in m.layers:
        h, t, s = propagate2(layer, h, t, s, pairs)
    return h, t, s


def basis2(phi, d1, d2, tz, sz, pairs: Pairs, axis: int = -1):
    """A basis phi(z) with derivatives d1, d2 along z, pushed to second order.

    phi, d1, d2: (B, ..., K ...) with z's feature axis where ``tz[..., None]`` (axis=-1: basis last) or
    ``tz[..., None, :]`` (axis=-2: basis before the features) broadcasts; tz (n, B | 1, in), sz (P, B, in) or None.
    Returns the flattened (phi, t_phi, s_phi): (B, F), (n, B, F), (P, B, F).
    """
    expand = (lambda a: a[..., None]) if axis == -1 else (lambda a: a[..., None, :])
    t_phi = d1 * expand(tz)
    s_phi = d2 * expand(pairs.prod(tz, tz))
    if sz is not None:
        s_phi = s_phi + d1 * expand(sz)
    return phi.flatten(-2), t_phi.flatten(-2), s_phi.flatten(-2)


def _kan_output(basis_state, base_state, w_basis, w_base, bias):
    """basis @ w_basis.T + silu branch @ w_base.T (+ bias), for the primal and every tangent."""
    h1, t1, s1 = affine(*basis_state, w_basis, None)
    h2, t2, s2 = affine(*base_state, w_base, bias)
    return h1 + h2, t1 + t2, (s1 if s2 is None else s1 + s2)


def _silu_branch(h, t, s, pairs: Pairs):
    return apply_activation2(*silu2(h), t, s, pairs)


@register_second_rule(FastKANLayer, reason=_input_layernorm_reason)
def _fastkan(m: FastKANLayer, h, t, s, pairs: Pairs):
    """Gaussian bumps phi = exp(-u^2), u = (z - g) / den: phi' = -2u/den phi, phi'' = (4u^2 - 2)/den^2 phi."""
    ln = m.layernorm
    z, tz, sz = (h, t, s) if ln is None else layernorm2(h, t, s, ln.weight, ln.bias, ln.eps, pairs)
    den = m.rbf.denominator
    u = (z[..., None] - m.rbf.grid) / den
    phi = torch.exp(-(u**2))  # the model's formula: the primal is bit-identical
    d1 = (-2.0 / den) * u * phi
    d2 = ((4.0 * u * u - 2.0) / den**2) * phi
    basis_state = basis2(phi, d1, d2, tz, sz, pairs)
    base = m.base_linear
    return _kan_output(basis_state, _silu_branch(h, t, s, pairs), m.spline_linear.weight, base.weight, base.bias)


def bspline_second(x: torch.Tensor, knots: torch.Tensor, order: int):
    """B-spline bases of `order` at x (..., in) with first and second derivatives, each (..., in, m - 1 - order).

    B_j^k'' = k (B_j^{k-1}' / (t_{j+k} - t_j) - B_{j+1}^{k-1}' / (t_{j+k+1} - t_{j+1})): the first-derivative
    identity applied to the order k - 1 derivatives (bench.engines.kan_tangents.bspline_with_derivative).
    """
    basis, d1 = bspline_with_derivative(x, knots, order)
    if order < 2:
        return basis, d1, torch.zeros_like(basis)
    k = order
    _, dlow = bspline_with_derivative(x, knots, k - 1)
    left_den = knots[:, k:-1] - knots[:, : -(k + 1)]
    right_den = knots[:, k + 1 :] - knots[:, 1:-k]
    return basis, d1, k * (dlow[..., :-1] / left_den - dlow[..., 1:] / right_den)


@register_second_rule(KANLinear)
def _efficient_kan(m: KANLinear, h, t, s, pairs: Pairs):
    basis, d1, d2 = bspline_second(h, m.grid, m.spline_order)
    basis_state = basis2(basis, d1, d2, t, s, pairs)
    w_spline = m.scaled_spline_weight.flatten(1)
    return _kan_output(basis_state, _silu_branch(h, t, s, pairs), w_spline, m.base_weight, None)


def chebyshev_second(u: torch.Tensor, degree: int):
    """T_n(u), T_n'(u), T_n''(u), each (..., degree + 1, in); T''_{n+1} = 4 T'_n + 2u T''_n - T''_{n-1}."""
    T, dT = chebyshev_with_derivative(u, degree)
    d2 = [torch.zeros_like(u), torch.zeros_like(u)]
    for n in range(1, degree):
        d2.append(4 * dT[..., n, :] + 2 * u * d2[-1] - d2[-2])
    return T, dT, torch.stack(d2[: degree + 1], dim=-2)


@register_second_rule(ChebyKANLayer, reason=_input_layernorm_reason)
def _chebykan(m: ChebyKANLayer, h, t, s, pairs: Pairs):
    """u = tanh z: dT/dz = T'(u) (1 - u^2), d2T/dz2 = T''(u) (1 - u^2)^2 - 2u (1 - u^2) T'(u)."""
    ln = m.layernorm
    z, tz, sz = (h, t, s) if ln is None else layernorm2(h, t, s, ln.weight, ln.bias, ln.eps, pairs)
    u = torch.tanh(z)
    T, dT, d2T = chebyshev_second(u, m.degree)  # (B, K, in)
    sech2 = (1 - u * u)[..., None, :]
    d1 = dT * sech2
    d2 = d2T * sech2 * sech2 - 2 * u[..., None, :] * sech2 * dT
    n_in, n_out, K = m.cheby_coeffs.shape
    W = m.cheby_coeffs.permute(1, 2, 0).reshape(n_out, K * n_in)  # degree-major, as kan_tangents
    return affine(*basis2(T, d1, d2, tz, sz, pairs, axis=-2), W, None)
