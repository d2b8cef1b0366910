"""Datasets: inputs, outputs and exact Jacobians in float64, and seeded train/val/test splits.

A ``Dataset`` is what every later stage consumes: x (B, n_in), y (B, n_out) and the reference Jacobian
J (B, n_out, n_in), always computed from the equation set in float64 (never estimated from data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from equations import datafile  # a module import: datafile builds on this module (through csvio)
from equations.base import EquationSet
from equations.sampling import sample_inputs


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no truth value; compare fields with torch.equal
class Dataset:
    """x (B, n_in), y (B, n_out), J (B, n_out, n_in): float64 tensors on one device."""

    x: Tensor
    y: Tensor
    J: Tensor  # exact Jacobian of the equation set at x, dy/dx (a data set's measured one; NaN if it has none)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def __post_init__(self) -> None:
        B, n_in, n_out = self.x.shape[0], len(self.input_names), len(self.output_names)
        for what, t, shape in (
            ("x", self.x, (B, n_in)),
            ("y", self.y, (B, n_out)),
            ("J", self.J, (B, n_out, n_in)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"Dataset.{what} has shape {tuple(t.shape)}, expected {shape}")
            if t.dtype != torch.float64:
                raise ValueError(f"Dataset.{what} must be float64 (the reference precision), got {t.dtype}")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def n_in(self) -> int:
        return len(self.input_names)

    @property
    def n_out(self) -> int:
        return len(self.output_names)

    def subset(self, idx: Tensor | np.ndarray | list[int]) -> Dataset:
        """The rows ``idx`` (integer indices) as a new Dataset."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.x.device)
        return Dataset(self.x[idx], self.y[idx], self.J[idx], self.input_names, self.output_names)

    @classmethod
    def from_arrays(
        cls, eq: EquationSet, x: Tensor | np.ndarray, y: Tensor | np.ndarray | None = None, what: str = "samples"
    ) -> Dataset:
        """A Dataset for user-supplied inputs (and optionally outputs), e.g. read from CSV.

        x must lie in ``eq``'s box (``DomainError`` names the row and input otherwise). y, if given, is
        kept as the user's data (compare it with ``max_abs_residual``); if None it is ``eq(x)``. J is
        always the equation set's exact Jacobian.
        """
        x = _as_float64(x)
        if x.ndim != 2 or x.shape[1] != eq.n_in:
            raise ValueError(
                f"{what}: inputs for {eq.name!r} must have shape (B, {eq.n_in}) with columns "
                f"{list(eq.input_names)}, got shape {tuple(x.shape)}"
            )
        eq.check_domain(x, what)
        if y is None:
            y = _evaluate(eq, x, what)
        else:
            y = _as_float64(y).to(x.device)
            if tuple(y.shape) != (x.shape[0], eq.n_out):
                raise ValueError(
                    f"{what}: outputs for {eq.name!r} must have shape ({x.shape[0]}, {eq.n_out}) with columns "
                    f"{list(eq.output_names)}, got shape {tuple(y.shape)}"
                )
            _check_finite(y, eq.output_names, f"{what}: supplied output")
        return cls(x, y, _jacobian(eq, x, what), eq.input_names, eq.output_names)


class Splits(NamedTuple):
    train: Dataset
    val: Dataset
    test: Dataset


def make_dataset(eq: EquationSet, n: int, method: str = "lhs", seed: int = 0) -> Dataset:
    """Sample n inputs in ``eq``'s box with ``method`` and ``seed``; y and the exact J in float64.

    A data set (``data:path.csv``) has no formula to sample: it hands out n of its rows instead, chosen by
    ``seed`` (``method`` does not apply), with the file's derivatives as J (NaN without derivative columns).
    """
    if isinstance(eq, datafile.DataSet):
        return Dataset(*eq.draw(n, seed), eq.input_names, eq.output_names)
    x = sample_inputs(eq, n, method, seed)
    what = f"{method} samples (seed {seed})"
    return Dataset(x, _evaluate(eq, x, what), _jacobian(eq, x, what), eq.input_names, eq.output_names)


def max_abs_residual(ds: Dataset, eq: EquationSet) -> Tensor:
    """Per output, max |y - eq(x)| over the dataset: (n_out,) float64 (zero for generated data)."""
    with torch.no_grad():
        return (ds.y - eq(ds.x)).abs().amax(dim=0)


def split_indices(n: int, val: float = 0.15, test: float = 0.15, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Disjoint sorted index sets (train, val, test) covering range(n), from a seeded permutation.

    A non-zero fraction always gets at least one sample; the training set gets the rest.
    """
    for name, frac in (("val", val), ("test", test)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"split fraction {name}={frac} must lie in [0, 1)")
    if val + test >= 1.0:
        raise ValueError(f"val + test = {val + test} leaves no training data; it must be < 1")
    n_val = max(1, round(val * n)) if val > 0 else 0
    n_test = max(1, round(test * n)) if test > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} samples are too few for val={val}, test={test}: no training samples left")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    parts = perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]
    return tuple(p.sort().values for p in parts)  # type: ignore[return-value]


def split(ds: Dataset, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Splits:
    """Seeded, reproducible train/val/test split of ``ds`` (see ``split_indices``)."""
    return Splits(*(ds.subset(i) for i in split_indices(len(ds), val, test, seed)))


def _as_float64(a: Tensor | np.ndarray) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().to(torch.float64)
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _evaluate(eq: EquationSet, x: Tensor, what: str) -> Tensor:
    with torch.no_grad():
        y = eq(x).to(torch.float64)
    _check_finite(y, eq.output_names, f"{what}: {eq.name!r} returned output")
    return y


def _jacobian(eq: EquationSet, x: Tensor, what: str) -> Tensor:
    J = eq.jacobian(x)
    bad = ~torch.isfinite(J)
    if bool(bad.any()):
        row, i, j = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{what}: the Jacobian of {eq.name!r}, d{eq.output_names[i]}/d{eq.input_names[j]} = "
            f"{J[row, i, j].item()} at row {row} (x = {x[row].tolist()}), is not finite; "
            "keep the domain away from singular points"
        )
    return J


def _check_finite(y: Tensor, names: tuple[str, ...], what: str) -> None:
    bad = ~torch.isfinite(y)
    if bool(bad.any()):
        row, col = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{what} {names[col]!r} = {y[row, col].item()} at row {row} "
            f"({int(bad.any(dim=1).sum())} rows affected); outputs must be finite"
        )
