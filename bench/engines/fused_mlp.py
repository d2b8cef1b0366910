"""The fused tangent pass for plain MLPs (Linear and elementwise activations), without a graph.

One buffer S (1 + n_in, rows, width) per layer: S[0] the primal, S[1:] the n_in tangents, so a Linear is a
single GEMM over (1 + n_in) x rows (bias then added to S[0] only) and an activation is in place: S[0] <- act,
d = act' once per sample, S[1:] *= d. The first Linear needs no GEMM for its tangents (they are its weight's
columns, shared by all samples until the first activation multiplies them by d); the last Linear computes
tangents only. Rows go in blocks of `rows` (on CPU sized to stay in cache by bench.engines.tangents); the GEMMs
go through bench.engines.gemm (oneDNN for float32 on CPU).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.engines.activations import activation_rule
from bench.engines.gemm import linear

_SIGMOID, _TANH = nn.Sigmoid, nn.Tanh


def fusable(model: nn.Module) -> list[nn.Module] | None:
    """The modules of a flat Sequential (forward not overridden) of a Linear, then Linears and activations."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    mods = list(model)
    if not mods or not isinstance(mods[0], nn.Linear):
        return None
    ok = all(type(m) is nn.Linear or activation_rule(m) is not None for m in mods)
    return mods if ok else None


def _activation(m: nn.Module, h: torch.Tensor) -> torch.Tensor | None:
    """h <- act(h) in place; returns act', or None for the identity."""
    if type(m) is _SIGMOID:
        h.sigmoid_()
        return torch.addcmul(h, h, h, value=-1)  # h (1 - h)
    if type(m) is _TANH:
        h.tanh_()
        return torch.mul(h, h).neg_().add_(1)  # 1 - h^2
    h_new, deriv = activation_rule(m)(m, h, True)
    if h_new.data_ptr() != h.data_ptr():
        h.copy_(h_new)
    return deriv


def _block(mods: list[nn.Module], need: list[bool], xb: torch.Tensor, eye: torch.Tensor, out: torch.Tensor) -> None:
    """J of one block of rows xb (R, n_in) into out (R, n_out, n_in)."""
    R, n = xb.shape
    h, shared = xb, eye  # shared: tangents equal for every row, (n, w), until the first activation; then None
    S = T = None  # S (1 + n, R, w): S[0] primal, S[1:] = T tangents; T alone after the last activation
    for m, need_h in zip(mods, need, strict=True):
        if type(m) is nn.Linear:
            if shared is not None:  # primal only; the tangents stay shared (n, w) until an activation
                S = xb.new_empty((1 + n, R, m.out_features))
                if m.bias is None:
                    torch.mm(h, m.weight.T, out=S[0])
                else:
                    torch.addmm(m.bias, h, m.weight.T, out=S[0])
                shared = shared @ m.weight.T
            elif need_h:  # primal and tangents in one GEMM
                S = linear(S, m.weight)
                if m.bias is not None:
                    S[0].add_(m.bias)
            else:  # tangents only
                S, T = None, linear(T, m.weight)
            if S is not None:
                h, T = S[0], S[1:]
        else:
            d = _activation(m, h)
            if d is None:
                continue
            if shared is not None:
                torch.mul(shared[:, None, :], d, out=T)
                shared = None
            else:
                T.mul_(d)
    if shared is not None:
        out.copy_(shared.T.expand_as(out))
    else:
        out.copy_(T.permute(1, 2, 0))


def fused_mlp_jacobian(mods: list[nn.Module], x: torch.Tensor, rows: int) -> torch.Tensor:
    """J (B, n_out, n_in) of the MLP `mods` at x (B, n_in), `rows` samples at a time."""
    B, n = x.shape
    # the primal is needed up to the last activation
    last_act = max((i for i, m in enumerate(mods) if type(m) is not nn.Linear), default=-1)
    need = [i < last_act for i in range(len(mods))]
    rows = min(rows, B)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    n_out = [m for m in mods if type(m) is nn.Linear][-1].out_features
    J = x.new_empty((B, n_out, n))
    with torch.no_grad():
        for start in range(0, B, rows):
            _block(mods, need, x[start : start + rows], eye, J[start : start + rows])
    return J
