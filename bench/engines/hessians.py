"""Hessian and Laplacian engines: every way to get per-sample second derivatives of a model at x (B, n_in).

    from bench.engines import hessian, laplacian
    H = hessian(model, x)                          # (B, n_out, n_in, n_in), "auto": the fastest that applies
    H = hessian(model, x, engine="vmap_hessian", chunk_size=4096)
    H = hessian(model, x, create_graph=True)       # differentiable: a Hessian term in a training loss
    L = laplacian(model, x)                        # (B, n_out): the trace a PINN residual needs

The same contract as the Jacobian engines (`bench.engines.base.Engine`): `fn(model, x, create_graph)` is the bare
engine; `hessian` adds the support check, the coupling check for the batch-sum engine (second order: see
`bench.engines.coupling.verify_batch_independent(order=2)`) and chunking. Cost in forward passes per sample,
beside forward mode's ideal 1 + n_in + n_in (n_in + 1) / 2 (the primal, n_in tangents, the distinct pairs):
`forward_hessian` is that ideal; `vmap_hessian` (forward over reverse) carries n_in tangents through a forward
and n_out reverse passes; the per-sample loop runs n_out double-backward Hessians one sample at a time.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.functional import hessian as autograd_hessian
from torch.func import hessian as func_hessian
from torch.func import jacrev, vmap

from bench.engines import kan_second  # noqa: F401 (registers the KAN second-order rules)
from bench.engines.base import Engine, UnsupportedEngine, check_output, grad_mode, model_name, per_sample, resolve_in
from bench.engines.blocks import split_over_cores
from bench.engines.chunking import chunked, default_chunk_size, run_engine
from bench.engines.guards import AUTOGRAD, JVP, VJP, first_trusted, guarded
from bench.engines.second_order import rule_reason, second_order_pass, to_hessian, to_laplacian
from bench.engines.tangents import CPU_BLOCK_BYTES, widest

AUTO_ORDER = ("vmap_jacrev_jacrev", "vmap_hessian", "loop")  # where the hand-written rules do not apply


def pair_count(n_in: int) -> int:
    return n_in * (n_in + 1) // 2


def ideal_passes(n_in: int) -> int:
    """Forward mode's ideal cost of a Hessian, in forward passes per sample: 1 + n_in + n_in (n_in + 1) / 2."""
    return 1 + n_in + pair_count(n_in)


@guarded("loop", AUTOGRAD, order=2)
def loop(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The baseline users write: torch.autograd.functional.hessian per sample and per output, in Python loops."""
    f = per_sample(model)
    n_out = f(x[0]).shape[0]
    H = [
        torch.stack([autograd_hessian(lambda xi, i=i: f(xi)[i], xb, create_graph=create_graph) for i in range(n_out)])
        for xb in x
    ]
    return torch.stack(H)


@guarded("vmap_hessian", JVP, order=2)
def vmap_hessian(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """`vmap(torch.func.hessian(f))`: forward over reverse (jacfwd(jacrev)), batched over the samples."""
    try:
        with grad_mode(create_graph):
            return vmap(func_hessian(per_sample(model)))(x)
    except NotImplementedError as err:  # an op without a forward-mode derivative of its backward (silu in 2.13)
        raise UnsupportedEngine(
            f"engine 'vmap_hessian' cannot differentiate model {model_name(model)} forward over reverse: {err}; "
            "use vmap_jacrev_jacrev or forward_hessian"
        ) from err


@guarded("vmap_jacrev_jacrev", VJP, order=2)
def vmap_jacrev_jacrev(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """`vmap(jacrev(jacrev(f)))`: reverse over reverse, batched over the samples."""
    with grad_mode(create_graph):
        return vmap(jacrev(jacrev(per_sample(model))))(x)


@guarded("batch_sum_hessian", AUTOGRAD, order=2)
def batch_sum_hessian(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Double backward of the batch sum: grad of sum_b y[b, i], then of its column j: row b is H_b[i, j, :].

    n_out + n_out n_in backward passes for the whole batch; only valid when no second derivative couples two
    samples (bench.engines.hessian runs the second-order coupling check first).
    """
    with torch.enable_grad():
        xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        y = model(xg)
        check_output(model, x, y)
        rows = []
        for i in range(y.shape[1]):
            (g,) = torch.autograd.grad(y[:, i].sum(), xg, create_graph=True, retain_graph=True)
            cols = [
                torch.autograd.grad(g[:, j].sum(), xg, create_graph=create_graph, retain_graph=True)[0]
                for j in range(x.shape[1])
            ]
            rows.append(torch.stack(cols, dim=1))  # (B, n_in, n_in)
    return torch.stack(rows, dim=1)


def _second_order(model: nn.Module, x: torch.Tensor, create_graph: bool, laplacian: bool) -> torch.Tensor:
    """H (B, n_out, n_in, n_in) or the Laplacian (B, n_out) of a model with second-order rules throughout."""
    B = x.shape[0]

    def run(xb: torch.Tensor) -> torch.Tensor:
        with grad_mode(create_graph):
            (y, _, s), pairs = second_order_pass(model, xb, laplacian)
            if laplacian:
                return to_laplacian(s, xb.shape[0], y.shape[1], y)
            return to_hessian(s, pairs, xb.shape[0], y.shape[1], y)

    if create_graph or x.device.type != "cpu":
        return run(x)
    rows_per_sample = 1 + x.shape[1] + (1 if laplacian else pair_count(x.shape[1]))
    # rows per block so that (1 + n_in + P) copies of the widest layer stay near forward_tangents' 2 MiB
    rows = max(64, CPU_BLOCK_BYTES // (rows_per_sample * widest(model) * x.element_size()))
    if B <= rows:
        return split_over_cores(run, x, rows)
    return split_over_cores(lambda xs: chunked(run, xs, rows, False), x, rows)


def forward_hessian(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Second-order forward mode by hand (bench.engines.second_order); where a module has no rule (or hooks,
    parametrizations), the engine `choose_hessian` trusts."""
    if rule_reason(model) is not None:
        return choose_hessian(model, x, create_graph).fn(model, x, create_graph)
    return _second_order(model, x, create_graph, laplacian=False)


def forward_laplacian(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The Laplacian (B, n_out) in one forward pass of primal, n_in tangents and their trace (Li et al. 2023)."""
    if rule_reason(model) is not None:
        return hessian_trace(model, x, create_graph)
    return _second_order(model, x, create_graph, laplacian=True)


def hessian_trace(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The Laplacian as the trace of the full Hessian (the `auto` Hessian engine): (B, n_out)."""
    H = hessian(model, x, create_graph=create_graph)
    return torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)


HESSIAN_ENGINES: dict[str, Engine] = {
    e.name: e
    for e in [
        Engine("forward_hessian", forward_hessian, batch_sum=False, differentiable=True, blocks_on_cpu=True,
               doc="primal, n_in tangents and the n_in (n_in + 1) / 2 pair tangents in one pass by hand; "
                   "else vmap(hessian)"),
        Engine("vmap_hessian", vmap_hessian, batch_sum=False, differentiable=True,
               doc="torch.func.vmap(torch.func.hessian(f)) (jacfwd over jacrev)"),
        Engine("vmap_jacrev_jacrev", vmap_jacrev_jacrev, batch_sum=False, differentiable=True,
               doc="torch.func.vmap(jacrev(jacrev(f))) (reverse over reverse)"),
        Engine("batch_sum_hessian", batch_sum_hessian, batch_sum=True, differentiable=True,
               doc="double backward of the batch sum (needs the second-order coupling check)"),
        Engine("loop", loop, batch_sum=False, differentiable=True,
               doc="torch.autograd.functional.hessian per sample and output in Python loops (the baseline)"),
    ]
}  # fmt: skip

LAPLACIAN_ENGINES: dict[str, Engine] = {
    e.name: e
    for e in [
        Engine("forward_laplacian", forward_laplacian, batch_sum=False, differentiable=True, blocks_on_cpu=True,
               doc="primal, n_in tangents and their second-order trace in one pass (the forward Laplacian)"),
        Engine("hessian_trace", hessian_trace, batch_sum=False, differentiable=True,
               doc="the trace of the auto Hessian engine's H"),
    ]
}  # fmt: skip


def choose_hessian(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> Engine:
    """The engine `auto` uses: the hand-written pass where every module has a rule (forward mode's ideal cost),
    else the first of reverse over reverse, forward over reverse and the loop whose guard accepts the model
    (bench.engines.guards). Reverse over reverse first: torch 2.13 has no forward-mode derivative of silu_backward
    (FastKAN's and efficient-KAN's base branch, pykan)."""
    if rule_reason(model) is None:
        return HESSIAN_ENGINES["forward_hessian"]
    return first_trusted([HESSIAN_ENGINES[n] for n in AUTO_ORDER], model, x, create_graph)


def hessian_chunk_size(model: nn.Module, x: torch.Tensor, budget_bytes: int | None = None) -> int:
    """Samples per chunk so that one chunk's intermediates stay within the budget (bench.engines.chunking): a
    sample carries the primal, its first-order and its second-order tangents (or cotangents)."""
    n_in, n_out = x.shape[1], int(getattr(model, "n_out", x.shape[1]))
    copies = 1 + max(n_in, n_out) + max(pair_count(n_in), n_out * n_in)
    return default_chunk_size(model, x, budget_bytes, copies)


def hessian(
    model: nn.Module,
    x: torch.Tensor,
    engine: str | Engine = "auto",
    chunk_size: int | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Per-sample Hessians: x (B, n_in) -> H (B, n_out, n_in, n_in), H[b, i, j, k] = d2 y_i / dx_j dx_k at x_b.

    Args:
        engine: a name in HESSIAN_ENGINES, an Engine, or "auto" (`choose_hessian`).
        chunk_size: samples per chunk (memory is bounded by one chunk); None picks one from a 256 MiB budget.
        create_graph: keep the graph so a loss on H can be backpropagated to the parameters.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (B, n_in), got shape {tuple(x.shape)}")
    eng = resolve_in(HESSIAN_ENGINES, engine, lambda: choose_hessian(model, x, create_graph), model, x, create_graph)
    return run_engine(eng, model, x, chunk_size, create_graph, order=2, chunk_size_for=hessian_chunk_size)


def laplacian(
    model: nn.Module,
    x: torch.Tensor,
    engine: str | Engine = "auto",
    chunk_size: int | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Per-sample Laplacians: x (B, n_in) -> (B, n_out), the trace of each output's Hessian.

    `auto` is the forward Laplacian where every module has a second-order rule, else the trace of the Hessian.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (B, n_in), got shape {tuple(x.shape)}")

    def auto() -> Engine:
        return LAPLACIAN_ENGINES["forward_laplacian" if rule_reason(model) is None else "hessian_trace"]

    eng = resolve_in(LAPLACIAN_ENGINES, engine, auto, model, x, create_graph)
    return run_engine(eng, model, x, chunk_size, create_graph, order=2, chunk_size_for=hessian_chunk_size)


__all__ = [
    "HESSIAN_ENGINES", "LAPLACIAN_ENGINES", "choose_hessian", "hessian", "ideal_passes", "laplacian",
]  # fmt: skip
