"""The fused tangent pass for plain MLPs (Linear and elementwise activations), without a graph.

One buffer S (1 + n_in, rows, width) per layer: S[0] the primal, S[1:] the n_in tangents, so a Linear is a
single GEMM over (1 + n_in) x rows (bias then added to S[0] only) and an activation is in place: S[0] <- act,
d = act' once per sample, S[1:] *= d. The first Linear needs no GEMM for its tangents (they are its weight's
columns, shared by all samples until the first activation multiplies them by d); the last Linear computes
tangents only. Rows go in blocks of `rows` (on CPU sized to stay in cache by bench.engines.tangents); the GEMMs
go through bench.engines.gemm (oneDNN for float32 on CPU).

On CPU an alternating MLP (Linear, activation, ..., Linear: the zoo's MLPs) runs through a `_Plan` instead: the
same pass with every buffer allocated once per thread and shape and the views bound in advance, so a block costs
its kernels and little else. That is what decides small batches: at B = 1 the forum MLP's Jacobian is ~20 kernels
of a few microseconds each, and the allocations, views and checks around them used to cost as much again.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from bench.engines.activations import activation_rule
from bench.engines.blocks import MIN_SHARE, split_over_cores
from bench.engines.gemm import ONEDNN, linear
from bench.engines.guards import hand_reason

# Stacked rows ((1 + n_in) x block rows) from which a plan's GEMMs go to oneDNN rather than torch.mm: oneDNN has
# a fixed cost per call several times torch.mm's on a few rows, but runs faster from a few hundred rows
# (single-threaded, (rows x 100) @ (100 x 100); measured: results/measurements/README.md, "The fused MLP's kernels").
ONEDNN_ROWS = 128
PLANS_PER_THREAD = 8  # plans are a few MB each (one per block shape); the oldest goes first

_SIGMOID, _TANH = nn.Sigmoid, nn.Tanh


def fusable(model: nn.Module) -> list[nn.Module] | None:
    """The modules of a flat Sequential (forward not overridden, no hooks or parametrizations) of a Linear, then
    Linears and activations."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    if hand_reason(model) is not None:  # hooks, parametrizations, pruning: not what the plan would compute
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


def alternating(mods: list[nn.Module]) -> bool:
    """Linear, activation, Linear, ..., Linear, with no identity activations: the shape a `_Plan` runs."""
    return (
        len(mods) >= 3
        and len(mods) % 2 == 1
        and all(type(m) is nn.Linear for m in mods[0::2])
        and all(type(m) is not nn.Linear and type(m) is not nn.Identity for m in mods[1::2])
    )


def _act_into(m: nn.Module, h: torch.Tensor, d: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    """h <- act(h) in place and act' into d (sigmoid and tanh from the output, others by their rule)."""
    if type(m) is _SIGMOID:
        h.sigmoid_()
        return torch.addcmul(h, h, h, value=-1, out=d)  # h (1 - h)
    if type(m) is _TANH:
        h.tanh_()
        return torch.addcmul(one, h, h, value=-1, out=d)  # 1 - h^2
    deriv = _activation(m, h)
    return d.copy_(deriv)


class _Plan:
    """Preallocated buffers and bound views for J of an alternating MLP on blocks of exactly `rows` rows.

    Buffers depend on shapes only, so a plan serves every MLP of these widths (weights are read at each call),
    but it belongs to one thread (`plan_for`). Per hidden layer: one GEMM over the stacked (1 + n_in) x rows
    (torch.mm into the next buffer below ONEDNN_ROWS stacked rows; oneDNN above, which allocates its output),
    the bias on the primal, the activation in place with its derivative into a buffer, the tangents scaled in
    place. The first Linear's tangents are its weight's columns times d; the last Linear computes tangents only.
    """

    def __init__(self, widths: tuple[int, ...], rows: int, n: int, dtype: torch.dtype):
        self.rows, self.n, self.n_out = rows, n, widths[-1]
        self.onednn = ONEDNN is not None and dtype == torch.float32 and (1 + n) * rows >= ONEDNN_ROWS
        S = [torch.empty((1 + n, rows, w), dtype=dtype) for w in widths[:-1]]  # [0] primal, [1:] tangents
        self.flat = [s.view(-1, s.shape[-1]) for s in S]
        self.h = [s[0] for s in S]
        self.t = [s[1:] for s in S]
        self.t_flat = [s[1:].view(-1, s.shape[-1]) for s in S]
        self.D = [torch.empty((rows, w), dtype=dtype) for w in widths[:-1]]  # act' of each hidden layer
        self.T = torch.empty((n * rows, widths[-1]), dtype=dtype)  # the last Linear's tangents
        self.T_perm = self.T.view(n, rows, widths[-1]).permute(1, 2, 0)
        self.one = torch.ones((), dtype=dtype)

    def run(self, mods: list[nn.Module], x: torch.Tensor, out: torch.Tensor) -> None:
        """J of the rows x (rows, n_in) into out (rows, n_out, n_in)."""
        # weights read through _parameters: nn.Module.__getattr__ costs a visible share of the whole pass
        # (results/measurements/README.md, "The fused MLP's kernels")
        params = [m._parameters for m in mods[0::2]]
        first, h = params[0], self.h[0]
        if first["bias"] is None:
            torch.mm(x, first["weight"].T, out=h)
        else:
            torch.addmm(first["bias"], x, first["weight"].T, out=h)
        d = _act_into(mods[1], h, self.D[0], self.one)
        torch.mul(first["weight"].T.contiguous()[:, None, :], d, out=self.t[0])
        if self.onednn:
            self._hidden_onednn(mods, params, out)
            return
        for i in range(1, len(self.h)):
            p, h = params[i], self.h[i]
            torch.mm(self.flat[i - 1], p["weight"].T, out=self.flat[i])
            if p["bias"] is not None:
                h.add_(p["bias"])
            self.t[i].mul_(_act_into(mods[2 * i + 1], h, self.D[i], self.one))
        torch.mm(self.t_flat[-1], params[-1]["weight"].T, out=self.T)
        out.copy_(self.T_perm)

    def _hidden_onednn(self, mods: list[nn.Module], params: list[dict], out: torch.Tensor) -> None:
        """The hidden and last layers through oneDNN (large blocks): each GEMM allocates its output."""
        src = self.flat[0]
        for i in range(1, len(self.h)):
            p = params[i]
            src = ONEDNN(src, p["weight"], None, "none", [], "")
            s = src.view(1 + self.n, self.rows, -1)
            if p["bias"] is not None:
                s[0].add_(p["bias"])
            s[1:].mul_(_act_into(mods[2 * i + 1], s[0], self.D[i], self.one))
        # rows 1.. of the stacked (1 + n) x rows are the tangents (contiguous); the last GEMM has n_out columns,
        # too few for oneDNN's fixed cost (several times torch.mm's at B = 64 on the forum MLP)
        torch.mm(src[self.rows :], params[-1]["weight"].T, out=self.T)
        out.copy_(self.T_perm)


_LOCAL = threading.local()


def plan_for(mods: list[nn.Module], rows: int, n: int, dtype: torch.dtype) -> _Plan:
    """This thread's plan for these widths, block rows, n_in and dtype (built once, kept among the last few)."""
    widths = tuple(m.out_features for m in mods[0::2])
    key = (widths, rows, n, dtype)
    plans = getattr(_LOCAL, "plans", None)
    if plans is None:
        plans = _LOCAL.plans = {}
    plan = plans.get(key)
    if plan is None:
        if len(plans) >= PLANS_PER_THREAD:
            del plans[next(iter(plans))]
        plan = plans[key] = _Plan(widths, rows, n, dtype)
    return plan


def cpu_mlp_jacobian(mods: list[nn.Module], x: torch.Tensor, rows: int) -> torch.Tensor:
    """J of a fusable MLP on CPU: blocks of `rows`, one share of them per core (bench.engines.blocks).

    A batch of one block and one share (B = 1 ... 511 on the forum MLP) goes straight to its plan: there the
    engine's cost is its ~20 kernels, and every microsecond around them counts (the share machinery cost more
    than a third of the call at B = 1). Its torch.mm path runs on one thread (MKL's threads cost more than they
    give on 5 x 100 rows); its oneDNN path keeps torch's threads (faster at B = 64 on 2 cores). Measured:
    results/measurements/README.md, "The fused MLP's kernels".
    """
    B, n = x.shape
    if B <= rows and B < 2 * MIN_SHARE and alternating(mods):
        plan = plan_for(mods, B, n, x.dtype)
        J = x.new_empty((B, plan.n_out, n))
        threads = torch.get_num_threads()
        with torch.no_grad():
            if plan.onednn or threads == 1:
                plan.run(mods, x, J)
                return J
            torch.set_num_threads(1)
            try:
                plan.run(mods, x, J)
            finally:
                torch.set_num_threads(threads)
        return J
    return split_over_cores(lambda xs: fused_mlp_jacobian(mods, xs, rows), x, rows)


def fused_mlp_jacobian(mods: list[nn.Module], x: torch.Tensor, rows: int) -> torch.Tensor:
    """J (B, n_out, n_in) of the MLP `mods` at x (B, n_in), `rows` samples at a time."""
    B, n = x.shape
    rows = min(rows, B)
    J = x.new_empty((B, next(m for m in reversed(mods) if type(m) is nn.Linear).out_features, n))
    if x.device.type == "cpu" and alternating(mods):  # buffers kept per thread: CPU blocks are cache-sized
        with torch.no_grad():
            for start in range(0, B, rows):
                xb = x[start : start + rows]
                plan_for(mods, xb.shape[0], n, x.dtype).run(mods, xb, J[start : start + rows])
        return J
    # the primal is needed up to the last activation
    last_act = max((i for i, m in enumerate(mods) if type(m) is not nn.Linear), default=-1)
    need = [i < last_act for i in range(len(mods))]
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for start in range(0, B, rows):
            _block(mods, need, x[start : start + rows], eye, J[start : start + rows])
    return J
