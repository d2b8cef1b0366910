"""The equation-set abstraction: a named map R^n_in -> R^n_out on a box, with an exact Jacobian.

Every set is written once as a torch function on ``x: (..., n_in) -> (..., n_out)`` using only
elementwise ops and indexing on the last axis, so the same code runs batched, on a single sample
under ``torch.func.vmap``, in float32 and float64, on CPU and CUDA. The exact Jacobian is
``torch.func`` applied to the float64 implementation, and so are the exact Hessians (B, n_out, n_in, n_in);
a hand-derived Jacobian or Hessian, where given, is a second opinion checked against them in the self-check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

EquationFn = Callable[[Tensor], Tensor]  # x: (..., n_in) -> (..., n_out)
JacobianFn = Callable[[Tensor], Tensor]  # x: (B, n_in) -> J: (B, n_out, n_in)
HessianFn = Callable[[Tensor], Tensor]  # x: (B, n_in) -> H: (B, n_out, n_in, n_in)


class DomainError(ValueError):
    """A sample lies outside an equation set's input box (or is not finite)."""


@dataclass(frozen=True)
class EquationSet:
    """A benchmark target: ``fn`` on the box ``[lower, upper]`` with named inputs and outputs."""

    name: str
    fn: EquationFn  # the implementation, (..., n_in) -> (..., n_out)
    lower: tuple[float, ...]  # input box, one bound per input
    upper: tuple[float, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    doc: str = ""  # formula, domain, and why the set is in the zoo
    jacobian_fn: JacobianFn | None = field(default=None, compare=False)  # hand-derived, optional
    formulas: tuple[str, ...] = ()  # human-readable formula per output (generated sets print these)
    hessian_fn: HessianFn | None = field(default=None, compare=False)  # hand-derived second derivatives, optional

    def __post_init__(self) -> None:
        if len(self.lower) != len(self.upper) or len(self.lower) != len(self.input_names):
            raise ValueError(
                f"equation set {self.name!r}: lower ({len(self.lower)}), upper ({len(self.upper)}) "
                f"and input_names ({len(self.input_names)}) must have one entry per input"
            )
        bad = [i for i, (lo, hi) in enumerate(zip(self.lower, self.upper, strict=True)) if not lo < hi]
        if bad:
            raise ValueError(f"equation set {self.name!r}: empty domain for inputs {bad}; need lower < upper")

    @property
    def n_in(self) -> int:
        return len(self.input_names)

    @property
    def n_out(self) -> int:
        return len(self.output_names)

    @property
    def has_jacobian(self) -> bool:
        """Whether reference Jacobians exist (a formula's always do; a data set's only with derivative columns)."""
        return True

    @property
    def has_hessian(self) -> bool:
        return True

    @property
    def reference(self) -> str:
        """What fidelity is measured against, in words."""
        return "exact: the formula's derivatives in float64"

    def bounds(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
        """The input box as a (2, n_in) tensor: row 0 lower, row 1 upper."""
        return torch.tensor([self.lower, self.upper], dtype=dtype, device=device)

    def __call__(self, x: Tensor) -> Tensor:
        """Evaluate on x: (B, n_in) or (n_in,), checking the shape of what comes back."""
        if x.shape[-1] != self.n_in:
            raise ValueError(
                f"equation set {self.name!r} takes {self.n_in} inputs {self.input_names}, "
                f"got a tensor of shape {tuple(x.shape)}"
            )
        y = self.fn(x)
        expected = (*x.shape[:-1], self.n_out)
        if tuple(y.shape) != expected:
            raise ValueError(
                f"equation set {self.name!r} returned shape {tuple(y.shape)} for input "
                f"{tuple(x.shape)}; expected {expected} (one column per output {self.output_names})"
            )
        return y

    def jacobian(self, x: Tensor) -> Tensor:
        """Exact Jacobian by reverse-mode torch.func in float64: x (B, n_in) -> J (B, n_out, n_in)."""
        x64 = x.to(torch.float64)
        return torch.func.vmap(torch.func.jacrev(self.__call__))(x64)

    def hessian(self, x: Tensor) -> Tensor:
        """Exact Hessians by torch.func (forward over reverse) in float64: x (B, n_in) -> H (B, n_out, n_in, n_in).

        H[b, i, j, k] = d^2 y_i / dx_j dx_k at x_b, symmetric in (j, k).
        """
        x64 = x.to(torch.float64)
        return torch.func.vmap(torch.func.jacfwd(torch.func.jacrev(self.__call__)))(x64)

    def laplacian(self, x: Tensor) -> Tensor:
        """Exact Laplacians, the trace of each output's Hessian, in float64: x (B, n_in) -> (B, n_out)."""
        return torch.diagonal(self.hessian(x), dim1=-2, dim2=-1).sum(-1)

    def check_domain(self, x: Tensor, what: str = "samples") -> None:
        """Raise DomainError naming the first offending row and input if x leaves the box or is not finite."""
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            row, col = (~finite).nonzero()[0].tolist()
            raise DomainError(
                f"{what} for {self.name!r}: row {row}, input {self.input_names[col]!r} is {x[row, col].item()}; "
                "remove or repair non-finite values"
            )
        lo = self.bounds(x.dtype, x.device)
        outside = (x < lo[0]) | (x > lo[1])
        if bool(outside.any()):
            row, col = outside.nonzero()[0].tolist()
            raise DomainError(
                f"{what} for {self.name!r}: row {row}, input {self.input_names[col]!r} = {x[row, col].item():g} "
                f"lies outside its domain [{self.lower[col]:g}, {self.upper[col]:g}] "
                f"({int(outside.any(dim=1).sum())} rows affected); sample inside the box or "
                "choose an equation set whose domain covers your data"
            )
