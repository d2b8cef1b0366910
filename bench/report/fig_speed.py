"""Throughput figures: Jacobians/s against batch size per engine, and the accuracy-vs-speed Pareto front.

Each function returns a matplotlib Figure, or a string saying why the run has nothing to draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report import style
from bench.report.fig_fidelity import models_in_order, reference_rows, test_metric
from bench.report.leaderboard import FORWARD, MISSING_NOTE, PEER_PREFIX, attach_throughput, run_dtype
from bench.report.load import RunData, speed_key
from bench.run import results
from bench.run.results import JAC_HEADLINE


def measured(run: RunData) -> pd.DataFrame:
    """Timed rows (status ok, finite), one dtype per device: float32 where measured, else the most common."""
    t = run.throughput
    if t is None:
        return pd.DataFrame()
    t = t[(t["status"] == "ok") & np.isfinite(t["jac_per_s"]) & np.isfinite(t["batch_size"])]
    keep = []
    for _, d in t.groupby("device"):
        dtypes = d["dtype"].value_counts()
        keep.append(d[d["dtype"] == ("float32" if "float32" in dtypes else dtypes.index[0])])
    return pd.concat(keep) if keep else pd.DataFrame()


def _engine_look(engine: str) -> dict:
    """Line style of an engine (style.ENGINE_STYLES: its own colour and marker): JAX peers dotted, the forward pass
    (samples/s, a yardstick) thin grey dash-dotted."""
    color, marker = style.engine_style(engine)
    if engine == FORWARD:
        label = "forward pass (samples/s)"
        return {"color": color, "linestyle": "-.", "marker": marker, "linewidth": 1, "label": label}
    peer = engine.startswith(PEER_PREFIX)
    return {"color": color, "linestyle": ":" if peer else "-", "marker": marker, "label": engine}


def _throughput_panel(ax, d: pd.DataFrame) -> None:
    """One (model, device): a line per engine with its interquartile band, and the FLOP limit."""
    if d.empty:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set(xticks=[], yticks=[])
        return
    for engine, e in d.groupby("engine"):
        e = e.sort_values("batch_size")
        look = _engine_look(engine)
        ax.plot(e["batch_size"], e["jac_per_s"], ms=4, **look)
        ax.fill_between(e["batch_size"], e["jac_per_s_q25"], e["jac_per_s_q75"], color=look["color"], alpha=0.2)
    jac = d[d["engine"] != FORWARD]  # the forward rows' flops_per_jac is one forward pass
    rates = np.atleast_1d(results.limit_rate(jac["flops_per_jac"], jac["peak_flops"]))
    rates = rates[np.isfinite(rates)]
    limit = float(np.median(rates)) if len(rates) else np.nan
    if np.isfinite(limit):
        ax.axhline(limit, color="0.3", linestyle="--", linewidth=1)
    ax.set(xscale="log", yscale="log")


def throughput_curves(run: RunData) -> Figure | str:
    """A panel per (model, device): one line per engine, the FLOP limit dashed, JAX peers dotted."""
    t = measured(run)
    if t.empty:
        return "no throughput.csv in this run" if run.throughput is None else "throughput.csv has no timed (ok) rows"
    devices = sorted(t["device"].unique())
    t = t.assign(config=speed_key(t))
    order = {m: i for i, m in enumerate(models_in_order(t))}
    models = sorted(t["config"].unique(), key=lambda c: (order[t.loc[t["config"] == c, "model"].iloc[0]], c))
    engines = sorted(t["engine"].unique(), key=lambda e: (e == FORWARD, e.startswith(PEER_PREFIX), e))
    names = {d: t.loc[t["device"] == d, "device_name"].iloc[0] for d in devices}
    if len(devices) == 1:  # one device: models wrap into a grid, the device goes into the figure title
        ncols, nrows = style.grid_shape(len(models), max_cols=3)
        cells = [(m, devices[0]) for m in models]
    else:  # rows: models, columns: devices
        ncols, nrows = len(devices), len(models)
        cells = [(m, d) for m in models for d in devices]
    fig, axes = style.new_figure(ncols, nrows, width=3.8, height=2.6)
    for i, (ax, (model, device)) in enumerate(zip(axes.flat, cells, strict=False)):
        _throughput_panel(ax, t[(t["config"] == model) & (t["device"] == device)])
        label = style.config_label(model)
        if len(devices) == 1:
            ax.set_title(label, fontsize="small")
        else:  # the first row names the device of each column
            title = f"{device}: {names[device]}\n{label}" if i < ncols else f"{label} · {device}"
            ax.set_title(title, fontsize="small")
    for ax in list(axes.flat)[len(cells) :]:
        ax.set_visible(False)
    if len(devices) == 1:
        fig.suptitle(f"{devices[0]}: {names[devices[0]]}")
    fig.supxlabel(style.BATCH)
    fig.supylabel(style.JAC_PER_S)
    handles = [Line2D([], [], ms=4, **_engine_look(e)) for e in engines]
    handles.append(Line2D([], [], color="0.3", linestyle="--", label="FLOP limit\n(peak FLOP/s ÷ FLOPs per Jacobian)"))
    style.legend_outside(fig, handles, "engine")
    return fig


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not beaten by another that is both faster (larger x) and more accurate (smaller y)."""
    p = points.sort_values([x, y], ascending=[False, True])
    return p[p[y] < p[y].cummin().shift(fill_value=np.inf)]


def accuracy_vs_speed(run: RunData, equation: str) -> Figure | str:
    """Jacobian error (reference training) against the best torch engine's Jacobians/s, a panel per device."""
    err = reference_rows(test_metric(run, JAC_HEADLINE))
    err = err[err["equation"] == equation]
    keys = ["model", "family", "model_config", "params"]
    err = err.groupby(keys, dropna=False)["value"].mean().rename("jac").reset_index()
    joined = attach_throughput(err, run.throughput, run_dtype(run))  # the speed of exactly the configuration trained
    speed = [c for c in joined.columns if c.startswith("jac_per_s_")]
    df = joined.melt(id_vars=[*keys, "jac"], value_vars=speed, var_name="device", value_name="jac_per_s")
    df = df.assign(device=df["device"].str.removeprefix("jac_per_s_")).dropna(subset=["jac_per_s"])
    missing = sorted(joined.loc[joined["speed_missing"], "model"]) if "speed_missing" in joined else []
    if df.empty:
        return "no architecture has both a Jacobian error and a throughput measurement of the same configuration"
    devices = sorted(df["device"].unique())
    palette = style.family_palette(df["family"].unique())
    models = models_in_order(df)
    markers = {m: style.MARKERS[i % len(style.MARKERS)] for i, m in enumerate(models)}
    fig, axes = style.new_figure(len(devices), 1, width=4.2, height=3.4)
    for ax, device in zip(axes.flat, devices, strict=True):
        d = df[df["device"] == device]
        sns.scatterplot(d, x="jac_per_s", y="jac", hue="family", palette=palette, style="model", markers=markers,
                        s=70, ax=ax, legend=False)  # fmt: skip
        front = pareto_front(d, "jac_per_s", "jac").sort_values("jac_per_s")
        ax.plot(front["jac_per_s"], front["jac"], color="0.4", linewidth=1, linestyle="--", zorder=0)
        ax.scatter(front["jac_per_s"], front["jac"], s=260, facecolors="none", edgecolors="0.4", linewidths=1)
        ax.margins(0.12)  # room for the rings
        ax.set(xscale="log", yscale="log", xlabel=f"best {style.JAC_PER_S} ({device})", ylabel=style.JAC_ERR)
        ax.set_title(f"{equation} · {device}")
    fam = df.drop_duplicates("model").set_index("model")["family"]
    handles = [Line2D([], [], color=palette[fam[m]], marker=markers[m], linestyle="", label=m) for m in models]
    ring = {"marker": "o", "markersize": 14, "markerfacecolor": "none", "markeredgecolor": "0.4"}
    handles.append(Line2D([], [], color="0.4", linestyle="--", label="Pareto front", **ring))
    style.legend_outside(fig, handles, "architecture")
    if missing:
        fig.text(0.01, -0.02, f"Not shown ({', '.join(missing)}): {MISSING_NOTE.removeprefix('† ')}", fontsize=7,
                 ha="left", va="top", wrap=True)  # fmt: skip
    return fig
