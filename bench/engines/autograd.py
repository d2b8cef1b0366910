"""Engines built on `torch.autograd`: the forum's per-sample loop and the batch-sum tricks.

The batch-sum engines differentiate sum_b f(x_b): row b of d(sum_b f_k(x_b))/dx is J_b[k] only when sample b's
output does not depend on the other samples. `bench.engines.jacobian` runs the coupling check before using them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.functional import jacobian as autograd_jacobian

from bench.engines.base import Engine, check_output, per_sample
from bench.engines.guards import AUTOGRAD, JVP, VJP, guarded


@guarded("loop", AUTOGRAD, order=1)
def loop(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The forum's baseline: one `torch.autograd.functional.jacobian` call per sample, in a Python loop."""
    f = per_sample(model)
    rows = [autograd_jacobian(f, xi, create_graph=create_graph) for xi in x]
    return torch.stack(rows)


def _summed(model: nn.Module, x: torch.Tensor):
    def f(xb: torch.Tensor) -> torch.Tensor:  # (B, n_in) -> (n_out,)
        y = model(xb)
        check_output(model, xb, y)
        return y.sum(0)

    return f


@guarded("functional_vectorized", VJP, order=1)
def functional_vectorized(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """`autograd.functional.jacobian(vectorize=True)` of the batch sum: one vmapped backward for all outputs."""
    J = autograd_jacobian(_summed(model, x), x, create_graph=create_graph, vectorize=True)  # (n_out, B, n_in)
    return J.permute(1, 0, 2)


@guarded("functional_forward", JVP, order=1)
def functional_forward(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The same with `strategy="forward-mode"`: one vmapped forward-mode pass for all n_in input directions."""
    J = autograd_jacobian(_summed(model, x), x, vectorize=True, strategy="forward-mode")  # (n_out, B, n_in)
    return J.permute(1, 0, 2).detach()  # forward mode leaves a graph to the parameters; create_graph is False


@guarded("batch_sum_reverse", AUTOGRAD, order=1)
def batch_sum_reverse(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """One forward, then one reverse pass per output k over sum_b y[b, k]: row b of the gradient is J_b[k]."""
    with torch.enable_grad():
        xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        y = model(xg)
        check_output(model, x, y)
        n_out = y.shape[1]
        rows = [
            torch.autograd.grad(
                y[:, k].sum(), xg, retain_graph=create_graph or k < n_out - 1, create_graph=create_graph
            )[0]
            for k in range(n_out)
        ]
    return torch.stack(rows, dim=1)


ENGINES = [
    Engine("loop", loop, batch_sum=False, differentiable=True,
           doc="per-sample torch.autograd.functional.jacobian in a Python loop (the forum's baseline)"),
    Engine("functional_vectorized", functional_vectorized, batch_sum=True, differentiable=True,
           doc="torch.autograd.functional.jacobian(vectorize=True) of the batch sum"),
    Engine("functional_forward", functional_forward, batch_sum=True, differentiable=False,
           doc='torch.autograd.functional.jacobian(vectorize=True, strategy="forward-mode") of the batch sum'),
    Engine("batch_sum_reverse", batch_sum_reverse, batch_sum=True, differentiable=True,
           doc="one forward, one reverse pass per output over the batch sum"),
]  # fmt: skip
