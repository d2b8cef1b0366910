"""`forward_tangents`: forward mode with the primal and all n_in tangents propagated together, by hand.

State per module: the primal h (B, w) and the tangents t, either (n_in, w) while they are the same for every
sample (before the first nonlinearity: the first Linear's tangents are the columns of its weight, no GEMM) or
(n_in, B, w), row j being dh/dx_j. A Linear is one GEMM for all n_in tangents (t @ W.T folds (n_in, B, w) into
(n_in B, w)); an elementwise activation multiplies the tangents by act'(z), computed once from the primal.
A module skips its primal when nothing after it needs one (the last Linear). Without create_graph the
activations and tangent products run in place.

Every module needs a rule (`register_tangent_rule`): nn.Sequential, nn.Linear, nn.LayerNorm, the activations
in `bench.engines.activations`, `equations.scaling.PhysicalModel`, and the KAN layers in
`bench.engines.kan_tangents`. A model with any other module falls back to torch.func forward mode
(`vmap(jacfwd)`), so the engine never guesses. Each rule is checked against autograd in tests/test_engines.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from bench.engines import autograd, functorch
from bench.engines.activations import ACTIVATIONS, activation_rule, find_rule
from bench.engines.base import Engine, grad_mode
from bench.engines.blocks import split_over_cores
from bench.engines.chunking import chunked, default_chunk_size
from bench.engines.fused_mlp import cpu_mlp_jacobian, fusable, fused_mlp_jacobian
from bench.engines.gemm import linear
from bench.engines.guards import first_trusted, hand_reason
from equations.scaling import PhysicalModel

# rule(module, h (B, w), t (n_in, [B,] w), need_h, inplace) -> (h, or None when not need_h; t)
TangentRule = Callable[[nn.Module, torch.Tensor, torch.Tensor, bool, bool], "tuple[torch.Tensor | None, torch.Tensor]"]
TANGENT_RULES: dict[type, TangentRule] = {}
# reason(module) -> None if the rule covers this instance, else why not (checked before running)
REASONS: dict[type, Callable[[nn.Module], str | None]] = {}

# CPU without create_graph: rows per block such that (1 + n_in) x rows x widest layer is ~2 MiB (L2 + some L3):
# a block-size sweep put the forum MLP and the KANs at their best around this size, and a single whole-batch pass
# far below (measured: results/measurements/README.md, "Block size and per-core shares on the CPU").
CPU_BLOCK_BYTES = 2 * 2**20


def register_tangent_rule(cls: type, reason: Callable[[nn.Module], str | None] | None = None):
    """Decorator: the tangent rule for module class `cls` (and optionally a per-instance support check)."""

    def deco(rule: TangentRule) -> TangentRule:
        TANGENT_RULES[cls] = rule
        if reason is not None:
            REASONS[cls] = reason
        return rule

    return deco


def tangent_reason(module: nn.Module) -> str | None:
    """None if `module` and all its submodules have tangent rules and no hook or parametrization changes what
    they compute (bench.engines.guards.hand_reason, checked once for the whole tree), else the first reason."""
    return hand_reason(module) or _rules_reason(module)


def _rules_reason(module: nn.Module) -> str | None:
    """None if `module` and all its submodules have tangent rules, else the first reason they have not."""
    if find_rule(ACTIVATIONS, module) is not None:
        return None if activation_rule(module) else f"no tangent rule for {module!r}"
    rule = find_rule(TANGENT_RULES, module)
    if rule is None:
        return f"no tangent rule for {type(module).__name__}"
    check = next((REASONS[c] for c in type(module).__mro__ if c in REASONS), None)
    return check(module) if check is not None else None


def children_reason(module: nn.Module) -> str | None:
    """The support check of a container whose rule propagates through its children."""
    return next(filter(None, map(_rules_reason, module.children())), None)


def propagate(module: nn.Module, h: torch.Tensor, t: torch.Tensor, need_h: bool, inplace: bool):
    """Push (primal, tangents) through `module` (call only after tangent_reason(module) is None)."""
    act = activation_rule(module)
    if act is not None:
        return apply_activation(act, module, h, t, inplace)
    return find_rule(TANGENT_RULES, module)(module, h, t, need_h, inplace)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """Shared tangents (n_in, w) as (n_in, 1, w), so they broadcast against per-sample factors (B, w)."""
    return t[:, None, :] if t.dim() == 2 else t


def apply_activation(rule, m: nn.Module, h: torch.Tensor, t: torch.Tensor, inplace: bool):
    h, d = rule(m, h, inplace)
    if d is None:
        return h, t
    if t.dim() == 2:  # the first per-sample factor: (n_in, w) -> (n_in, B, w)
        return h, t[:, None, :] * d
    return h, (t.mul_(d) if inplace else t * d)


@register_tangent_rule(nn.Identity)
def _identity(m, h, t, need_h, inplace):
    return h, t


@register_tangent_rule(nn.Linear)
def _linear(m: nn.Linear, h, t, need_h: bool, inplace: bool):
    t = linear(t, m.weight)  # (n_in, [B,] w) @ (w, w'): one GEMM
    return (linear(h, m.weight, m.bias) if need_h else None), t


def _is_affine(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.Identity))


@register_tangent_rule(nn.Sequential, reason=children_reason)
def _sequential(m: nn.Sequential, h, t, need_h: bool, inplace: bool):
    mods = list(m)
    for i, sub in enumerate(mods):
        need = need_h or not all(_is_affine(later) for later in mods[i + 1 :])
        h, t = propagate(sub, h, t, need, inplace)
    return h, t


def layernorm_tangents(h: torch.Tensor, t: torch.Tensor, weight, bias, eps: float):
    """LayerNorm over the last axis: z = (h - mu) r w + b, r = (var + eps)^-1/2, with its tangents.

    dz = w r (dc - zhat mean(zhat dc)), dc = dh - mean(dh): the derivative of centring and of the variance.
    """
    mu = h.mean(-1, keepdim=True)
    c = h - mu
    r = torch.rsqrt((c * c).mean(-1, keepdim=True) + eps)
    zhat = c * r
    tc = as_rows(t)
    tc = tc - tc.mean(-1, keepdim=True)
    dz = r * (tc - zhat * (zhat * tc).mean(-1, keepdim=True))
    if weight is None:
        return (zhat if bias is None else zhat + bias), dz
    z = zhat * weight if bias is None else torch.addcmul(bias, zhat, weight)
    return z, dz * weight


def _layernorm_reason(m: nn.LayerNorm) -> str | None:
    return None if len(m.normalized_shape) == 1 else f"LayerNorm over {len(m.normalized_shape)} axes"


@register_tangent_rule(nn.LayerNorm, reason=_layernorm_reason)
def _layernorm(m: nn.LayerNorm, h, t, need_h: bool, inplace: bool):
    return layernorm_tangents(h, t, m.weight, m.bias, m.eps)


@register_tangent_rule(PhysicalModel, reason=children_reason)
def _physical(m: PhysicalModel, h, t, need_h: bool, inplace: bool):
    """The wrapper's chain rule on tangents, from its one place (equations.scaling.Scaler)."""
    s = m.scaler
    h_n, t_n = propagate(m.model, s.transform_x(h), s.tangent_to_normalized(t), need_h, inplace)
    return (s.inverse_y(h_n) if need_h else None), s.tangent_to_physical(t_n)


def tangents_to_jacobian(t: torch.Tensor, batch: int) -> torch.Tensor:
    """(n_in, B, n_out) or shared (n_in, n_out) tangents -> J (B, n_out, n_in)."""
    if t.dim() == 2:
        return t.T.expand(batch, -1, -1).clone()
    return t.permute(1, 2, 0).contiguous()


def run_tangents(model: nn.Module, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """J (B, n_out, n_in) of a model every submodule of which has a tangent rule."""
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    with grad_mode(create_graph):  # in place only without a graph, and never on the caller's x
        _, t = propagate(model, x if create_graph else x.clone(), eye, False, not create_graph)
    return tangents_to_jacobian(t, x.shape[0])


def value_and_jacobian(model: nn.Module, x: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (B, n_out), J (B, n_out, n_in)) from one tangent pass: the primal comes along with the tangents, so a
    loss on values and Jacobians (Sobolev training) needs no separate forward. Needs tangent_reason(model) None."""
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    with grad_mode(create_graph):
        h, t = propagate(model, x if create_graph else x.clone(), eye, True, not create_graph)
    return h, tangents_to_jacobian(t, x.shape[0])


def widest(model: nn.Module) -> int:
    """Widest activation per sample: the larger side of a weight (a KAN layer's in x basis size)."""
    return max((max(p.shape[0], math.prod(p.shape[1:])) for p in model.parameters() if p.dim() >= 1), default=1)


def cpu_block_rows(x: torch.Tensor, width: int) -> int:
    """Rows per CPU block: (1 + n_in) x rows x the widest activation stay near CPU_BLOCK_BYTES (at least 64)."""
    return max(64, CPU_BLOCK_BYTES // ((1 + x.shape[1]) * width * x.element_size()))


def forward_tangents(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Hand-written forward mode where every module has a rule, else torch.func's (`vmap(jacfwd)`)."""
    mods = None if create_graph else fusable(model)  # a plain MLP: every module has a rule (checked first: cheap)
    if mods is not None:
        if x.device.type != "cpu":
            return fused_mlp_jacobian(mods, x, x.shape[0])
        width = max(max(m.in_features, m.out_features) for m in mods if type(m) is nn.Linear)
        return cpu_mlp_jacobian(mods, x, cpu_block_rows(x, width))
    if tangent_reason(model) is not None:
        # forward mode, else reverse mode, else the loop: the first whose guard trusts it here (bench.engines.guards)
        fn = first_trusted(FALLBACKS, model, x, create_graph).fn
        # chunked here: jacobian() leaves the chunking of forward_tangents to it (Engine.blocks_on_cpu)
        return chunked(lambda xc: fn(model, xc, create_graph), x, default_chunk_size(model, x), create_graph)
    if create_graph:
        return run_tangents(model, x, True)
    if x.device.type != "cpu":
        return run_tangents(model, x, False)
    # CPU: blocks of rows that fit in cache are several times faster than one pass over a large batch,
    # and each core takes its own share of the blocks (bench.engines.blocks).
    rows = cpu_block_rows(x, widest(model))
    # each block's J goes straight into one output per share: a list of small block results kept alive between
    # large temporaries fragmented the heap (RSS grew by gigabytes over millions of samples of efficient-KAN;
    # results/measurements/README.md, "Block size and per-core shares on the CPU")
    return split_over_cores(lambda xs: chunked(lambda b: run_tangents(model, b, False), xs, rows, False), x, rows)


FALLBACKS = [*functorch.ENGINES[::-1], autograd.ENGINES[0]]  # vmap_jacfwd, vmap_jacrev, loop

ENGINES = [
    Engine("forward_tangents", forward_tangents, batch_sum=False, differentiable=True, blocks_on_cpu=True,
           doc="primal + n_in tangents propagated together by hand (one GEMM per Linear); else vmap(jacfwd)"),
]  # fmt: skip
