"""Engines built on `torch.func`: vmap over samples of the per-sample jacrev / jacfwd.

Both are guarded (bench.engines.guards): custom autograd Functions torch.func cannot transform, and a loss on
forward mode's J through ops whose reverse-over-forward derivative torch gets wrong, are refused with the reason.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jacfwd, jacrev, vmap

from bench.engines.base import Engine, grad_mode, per_sample
from bench.engines.guards import JVP, VJP, guarded


@guarded("vmap_jacrev", VJP, order=1)
def vmap_jacrev(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """`vmap(jacrev(f))`: reverse mode, n_out vector-Jacobian products batched over the samples."""
    with grad_mode(create_graph):
        return vmap(jacrev(per_sample(model)))(x)


@guarded("vmap_jacfwd", JVP, order=1)
def vmap_jacfwd(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """`vmap(jacfwd(f))`: forward mode, n_in Jacobian-vector products batched over the samples."""
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
