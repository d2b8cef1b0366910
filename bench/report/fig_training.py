"""Figures on training: the Sobolev beta sweep and training-set size curves.

Each function returns a matplotlib Figure, or a string saying why the run has nothing to draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report import style
from bench.report.load import RunData

PANELS = (("value_err", style.VALUE_ERR), ("jac", style.JAC_ERR))


def error_table(run: RunData) -> pd.DataFrame:
    """One row per finished cell: its config, value error 1 - r2_min and Jacobian error (test)."""
    ok = run.ok[run.ok["split"] == "test"]
    keys = ["cell_id", "equation", "model", "family", "variant", "beta", "n_train", "seed"]
    scores = ok[ok["metric"].isin(["r2_min", "jac_rel_fro_median"])]
    wide = scores.set_index([*keys, "metric"])["value"].unstack("metric")
    if wide.empty or not {"r2_min", "jac_rel_fro_median"} <= set(wide.columns):
        return pd.DataFrame(columns=[*keys, "value_err", "jac"])
    wide = wide.reset_index()
    wide["value_err"] = np.maximum(1.0 - wide["r2_min"], 1e-16)
    wide["jac"] = wide["jac_rel_fro_median"]
    wide["training"] = [style.training_label(v, b) for v, b in zip(wide["variant"], wide["beta"], strict=True)]
    return wide


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
    df = error_table(run)
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
    df = error_table(run)
    sizes = df.groupby(["equation", "training"])["n_train"].transform("nunique")
    df = df[sizes > 1]
    if df.empty:
        return "a single n_train per configuration: no training-set size curves"
    return _panels(df, "n_train", style.N_TRAIN, style_col="training" if df["training"].nunique() > 1 else None)
