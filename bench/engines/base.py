"""The engine contract shared by every Jacobian engine: `Engine`, `UnsupportedEngine` and small helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from equations.names import UnknownName, suggest

# fn(model, x (B, n_in), create_graph) -> J (B, n_out, n_in)
EngineFn = Callable[[nn.Module, torch.Tensor, bool], torch.Tensor]
# supports(model, device, dtype) -> None if supported, else the reason
SupportsFn = Callable[[nn.Module, torch.device, torch.dtype], "str | None"]


class UnsupportedEngine(ValueError):
    """An engine cannot compute (or cannot be trusted to compute) the Jacobian of this model; the message says why."""


UnknownEngine = UnknownName  # an engine name that does not exist (equations.names: the shared user error)


def check_engine_name(name: str, known) -> None:
    """UnknownEngine naming close engines unless ``name`` is one of ``known`` (the one copy of this check)."""
    known = list(known)
    if name not in known:
        raise UnknownEngine(
            f"unknown engine {name!r}{suggest(name, known)}; known: {', '.join(known)} (`python -m bench list engines`)"
        )


def _always(model: nn.Module, device: torch.device, dtype: torch.dtype) -> str | None:
    return None


@dataclass(frozen=True)
class Engine:
    """One way to compute per-sample Jacobians.

    `fn(model, x, create_graph=False)` maps x (B, n_in) to J (B, n_out, n_in) in x's dtype and device. It does
    no chunking and no coupling check: `bench.engines.jacobian` adds both.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    batch_sum: bool  # differentiates a sum over the batch: only valid for models whose samples do not interact
    differentiable: bool  # create_graph=True gives a J the trainer can backpropagate through
    doc: str  # one line for tables and `--help`
    supports: SupportsFn = field(default=_always)  # None, or why this (model, device, dtype) is not supported
    compiled: bool = False  # uses torch.compile (first call compiles: minutes of warm-up, not a fair single timing)
    blocks_on_cpu: bool = False  # bounds its own memory on CPU without a graph: jacobian() need not chunk for it

    def __call__(self, model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        return self.fn(model, x, create_graph=create_graph)


def resolve_in(
    table: dict[str, Engine], engine: str | Engine, auto: Callable[[], Engine], model: nn.Module, x, create_graph: bool
) -> Engine:
    """The Engine for `engine` ("auto": `auto()`, a name in `table` or an Engine), or UnsupportedEngine saying why not.

    One copy for the Jacobian and the Hessian registries: the name check with close names, the support check and
    the graph check.
    """
    if engine == "auto":
        return auto()
    if isinstance(engine, str):
        check_engine_name(engine, [*table, "auto"])
        engine = table[engine]
    reason = engine.supports(model, x.device, x.dtype)
    if reason is not None:
        raise UnsupportedEngine(f"engine '{engine.name}' does not support model {model_name(model)}: {reason}")
    if create_graph and not engine.differentiable:
        raise UnsupportedEngine(f"engine '{engine.name}' cannot keep the graph (create_graph=True)")
    return engine


def model_name(model: nn.Module) -> str:
    """A readable name for messages: the zoo name if the model has one, else its class name."""
    return str(getattr(model, "name", None) or type(model).__name__)


def grad_mode(create_graph: bool) -> contextlib.AbstractContextManager:
    """Keep the graph only when asked: without create_graph the returned J carries no autograd history."""
    return torch.enable_grad() if create_graph else torch.no_grad()


def per_sample(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x (n_in,)) -> (n_out,) through the batched forward, so models that insist on 2-D input work under vmap."""

    def f(xi: torch.Tensor) -> torch.Tensor:
        return model(xi.unsqueeze(0)).squeeze(0)

    return f


def check_output(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Engines need y (B, n_out) for x (B, n_in); say so clearly instead of failing deep inside autograd."""
    if y.dim() != 2 or y.shape[0] != x.shape[0]:
        raise UnsupportedEngine(
            f"model {model_name(model)} maps x {tuple(x.shape)} to {tuple(y.shape)}; "
            f"Jacobian engines need outputs (B, n_out) for inputs (B, n_in)"
        )
