"""Shared fixtures. The forum post's four equations are typed here once, independently of the shipped
``equations.sets.forum`` (tests compare the two), for every test that needs a known 4-in/4-out set."""

from __future__ import annotations

import pytest
import torch

from equations import EquationSet

INPUTS, OUTPUTS = ("x1", "x2", "x3", "x4"), ("f1", "f2", "f3", "f4")


def forum_fn(x: torch.Tensor) -> torch.Tensor:
    """The forum post's f1..f4: x (..., 4) -> (..., 4); df2/dx3 = 5 and df2/dx4 = 6 are constant entries."""
    x1, x2, x3, x4 = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
    f1 = 0.4 * x1**2 + 0.2 * x2**2 + 0.1 * x3**3.5 + 0.3 * x4**1.5
    f2 = 3 * x1 + 4 * x2 + 5 * x3 + 6 * x4 + torch.sin(x1) * torch.cos(x2)
    f3 = torch.sin(x1) + torch.cos(x2) + 0.05 * torch.exp(x3) + 0.1 * torch.exp(x4)
    f4 = 200 * x1**2 + 6 * torch.exp(x2) + x1**3 + 4 * torch.exp(x4)
    return torch.stack([f1, f2, f3, f4], dim=-1)


@pytest.fixture(autouse=True)
def _own_auto_table(tmp_path_factory, monkeypatch):
    """Every test reads and refreshes its own engine table (bench.engines.auto), never the user's."""
    monkeypatch.setenv("JACBENCH_AUTO_TABLE", str(tmp_path_factory.mktemp("auto") / "auto_table.csv"))


@pytest.fixture
def forum_eq() -> EquationSet:
    """A copy of the forum post's set on [0.1, 3]^4 (named forum_copy: not the registered forum4x4)."""
    return EquationSet("forum_copy", forum_fn, (0.1,) * 4, (3.0,) * 4, INPUTS, OUTPUTS)


@pytest.fixture
def forum_jacobian():
    """x (B, 4) -> the forum set's exact Jacobian (B, 4, 4) by torch.func, from the copy above."""
    return lambda x: torch.func.vmap(torch.func.jacrev(forum_fn))(x)
