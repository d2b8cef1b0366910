"""What every zoo model promises the harness, plus the shared width and FLOP bookkeeping.

The contract (``ZooModule``): attributes ``family``, ``n_in``, ``n_out``, ``input_range`` (the box the
harness normalizes inputs into), methods ``param_count()`` (trainable parameters, closed form per
family) and ``flops_per_sample()``. Forward maps ``x: (..., n_in) -> (..., n_out)`` with no operation
across the leading axes, so a model runs batched and on one ``(n_in,)`` sample under ``torch.func.vmap``.

FLOP model (one forward pass, one sample; every elementary op counts 1: add, sub, mul, div, compare,
exp, log, tanh, sin, erf, rsqrt):
- ``Linear(a, b)``: ``2ab`` for the matmul (one multiply and one add per weight) plus ``b`` for the bias.
- elementwise activations: a fixed count per element (``ACTIVATION_FLOPS`` in ``models.mlp``),
  e.g. tanh 1, sigmoid 3 (exp, add, div), SiLU 4 (sigmoid and a multiply).
- ``LayerNorm(n)``: ``7n + 4`` (mean, centring, variance, eps and rsqrt, scaling, affine).
- basis functions: Gaussian RBF 4 per (input, centre); B-splines and Chebyshev polynomials as counted in
  their files. Work that depends only on the parameters (e.g. efficient-KAN's weight * scaler) is not
  counted: it can be done once per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn


class ZooModule:
    """Mixin for zoo models: put it first, before the ``nn.Module`` base (``class M(ZooModule, nn.Module)``)."""

    family: str = "custom"
    n_in: int
    n_out: int
    input_range: tuple[float, float] = (-1.0, 1.0)

    def param_count(self) -> int:
        """Trainable parameters. Built-in families override this with their closed-form formula."""
        return trainable_params(self)  # type: ignore[arg-type]

    def flops_per_sample(self) -> int:
        """FLOPs of one forward pass on one sample (see the FLOP model in ``models.base``)."""
        raise NotImplementedError(f"{type(self).__name__} does not report its FLOPs")


class KANStack(ZooModule, nn.Module):
    """The layer stack the KAN families share: one layer per consecutive pair of widths, applied in order.

    A family builds its layers from ``pairs()`` (``KANStack.__init__(widths, make_layer, name)`` checks the
    widths); forward, the pairs and the dimensions live here once, and so does the engines' tangent rule for
    the stack (registered for this class: subclasses that keep this forward inherit it).
    """

    def __init__(self, widths: Sequence[int], make_layer: Callable[[int, int, int], nn.Module], name: str) -> None:
        super().__init__()
        widths = [check_positive_int(w, "every layer width", name) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"{name}: layers_hidden needs at least [n_in, n_out], got {widths}")
        self.widths = widths
        self.n_in, self.n_out = widths[0], widths[-1]
        self.layers = nn.ModuleList(make_layer(i, a, b) for i, (a, b) in enumerate(self.pairs()))

    def pairs(self) -> list[tuple[int, int]]:
        """(in, out) width of each layer."""
        return list(itertools.pairwise(self.widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def trainable_params(module: nn.Module) -> int:
    """Number of scalars in parameters with ``requires_grad`` (what an optimizer updates)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def linear_flops(n_in: int, n_out: int, bias: bool = True) -> int:
    return 2 * n_in * n_out + (n_out if bias else 0)


def layernorm_flops(n: int) -> int:
    return 7 * n + 4


def check_positive_int(value: object, what: str, model: str, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer >= minimum, else raise a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{model}: {what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_range(lo: float, hi: float, what: str, model: str) -> tuple[float, float]:
    if not float(lo) < float(hi):
        raise ValueError(f"{model}: {what} must have lower < upper, got ({lo!r}, {hi!r})")
    return float(lo), float(hi)


def resolve_widths(
    model: str,
    n_in: int,
    n_out: int,
    *,
    width: int | None,
    depth: int | None,
    hidden: Sequence[int] | None,
    layers: Sequence[int] | None,
    default_width: int,
    default_depth: int,
) -> list[int]:
    """The full width list ``[n_in, h_1, ..., h_depth, n_out]`` from one of three spellings.

    ``width``/``depth`` (``depth`` hidden layers of ``width`` units), ``hidden=[h_1, ...]`` or
    ``layers=[n_in, h_1, ..., n_out]`` (the upstream KAN spelling, e.g. ``[4, 30, 30, 4]``).
    Giving more than one spelling is an error, so a typo never silently loses a setting.
    """
    n_in = check_positive_int(n_in, "n_in", model)
    n_out = check_positive_int(n_out, "n_out", model)
    spellings = {"width/depth": width is not None or depth is not None, "hidden": hidden is not None,
                 "layers": layers is not None}  # fmt: skip
    given = [k for k, on in spellings.items() if on]
    if len(given) > 1:
        raise ValueError(f"{model}: give the shape one way only, got {' and '.join(given)}")
    if layers is not None:
        layers = list(layers)
        if len(layers) < 2:
            raise ValueError(f"{model}: layers must list at least [n_in, n_out], got {layers}")
        if layers[0] != n_in or layers[-1] != n_out:
            raise ValueError(
                f"{model}: layers={layers} starts with {layers[0]} and ends with {layers[-1]}, but "
                f"n_in={n_in} and n_out={n_out}; pass matching n_in/n_out or use hidden={layers[1:-1]}"
            )
        hidden = layers[1:-1]
    elif hidden is None:
        width = default_width if width is None else width
        depth = default_depth if depth is None else depth
        check_positive_int(width, "width", model)
        check_positive_int(depth, "depth", model, minimum=0)
        hidden = [width] * depth
    hidden = [check_positive_int(h, "every hidden width", model) for h in hidden]
    return [n_in, *hidden, n_out]
