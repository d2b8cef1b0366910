"""Small helpers shared by the built-in sets: split inputs into columns, assemble Jacobians from rows."""

from __future__ import annotations

import torch
from torch import Tensor


def columns(x: Tensor) -> tuple[Tensor, ...]:
    """x: (..., n) -> n tensors of shape (...), one per input (indexing on the last axis only)."""
    return x.unbind(-1)


def stack_outputs(*outputs: Tensor) -> Tensor:
    """n_out tensors of shape (...) -> (..., n_out)."""
    return torch.stack(outputs, dim=-1)


def jacobian_from_rows(rows: list[list[Tensor | float]], like: Tensor) -> Tensor:
    """Rows of partial derivatives (tensors of shape (...) or Python numbers) -> J: (..., n_out, n_in).

    Numbers become tensors with ``like``'s shape, dtype and device, so constant entries stay batched.
    """
    full = [[e if isinstance(e, Tensor) else torch.full_like(like, e) for e in row] for row in rows]
    return torch.stack([torch.stack(row, dim=-1) for row in full], dim=-2)


def hessian_from_entries(
    n_out: int, n_in: int, entries: dict[tuple[int, int, int], Tensor | float], like: Tensor
) -> Tensor:
    """Nonzero second derivatives {(i, j, k): d^2 y_i / dx_j dx_k} -> H (..., n_out, n_in, n_in), symmetric in (j, k).

    Give each off-diagonal pair once (either order); the mirror entry is filled in. Numbers become tensors with
    ``like``'s shape, dtype and device.
    """
    H = like.new_zeros((*like.shape, n_out, n_in, n_in))
    for (i, j, k), e in entries.items():
        value = e if isinstance(e, Tensor) else torch.full_like(like, e)
        H[..., i, j, k] = value
        H[..., i, k, j] = value
    return H
