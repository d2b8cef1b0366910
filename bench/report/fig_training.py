"""Figures on training: the Sobolev beta sweep and training-set size curves.

Each function returns a matplotlib Figure, or a string saying why the run has nothing to draw.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report import style
from bench.report.fig_fidelity import cell_errors
from bench.report.load import RunData

PANELS = (("value_err", style.VALUE_ERR), ("jac", style.JAC_ERR))


def _panels(df: pd.DataFrame, x: str, xlabel: str, style_col: str | None = None) -> Figure:
    """Rows: equations; columns: value error and Jacobian error; one line per family (mean and 95% CI)."""
    equations = sorted(df["equation"].unique())
    palette = style.family_palette(df["family"].unique())
    families = style.family_order(df["family"].unique())
    levels = sorted(df[style_col].unique()) if style_col else []
    dashes = {level: style.DASHES[i % len(style.DASHES)] for i, level in enumerate(levels)}
    fig, axes = style.new_figure(2, len(equations), width=4.4, height=3.0)
    for row, eq in enumerate(equations):
        d = df[df["equation"] == eq]
        for col, (y, ylabel) in enumerate(PANELS):
            ax = axes[row, col]
            style.mean_ci_lines(ax, d, x, y, palette, dashes, by=style_col)
            ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=eq)
            if x == "n_train":
                style.log_ticks_at(ax, d[x].unique())  # the sizes run, few and far apart
    handles = style.family_handles(palette, families)
    handles += [Line2D([], [], linestyle="", label=style_col)] if dashes else []
    handles += [Line2D([], [], color="0.3", dashes=dash or (None, None), label=level) for level, dash in dashes.items()]
    style.legend_outside(fig, handles)
    return fig


def beta_sweep(run: RunData) -> Figure | str:
    """Value and Jacobian error against beta (value training is beta = 1), at the Sobolev cells' n_train."""
    df = cell_errors(run)
    sob = df[df["variant"] == "sobolev"]
    if sob.empty:
        return "no Sobolev cells in this run"
    n_top = sob.groupby("equation")["n_train"].max()
    df = df[df["variant"].isin(["value", "sobolev"]) & (df["n_train"] == df["equation"].map(n_top))]
    if df["beta"].nunique() < 2:
        return "a single beta: nothing to sweep"
    return _panels(df, "beta", style.BETA)


def n_train_curves(run: RunData) -> Figure | str:
    """Value and Jacobian error against training-set size, for the trainings run at more than one size."""
    df = cell_errors(run)
    sizes = df.groupby(["equation", "training"])["n_train"].transform("nunique")
    df = df[sizes > 1]
    if df.empty:
        return "a single n_train per configuration: no training-set size curves"
    return _panels(df, "n_train", style.N_TRAIN, style_col="training" if df["training"].nunique() > 1 else None)
