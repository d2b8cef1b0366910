"""Which grid cells can run at all: a peer that cannot train a variant, a data set without what a variant needs.

    reason(cell) -> "" (runs) or why not; grid_cells leaves such cells out and ``run`` prints how many and why.

Data sets (``data:path.csv``) are opened to see their columns; every other name is decided from the name alone,
so a grid of formulas never imports torch here.
"""

from __future__ import annotations

from bench import peers
from bench.run.schema import Cell, ConfigError, GridConfig


def _data_caps(name: str) -> tuple[bool, int]:
    """(has derivative columns, rows) of a data set (equations.datafile caches the file until it changes)."""
    import equations

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
