"""Which grid cells can run at all: a peer that cannot train a variant, a data set without what a variant needs.

    reason(cell) -> "" (runs) or why not; grid_cells leaves such cells out and ``run`` prints how many and why;
    grid_cells(grid) -> the cells that run, in the grid's stable order; skipped_cells(grid) -> the others, each
    with its reason.

Data sets (``data:path.csv``) are opened to see their columns; every other name is decided from the name alone,
so a grid of formulas never opens a file here.
"""

from __future__ import annotations

import equations
from bench import peers
from bench.run.schema import Cell, ConfigError, GridConfig


def _data_caps(name: str) -> tuple[bool, int]:
    """(has derivative columns, rows) of a data set (equations.datafile caches the file until it changes)."""
    eq = equations.get(name)
    return eq.has_jacobian, eq.n_rows


def reason(cell: Cell) -> str:
    """Why ``cell`` cannot run ("" if it can)."""
    if peers.is_peer(cell.model) and cell.variant not in peers.get(cell.model).variants:
        has = ", ".join(peers.get(cell.model).variants)
        return f"{cell.model} has no {cell.variant} variant (it trains: {has})"
    if peers.is_peer(cell.model) and cell.beta == 0:
        return f"{cell.model} weighs values at 1 and Jacobians at (1 - beta) / beta: beta = 0 has no equivalent"
    if cell.equation.startswith("data:"):
        has_jacobian, _ = _data_caps(cell.equation)
        if cell.hess_weight > 0:
            return f"{cell.equation} is data without second derivatives (no Hessian-supervised training)"
        if cell.beta < 1 and not has_jacobian:
            return f"{cell.equation} has no derivative columns (no Sobolev training)"
    return ""


def check_sizes(grid: GridConfig) -> None:
    """ConfigError when a data set has fewer rows than a cell's splits ask for, naming both numbers."""
    for name in (e for e in grid.equations if e.startswith("data:")):
        _, rows = _data_caps(name)
        for n in grid.n_train:
            n_val, need = grid.split_sizes(n)
            if need > rows:
                raise ConfigError(
                    f"{name} has {rows} rows, but n_train = {n} with {n_val} validation (val_fraction "
                    f"{grid.val_fraction}) and n_test = {grid.n_test} needs {need}; lower grid.n_train or grid.n_test"
                )


def grid_cells(grid: GridConfig) -> list[Cell]:
    """The grid in a stable order: equation, model, beta, Hessian weight, n_train, seed (seeds innermost).

    A Hessian weight > 0 is crossed with the equations of ``grid.hess_equations`` and the betas of
    ``grid.hess_betas`` only (all when empty). Cells that cannot run (``reason``: a peer's missing variant, Sobolev
    training on data without derivatives) are left out; ``skipped_cells`` lists them with why.
    """
    return [c for c in _all_cells(grid) if not reason(c)]


def skipped_cells(grid: GridConfig) -> list[tuple[Cell, str]]:
    """The cells ``grid_cells`` leaves out, each with the reason."""
    return [(c, why) for c in _all_cells(grid) if (why := reason(c))]


def _all_cells(grid: GridConfig) -> list[Cell]:
    return [
        Cell(eq, model, float(beta), int(n), int(seed), float(hw))
        for eq in grid.equations
        for model in grid.models
        for beta in grid.betas
        for hw in grid.hess_weights
        if hw == 0 or not grid.hess_equations or eq in grid.hess_equations
        if hw == 0 or not grid.hess_betas or beta in grid.hess_betas
        if hw == 0 or not grid.hess_models or model in grid.hess_models
        for n in grid.n_train
        if n == grid.n_train[0] or not grid.size_equations or eq in grid.size_equations
        for seed in grid.seeds
    ]
