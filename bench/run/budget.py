"""Cells a method's time budget rules out before they run: the data-size axis's honest ceiling.

A peer whose cost grows like a power of n_train (kriging: a Cholesky of the n x n correlation matrix per likelihood
evaluation, ``cost_exponent = 3``) and whose cell sets a wall-time budget (``max_seconds`` in its model overrides)
is not started at a size its own smaller cells already rule out:

  * the same (equation, model, training, seed) at a smaller n_train ran past the budget: this one would too;
  * or its measured fit at the largest smaller n_train m, scaled by (n / m) ** cost_exponent, exceeds the budget.

Such a cell is recorded ``over_budget`` (results.OVER_BUDGET) with the measurement and the extrapolation in its
error, never dropped: the map shows where a method stops, and a budget that was too tight can be raised and the
cells rerun (``run --resume --retry-failed``). A cell whose smaller sizes have not finished yet simply runs.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench import peers
from bench.run import results
from bench.run.availability import grid_cells
from bench.run.schema import Cell, Config


def budget_of(cell: Cell, config: Config) -> tuple[float, float] | None:
    """(max_seconds, cost exponent) of the cell's method, or None where no ceiling applies."""
    if not peers.is_peer(cell.model):
        return None
    exponent = getattr(peers.get(cell.model), "cost_exponent", None)
    seconds = config.grid.model_overrides.get(cell.model, {}).get("max_seconds")
    return (float(seconds), float(exponent)) if seconds and exponent else None


def ruled_out(cell: Cell, config: Config, run_dir: str | Path) -> str:
    """Why ``cell`` need not run ("" where it must): see the module docstring."""
    budget = budget_of(cell, config)
    if budget is None:
        return ""
    seconds, exponent = budget
    smaller = sorted(
        (c for c in grid_cells(config.grid)
         if c.n_train < cell.n_train and (c.equation, c.model, c.beta, c.hess_weight, c.seed)
         == (cell.equation, cell.model, cell.beta, cell.hess_weight, cell.seed)),
        key=lambda c: c.n_train, reverse=True,
    )  # fmt: skip
    for c in smaller:
        path = Path(run_dir) / "cells" / f"{results.cell_filename(c.cell_id)}.csv"
        if not path.exists():
            continue
        rows = results.read_cell(path)
        status = results.cell_status(path)
        if status == results.OVER_BUDGET:
            return (f"not run: at n_train {c.n_train} {cell.model} already ran past its budget of max_seconds = "
                    f"{seconds:g} s, and its cost grows like n_train^{exponent:g}")  # fmt: skip
        wall = rows.loc[rows["metric"] == results.FIT_WALL, "value"]
        if status != "ok" or wall.empty or not math.isfinite(float(wall.iloc[0])):
            continue  # a failure or an older cell without its cost says nothing about time: look further down
        predicted = float(wall.iloc[0]) * (cell.n_train / c.n_train) ** exponent
        if predicted > seconds:
            return (f"not run: predicted {predicted:.0f} s = {float(wall.iloc[0]):.1f} s measured at n_train "
                    f"{c.n_train} x ({cell.n_train}/{c.n_train})^{exponent:g}, over its budget of max_seconds = "
                    f"{seconds:g} s")  # fmt: skip
        return ""
    return ""
