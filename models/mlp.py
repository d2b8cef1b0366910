"""Plain MLPs: ``nn.Sequential`` of Linear and elementwise activations, ``Linear, Act, ..., Linear``.

Keeping the plain ``nn.Sequential`` layout gives the forum user's checkpoint keys (``0.weight``,
``0.bias``, ``2.weight``, ...) and lets the Jacobian engines recognize and fuse the network.
Activation variants are rows of ``ACTIVATIONS``; each becomes a registered ``mlp_<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import nn

from equations.names import suggest
from models.base import ZooModule, linear_flops, resolve_widths
from models.registry import register_model, register_variant

SIREN_W0 = 30.0  # SIREN's frequency factor (Sitzmann et al. 2020)


class Sine(nn.Module):
    """``sin(w0 * x)`` elementwise (SIREN)."""

    def __init__(self, w0: float = SIREN_W0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


def siren_init(linears: Sequence[nn.Linear]) -> None:
    """SIREN init: first layer U(-1/in, 1/in); later layers U(-sqrt(6/in)/w0, sqrt(6/in)/w0), so that
    w0 * W x has unit-order spread in every layer. Biases keep PyTorch's default."""
    with torch.no_grad():
        for i, lin in enumerate(linears):
            fan_in = lin.in_features
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / SIREN_W0
            lin.weight.uniform_(-bound, bound)


# name -> (activation module factory, weight init for the Linear layers or None for PyTorch's default,
#          FLOPs per element under the model in models.base)
ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Callable[[Sequence[nn.Linear]], None] | None, int]] = {
    "tanh": (nn.Tanh, None, 1),
    "sigmoid": (nn.Sigmoid, None, 3),  # 1 / (1 + exp(-x)): exp, add, div
    "silu": (nn.SiLU, None, 4),  # x * sigmoid(x)
    "gelu": (nn.GELU, None, 5),  # 0.5 x (1 + erf(x / sqrt 2)): div, erf, add, mul, mul
    "softplus": (nn.Softplus, None, 3),  # log(1 + exp(x))
    "relu": (nn.ReLU, None, 1),  # piecewise-constant derivative: the cautionary baseline
    "sine": (Sine, siren_init, 2),  # sin(w0 x): mul, sin
}


class MLP(ZooModule, nn.Sequential):
    """``widths[0] -> widths[1] -> ... -> widths[-1]`` with ``activation`` after every hidden Linear."""

    family = "mlp"
    # MLP inputs are normalized to (-1, 1): zero-centred inputs keep the first pre-activations centred
    # under the default init (no saturated sigmoid/tanh units at the start), and SIREN's init assumes it.
    input_range = (-1.0, 1.0)

    def __init__(self, widths: Sequence[int], activation: str = "tanh") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"mlp: unknown activation {activation!r}{suggest(activation, list(ACTIVATIONS))}; "
                f"choose from {', '.join(ACTIVATIONS)}"
            )
        make_act, init, _ = ACTIVATIONS[activation]
        widths = list(widths)
        linears = [nn.Linear(a, b) for a, b in pairwise(widths)]
        modules: list[nn.Module] = []
        for i, lin in enumerate(linears):
            modules.append(lin)
            if i < len(linears) - 1:
                modules.append(make_act())
        super().__init__(*modules)
        if init is not None:
            init(linears)
        self.widths = widths
        self.activation = activation
        self.n_in, self.n_out = widths[0], widths[-1]

    def __getitem__(self, idx):  # a slice is a plain nn.Sequential (ours needs widths to rebuild)
        if isinstance(idx, slice):
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)

    def param_count(self) -> int:
        return sum(a * b + b for a, b in pairwise(self.widths))

    def flops_per_sample(self) -> int:
        act = ACTIVATIONS[self.activation][2]
        pairs = list(pairwise(self.widths))
        return sum(linear_flops(a, b) for a, b in pairs) + act * sum(self.widths[1:-1])


def _build(name: str, n_in, n_out, width, depth, hidden, layers, activation, default_width, default_depth) -> MLP:
    widths = resolve_widths(
        name, n_in, n_out, width=width, depth=depth, hidden=hidden, layers=layers,
        default_width=default_width, default_depth=default_depth,
    )  # fmt: skip
    return MLP(widths, activation)


def mlp(
    n_in: int = 4,
    n_out: int = 4,
    width: int | None = None,
    depth: int | None = None,
    hidden: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    activation: str = "tanh",
) -> MLP:
    """MLP: ``depth`` hidden layers of ``width`` units (default 3 x 64), or ``hidden=[...]``."""
    return _build(f"mlp_{activation}", n_in, n_out, width, depth, hidden, layers, activation, 64, 3)


for _act in ACTIVATIONS:
    register_variant(
        f"mlp_{_act}", mlp, f"MLP with {_act} activations, 3 hidden layers of 64 by default", activation=_act
    )


@register_model
def mlp_forum(
    n_in: int = 4,
    n_out: int = 4,
    width: int | None = None,
    depth: int | None = None,
    hidden: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    activation: str = "sigmoid",
) -> MLP:
    """The forum post's MLP: 4 -> 100 x 4 sigmoid -> 4, keys 0.weight ... 8.bias."""
    return _build("mlp_forum", n_in, n_out, width, depth, hidden, layers, activation, 100, 4)
