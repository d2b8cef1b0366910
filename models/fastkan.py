"""FastKAN: a KAN whose edge functions are Gaussian radial basis expansions (Li 2024, "KANs are RBF networks").

Per layer ``in -> out``::

    z = LayerNorm(x)                      (optional; over the last axis only, so per sample)
    phi[..., i, k] = exp(-((z_i - g_k) / h)^2),   g = linspace(grid_min, grid_max, num_grids)
    y = spline_linear(phi.flatten(-2)) + base_linear(silu(x))

``spline_linear`` has no bias (weights trunc-normal, std 0.1), ``base_linear`` has one and sees the raw x.
State-dict keys and shapes equal the public FastKAN's (``layers.{i}.layernorm.*``, ``layers.{i}.rbf.grid``
as a frozen Parameter, ``layers.{i}.spline_linear.weight``, ``layers.{i}.base_linear.*``), so its
checkpoints load with ``strict=True``.

The LayerNorm pitfall: on a 1-D input LayerNorm returns its bias for every x (the spline branch is a
constant), and on wider inputs the spline branch sees only the sample's features with their mean and
scale removed. Upstream's model always uses it; ``fastkan`` reproduces that, ``fastkan_noln`` switches it off.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.base import KANStack, check_positive_int, check_range, layernorm_flops, linear_flops, resolve_widths
from models.registry import register_variant

RBF_FLOPS = 4  # per (input, centre): subtract, scale, square, exp
SILU_FLOPS = 4


class RadialBasis(nn.Module):
    """``x: (..., in) -> (..., in, num_grids)`` Gaussian bumps on a fixed uniform grid."""

    def __init__(self, grid_min: float, grid_max: float, num_grids: int, denominator: float | None = None) -> None:
        super().__init__()
        # A Parameter with requires_grad=False (not a buffer) because that is upstream's key layout.
        self.grid = nn.Parameter(torch.linspace(grid_min, grid_max, num_grids), requires_grad=False)
        self.denominator = float(denominator) if denominator is not None else (grid_max - grid_min) / (num_grids - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(((x[..., None] - self.grid) / self.denominator) ** 2))


class FastKANLayer(nn.Module):
    def __init__(
        self,
        n_in: int,
        n_out: int,
        grid_min: float,
        grid_max: float,
        num_grids: int,
        denominator: float | None,
        use_layernorm: bool,
        spline_init_std: float = 0.1,
    ) -> None:
        super().__init__()
        if use_layernorm:
            self.layernorm = nn.LayerNorm(n_in)
        else:
            self.layernorm = None
        self.rbf = RadialBasis(grid_min, grid_max, num_grids, denominator)
        self.spline_linear = nn.Linear(n_in * num_grids, n_out, bias=False)
        nn.init.trunc_normal_(self.spline_linear.weight, std=spline_init_std, a=-2 * spline_init_std,
                              b=2 * spline_init_std)  # fmt: skip
        self.base_linear = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x if self.layernorm is None else self.layernorm(x)
        phi = self.rbf(z)  # (..., in, num_grids), flattened input-major as upstream
        return self.spline_linear(phi.flatten(-2)) + self.base_linear(F.silu(x))


class FastKAN(KANStack):
    """``FastKAN([4, 30, 30, 4])``: a stack of FastKANLayer over consecutive widths."""

    family = "fastkan"

    def __init__(
        self,
        layers_hidden: Sequence[int],
        grid_min: float = -2.0,
        grid_max: float = 2.0,
        num_grids: int = 8,
        denominator: float | None = None,
        use_layernorm: bool = True,
    ) -> None:
        name = "fastkan" if use_layernorm else "fastkan_noln"
        check_positive_int(num_grids, "num_grids", name, minimum=2)
        grid_min, grid_max = check_range(grid_min, grid_max, "(grid_min, grid_max)", name)
        if denominator is not None and not denominator > 0:
            raise ValueError(f"{name}: denominator must be > 0, got {denominator!r}")
        widths = list(layers_hidden)
        if use_layernorm and 1 in widths[:-1]:
            warnings.warn(
                f"{name}: LayerNorm over a single feature maps every input to its bias, so that layer's "
                "spline branch is constant; use fastkan_noln for 1-D inputs or width-1 layers",
                stacklevel=3,
            )
        super().__init__(
            widths, lambda i, a, b: FastKANLayer(a, b, grid_min, grid_max, num_grids, denominator, use_layernorm), name
        )
        self.num_grids, self.use_layernorm = num_grids, use_layernorm
        self.input_range = (grid_min, grid_max)  # the RBF centres span this; bumps fade within ~h beyond

    def param_count(self) -> int:
        ln = 2 if self.use_layernorm else 0  # LayerNorm weight and bias per input
        return sum(ln * a + a * self.num_grids * b + a * b + b for a, b in self.pairs())

    def flops_per_sample(self) -> int:
        g = self.num_grids
        total = 0
        for a, b in self.pairs():
            total += layernorm_flops(a) if self.use_layernorm else 0
            total += RBF_FLOPS * a * g + linear_flops(a * g, b, bias=False)  # spline branch
            total += SILU_FLOPS * a + linear_flops(a, b) + b  # base branch, then the sum of the branches
        return total


def fastkan_model(
    n_in: int = 4,
    n_out: int = 4,
    width: int | None = None,
    depth: int | None = None,
    hidden: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    grid_min: float = -2.0,
    grid_max: float = 2.0,
    num_grids: int = 8,
    denominator: float | None = None,
    use_layernorm: bool = True,
) -> FastKAN:
    name = "fastkan" if use_layernorm else "fastkan_noln"
    widths = resolve_widths(
        name, n_in, n_out, width=width, depth=depth, hidden=hidden, layers=layers, default_width=30, default_depth=2
    )
    return FastKAN(widths, grid_min, grid_max, num_grids, denominator, use_layernorm)


register_variant(
    "fastkan",
    fastkan_model,
    "FastKAN (Gaussian RBF KAN) as published: LayerNorm before every RBF layer; [n_in, 30, 30, n_out]",
    fixed={"use_layernorm": True},
)
register_variant(
    "fastkan_noln",
    fastkan_model,
    "FastKAN without LayerNorm (needed for 1-D inputs; no per-sample normalization); [n_in, 30, 30, n_out]",
    fixed={"use_layernorm": False},
)
