"""Elementwise activations with their derivatives written out, for the hand-written tangent passes.

A rule maps (module, z, inplace) to (h, d): h = act(z) and d = act'(z), the same formulas autograd's backward
uses (so the fused engine agrees with autograd to rounding). With inplace=True a rule may overwrite z with h.
A module type without a rule here makes `forward_tangents` fall back to torch.func forward mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.mlp import Sine

Rule = Callable[[nn.Module, torch.Tensor, bool], "tuple[torch.Tensor, torch.Tensor | None]"]
ACTIVATIONS: dict[type, Rule] = {}


def register_activation(cls: type) -> Callable[[Rule], Rule]:
    """Decorator: teach the tangent engines an elementwise activation module type (plugins may add their own)."""

    def deco(rule: Rule) -> Rule:
        ACTIVATIONS[cls] = rule
        return rule

    return deco


def find_rule(table: dict[type, Callable], module: nn.Module) -> Callable | None:
    """The rule registered for `module`'s class or a base class, if the module computes what that class does.

    A subclass that overrides `forward` gets no rule: the rule would describe a function the module no longer
    computes (a Sequential subclass with its own forward, a Tanh that scales its output).
    """
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls] if type(module).forward is cls.forward else None
    return None


def activation_rule(module: nn.Module) -> Rule | None:
    """The derivative rule for an elementwise activation module, or None."""
    rule = find_rule(ACTIVATIONS, module)
    if rule is _gelu and module.approximate not in ("none", "tanh"):
        return None
    return rule


@register_activation(nn.Identity)
def _identity(m, z, inplace):
    return z, None  # d = 1: tangents pass unchanged


@register_activation(nn.Sigmoid)
def _sigmoid(m, z, inplace):
    h = z.sigmoid_() if inplace else torch.sigmoid(z)
    return h, h * (1 - h)


@register_activation(nn.Tanh)
def _tanh(m, z, inplace):
    h = z.tanh_() if inplace else torch.tanh(z)
    return h, 1 - h * h


@register_activation(nn.SiLU)
def _silu(m, z, inplace):
    s = torch.sigmoid(z)
    d = s * (1 + z * (1 - s))
    return (z.mul_(s) if inplace else z * s), d


_SQRT_2PI = math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


@register_activation(nn.GELU)
def _gelu(m, z, inplace):
    if m.approximate == "tanh":  # 0.5 z (1 + tanh(k (z + 0.044715 z^3)))
        t = torch.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z**3))
        d = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z * z)
        return 0.5 * z * (1 + t), d
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # exact GELU: z Phi(z); derivative Phi(z) + z phi(z)
    d = cdf + z * torch.exp(-0.5 * z * z) / _SQRT_2PI
    return (z.mul_(cdf) if inplace else z * cdf), d


@register_activation(nn.Softplus)
def _softplus(m, z, inplace):
    bz = z * m.beta  # torch switches to the identity where beta z > threshold; so does its derivative
    e = torch.exp(bz)
    d = torch.where(bz > m.threshold, 1.0, e / (e + 1))  # torch's softplus_backward formula
    return F.softplus(z, m.beta, m.threshold), d


@register_activation(nn.ReLU)
def _relu(m, z, inplace):
    d = (z > 0).to(z.dtype)  # autograd's choice at 0: derivative 0
    return (z.relu_() if inplace else torch.relu(z)), d


@register_activation(nn.LeakyReLU)
def _leaky_relu(m, z, inplace):
    d = torch.where(z > 0, 1.0, torch.full_like(z, m.negative_slope))  # the slope in z's dtype, not float32
    return F.leaky_relu(z, m.negative_slope), d


@register_activation(Sine)
def _sine(m, z, inplace):
    wz = m.w0 * z  # sin(w0 z); derivative w0 cos(w0 z)
    return torch.sin(wz), m.w0 * torch.cos(wz)
