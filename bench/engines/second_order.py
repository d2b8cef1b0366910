"""Second-order forward mode by hand: the primal, the n_in first tangents and the second-order tangents together.

State per module (Taylor-mode AD truncated at order 2, one pass through the network):

    h (B, w)             the primal
    t (n_in, B | 1, w)   t_j = dh/dx_j; (n_in, 1, w) while it is the same for every sample (before the first
                         nonlinearity: the columns of the first Linear's weight)
    s (P, B, w) or None  second-order tangents, None while they are exactly zero (before the first nonlinearity)

`Pairs` says which second-order directions s carries: every pair j <= k (P = n_in (n_in + 1) / 2, the full
Hessian) or only their trace (P = 1, the Laplacian: the forward-Laplacian idea of Li et al. 2023, which a PINN
residual needs at a fraction of the cost). Every rule is written once, for both, through `Pairs.prod`.

Rules: a Linear maps h, t and s with one GEMM over (1 + n_in + P) rows (its bias to h only); an elementwise
activation a gives t' = a'(z) t and s' = a'(z) s + a''(z) t_j t_k; a basis function of a KAN layer the same with
its own first and second derivatives along its input (`bench.engines.kan_second`). A model with a module that
has no second-order rule is not run here: `rule_reason` says why, and the engine falls back to torch.func.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.engines.activations import ACTIVATIONS, Sine, find_rule
from bench.engines.gemm import linear
from bench.engines.guards import hand_reason
from equations.scaling import PhysicalModel

# rule(module, h, t, s, pairs) -> (h, t, s)
SecondRule = Callable[..., "tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]"]
SECOND_RULES: dict[type, SecondRule] = {}
REASONS: dict[type, Callable[[nn.Module], str | None]] = {}
# activation(module, z) -> (a(z), a'(z) or None for 1, a''(z) or None for 0)
ActivationRule = Callable[[nn.Module, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]"]
SECOND_ACTIVATIONS: dict[type, ActivationRule] = {}


class Pairs:
    """The second-order directions carried: all pairs j <= k of n inputs, or their trace (laplacian=True)."""

    def __init__(self, n: int, laplacian: bool, device: torch.device) -> None:
        self.n, self.laplacian = n, laplacian
        self.j, self.k = torch.triu_indices(n, n, device=device)  # pair p = (j[p], k[p]), row-major upper triangle
        self.count = 1 if laplacian else int(self.j.numel())

    def prod(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a_j b_k for every pair (P, ...), or sum_j a_j b_j (1, ...): a, b (n, ...) broadcastable."""
        if self.laplacian:
            return (a * b).sum(0, keepdim=True)
        return a[self.j] * b[self.k]

    def sym(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a_j b_k + a_k b_j per pair (for the trace: 2 sum_j a_j b_j)."""
        return self.prod(a, b) + self.prod(b, a)


def register_second_rule(cls: type, reason: Callable[[nn.Module], str | None] | None = None):
    """Decorator: the second-order rule for module class `cls` (and optionally a per-instance support check)."""

    def deco(rule: SecondRule) -> SecondRule:
        SECOND_RULES[cls] = rule
        if reason is not None:
            REASONS[cls] = reason
        return rule

    return deco


def register_second_activation(cls: type):
    """Decorator: an elementwise activation's value, first and second derivative (plugins may add their own)."""

    def deco(rule: ActivationRule) -> ActivationRule:
        SECOND_ACTIVATIONS[cls] = rule
        return rule

    return deco


def activation_reason(module: nn.Module) -> str | None:
    """For an elementwise activation (one the Jacobian engines know): None if it has a second-order rule."""
    rule = find_rule(SECOND_ACTIVATIONS, module)
    if rule is None or (isinstance(module, nn.GELU) and module.approximate not in ("none", "tanh")):
        return f"no second-order rule for {module!r}"
    return None


def rule_reason(module: nn.Module) -> str | None:
    """None if `module` and all its submodules have second-order rules and no hook or parametrization changes what
    they compute (bench.engines.guards.hand_reason, checked once for the whole tree), else the first reason."""
    return hand_reason(module) or _rules_reason(module)


def _rules_reason(module: nn.Module) -> str | None:
    """None if `module` and all its submodules have second-order rules, else the first reason they have not."""
    if find_rule(ACTIVATIONS, module) is not None or find_rule(SECOND_ACTIVATIONS, module) is not None:
        return activation_reason(module)
    if find_rule(SECOND_RULES, module) is None:
        return f"no second-order rule for {type(module).__name__}"
    check = next((REASONS[c] for c in type(module).__mro__ if c in REASONS), None)
    return check(module) if check is not None else None


def children_reason(module: nn.Module) -> str | None:
    return next(filter(None, map(_rules_reason, module.children())), None)


def propagate2(module: nn.Module, h, t, s, pairs: Pairs):
    """Push (h, t, s) through `module` (call only after rule_reason(module) is None)."""
    act = find_rule(SECOND_ACTIVATIONS, module)
    if act is not None:
        return apply_activation2(*act(module, h), t, s, pairs)
    return find_rule(SECOND_RULES, module)(module, h, t, s, pairs)


def apply_activation2(a, d1, d2, t, s, pairs: Pairs):
    """The chain rule of an elementwise map with derivatives d1, d2 (None: 1 and 0): t' = d1 t, s' = d1 s + d2 t t."""
    s_new = s if d1 is None or s is None else s * d1
    if d2 is not None:
        curv = d2 * pairs.prod(t, t)
        s_new = curv if s_new is None else s_new + curv
    return a, (t if d1 is None else t * d1), s_new


def affine(h, t, s, weight: torch.Tensor, bias: torch.Tensor | None):
    """x @ W.T (+ b) of the primal, the tangents and the second-order tangents: one GEMM when they share a batch."""
    if s is not None and t.shape[1] == h.shape[0]:
        n = t.shape[0]
        out = linear(torch.cat([h[None], t, s]), weight)
        h2 = out[0] if bias is None else out[0] + bias
        return h2, out[1 : 1 + n], out[1 + n :]
    return linear(h, weight, bias), linear(t, weight), (None if s is None else linear(s, weight))


@register_second_rule(nn.Identity)
def _identity(m, h, t, s, pairs):
    return h, t, s


@register_second_rule(nn.Linear)
def _linear(m: nn.Linear, h, t, s, pairs):
    return affine(h, t, s, m.weight, m.bias)


@register_second_rule(nn.Sequential, reason=children_reason)
def _sequential(m: nn.Sequential, h, t, s, pairs):
    for sub in m:
        h, t, s = propagate2(sub, h, t, s, pairs)
    return h, t, s


def layernorm2(h, t, s, weight, bias, eps: float, pairs: Pairs):
    """LayerNorm over the last axis to second order: z = c r w + b, c = h - mean(h), r = (mean(c^2) + eps)^-1/2.

    dv = 2 mean(c dc), dr = -r^3 dv / 2; d2v = 2 mean(dc_j dc_k + c d2c), d2r = 3/4 r^5 dv_j dv_k - r^3 d2v / 2;
    d2(c r) = d2c r + dc_j dr_k + dc_k dr_j + c d2r.
    """
    c = h - h.mean(-1, keepdim=True)
    r = torch.rsqrt((c * c).mean(-1, keepdim=True) + eps)
    tc = t - t.mean(-1, keepdim=True)
    dv = 2 * (c * tc).mean(-1, keepdim=True)  # (n, B, 1)
    dr = -0.5 * r**3 * dv
    sc = None if s is None else s - s.mean(-1, keepdim=True)
    d2v = 2 * pairs.prod(tc, tc).mean(-1, keepdim=True)
    if sc is not None:
        d2v = d2v + 2 * (c * sc).mean(-1, keepdim=True)
    d2r = 0.75 * r**5 * pairs.prod(dv, dv) - 0.5 * r**3 * d2v
    zhat, dz = c * r, tc * r + c * dr
    d2z = pairs.sym(tc, dr) + c * d2r
    if sc is not None:
        d2z = d2z + sc * r
    if weight is not None:
        zhat, dz, d2z = zhat * weight, dz * weight, d2z * weight
    return (zhat if bias is None else zhat + bias), dz, d2z


def _layernorm_reason(m: nn.LayerNorm) -> str | None:
    return None if len(m.normalized_shape) == 1 else f"LayerNorm over {len(m.normalized_shape)} axes"


@register_second_rule(nn.LayerNorm, reason=_layernorm_reason)
def _layernorm(m: nn.LayerNorm, h, t, s, pairs):
    return layernorm2(h, t, s, m.weight, m.bias, m.eps, pairs)


@register_second_rule(PhysicalModel, reason=children_reason)
def _physical(m: PhysicalModel, h, t, s, pairs):
    """The wrapper's affine maps act on second-order tangents as on tangents (equations.scaling.Scaler)."""
    sc = m.scaler
    to_n = sc.tangent_to_normalized
    h_n, t_n, s_n = propagate2(m.model, sc.transform_x(h), to_n(t), None if s is None else to_n(s), pairs)
    to_p = sc.tangent_to_physical
    return sc.inverse_y(h_n), to_p(t_n), (None if s_n is None else to_p(s_n))


# --- elementwise activations: (a, a', a'') ------------------------------------------------------------------


@register_second_activation(nn.Identity)
def _id(m, z):
    return z, None, None


@register_second_activation(nn.Tanh)
def _tanh(m, z):
    h = torch.tanh(z)
    d = 1 - h * h
    return h, d, -2 * h * d


@register_second_activation(nn.Sigmoid)
def _sigmoid(m, z):
    h = torch.sigmoid(z)
    d = h * (1 - h)
    return h, d, d * (1 - 2 * h)


def silu2(z: torch.Tensor):
    """silu = z s, s = sigmoid(z): silu' = s (1 + z (1 - s)), silu'' = s (1 - s) (2 + z (1 - 2 s))."""
    sg = torch.sigmoid(z)
    return z * sg, sg * (1 + z * (1 - sg)), sg * (1 - sg) * (2 + z * (1 - 2 * sg))


@register_second_activation(nn.SiLU)
def _silu(m, z):
    return silu2(z)


_SQRT_2PI = math.sqrt(2 * math.pi)
_K = math.sqrt(2 / math.pi)
_C = 0.044715


@register_second_activation(nn.GELU)
def _gelu(m, z):
    if m.approximate == "tanh":  # g = z (1 + tanh u) / 2, u = K (z + C z^3)
        th = torch.tanh(_K * (z + _C * z**3))
        du, d2u = _K * (1 + 3 * _C * z * z), 6 * _K * _C * z
        sech2 = 1 - th * th
        return (
            0.5 * z * (1 + th),
            0.5 * (1 + th) + 0.5 * z * sech2 * du,
            sech2 * (du + 0.5 * z * (d2u - 2 * th * du * du)),
        )
    pdf = torch.exp(-0.5 * z * z) / _SQRT_2PI  # exact GELU z Phi(z): Phi + z phi, then phi (2 - z^2)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return z * cdf, cdf + z * pdf, pdf * (2 - z * z)


@register_second_activation(nn.Softplus)
def _softplus(m, z):
    bz = z * m.beta  # torch's identity branch above the threshold: derivative 1, curvature 0
    sg = torch.sigmoid(bz)
    linear_part = bz > m.threshold
    d1 = torch.where(linear_part, 1.0, sg)
    d2 = torch.where(linear_part, 0.0, m.beta * sg * (1 - sg))
    return F.softplus(z, m.beta, m.threshold), d1, d2


@register_second_activation(nn.ReLU)
def _relu(m, z):
    return torch.relu(z), (z > 0).to(z.dtype), None  # autograd's choices at 0: slope 0, curvature 0


@register_second_activation(nn.LeakyReLU)
def _leaky_relu(m, z):
    return F.leaky_relu(z, m.negative_slope), torch.where(z > 0, 1.0, torch.full_like(z, m.negative_slope)), None


@register_second_activation(Sine)
def _sine(m, z):
    wz = m.w0 * z
    sn = torch.sin(wz)
    return sn, m.w0 * torch.cos(wz), -(m.w0**2) * sn


# --- running it ----------------------------------------------------------------------------------------------


def second_order_pass(model: nn.Module, x: torch.Tensor, laplacian: bool):
    """(y (B, n_out), t (n_in, B | 1, n_out), s (P, B, n_out) or None) of a model whose modules all have rules."""
    n = x.shape[1]
    pairs = Pairs(n, laplacian, x.device)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)[:, None, :]  # (n, 1, n): shared input tangents
    return propagate2(model, x, eye, None, pairs), pairs


def to_hessian(s: torch.Tensor | None, pairs: Pairs, batch: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(P, B, n_out) pair tangents -> H (B, n_out, n_in, n_in), symmetric; None (a linear model) -> zeros."""
    n = pairs.n
    H = like.new_zeros((batch, n_out, n, n))
    if s is None:
        return H
    s = s.expand(-1, batch, -1).permute(1, 2, 0)  # (B, n_out, P)
    H[:, :, pairs.j, pairs.k] = s
    H[:, :, pairs.k, pairs.j] = s
    return H


def to_laplacian(s: torch.Tensor | None, batch: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(1, B, n_out) trace tangents -> (B, n_out); None (a linear model) -> zeros."""
    if s is None:
        return like.new_zeros((batch, n_out))
    return s[0].expand(batch, -1).clone()
