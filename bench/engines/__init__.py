"""Jacobian engines: every way users compute per-sample Jacobians J (B, n_out, n_in) of a model at x (B, n_in).

    from bench.engines import ENGINES, jacobian
    J = jacobian(model, x)                                   # "auto": fastest engine that supports the model
    J = jacobian(model, x, engine="vmap_jacrev", chunk_size=4096)
    J = jacobian(model, x, create_graph=True)                # differentiable J for Sobolev training

`ENGINES[name].fn(model, x, create_graph=False)` is the bare engine (no chunking, no coupling check);
`jacobian` adds the support check, the coupling check for batch-sum engines and chunking. Second derivatives
have the same contract (`bench.engines.hessians`):

    H = hessian(model, x)                                    # (B, n_out, n_in, n_in)
    L = laplacian(model, x)                                  # (B, n_out)
"""

from __future__ import annotations

import torch
from torch import nn

from bench.engines import (  # noqa: F401 (kan_tangents registers rules)
    auto,
    autograd,
    compiled,
    coupling,  # a module, not its names: bench.engines.coupling imports bench.engines.base
    functorch,
    guards,
    kan_tangents,
    tangents,
    triton_mlp,
)
from bench.engines.base import Engine, UnknownEngine, UnsupportedEngine, model_name, resolve_in
from bench.engines.chunking import run_engine
from bench.engines.hessians import HESSIAN_ENGINES, LAPLACIAN_ENGINES, choose_hessian, hessian, laplacian

__all__ = [
    "AUTO_ORDER", "ENGINES", "HESSIAN_ENGINES", "LAPLACIAN_ENGINES", "Engine", "UnknownEngine", "UnsupportedEngine",
    "choose", "choose_hessian", "hessian", "jacobian", "laplacian",
]  # fmt: skip

ENGINES: dict[str, Engine] = {
    e.name: e for mod in (autograd, functorch, tangents, compiled, triton_mlp) for e in mod.ENGINES
}  # fmt: skip

# Without a measurement, `auto` takes the first engine in this order that supports (model, device, dtype) and, for
# create_graph, is differentiable: forward_tangents leads at large batches on the zoo; without tangent rules it is
# vmap(jacfwd), and vmap_jacrev wins there when n_out < n_in. With one (bench.engines.auto: the shipped table,
# refreshed by every throughput sweep), the measured ranking comes first. Batch-sum engines are never chosen
# automatically (they need the coupling check), compiled engines only with compiled=True (tens of seconds of
# compilation per model and shape are not in a steady-state rate).
AUTO_ORDER = ("forward_tangents", "vmap_jacrev", "vmap_jacfwd", "loop")


def choose(model: nn.Module, x: torch.Tensor, create_graph: bool = False, compiled: bool = False) -> Engine:
    """The engine `auto` uses for this model and input: the measured fastest that supports them, else AUTO_ORDER."""
    order = list(AUTO_ORDER)
    n_out = int(getattr(model, "n_out", x.shape[1]))
    if tangents.tangent_reason(model) is not None and n_out < x.shape[1]:
        order.remove("forward_tangents")  # its fallback is forward mode; reverse mode needs fewer passes here
    measured = [] if create_graph else auto.ranked(model, x.device, x.dtype, x.shape[0])  # rates without a graph
    for name in dict.fromkeys([*measured, *order]):
        e = ENGINES.get(name)
        if e is None or e.batch_sum or (e.compiled and not compiled):
            continue
        if (e.differentiable or not create_graph) and e.supports(model, x.device, x.dtype) is None:
            if guards.reason_for(e.fn, model, x, create_graph) is None:  # custom Functions, ops torch gets wrong
                return e
    raise UnsupportedEngine(f"no engine supports model {model_name(model)} on {x.device} {x.dtype}")


def resolve(model: nn.Module, x: torch.Tensor, engine: str | Engine, create_graph: bool) -> Engine:
    """The Engine for `engine` ("auto", a name or an Engine), or UnsupportedEngine saying why not."""
    return resolve_in(ENGINES, engine, lambda: choose(model, x, create_graph), model, x, create_graph)


def jacobian(
    model: nn.Module,
    x: torch.Tensor,
    engine: str | Engine = "auto",
    chunk_size: int | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Per-sample Jacobians: x (B, n_in) -> J (B, n_out, n_in), J[b, i, j] = d y_i / d x_j at x_b.

    Args:
        engine: a name in ENGINES, an Engine, or "auto" (the fastest that supports model, device and dtype).
        chunk_size: samples per chunk (memory is bounded by one chunk); None picks one from a 256 MiB budget.
        create_graph: keep the graph so a loss on J can be backpropagated to the parameters (Sobolev training).
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (B, n_in), got shape {tuple(x.shape)}")
    return run_engine(resolve(model, x, engine, create_graph), model, x, chunk_size, create_graph)
