"""Engines built on `torch.func`: vmap over samples of the per-sample jacrev / jacfwd."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jacfwd, jacrev, vmap

from bench.engines.base import Engine, UnsupportedEngine, grad_mode, model_name, per_sample

# Forward mode through LayerNorm is right to first order but its derivative is not (pytorch/pytorch#196700,
# open in torch 2.13): with create_graph, a loss on vmap(jacfwd)'s J gets parameter gradients off by 10-60%
# (tests/test_engines.py measures it). So vmap_jacfwd refuses create_graph for models with a LayerNorm.
FORWARD_OVER_REVERSE_BROKEN = (nn.LayerNorm,)


def jacfwd_graph_reason(model: nn.Module) -> str | None:
    """Why vmap(jacfwd) cannot keep a correct graph for `model` (None if it can)."""
    bad = next((m for m in model.modules() if isinstance(m, FORWARD_OVER_REVERSE_BROKEN)), None)
    if bad is None:
        return None
    return (
        f"model {model_name(model)} has a {type(bad).__name__}, whose forward-mode derivative torch cannot "
        f"differentiate correctly (pytorch/pytorch#196700): parameter gradients through vmap(jacfwd)'s J are wrong"
    )


def vmap_jacrev(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """`vmap(jacrev(f))`: reverse mode, n_out vector-Jacobian products batched over the samples."""
    with grad_mode(create_graph):
        return vmap(jacrev(per_sample(model)))(x)


def vmap_jacfwd(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """`vmap(jacfwd(f))`: forward mode, n_in Jacobian-vector products batched over the samples."""
    if create_graph and (reason := jacfwd_graph_reason(model)) is not None:
        raise UnsupportedEngine(f"engine 'vmap_jacfwd' cannot keep the graph: {reason}")
    with grad_mode(create_graph):
        return vmap(jacfwd(per_sample(model)))(x)


ENGINES = [
    Engine(
        "vmap_jacrev", vmap_jacrev, batch_sum=False, differentiable=True, doc="torch.func.vmap(torch.func.jacrev(f))"
    ),
    Engine(
        "vmap_jacfwd", vmap_jacfwd, batch_sum=False, differentiable=True, doc="torch.func.vmap(torch.func.jacfwd(f))"
    ),
]
