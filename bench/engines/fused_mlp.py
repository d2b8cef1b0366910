"""The fused tangent pass for plain MLPs (Linear and elementwise activations), without a graph.

One buffer S (1 + n_in, rows, width) per layer: S[0] the primal, S[1:] the n_in tangents, so a Linear is a
single GEMM over (1 + n_in) x rows (bias then added to S[0] only) and an activation is in place: S[0] <- act,
d = act' once per sample, S[1:] *= d. The first Linear needs no GEMM for its tangents (they are its weight's
columns, shared by all samples until the first activation multiplies them by d); the last Linear computes
tangents only. Rows are processed in blocks that stay in cache, and two ping-pong buffers are allocated once
per call and reused by every block and layer: fresh multi-megabyte tensors cost page faults on CPU that made
a (2048 x 100) @ (100 x 100) GEMM 3x slower (26 vs 90 GFLOP/s single-threaded on the 2-core AMD EPYC).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.engines.activations import activation_rule

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


def _activation(m: nn.Module, h: torch.Tensor, d: torch.Tensor) -> torch.Tensor | None:
    """h <- act(h) in place; returns act' (in the d buffer for the common cases), or None for the identity."""
    if type(m) is _SIGMOID:
        h.sigmoid_()
        return torch.addcmul(h, h, h, value=-1, out=d)  # h (1 - h)
    if type(m) is _TANH:
        h.tanh_()
        torch.mul(h, h, out=d)
        return d.neg_().add_(1)  # 1 - h^2
    h_new, deriv = activation_rule(m)(m, h, True)
    if h_new.data_ptr() != h.data_ptr():
        h.copy_(h_new)
    return deriv


def _block(mods: list[nn.Module], need: list[bool], xb: torch.Tensor, eye, bufs, dbuf, out: torch.Tensor) -> None:
    """J of one block of rows xb (R, n_in) into out (R, n_out, n_in)."""
    R, n = xb.shape
    h = xb
    shared = eye  # tangents equal for every row, (n, w), until the first activation; then None
    S = None  # (1 + n, R, w): S[0] primal, S[1:] tangents (pending while `shared` is set)
    which = 0
    for m, need_h in zip(mods, need, strict=True):
        if type(m) is nn.Linear:
            w2 = m.out_features
            nxt = bufs[which][: (1 + n) * R * w2].view(1 + n, R, w2)
            which ^= 1
            if shared is not None:
                shared = shared @ m.weight.T
                if m.bias is None:
                    torch.mm(h, m.weight.T, out=nxt[0])
                else:
                    torch.addmm(m.bias, h, m.weight.T, out=nxt[0])
            elif need_h:
                torch.mm(S.view(-1, S.shape[-1]), m.weight.T, out=nxt.view(-1, w2))
                if m.bias is not None:
                    nxt[0].add_(m.bias)
            else:
                torch.mm(S[1:].reshape(-1, S.shape[-1]), m.weight.T, out=nxt[1:].view(-1, w2))
            S = nxt
            h = S[0]
        else:
            d = _activation(m, h, dbuf[: h.numel()].view_as(h))
            if d is None:
                continue
            if shared is not None:
                torch.mul(shared[:, None, :], d, out=S[1:])
                shared = None
            else:
                S[1:].mul_(d)
    if shared is not None:
        out.copy_(shared.T.expand_as(out))
    else:
        out.copy_(S[1:].permute(1, 2, 0))


def fused_mlp_jacobian(mods: list[nn.Module], x: torch.Tensor, rows: int) -> torch.Tensor:
    """J (B, n_out, n_in) of the MLP `mods` at x (B, n_in), `rows` samples at a time."""
    B, n = x.shape
    linears = [m for m in mods if type(m) is nn.Linear]
    # the primal is needed up to the last activation
    last_act = max((i for i, m in enumerate(mods) if type(m) is not nn.Linear), default=-1)
    need = [i < last_act for i in range(len(mods))]
    width = max(m.out_features for m in linears)
    rows = min(rows, B)
    bufs = [x.new_empty((1 + n) * rows * width) for _ in range(2)]
    dbuf = x.new_empty(rows * width)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    J = x.new_empty((B, linears[-1].out_features, n))
    with torch.no_grad():
        for start in range(0, B, rows):
            _block(mods, need, x[start : start + rows], eye, bufs, dbuf, J[start : start + rows])
    return J
