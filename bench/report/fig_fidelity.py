"""Figures on derivative fidelity: fidelity vs fit, per-entry heatmaps, predicted vs true, error by boundary distance,
for Jacobians and Hessians, and the errors of each training (value, Sobolev, Hessian term) side by side.

Each function returns a matplotlib Figure, or a string saying why the run has nothing to draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from bench.report import style
from bench.report.load import RunData, largest_n_train
from bench.report.stats import fmt_num
from bench.run.results import HESS_BY_EDGE, HESS_HEADLINE, JAC_BY_EDGE, JAC_HEADLINE

FLOOR = 1e-16  # 1 - R² of an exact fit is 0; drawn at this floor on a log axis
VARIANT_RANK = {"value": 0, "sobolev": 1, "hessian": 2}  # least supervised first: the reference training


def test_metric(run: RunData, metric: str) -> pd.DataFrame:
    ok = run.ok
    return ok[(ok["split"] == "test") & (ok["metric"] == metric)]


def reference_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The reference configuration of each (equation, model): value training, else Sobolev, else the Hessian
    variant (the least supervised it has; among Sobolev betas the largest), at its largest n_train."""
    if df.empty:
        return df
    rank = df["variant"].map(VARIANT_RANK).fillna(len(VARIANT_RANK)) - df["beta"].astype(float) * 1e-3
    first = rank.groupby([df["equation"], df["model"]]).transform("min")
    return largest_n_train(df[rank == first], ["equation", "model"])


def models_in_order(df: pd.DataFrame) -> list[str]:
    """Models grouped by family (fixed family order), then by name."""
    fam = df.drop_duplicates("model").set_index("model")["family"]
    order = style.family_order(fam.unique())
    return sorted(fam.index, key=lambda m: (order.index(fam[m]), m))


def cell_errors(run: RunData) -> pd.DataFrame:
    """One row per finished cell: its config, value error 1 - r2_min and Jacobian error (test)."""
    ok = run.ok[run.ok["split"] == "test"]
    keys = ["cell_id", "equation", "model", "family", "variant", "beta", "n_train", "seed"]
    scores = ok[ok["metric"].isin(["r2_min", JAC_HEADLINE])]
    wide = scores.set_index([*keys, "metric"])["value"].unstack("metric")
    if wide.empty or not {"r2_min", JAC_HEADLINE} <= set(wide.columns):
        return pd.DataFrame(columns=[*keys, "value_err", "jac", "training"])
    wide = wide.reset_index()
    wide["value_err"] = np.maximum(1.0 - wide["r2_min"], FLOOR)
    wide["jac"] = wide[JAC_HEADLINE]
    wide = wide.dropna(subset=["value_err", "jac"])
    wide["training"] = [style.training_label(v, b) for v, b in zip(wide["variant"], wide["beta"], strict=True)]
    return wide


def fidelity_vs_fit(run: RunData) -> Figure | str:
    """1 - R² against Jacobian error, one point per cell, a panel per equation (generated sets: per family)."""
    df = cell_errors(run)
    if df.empty:
        return f"no cell has both r2_min and {JAC_HEADLINE} on the test split"
    panel, panels, titles = style.set_panels(df)
    palette, markers = style.family_palette(df["family"].unique()), style.variant_markers(df["variant"].unique())
    fig, axes = style.new_figure(*style.grid_shape(len(panels), max_cols=3))
    for ax, p in zip(axes.flat, panels, strict=False):
        d = df[panel == p]
        sns.scatterplot(d, x="value_err", y="jac", hue="family", palette=palette, style="variant", markers=markers,
                        s=40 if d["equation"].nunique() == 1 else 18, alpha=0.8, ax=ax, legend=False)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel=style.VALUE_ERR, ylabel=style.JAC_ERR, title=titles[p])
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    families = style.family_order(df["family"].unique())
    style.legend_outside(fig, style.family_handles(palette, families) + style.marker_handles(markers, "variant"))
    return fig


def _entry_matrix(d: pd.DataFrame) -> pd.DataFrame:
    """(n_out, n_in) mean over seeds, rows and columns in the order the runner wrote them."""
    m = d.groupby(["output", "input"], sort=False)["value"].mean().unstack("input")
    return m.loc[d["output"].unique(), d["input"].unique()]


def entry_heatmaps(run: RunData, equation: str) -> Figure | str:
    """jac_entry_nrmse (test) as an n_out x n_in heatmap per architecture, one shared log colour scale."""
    df = reference_rows(test_metric(run, "jac_entry_nrmse"))
    df = df[df["equation"] == equation]
    if df.empty:
        return f"no jac_entry_nrmse rows for {equation}"
    models = models_in_order(df)
    mats = {m: _entry_matrix(df[df["model"] == m]) for m in models}
    values = np.concatenate([m.to_numpy().ravel() for m in mats.values()])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return f"jac_entry_nrmse of {equation} has no positive finite value"
    norm = LogNorm(vmin=values.min(), vmax=max(values.max(), values.min() * 1.01))
    ncols, nrows = style.grid_shape(len(models))
    n_out, n_in = next(iter(mats.values())).shape
    fig, axes = style.new_figure(ncols, nrows, width=0.6 * n_in + 1.0, height=0.55 * n_out + 0.9, margin=1.0)
    fam = df.drop_duplicates("model").set_index("model")["family"]
    for ax, m in zip(axes.flat, models, strict=False):
        mat = mats[m]
        annot = np.vectorize(lambda v: fmt_num(v, 2))(mat.to_numpy())
        sns.heatmap(mat, ax=ax, norm=norm, cmap="rocket_r", annot=annot, fmt="", cbar=False, square=True,
                    annot_kws={"fontsize": "x-small"}, linewidths=0.5)  # fmt: skip
        ax.set(title=f"{m} ({fam[m]})", xlabel="input", ylabel="output")
        ax.tick_params(axis="y", rotation=0)
    for ax in list(axes.flat)[len(models) :]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap="rocket_r"), ax=axes, label=style.ENTRY_ERR, shrink=0.8)
    return fig


def _reference_cell(run: RunData, equation: str, model: str) -> str | None:
    """The cell whose Jacobians are drawn: value training, largest n_train, lowest seed, with a file."""
    ok = run.ok
    cells = ok[(ok["equation"] == equation) & (ok["model"] == model) & ok["cell_id"].isin(list(run.jacobian_files))]
    if cells.empty:
        return None
    cells = cells.drop_duplicates("cell_id").assign(_v=lambda d: d["variant"] != "value")
    return cells.sort_values(["_v", "n_train", "seed"], ascending=[True, False, True])["cell_id"].iloc[0]


def entry_label(column: str, inputs: list[str], order: int = 1) -> str:
    """``df2_dx3`` (the forum layout, ``d<output>_d<input>``) -> ``∂f2/∂x3``, and with ``order=2`` a Hessian entry
    ``d2f1_dx1_dx3`` -> ``∂²f1/∂x1∂x3``, using the file's input names."""
    names = sorted(inputs, key=len, reverse=True)
    if order == 2 and column.startswith("d2"):
        for a in names:
            for b in names:
                if column.endswith(f"_d{a}_d{b}") and len(column) > len(a) + len(b) + 6:
                    return f"∂²{column[2 : -len(a) - len(b) - 4]}/∂{a}∂{b}"
    for name in names:
        if column.startswith("d") and column.endswith(f"_d{name}"):
            return f"∂{column[1 : -len(name) - 2]}/∂{name}"
    return column


def entry_columns(jac: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(inputs, Jacobian entries, Hessian entries) of a jacobians/<cell>.csv, from its column order
    (bench.run.results.jacobian_frame): inputs, Jacobian entries with their ``_true`` twins, ``jac_norm_*``,
    then the Hessian entries and ``hess_norm_*``. A file without ``jac_norm_true`` has Jacobian entries only."""
    cols = list(jac.columns)
    entries = [c for c in cols if f"{c}_true" in jac]
    inputs = cols[: cols.index(entries[0])] if entries else []
    if "jac_norm_true" not in jac:
        return inputs, entries, []
    cut = cols.index("jac_norm_true")
    return inputs, [c for c in entries if cols.index(c) < cut], [c for c in entries if cols.index(c) > cut]


def worst_entries(
    jac: pd.DataFrame, k: int = 3, nrmse: dict[str, float] | None = None, columns: list[str] | None = None
) -> list[tuple[str, float]]:
    """The k entries (columns with a ``<column>_true`` twin, or those of ``columns``) with the largest normalized RMSE.

    ``nrmse`` maps a column to the runner's entry nRMSE of that cell; entries it lacks are scored here
    the same way, RMSE / RMS of the true entry (bench/fidelity/metrics.py; 1 where the true entry is all zero).
    """
    scores = []
    for col in jac.columns if columns is None else columns:
        if f"{col}_true" in jac:
            if nrmse and col in nrmse and np.isfinite(nrmse[col]):
                scores.append((col, float(nrmse[col])))
                continue
            true, pred = jac[f"{col}_true"].to_numpy(float), jac[col].to_numpy(float)
            scale = float(np.sqrt(np.nanmean(true**2))) or 1.0
            scores.append((col, float(np.sqrt(np.nanmean((pred - true) ** 2)) / scale)))
    return sorted(scores, key=lambda s: -s[1])[:k]


def cell_entry_nrmse(run: RunData, cell_id: str, order: int = 1) -> dict[str, float]:
    """The runner's entry nRMSE (test) of one cell by jacobians/ column: ``d<output>_d<input>`` (jac_entry_nrmse)
    or, with ``order=2``, ``d2<output>_d<input j>_d<input k>`` (hess_entry_nrmse, input "xj,xk")."""
    ok = run.ok
    metric = "jac_entry_nrmse" if order == 1 else "hess_entry_nrmse"
    rows = ok[(ok["cell_id"] == cell_id) & (ok["metric"] == metric) & (ok["split"] == "test")]
    if order == 1:
        return {f"d{o}_d{i}": v for o, i, v in zip(rows["output"], rows["input"], rows["value"], strict=True)}
    pairs = [str(i).split(",", 1) for i in rows["input"]]
    return {f"d2{o}_d{p[0]}_d{p[-1]}": v for o, p, v in zip(rows["output"], pairs, rows["value"], strict=True)}


def pred_vs_true(run: RunData, equation: str, k: int = 3, order: int = 1) -> Figure | str:
    """Predicted against true derivative for each architecture's k worst entries, with the identity line
    (``order=2``: the Hessian entries ∂²f/∂xj∂xk)."""
    ok = run.ok[run.ok["equation"] == equation]
    cells = {m: _reference_cell(run, equation, m) for m in models_in_order(ok)} if not ok.empty else {}
    frames = {m: (c, run.jacobians(c)) for m, c in cells.items() if c is not None}  # each file read once
    if order == 2:  # only files that hold Hessian entries (older runs wrote Jacobians only)
        frames = {m: cj for m, cj in frames.items() if entry_columns(cj[1])[2]}
    if not frames:
        return f"no jacobians/<cell>.csv{' with Hessian entries' if order == 2 else ''} for {equation}"
    fam = ok.drop_duplicates("model").set_index("model")["family"]
    palette = style.family_palette(fam.unique())
    fig, axes = style.new_figure(k, len(frames), width=2.6, height=2.4)
    for row, (m, (cid, jac)) in enumerate(frames.items()):
        inputs, jac_cols, hess_cols = entry_columns(jac)
        worst = worst_entries(jac, k, cell_entry_nrmse(run, cid, order), jac_cols if order == 1 else hess_cols)
        for col in range(k):
            ax = axes[row, col]
            if col >= len(worst):
                ax.set_visible(False)
                continue
            entry, score = worst[col]
            true, pred = jac[f"{entry}_true"].to_numpy(float), jac[entry].to_numpy(float)
            ax.scatter(true, pred, s=6, alpha=0.5, color=palette[fam[m]], linewidths=0)
            lo, hi = robust_limits(true, pred)
            ax.plot([lo, hi], [lo, hi], color="0.2", linewidth=0.8, linestyle="--")
            ax.set(xlim=(lo, hi), ylim=(lo, hi))
            outside = int((~((true >= lo) & (true <= hi) & (pred >= lo) & (pred <= hi))).sum())
            if outside:
                ax.text(0.98, 0.02, f"{outside} of {len(true)} points\noutside the axes", transform=ax.transAxes,
                        ha="right", va="bottom", fontsize="xx-small", color="0.25")  # fmt: skip
            label = entry_label(entry, inputs, order)
            ax.set_title(f"{m}: {label}  (nRMSE {fmt_num(score, 2)})", fontsize="small")
            ax.tick_params(labelsize="x-small")
    what = "derivative" if order == 1 else "second derivative"
    fig.suptitle(f"{equation}: each architecture's {k} worst {what} entries (test points, first seed, value "
                 "training; axes: 1st-99th percentile)", fontsize="medium")  # fmt: skip
    fig.supxlabel(f"true {what} (physical units)")
    fig.supylabel(f"model {what} (physical units)")
    return fig


def robust_limits(*arrays: np.ndarray, q: float = 1.0, margin: float = 0.08) -> tuple[float, float]:
    """Shared axis limits of the finite values: the ``q``-th to ``(100 - q)``-th percentile widened by ``margin`` of
    the span, so that a few outliers do not squeeze every other point into a corner."""
    v = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    v = v[np.isfinite(v)]
    if v.size == 0:
        return -1.0, 1.0
    lo, hi = np.percentile(v, [q, 100 - q])
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    return float(lo - margin * span), float(hi + margin * span)


def _hessian_matrix(d: pd.DataFrame, inputs: list[str]) -> np.ndarray:
    """(n_in, n_in) symmetric matrix of one output's hess_entry_nrmse rows (input "xj,xk", j <= k), mean over seeds."""
    n, pos = len(inputs), {name: i for i, name in enumerate(inputs)}
    mat = np.full((n, n), np.nan)
    for pair, v in d.groupby("input", sort=False)["value"].mean().items():
        a, _, b = str(pair).partition(",")
        if a in pos and b in pos:
            mat[pos[a], pos[b]] = mat[pos[b], pos[a]] = v
    return mat


def hessian_heatmaps(run: RunData, equation: str) -> Figure | str:
    """hess_entry_nrmse (test) as an n_in x n_in heatmap per output (columns) and architecture (rows), value
    training, one shared log colour scale; the matrix is symmetric (each distinct pair measured once)."""
    df = reference_rows(test_metric(run, "hess_entry_nrmse"))
    df = df[df["equation"] == equation]
    if df.empty:
        why = ("a data set has no reference Hessians" if str(equation).startswith("data:")
               else "the run predates second-derivative metrics")  # fmt: skip
        return f"no hess_entry_nrmse rows for {equation} ({why})"
    models, outputs = models_in_order(df), list(df["output"].unique())
    inputs = list(dict.fromkeys(str(p).partition(",")[0] for p in df["input"].unique()))
    mats = {(m, o): _hessian_matrix(df[(df["model"] == m) & (df["output"] == o)], inputs)
            for m in models for o in outputs}  # fmt: skip
    values = np.concatenate([v.ravel() for v in mats.values()])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return f"hess_entry_nrmse of {equation} has no positive finite value"
    norm = LogNorm(vmin=values.min(), vmax=max(values.max(), values.min() * 1.01))
    n = len(inputs)
    fig, axes = style.new_figure(len(outputs), len(models), width=0.55 * n + 1.0, height=0.5 * n + 0.9, margin=1.0)
    fam = df.drop_duplicates("model").set_index("model")["family"]
    for r, m in enumerate(models):
        for c, o in enumerate(outputs):
            mat = pd.DataFrame(mats[(m, o)], index=inputs, columns=inputs)
            annot = np.vectorize(lambda v: fmt_num(v, 2))(mat.to_numpy())
            sns.heatmap(mat, ax=axes[r, c], norm=norm, cmap="rocket_r", annot=annot, fmt="", cbar=False, square=True,
                        annot_kws={"fontsize": "xx-small"}, linewidths=0.5)  # fmt: skip
            axes[r, c].set_title(f"{m} ({fam[m]}): ∂²{o}", fontsize="small")
            axes[r, c].tick_params(axis="both", labelsize="x-small", rotation=0)
    fig.colorbar(ScalarMappable(norm=norm, cmap="rocket_r"), ax=axes, label=style.HESS_ENTRY_ERR, shrink=0.8)
    return fig


def training_comparison(run: RunData, equation: str) -> Figure | str:
    """Jacobian and Hessian error (test, median over samples) of each family under each training (value,
    Sobolev, Hessian term), mean and 95% CI over its models and seeds, at the largest n_train (a run without
    Hessian metrics: the Jacobian panel only)."""
    ok = pd.concat([test_metric(run, JAC_HEADLINE), test_metric(run, HESS_HEADLINE)])
    ok = ok[(ok["equation"] == equation) & np.isfinite(ok["value"])]
    if ok.empty:
        return f"no Jacobian errors for {equation}"
    ok = largest_n_train(ok, ["equation", "model", "variant", "beta"])
    ok = ok.assign(training=[style.training_label(v, b) for v, b in zip(ok["variant"], ok["beta"], strict=True)])
    order = training_labels(ok.drop_duplicates("training"))
    if len(order) < 2:
        return f"{equation} has one training only ({order[0]}): nothing to compare"
    families = style.family_order(ok["family"].unique())
    panels = ((JAC_HEADLINE, style.JAC_ERR), (HESS_HEADLINE, style.HESS_ERR))
    panels = [(m, label) for m, label in panels if (ok["metric"] == m).any()]
    fig, axes = style.new_figure(len(panels), 1, width=0.9 * len(families) + 2.4, height=3.2, margin=2.2)
    for ax, (metric, label) in zip(axes.flat, panels, strict=True):
        sns.pointplot(ok[ok["metric"] == metric], x="family", y="value", hue="training", order=families,
                      hue_order=order, dodge=0.4, errorbar=("ci", 95), seed=0, linestyles="none", markersize=5,
                      err_kws={"linewidth": 1}, ax=ax, palette="viridis", legend=ax is axes.flat[-1])  # fmt: skip
        ax.set(yscale="log", xlabel="family", ylabel=label, title=equation)
        ax.tick_params(axis="x", labelsize="small")
    leg = axes.flat[-1].get_legend()
    if leg is not None:
        handles, labels = leg.legend_handles, [t.get_text() for t in leg.get_texts()]
        leg.remove()
        fig.legend(handles, labels, loc="outside right upper", title="training", fontsize="small")
    return fig


def training_labels(df: pd.DataFrame) -> list[str]:
    """Training labels in reading order: value, then Sobolev from large to small beta, then the Hessian variants."""
    rows = sorted(zip(df["variant"], df["beta"], df["training"], strict=True),
                  key=lambda r: (VARIANT_RANK.get(r[0], len(VARIANT_RANK)), -float(r[1]), r[2]))  # fmt: skip
    return list(dict.fromkeys(r[2] for r in rows))


def edge_error(run: RunData, order: int = 1) -> Figure | str:
    """Median Jacobian (``order=2``: Hessian) error per distance-to-boundary bin, per family (mean over its
    models and seeds)."""
    metric = JAC_BY_EDGE if order == 1 else HESS_BY_EDGE
    df = reference_rows(test_metric(run, metric)).dropna(subset=["bin"])
    df = df[np.isfinite(df["value"])]
    if df.empty:
        return f"no {metric} rows"
    panel, panels, titles = style.set_panels(df)
    palette = style.family_palette(df["family"].unique())
    families = style.family_order(df["family"].unique())
    fig, axes = style.new_figure(*style.grid_shape(len(panels), max_cols=3))
    ylabel = (style.JAC_ERR if order == 1 else style.HESS_ERR).split("\n")[0] + "\n(median over the bin's test points)"
    for ax, p in zip(axes.flat, panels, strict=False):
        style.mean_ci_lines(ax, df[panel == p], "bin", "value", palette)
        ax.set(yscale="log", xlabel=style.EDGE, ylabel=ylabel)
        ax.set_title(titles[p])
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    style.legend_outside(fig, style.family_handles(palette, families))
    return fig
