"""efficient-KAN: a KAN whose edge functions are B-splines plus a SiLU base branch (Liu et al. 2024).

Per layer ``in -> out`` with ``G = grid_size`` intervals over ``grid_range`` and spline order ``k``::

    knots t (per input feature): grid_range[0] + h * (-k, ..., G + k),  h = (hi - lo) / G  -> G + 2k + 1 knots
    B[..., i, c]: the G + k B-spline bases of order k at x_i (Cox-de Boor from half-open indicators)
    y = silu(x) @ base_weight.T + sum_{i,c} B[..., i, c] * spline_weight[:, i, c] * spline_scaler[:, i]

Keys and shapes equal the public efficient-KAN's (``layers.{i}.grid`` buffer (in, G + 2k + 1),
``base_weight`` (out, in), ``spline_weight`` (out, in, G + k), ``spline_scaler`` (out, in); no biases).
Unlike the published code, the basis works on any leading shape, so a single ``(in,)`` sample runs under
``torch.func.vmap``, and ``update_grid`` refits the *effective* coefficients (weight * scaler) and divides
the scaler back out, so the function is kept up to the least-squares error (upstream applies it twice).
Outside the extended knots every basis is exactly 0: only the SiLU branch remains there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.base import KANStack, check_positive_int, check_range, linear_flops, resolve_widths
from models.registry import register_model

SILU_FLOPS = 4
INDICATOR_FLOPS = 3  # two compares and an and, per knot interval
COX_DE_BOOR_FLOPS = 7  # per basis per order: 2 subtracts, 2 divides, 2 multiplies, 1 add


def bspline_basis_flops(grid_size: int, order: int) -> int:
    """FLOPs of all B-spline bases of one input: the indicators, then Cox-de Boor for orders 1..order."""
    n = grid_size + 2 * order  # knot intervals
    return INDICATOR_FLOPS * n + COX_DE_BOOR_FLOPS * sum(n - p for p in range(1, order + 1))


def uniform_knots(lo: float, hi: float, grid_size: int, order: int, n_in: int) -> torch.Tensor:
    """(n_in, G + 2k + 1) knots: G intervals on [lo, hi], extended by k intervals on each side."""
    h = (hi - lo) / grid_size
    knots = torch.arange(-order, grid_size + order + 1, dtype=torch.float64) * h + lo
    return knots.to(torch.get_default_dtype()).expand(n_in, -1).contiguous()


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """``x: (..., in)``, ``knots: (in, m)`` -> ``(..., in, m - 1 - order)`` B-spline bases of ``order``.

    Order 0 is the indicator of the half-open knot interval [t_j, t_{j+1}); order p combines two of order
    p - 1: B_j^p = (x - t_j) / (t_{j+p} - t_j) B_j^{p-1} + (t_{j+p+1} - x) / (t_{j+p+1} - t_{j+1}) B_{j+1}^{p-1}.
    """
    x = x.unsqueeze(-1)
    basis = ((x >= knots[:, :-1]) & (x < knots[:, 1:])).to(x.dtype)
    for p in range(1, order + 1):
        left = (x - knots[:, : -(p + 1)]) / (knots[:, p:-1] - knots[:, : -(p + 1)])
        right = (knots[:, p + 1 :] - x) / (knots[:, p + 1 :] - knots[:, 1:-p])
        basis = left * basis[..., :-1] + right * basis[..., 1:]
    return basis


class KANLinear(nn.Module):
    def __init__(
        self,
        n_in: int,
        n_out: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        scale_noise: float = 0.1,
        grid_eps: float = 0.02,
    ) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.grid_size, self.spline_order, self.grid_eps = grid_size, spline_order, grid_eps
        self.register_buffer("grid", uniform_knots(*grid_range, grid_size, spline_order, n_in))
        self.base_weight = nn.Parameter(torch.empty(n_out, n_in))
        self.spline_weight = nn.Parameter(torch.empty(n_out, n_in, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(n_out, n_in))
        self.reset_parameters(scale_noise)

    def reset_parameters(self, scale_noise: float = 0.1) -> None:
        """Kaiming-uniform base weights and scaler; spline coefficients fitted to small noise at the grid."""
        nn.init.kaiming_uniform_(self.base_weight, a=5**0.5)
        nn.init.kaiming_uniform_(self.spline_scaler, a=5**0.5)
        with torch.no_grad():
            k = self.spline_order
            pts = self.grid[:, k:-k].T  # (G + 1, in): the knots inside grid_range
            noise = (torch.rand(pts.shape[0], self.n_in, self.n_out) - 0.5) * (scale_noise / self.grid_size)
            self.spline_weight.copy_(self._fit_coefficients(pts, noise.to(pts))[0])

    def _fit_coefficients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Least squares per input: B(x)[:, i, :] @ c[i] ~ y[:, i, :].

        ``x: (N, in)``, ``y: (N, in, out)`` -> coefficients (out, in, G + k) and residuals (N, in, out).
        Solved in float64 by pseudo-inverse (minimum norm where underdetermined; works on any device).
        """
        A = bspline_basis(x.double(), self.grid.double(), self.spline_order).transpose(0, 1)  # (in, N, G+k)
        Y = y.double().transpose(0, 1)  # (in, N, out)
        coef = torch.linalg.pinv(A) @ Y  # (in, G+k, out)
        resid = (A @ coef - Y).transpose(0, 1)
        return coef.permute(2, 0, 1).to(self.spline_weight.dtype), resid.to(y.dtype)

    @property
    def scaled_spline_weight(self) -> torch.Tensor:
        return self.spline_weight * self.spline_scaler[..., None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(F.silu(x), self.base_weight)
        basis = bspline_basis(x, self.grid, self.spline_order)  # (..., in, G + k)
        return base + F.linear(basis.flatten(-2), self.scaled_spline_weight.flatten(1))

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> float:
        """Move the knots to the data ``x: (N, in)`` and refit the spline so the layer keeps its function.

        New knots: (1 - grid_eps) * sample quantiles + grid_eps * uniform over [min - margin, max + margin],
        extended by k uniform steps each side. Returns a bound on how far the output moved on ``x``:
        max over samples and outputs of sum_i |least-squares residual of edge (i, out)|.
        """
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"update_grid needs a batch x of shape (N, {self.n_in}), got {tuple(x.shape)}")
        G, k = self.grid_size, self.spline_order
        edge_out = torch.einsum("nic,oic->nio", bspline_basis(x, self.grid, k), self.scaled_spline_weight)
        xs = torch.sort(x, dim=0).values
        adaptive = xs[torch.linspace(0, x.shape[0] - 1, G + 1, device=x.device).round().long()]  # (G + 1, in)
        step = (xs[-1] - xs[0] + 2 * margin) / G
        uniform = xs[0] - margin + torch.arange(G + 1, device=x.device, dtype=x.dtype)[:, None] * step
        inner = self.grid_eps * uniform + (1 - self.grid_eps) * adaptive
        ext = torch.arange(1, k + 1, device=x.device, dtype=x.dtype)[:, None] * step
        knots = torch.cat([inner[:1] - ext.flip(0), inner, inner[-1:] + ext])  # (G + 2k + 1, in)
        self.grid.copy_(knots.T)
        coef, resid = self._fit_coefficients(x, edge_out)  # effective coefficients (weight * scaler)
        scaler = self.spline_scaler
        safe = torch.where(scaler.abs() > 1e-12, scaler, torch.ones_like(scaler))
        self.spline_scaler.copy_(safe)
        self.spline_weight.copy_(coef / safe[..., None])
        return float(resid.abs().sum(1).max())

    def regularization_loss(self, l1: float = 1.0, entropy: float = 1.0) -> torch.Tensor:
        """L1 of the mean |spline_weight| per edge, plus the entropy of its distribution over edges."""
        per_edge = self.spline_weight.abs().mean(-1)  # (out, in)
        total = per_edge.sum()
        p = per_edge / total.clamp_min(torch.finfo(per_edge.dtype).tiny)
        return l1 * total - entropy * (p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum()


class EfficientKAN(KANStack):
    """``EfficientKAN([4, 30, 30, 4])``: a stack of KANLinear over consecutive widths."""

    family = "efficient_kan"

    def __init__(
        self,
        layers_hidden: Sequence[int],
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        grid_eps: float = 0.02,
    ) -> None:
        name = "efficient_kan"
        check_positive_int(grid_size, "grid_size", name)
        check_positive_int(spline_order, "spline_order", name)
        lo, hi = check_range(*grid_range, "grid_range", name)
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"{name}: grid_eps must be in [0, 1], got {grid_eps!r}")
        super().__init__(
            layers_hidden, lambda i, a, b: KANLinear(a, b, grid_size, spline_order, (lo, hi), grid_eps=grid_eps), name
        )
        self.grid_size, self.spline_order = grid_size, spline_order
        self.input_range = (lo, hi)  # the initial knots' inner interval; the spline is 0 beyond k*h more

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> list[float]:
        """Update every layer's knots to the activations ``x: (N, n_in)`` produces; returns each bound."""
        bounds = []
        for layer in self.layers:
            bounds.append(layer.update_grid(x, margin))
            x = layer(x)
        return bounds

    def regularization_loss(self, l1: float = 1.0, entropy: float = 1.0) -> torch.Tensor:
        return sum(layer.regularization_loss(l1, entropy) for layer in self.layers)

    def param_count(self) -> int:
        c = self.grid_size + self.spline_order
        return sum(a * b * (c + 2) for a, b in self.pairs())

    def flops_per_sample(self) -> int:
        G, k = self.grid_size, self.spline_order
        basis = bspline_basis_flops(G, k)
        total = 0
        for a, b in self.pairs():
            total += SILU_FLOPS * a + linear_flops(a, b, bias=False)  # base branch
            total += basis * a + linear_flops(a * (G + k), b, bias=False) + b  # spline branch and the sum
        return total


@register_model
def efficient_kan(
    n_in: int = 4,
    n_out: int = 4,
    width: int | None = None,
    depth: int | None = None,
    hidden: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    grid_size: int = 5,
    spline_order: int = 3,
    grid_range: Sequence[float] = (-1.0, 1.0),
    grid_eps: float = 0.02,
) -> EfficientKAN:
    """efficient-KAN (B-spline KAN), grid 5, order 3 on [-1, 1]; [n_in, 30, 30, n_out]"""
    widths = resolve_widths(
        "efficient_kan", n_in, n_out, width=width, depth=depth, hidden=hidden, layers=layers,
        default_width=30, default_depth=2,
    )  # fmt: skip
    return EfficientKAN(widths, grid_size, spline_order, grid_range, grid_eps)
