"""Normalization with exact Jacobian de-normalization, and the physical-units model wrapper.

Every scaler is a per-column affine map, x_n = (x - x_shift) / x_scale and y_n = (y - y_shift) / y_scale,
so a model trained in normalized units has the physical Jacobian (the chain rule)

    J_phys = diag(y_scale) . J_norm . diag(1 / x_scale),

which lives in ``Scaler._jacobian_factor`` and nowhere else; its second-order form,
H_phys[i, j, k] = y_scale_i H_norm[i, j, k] / (x_scale_j x_scale_k), lives in ``Scaler._hessian_factor``.
``PhysicalModel`` wraps a normalized model into a raw-in/raw-out module, so autograd of the wrapper gives
physical Jacobians (and Hessians) directly.

Methods (``SCALING_METHODS``):
- ``"minmax"``: each column's [min, max] to a target range; (0, 1) is the forum user's choice,
  (-1, 1) matches efficient-KAN's default grid. scale = (max - min) / (b - a), shift = min - a scale.
- ``"standard"``: shift = mean, scale = standard deviation (population, ddof=0, like scikit-learn).
- ``"none"``: shift 0, scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

SCALING_METHODS = ("minmax", "standard", "none")
_FIELDS = ("x_shift", "x_scale", "y_shift", "y_scale")


@dataclass(frozen=True, eq=False)
class MinMax:
    """Per-variable bounds as in the forum user's ``*_max_min.csv``: 1-D float64 tensors."""

    x_min: Tensor  # (n_in,)
    x_max: Tensor  # (n_in,)
    y_min: Tensor  # (n_out,)
    y_max: Tensor  # (n_out,)

    def __post_init__(self) -> None:
        for name in ("x_min", "x_max", "y_min", "y_max"):
            object.__setattr__(self, name, _vector(getattr(self, name), name))
        if self.x_min.shape != self.x_max.shape or self.y_min.shape != self.y_max.shape:
            raise ValueError(
                f"MinMax: x_min {tuple(self.x_min.shape)} / x_max {tuple(self.x_max.shape)} and y_min "
                f"{tuple(self.y_min.shape)} / y_max {tuple(self.y_max.shape)} must match pairwise"
            )


@dataclass(frozen=True, eq=False)
class Scaler:
    """Per-column affine normalization of inputs and outputs; all four fields 1-D float64 tensors."""

    x_shift: Tensor  # (n_in,)
    x_scale: Tensor  # (n_in,), non-zero
    y_shift: Tensor  # (n_out,)
    y_scale: Tensor  # (n_out,), non-zero
    method: str = "custom"  # how it was built; recorded in to_dict for the run's config
    _cache: dict = field(default_factory=dict, init=False, repr=False)  # (dtype, device) -> cast fields

    def __post_init__(self) -> None:
        for name in _FIELDS:
            object.__setattr__(self, name, _vector(getattr(self, name), name))
        for kind, shift, scale in (("x", self.x_shift, self.x_scale), ("y", self.y_shift, self.y_scale)):
            if shift.shape != scale.shape:
                raise ValueError(
                    f"Scaler: {kind}_shift {tuple(shift.shape)} and {kind}_scale {tuple(scale.shape)} differ"
                )
            if not bool((scale != 0).all()):
                raise ValueError(
                    f"Scaler: {kind}_scale has a zero entry at {(scale == 0).nonzero().flatten().tolist()}"
                )

    @property
    def n_in(self) -> int:
        return self.x_shift.shape[0]

    @property
    def n_out(self) -> int:
        return self.y_shift.shape[0]

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        x: Tensor,
        y: Tensor,
        method: str = "minmax",
        x_range: tuple[float, float] = (0.0, 1.0),
        y_range: tuple[float, float] = (0.0, 1.0),
        input_names: tuple[str, ...] | None = None,
        output_names: tuple[str, ...] | None = None,
    ) -> Scaler:
        """Fit on training data only: x (B, n_in), y (B, n_out). Ranges apply to "minmax" only.

        A constant column (zero range) raises ValueError naming it, for every method but "none".
        """
        if method not in SCALING_METHODS:
            raise ValueError(f"unknown scaling method {method!r}; choose one of {list(SCALING_METHODS)}")
        x, y = _matrix(x, "x"), _matrix(y, "y")
        x_shift, x_scale = _fit_columns(x, method, x_range, _names(input_names, x.shape[1], "x"), "input")
        y_shift, y_scale = _fit_columns(y, method, y_range, _names(output_names, y.shape[1], "f"), "output")
        return cls(x_shift, x_scale, y_shift, y_scale, method)

    @classmethod
    def from_minmax(
        cls,
        mm: MinMax,
        x_range: tuple[float, float] = (0.0, 1.0),
        y_range: tuple[float, float] = (0.0, 1.0),
        input_names: tuple[str, ...] | None = None,
        output_names: tuple[str, ...] | None = None,
    ) -> Scaler:
        """Min-max scaling from given bounds; for (0, 1) exactly the forum's x_n = (x - Min) / (Max - Min)."""
        x_shift, x_scale = _minmax(mm.x_min, mm.x_max, x_range, _names(input_names, len(mm.x_min), "x"), "input")
        y_shift, y_scale = _minmax(mm.y_min, mm.y_max, y_range, _names(output_names, len(mm.y_min), "f"), "output")
        return cls(x_shift, x_scale, y_shift, y_scale, "minmax")

    @classmethod
    def identity(cls, n_in: int, n_out: int) -> Scaler:
        """The "none" scaler: physical and normalized units coincide."""
        f64 = torch.float64
        return cls(
            torch.zeros(n_in, dtype=f64),
            torch.ones(n_in, dtype=f64),
            torch.zeros(n_out, dtype=f64),
            torch.ones(n_out, dtype=f64),
            "none",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and exact (Python floats round-trip float64)."""
        return {"method": self.method, **{name: getattr(self, name).tolist() for name in _FIELDS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        missing = [k for k in _FIELDS if k not in d]
        if missing:
            raise ValueError(f"Scaler.from_dict: missing keys {missing}; expected {list(_FIELDS)} and 'method'")
        return cls(*(torch.tensor(d[k], dtype=torch.float64) for k in _FIELDS), d.get("method", "custom"))

    # --- the maps -----------------------------------------------------------------------------------

    def transform_x(self, x: Tensor) -> Tensor:
        """Physical x (..., n_in) -> normalized, in x's dtype and device."""
        shift, scale, _, _ = self._cast(x, "x", self.n_in)
        return (x - shift) / scale

    def inverse_x(self, x_n: Tensor) -> Tensor:
        shift, scale, _, _ = self._cast(x_n, "x", self.n_in)
        return x_n * scale + shift

    def transform_y(self, y: Tensor) -> Tensor:
        """Physical y (..., n_out) -> normalized, in y's dtype and device."""
        _, _, shift, scale = self._cast(y, "y", self.n_out)
        return (y - shift) / scale

    def inverse_y(self, y_n: Tensor) -> Tensor:
        _, _, shift, scale = self._cast(y_n, "y", self.n_out)
        return y_n * scale + shift

    def jacobian_to_physical(self, J_norm: Tensor) -> Tensor:
        """J_norm (..., n_out, n_in) in normalized units -> J_phys = diag(y_scale) J_norm diag(1/x_scale)."""
        return J_norm * self._jacobian_factor(J_norm)

    def tangent_to_normalized(self, t: Tensor) -> Tensor:
        """Input tangents (..., n_in) in physical units -> normalized: the chain rule's column factor 1/x_scale."""
        _, scale, _, _ = self._cast(t, "x", self.n_in)
        return t / scale

    def tangent_to_physical(self, t_n: Tensor) -> Tensor:
        """Output tangents (..., n_out) in normalized units -> physical: the chain rule's row factor y_scale."""
        _, _, _, scale = self._cast(t_n, "y", self.n_out)
        return t_n * scale

    def jacobian_to_normalized(self, J_phys: Tensor) -> Tensor:
        """The inverse of ``jacobian_to_physical``: J_norm = diag(1/y_scale) J_phys diag(x_scale)."""
        return J_phys / self._jacobian_factor(J_phys)

    def hessian_to_physical(self, H_norm: Tensor) -> Tensor:
        """H_norm (..., n_out, n_in, n_in), normalized units -> H_phys = y_scale_i H_norm / (x_scale_j x_scale_k)."""
        return H_norm * self._hessian_factor(H_norm)

    def hessian_to_normalized(self, H_phys: Tensor) -> Tensor:
        """The inverse of ``hessian_to_physical``."""
        return H_phys / self._hessian_factor(H_phys)

    def transform_dataset(self, ds: Any) -> tuple[Tensor, Tensor, Tensor]:
        """(x_n, y_n, J_n) of anything with x, y, J (an ``equations.data.Dataset``), for training."""
        return self.transform_x(ds.x), self.transform_y(ds.y), self.jacobian_to_normalized(ds.J)

    def _jacobian_factor(self, like: Tensor) -> Tensor:
        # The chain rule (tangent_to_* apply the same two factors to tangents): dy_phys/dy_n = y_scale (rows),
        # dx_n/dx_phys = 1/x_scale
        # (columns). Formed in float64, then cast, so float32 Jacobians get one rounding of the factor.
        if tuple(like.shape[-2:]) != (self.n_out, self.n_in):
            raise ValueError(
                f"Jacobian of shape {tuple(like.shape)} does not end in (n_out, n_in) = ({self.n_out}, {self.n_in})"
            )
        return (self.y_scale[:, None] / self.x_scale[None, :]).to(dtype=like.dtype, device=like.device)

    def _hessian_factor(self, like: Tensor) -> Tensor:
        # The chain rule one derivative up: d2 y_phys,i / dx_j dx_k = y_scale_i / (x_scale_j x_scale_k) x the
        # normalized second derivative (the affine maps have no curvature of their own). Float64, then cast.
        if tuple(like.shape[-3:]) != (self.n_out, self.n_in, self.n_in):
            raise ValueError(
                f"Hessian of shape {tuple(like.shape)} does not end in (n_out, n_in, n_in) = "
                f"({self.n_out}, {self.n_in}, {self.n_in})"
            )
        inv = 1 / self.x_scale
        factor = self.y_scale[:, None, None] * (inv[:, None] * inv[None, :])[None]
        return factor.to(dtype=like.dtype, device=like.device)

    def _cast(self, like: Tensor, kind: str, width: int) -> tuple[Tensor, ...]:
        """The four fields in like's dtype and device, cached; never inference tensors (see below)."""
        if like.shape[-1:] != (width,):
            raise ValueError(f"Scaler: expected {kind} with last dimension {width}, got shape {tuple(like.shape)}")
        key = (like.dtype, like.device)
        cast = self._cache.get(key)
        if cast is None:
            # Created outside inference mode even when called inside it, so the cached constants can be
            # saved for backward later (jacrev of a PhysicalModel after an inference_mode prediction).
            with torch.inference_mode(False):
                cast = tuple(getattr(self, n).to(dtype=like.dtype, device=like.device, copy=True) for n in _FIELDS)
            # Inside a torch.func transform (jacfwd of jacrev: a Hessian) new tensors may carry its level; cached,
            # they would break the next transform (an internal assert in torch 2.13), so they are not kept then.
            if torch._C._functorch.peek_interpreter_stack() is None:
                self._cache[key] = cast
        return cast


class PhysicalModel(nn.Module):
    """Raw-in/raw-out view of a model trained in normalized units: x (..., n_in) -> y (..., n_out).

    forward(x) = inverse_y(model(transform_x(x))), computed in x's dtype (the scaler's constants are
    cast, never the input), so ``torch.func.jacrev`` / ``vmap`` of it give physical Jacobians directly.
    """

    def __init__(self, model: nn.Module, scaler: Scaler) -> None:
        super().__init__()
        self.model = model
        self.scaler = scaler

    @property
    def n_in(self) -> int:
        return self.scaler.n_in

    @property
    def n_out(self) -> int:
        return self.scaler.n_out

    def forward(self, x: Tensor) -> Tensor:
        return self.scaler.inverse_y(self.model(self.scaler.transform_x(x)))


def _fit_columns(
    a: Tensor, method: str, target: tuple[float, float], names: tuple[str, ...], kind: str
) -> tuple[Tensor, Tensor]:
    n = a.shape[1]
    if method == "none":
        return torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    lo, hi = a.amin(0), a.amax(0)
    if method == "minmax":
        return _minmax(lo, hi, target, names, kind)
    _check_not_constant(lo, hi, names, kind, "standardization divides by the standard deviation")
    return a.mean(0), a.std(0, correction=0)


def _minmax(
    lo: Tensor, hi: Tensor, target: tuple[float, float], names: tuple[str, ...], kind: str
) -> tuple[Tensor, Tensor]:
    a, b = (float(t) for t in target)
    if not a < b:
        raise ValueError(f"min-max target range for the {kind}s must have low < high, got {target}")
    _check_not_constant(lo, hi, names, kind, "min-max scaling divides by max - min")
    scale = (hi - lo) / (b - a)
    return lo - a * scale, scale  # for (0, 1): shift = min, scale = max - min, bit for bit


def _check_not_constant(lo: Tensor, hi: Tensor, names: tuple[str, ...], kind: str, why: str) -> None:
    bad = (~(hi > lo)).nonzero().flatten().tolist()
    if bad:
        detail = ", ".join(f"{names[j]!r} (min {lo[j].item():.17g}, max {hi[j].item():.17g})" for j in bad)
        raise ValueError(
            f"constant or empty-range {kind} column(s) {detail}: {why}, which is zero here. Sample a wider "
            f"domain, drop the {kind}, or use method='none'"
        )


def _names(names: tuple[str, ...] | None, n: int, prefix: str) -> tuple[str, ...]:
    if names is None:
        return tuple(f"{prefix}{i + 1}" for i in range(n))
    if len(names) != n:
        raise ValueError(f"{len(names)} names {list(names)} given for {n} columns")
    return tuple(names)


def _vector(t: Any, name: str) -> Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.is_inference():
        with torch.inference_mode(False):
            t = t.clone()
    if t.ndim != 1 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be a finite 1-D vector, got {t.tolist() if t.numel() < 20 else t.shape}")
    return t


def _matrix(t: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(t).to(torch.float64)
    if t.ndim != 2 or t.shape[0] < 1:
        raise ValueError(f"{name} must be a (B, n) matrix with B >= 1, got shape {tuple(t.shape)}")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        row, col = bad.nonzero()[0].tolist()
        raise ValueError(f"{name} row {row}, column {col} is {t[row, col].item()}; scaling needs finite data")
    return t
