"""Figures on training: the Sobolev beta sweep and training-set size curves.

Each function returns a matplotlib Figure, or a string saying why the run has nothing to draw.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from bench.report import style
from bench.report.fig_fidelity import cell_errors, reference_rows
from bench.report.load import RunData

PANELS = (("value_err", style.VALUE_ERR), ("jac", style.JAC_ERR))


def _panels(df: pd.DataFrame, x: str, xlabel: str, style_col: str | None = None) -> Figure:
    """Rows: equations (generated sets pooled per family); columns: value error and Jacobian error; one line per
    family (mean and 95% CI over its models, seeds and the row's sets)."""
    panel, panels, titles = style.set_panels(df)
    palette = style.family_palette(df["family"].unique())
    families = style.family_order(df["family"].unique())
    levels = sorted(df[style_col].unique()) if style_col else []
    dashes = {level: style.DASHES[i % len(style.DASHES)] for i, level in enumerate(levels)}
    fig, axes = style.new_figure(2, len(panels), width=4.4, height=3.0)
    for row, p in enumerate(panels):
        d = df[panel == p]
        for col, (y, ylabel) in enumerate(PANELS):
            ax = axes[row, col]
            style.mean_ci_lines(ax, d, x, y, palette, dashes, by=style_col)
            ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=titles[p])
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


def n_train_slopes(run: RunData) -> pd.DataFrame:
    """Log-log slope of the test errors against n_train per (equation, model, training) run at 2+ sizes.

    Ordinary least squares of log(error) on log(n_train) over every (size, seed) cell (scipy.stats.linregress),
    with the 95% t-interval of the slope (NaN with fewer than 3 cells). A slope of -0.5 means the error halves
    when the training set grows 4x. Columns: equation, model, family, training, sizes, cells, and
    ``<value_err|jac>_slope`` / ``_ci``.
    """
    df = cell_errors(run)
    cols = ["equation", "model", "family", "training", "sizes", "cells"]
    cols += [f"{y}_{s}" for y, _ in PANELS for s in ("slope", "ci")]
    rows = []
    for (eq, model, fam, training), d in df.groupby(["equation", "model", "family", "training"], sort=True):
        if d["n_train"].nunique() < 2:
            continue
        row = {"equation": eq, "model": model, "family": fam, "training": training,
               "sizes": d["n_train"].nunique(), "cells": len(d)}  # fmt: skip
        for y, _ in PANELS:
            fit = stats.linregress(np.log(d["n_train"].astype(float)), np.log(d[y].astype(float)))
            half = stats.t.ppf(0.975, len(d) - 2) * fit.stderr if len(d) > 2 else np.nan
            row[f"{y}_slope"], row[f"{y}_ci"] = float(fit.slope), float(half)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _fit(n: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of log(err) = a + b log(n) by least squares."""
    b, a = np.polyfit(np.log(n), np.log(err), 1)
    return float(a), float(b)


def _ratio(value: tuple[np.ndarray, np.ndarray], sob: tuple[np.ndarray, np.ndarray], n_top: float) -> tuple[float, str]:
    """(k, bound): n_top / the n at which the Sobolev fit reaches the value fit's error at n_top, never beyond the
    sizes Sobolev was run at. bound "≥": it is already as good at its smallest size (k is at least n_top / n_min);
    "≤": it does not get there by its largest size (at most n_top / n_max, flat or rising fits included); "": the
    size lies within the ones run (interpolated on the fit)."""
    (av, bv), (a_s, b_s) = _fit(*value), _fit(*sob)
    target = av + bv * math.log(n_top)
    n_min, n_max = float(sob[0].min()), float(sob[0].max())
    if a_s + b_s * math.log(n_min) <= target:
        return n_top / n_min, "≥"
    if a_s + b_s * math.log(n_max) > target:
        return n_top / n_max, "≤"
    return float(n_top / math.exp((target - a_s) / b_s)), ""


def _resample(n: np.ndarray, err: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cells drawn with replacement within each size (every size keeps its count)."""
    idx = np.concatenate([rng.choice(np.flatnonzero(n == size), (n == size).sum()) for size in np.unique(n)])
    return n[idx], err[idx]


def points_ratio(df: pd.DataFrame, draws: int = 2000, seed: int = 0) -> pd.DataFrame:
    """How many times fewer training points Sobolev training needs for value training's Jacobian error.

    Per (equation, model) and Sobolev training, both trainings run at 2+ sizes: fit log(error) against log(n_train)
    for each (OLS over sizes and seeds); take the error the value fit reaches at its largest size n_top (the
    target); k = n_top / the size at which the Sobolev fit reaches the target, k > 1 meaning fewer points. The
    size is never extrapolated beyond the Sobolev sizes run: ``bound`` "≥" / "≤" marks a k clipped there (see
    ``_ratio``). The 95% interval is a percentile bootstrap over cells, resampled within each size (``draws``
    resamples, fixed ``seed``), of the same clipped estimate. Input: ``cell_errors`` rows.
    """
    cols = ["equation", "model", "training", "target_jac", "k", "bound", "k_lo", "k_hi", "n_sobolev"]
    rows = []
    rng = np.random.default_rng(seed)
    arrays = lambda d: (d["n_train"].to_numpy(float), d["jac"].to_numpy(float))  # noqa: E731
    for (eq, model), d in df.groupby(["equation", "model"], sort=True):
        value = arrays(d[d["training"] == "value"])
        if len(np.unique(value[0])) < 2:
            continue
        n_top = float(value[0].max())
        av, bv = _fit(*value)
        for training, sob_rows in d[d["variant"] == "sobolev"].groupby("training", sort=True):
            sob = arrays(sob_rows)
            if len(np.unique(sob[0])) < 2:
                continue
            k, bound = _ratio(value, sob, n_top)
            boot = [_ratio(_resample(*value, rng), _resample(*sob, rng), n_top)[0] for _ in range(draws)]
            lo, hi = np.percentile(boot, [2.5, 97.5])
            rows.append({"equation": eq, "model": model, "training": training,
                         "target_jac": float(np.exp(av + bv * np.log(n_top))), "k": k, "bound": bound,
                         "k_lo": float(lo), "k_hi": float(hi), "n_sobolev": n_top / k})  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def pooled_points_ratio(ratio: pd.DataFrame, draws: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One k per (model, training) over the sets: the geometric median of the per-set k, with a percentile
    bootstrap over sets (95%). Columns: model, training, sets, k, k_lo, k_hi, bounded (sets whose k was clipped)."""
    cols = ["model", "training", "sets", "k", "k_lo", "k_hi", "bounded"]
    rng = np.random.default_rng(seed)
    rows = []
    for (model, training), d in ratio.groupby(["model", "training"], sort=True):
        logk = np.log(d["k"].to_numpy(float))
        boot = [np.median(rng.choice(logk, len(logk))) for _ in range(draws)]
        lo, hi = np.exp(np.percentile(boot, [2.5, 97.5]))
        rows.append({"model": model, "training": training, "sets": len(d), "k": float(np.exp(np.median(logk))),
                     "k_lo": float(lo), "k_hi": float(hi), "bounded": int((d["bound"] != "").sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def learning_curves(run: RunData, equation: str | None) -> Figure | str:
    """Validation loss (training loss where a cell had no validation split) against step, one panel per family:
    a line per model and seed, reference training (value-only where run, largest n_train) on ``equation``."""
    cells = reference_rows(run.ok[(run.ok["metric"] == "train_steps") & (run.ok["equation"] == equation)])
    cells = cells[cells["cell_id"].isin(list(run.history_files))]
    if cells.empty:
        return "no history/<cell>.csv in this run (runs before the training history was kept)"
    palette = style.family_palette(cells["family"].unique())
    families = style.family_order(cells["family"].unique())
    fig, axes = style.new_figure(len(families), 1, width=3.6, height=2.8)
    for ax, fam in zip(axes.flat, families, strict=True):
        d = cells[cells["family"] == fam]
        for k, (model, m) in enumerate(sorted(d.groupby("model"), key=lambda kv: kv[0])):
            for _, cell in m.iterrows():
                h = run.history(cell["cell_id"])
                y = "val_loss" if h["val_loss"].notna().all() else "loss"
                dash = style.DASHES[k % len(style.DASHES)] or (None, None)
                ax.plot(h["step"], h[y], color=palette[fam], dashes=dash, linewidth=1, alpha=0.8,
                        label=model if cell["seed"] == m["seed"].min() else None)  # fmt: skip
        ax.set(
            yscale="log", xlabel="optimizer step", ylabel="validation loss (normalized)", title=f"{equation} · {fam}"
        )
        ax.legend(fontsize=7, frameon=False)
    return fig
