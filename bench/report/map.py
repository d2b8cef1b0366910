"""The map report: which surrogate has the most faithful derivatives for a given data size and dimension, at what cost.

    build_map_report(map_dir) -> map_dir/report.html (+ report.md, figures/*.png)

Reads every run folder under ``map_dir`` (``python -m bench map``: the ``map`` profile and ``map_converged``), one
row per cell (``map_cells``): its set, dimension, size, method (model and training; the converged run's networks
marked "converged"), seed, status and what it cost. Scores are the headline Jacobian error (results.JAC_HEADLINE,
test split). Every aggregate is a geometric mean (errors span decades): over seeds within a set, then over the
sets of a (n_train, n_in) row. A method that failed or ran past its budget on any set of a row is not eligible
there and is named in the row; nothing is dropped silently. Pandas, seaborn, matplotlib: no torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from bench.report import fig_fidelity, fig_training, style
from bench.report.build import _figure, _points_tables
from bench.report.leaderboard import HEADLINE_DEF, HEADLINE_TEXT, headline_links
from bench.report.load import load_run
from bench.report.render import Note, Section, Table, to_html, to_markdown
from bench.report.stats import aggregate, fmt_num
from bench.run import results
from bench.run.results import JAC_HEADLINE

KRIGING = ("krg", "kpls", "gekpls")
CONVERGED = "map_converged"  # the profile whose networks are the converged-budget check
GUIDES = {
    "Which surrogate for my problem": "One row per (training points, input dimension) the map measured: the method "
    "with the lowest Jacobian error (geometric mean over the row's sets and seeds), its training cost, and the "
    "runner-up. Methods that failed or ran past their time budget on a set of the row are not eligible there and "
    "are listed. Only the map's own budget (600 Adam steps per learning rate for networks; kriging's optimizer to "
    "convergence): the converged networks are compared in their own section.",
    "Crossover: where networks overtake kriging": "Per family of sets on the size axis (4 inputs), the best network "
    "recipe's error against the best kriging's at each n_train, and the smallest n_train at which the network is "
    "more accurate. Where every kriging ran past its budget the network wins by default; that is said apart.",
    "Error against training-set size": "The headline Jacobian error against n_train per method on each size-axis "
    "set, mean and 95% CI over seeds, log-log; a line that stops is a method that failed or ran past its budget "
    "from there (the table at the end names them).",
    "Training cost against training-set size": "Wall seconds of the whole fit (every learning-rate candidate of a "
    "network; kriging's likelihood optimization for all outputs), mean over seeds: kriging grows like n^3.",
    "Error against dimension": "The headline Jacobian error against the number of inputs at n_train 256 (4 outputs), "
    "one panel per family of generated sets, mean and 95% CI over seeds.",
    "Error against training seconds": "Every finished cell of the size axis: its Jacobian error against its training "
    "wall seconds; lower left is better. The dashed line is the Pareto front of the methods' (n_train) means: the "
    "cheapest way to each error level.",
    "Converged networks": "The best network recipe (Sobolev efficient-KAN) at 4x the steps plus an L-BFGS polish "
    "(map_converged) beside the same "
    "recipes at the map's 600 steps, and the best kriging at the same n_train: how much of kriging's lead is "
    "training, and how much is the model class.",
    "Sobolev: times fewer points": "How many times fewer training points Sobolev training needs to reach the "
    "Jacobian error value training reaches at its largest n_train, from the size axis (bench.report.fig_training).",
    "Cost per method": "Median over the size axis's sets and seeds of the fit's wall and CPU seconds and of the "
    "prediction cost (values and Jacobians of the test split, seconds per 1000 samples).",
    "Failed and over-budget cells": "Every cell that did not finish: failed with its reason, or over budget (ran "
    "past its method's max_seconds, or ruled out by its smaller sizes' measured cost).",
}


def family_of(equation: str) -> str:
    """A set's family: forum4x4 is its own; gen:<family>:<seed>[:dims] -> <family>."""
    parts = equation.split(":")
    return parts[1] if parts[0] == "gen" and len(parts) > 1 else equation


def method_of(model: str, variant: str, beta: float, profile: str) -> str:
    training = "values + partials" if model == "gekpls" else style.training_label(variant, beta)
    return f"{model} · {training}" + (" · converged" if profile == CONVERGED else "")


def run_folders(map_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """(run folder, its profile) of every run under ``map_dir`` in name order (``latest`` links left out)."""
    return [(cfg.parent, json.loads(cfg.read_text())["run"]["profile"])
            for cfg in sorted(Path(map_dir).glob("*/config.json")) if not cfg.parent.is_symlink()]  # fmt: skip


def map_cells(map_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per cell of every run under ``map_dir``: run, profile, equation, family, n_in, n_train, model,
    method, kind (kriging / network), seed, status, error, jac, fit_wall, fit_cpu, predict_1k, still_improving."""
    frames = []
    for run, profile in run_folders(map_dir):
        try:
            m = load_run(run).metrics
        except FileNotFoundError:  # a run just started: no cell finished yet
            continue
        if m.empty:
            continue
        keys = ["cell_id", "equation", "model", "variant", "beta", "n_train", "seed", "n_in"]
        cells = m.drop_duplicates("cell_id")[keys].set_index("cell_id")
        status = m.groupby("cell_id")["status"].agg(lambda s: next((x for x in s if x != "ok"), "ok"))
        error = m[m["status"] != "ok"].groupby("cell_id")["error"].first()
        ok = m[m["status"] == "ok"]
        df = cells.assign(
            status=status, error=error, jac=_pick(ok, JAC_HEADLINE, "test"), fit_wall=_pick(ok, results.FIT_WALL, ""),
            fit_cpu=_pick(ok, results.FIT_CPU, ""), predict_1k=_pick(ok, results.PREDICT_PER_1K, ""),
            still_improving=_pick(ok, "still_improving", ""),
        ).reset_index()  # fmt: skip
        df["run"], df["profile"] = run.name, profile
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df["error"] = df["error"].fillna("")
    # a cell that did not finish has one row, without the set's dimensions: take them from its set's other cells
    df["n_in"] = df["n_in"].fillna(df.groupby("equation")["n_in"].transform("max")).fillna(df["equation"].map(_dims))
    df["family"] = df["equation"].map(family_of)
    df["kind"] = np.where(df["model"].isin(KRIGING), "kriging", "network")
    df["method"] = [method_of(*r) for r in df[["model", "variant", "beta", "profile"]].itertuples(index=False)]
    return df


def _dims(equation: str) -> float:
    """n_in from a generated set's name (gen:<family>:<seed>:<n_in>x<n_out>; 4 without dims); NaN otherwise."""
    parts = equation.split(":")
    if parts[0] != "gen":
        return 4.0 if equation == "forum4x4" else np.nan
    return float(parts[3].split("x")[0]) if len(parts) > 3 else 4.0


def _pick(ok: pd.DataFrame, metric: str, split: str) -> pd.Series:
    """The cell's one number of ``metric`` on ``split`` (cell_id -> value)."""
    return ok[(ok["metric"] == metric) & (ok["split"] == split)].groupby("cell_id")["value"].first()


def _geo(x: pd.Series) -> float:
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.log(x).mean())) if len(x) else np.nan


def set_scores(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (equation, family, n_in, n_train, method, kind): geometric mean over finished seeds (jac), seeds
    finished / failed / over budget, median fit wall seconds."""
    g = cells.groupby(["equation", "family", "n_in", "n_train", "method", "kind"], sort=True)
    out = g.apply(lambda d: pd.Series({
        "jac": _geo(d.loc[d["status"] == "ok", "jac"]), "ok": int((d["status"] == "ok").sum()),
        "failed": int((d["status"] == "failed").sum()), "over": int((d["status"] == results.OVER_BUDGET).sum()),
        "fit_wall": float(d.loc[d["status"] == "ok", "fit_wall"].median()),
    }), include_groups=False)  # fmt: skip
    return out.reset_index()


def choice_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The "which surrogate" table's data: per (n_train, n_in) of the map run, each eligible method's geometric
    mean error over the row's sets and its median fit seconds, ranked; plus who was not eligible and why."""
    main = cells[cells["profile"] != CONVERGED]
    scores = set_scores(main)
    rows = []
    for (n, n_in), d in scores.groupby(["n_train", "n_in"], sort=True):
        sets = d["equation"].nunique()
        per = d.groupby("method").agg(jac=("jac", _geo), fit_wall=("fit_wall", "median"), kind=("kind", "first"),
                                      sets=("equation", "nunique"), bad=("ok", lambda s: int((s == 0).sum())),
                                      failed=("failed", "sum"), over=("over", "sum"))  # fmt: skip
        eligible = per[(per["bad"] == 0) & (per["sets"] == sets) & (per["failed"] == 0) & (per["over"] == 0)]
        eligible = eligible.sort_values("jac")
        out = [_why_not(m, r, sets) for m, r in per.drop(eligible.index).iterrows()]
        best_k = eligible[eligible["kind"] == "kriging"]["jac"].min()
        best_n = eligible[eligible["kind"] == "network"]["jac"].min()
        rows.append({"n_train": int(n), "n_in": int(n_in), "sets": sets, "ranked": eligible.reset_index(),
                     "not_eligible": out, "network_over_kriging": best_n / best_k})  # fmt: skip
    return pd.DataFrame(rows)


def _why_not(method: str, r: pd.Series, sets: int) -> str:
    parts = [f"over budget on {int(r.over)} cell(s)"] if r.over else []
    parts += [f"failed on {int(r.failed)} cell(s)"] if r.failed else []
    parts += [f"not run on {sets - int(r.sets)} of {sets} set(s)"] if r.sets < sets else []
    return f"{method} ({', '.join(parts) or 'no finished cell'})"


def choice_table(rows: pd.DataFrame) -> Table | Note:
    if rows.empty:
        return Note("Skipped: no finished cells yet.")
    cols = ["n_train", "n_in", "sets", "best method", "its Jacobian error (headline)", "its training s", "runner-up",
            "runner-up error", "runner-up training s", "best network / best kriging", "not eligible"]  # fmt: skip
    body = []
    for r in rows.itertuples():
        rk = r.ranked
        first = rk.iloc[0] if len(rk) else None
        second = rk.iloc[1] if len(rk) > 1 else None
        a = [first["method"], fmt_num(first["jac"]), fmt_num(first["fit_wall"])] if first is not None else ["–"] * 3
        b = [second["method"], fmt_num(second["jac"]), fmt_num(second["fit_wall"])] if second is not None else ["–"] * 3
        body.append([str(r.n_train), str(r.n_in), str(r.sets), *a, *b, fmt_num(r.network_over_kriging),
                     "; ".join(r.not_eligible) or "none"])  # fmt: skip
    caption = (
        f"which surrogate for my problem: the most faithful Jacobians per (n_train, n_in) (the {HEADLINE_DEF}, "
        "geometric mean over the row's sets and seeds; training wall seconds, median; best network / best "
        "kriging > 1: kriging is that many times more accurate than the best network)"
    )
    return Table(cols, body, caption=caption, text=True, links=headline_links(cols))


def crossover(cells: pd.DataFrame) -> pd.DataFrame:
    """Per family of the size axis (sets run at several n_train, map run only) and n_train: the best network and the
    best kriging (lowest geometric-mean error among methods that finished every seed), their errors, and whether
    every kriging method was over budget there."""
    main = cells[cells["profile"] != CONVERGED]
    sized = main.groupby("equation")["n_train"].transform("nunique") > 1
    scores = set_scores(main[sized])
    rows = []
    for (family, n), d in scores.groupby(["family", "n_train"], sort=True):
        full = d[(d["failed"] == 0) & (d["over"] == 0) & (d["ok"] > 0)]
        per = full.groupby(["method", "kind"]).agg(jac=("jac", _geo), fit_wall=("fit_wall", "median")).reset_index()
        net, krg = per[per["kind"] == "network"], per[per["kind"] == "kriging"]
        best_net = net.loc[net["jac"].idxmin()] if len(net) else None
        best_krg = krg.loc[krg["jac"].idxmin()] if len(krg) else None
        k_rows = d[d["kind"] == "kriging"]
        over = bool(len(k_rows)) and bool((k_rows["ok"] == 0).all() and (k_rows["over"] > 0).any())
        rows.append({"family": family, "n_train": int(n), **_best("network", best_net), **_best("kriging", best_krg),
                     "kriging_over_budget": over})  # fmt: skip
    return pd.DataFrame(rows)


def _best(kind: str, row: pd.Series | None) -> dict:
    return {kind: row["method"] if row is not None else "", f"{kind}_jac": row["jac"] if row is not None else np.nan,
            f"{kind}_s": row["fit_wall"] if row is not None else np.nan}  # fmt: skip


def crossover_summary(cx: pd.DataFrame) -> pd.DataFrame:
    """Per family: the smallest n_train from which the best network's error stays below the best kriging's at every
    larger n_train where both finished (sizes where it was ahead before that are named), else "none up to N"; and
    from which n_train every kriging was over budget."""
    out = []
    for family, d in cx.groupby("family", sort=True):
        both = d[np.isfinite(d["network_jac"]) & np.isfinite(d["kriging_jac"])].sort_values("n_train")
        ahead = (both["network_jac"] < both["kriging_jac"]).to_numpy()
        over = d[d["kriging_over_budget"]]
        if not len(both):
            answer = "not measured"
        elif not ahead[-1]:
            answer = f"none up to n_train {int(both['n_train'].max())}"
        else:  # the smallest size from which the network stays ahead at every larger size measured
            start = len(ahead) - int(np.argmin(ahead[::-1])) if not ahead.all() else 0
            answer = f"n_train {int(both['n_train'].iloc[start])} on"
        early = both[ahead]["n_train"]
        early = early[early < (both["n_train"].iloc[start] if len(both) and ahead[-1] else np.inf)]
        if len(early):
            answer += f" (also ahead at n_train {', '.join(str(int(n)) for n in early)})"
        out.append({"family": family, "crossover": answer,
                    "kriging_over_budget_from": int(over["n_train"].min()) if len(over) else None})  # fmt: skip
    return pd.DataFrame(out)


def crossover_table(cx: pd.DataFrame) -> list:
    if cx.empty:
        return [Note("Skipped: no set ran at several sizes yet.")]
    summary = crossover_summary(cx)
    lines = []
    for r in summary.itertuples():
        text = f"{r.family}: the best network beats the best kriging: {r.crossover}"
        if pd.notna(r.kriging_over_budget_from):
            n_over = int(r.kriging_over_budget_from)
            best = cx[(cx["family"] == r.family) & (cx["n_train"] == n_over)]
            text += (f"; every kriging ran past its budget from n_train {n_over}, where the best "
                     f"network reaches {fmt_num(float(best['network_jac'].iloc[0]))}")  # fmt: skip
        lines.append(text)
    cols = ["family", "n_train", "best network", "its error (headline)", "its training s", "best kriging",
            "its error (headline)", "its training s", "network / kriging"]  # fmt: skip
    body = [[r.family, str(r.n_train), r.network or "–", fmt_num(r.network_jac), fmt_num(r.network_s),
             (r.kriging or "–") + (" (all over budget)" if r.kriging_over_budget else ""), fmt_num(r.kriging_jac),
             fmt_num(r.kriging_s), fmt_num(r.network_jac / r.kriging_jac)] for r in cx.itertuples()]  # fmt: skip
    caption = ("the best of each kind per family and n_train (headline Jacobian error, geometric mean over the "
               "family's sets and seeds; training wall seconds, median over its sets; network / kriging < 1: the "
               "network is more accurate)")  # fmt: skip
    return [Note(". ".join(lines) + "."), Table(cols, body, caption=caption, links=headline_links(cols))]


def _method_palette(methods) -> dict[str, str]:
    ordered = sorted(set(methods), key=lambda m: (m.split(" · ")[0] not in KRIGING, m))
    colors = sns.color_palette("tab10", 10).as_hex() + sns.color_palette("dark", 10).as_hex()
    return {m: colors[i % len(colors)] for i, m in enumerate(ordered)}


def _lines(df: pd.DataFrame, x: str, y: str, panel: str, xlabel: str, ylabel: str, titles=None):
    """One panel per ``panel`` value, a line per method: mean and 95% CI over the rows at each x (log-log)."""
    panels = sorted(df[panel].unique(), key=str)
    if not panels:
        return "no finished cells to draw"
    pal = _method_palette(df["method"])
    ncols, nrows = style.grid_shape(len(panels), 4)
    fig, axes = style.new_figure(ncols, nrows, margin=3.2)
    for ax, p in zip(axes.flat, panels, strict=False):
        d = df[df[panel] == p]
        agg = aggregate(d.rename(columns={y: "value"})[["method", x, "value"]], ["method", x])
        for method, g in agg.groupby("method", sort=True):
            g = g.sort_values(x)
            ax.plot(g[x], g["mean"], marker="o", ms=4, color=pal[method],
                    dashes=(4, 1.5) if "converged" in method else (None, None))  # fmt: skip
            lo = np.maximum(g["mean"] - g["ci"].fillna(0), g["mean"] / 10)
            ax.fill_between(g[x], lo, g["mean"] + g["ci"].fillna(0), color=pal[method], alpha=0.15, linewidth=0)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=(titles or {}).get(p, str(p)))
        style.log_ticks_at(ax, sorted(d[x].unique()))
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", label=m) for m, c in pal.items()]
    style.legend_outside(fig, handles, "method")
    return fig


def _sized(cells: pd.DataFrame) -> pd.DataFrame:
    ok = cells[cells["status"] == "ok"]
    return ok[ok.groupby("equation")["n_train"].transform("nunique") > 1]


def error_vs_n(cells: pd.DataFrame):
    return _lines(_sized(cells), "n_train", "jac", "equation", style.N_TRAIN, style.JAC_ERR)


def cost_vs_n(cells: pd.DataFrame):
    return _lines(_sized(cells), "n_train", "fit_wall", "equation", style.N_TRAIN, "training wall seconds")


def error_vs_dim(cells: pd.DataFrame):
    ok = cells[(cells["status"] == "ok") & (cells["profile"] != CONVERGED) & cells["equation"].str.startswith("gen:")]
    base = ok.groupby("equation")["n_train"].transform("min")
    first = ok[ok["n_train"] == 256] if (ok["n_train"] == 256).any() else ok[ok["n_train"] == base]
    if first["n_in"].nunique() < 2:
        return "fewer than two input dimensions at one n_train"
    return _lines(first, "n_in", "jac", "family", "inputs (n_in)", style.JAC_ERR)


def pareto(cells: pd.DataFrame):
    ok = _sized(cells)
    if ok.empty:
        return "no finished cells of the size axis"
    pal = _method_palette(ok["method"])
    panels = sorted(ok["equation"].unique())
    ncols, nrows = style.grid_shape(len(panels), 4)
    fig, axes = style.new_figure(ncols, nrows, margin=3.2)
    for ax, eq in zip(axes.flat, panels, strict=False):
        d = ok[ok["equation"] == eq]
        for method, g in d.groupby("method"):
            ax.scatter(g["fit_wall"], g["jac"], s=14, color=pal[method], alpha=0.8)
        means = d.groupby(["method", "n_train"])[["fit_wall", "jac"]].mean().sort_values("fit_wall")
        front = means[means["jac"] <= means["jac"].cummin()]
        ax.plot(front["fit_wall"], front["jac"], color="0.3", dashes=(3, 2), lw=1)
        ax.set(xscale="log", yscale="log", xlabel="training wall seconds", ylabel=style.JAC_ERR, title=eq)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=m) for m, c in pal.items()]
    style.legend_outside(fig, handles, "method")
    return fig


def converged_table(cells: pd.DataFrame) -> Table | Note:
    conv = cells[cells["profile"] == CONVERGED]
    if conv.empty:
        return Note("Skipped: the map_converged run has no cells yet (`python -m bench map` runs it after the map).")
    scores = set_scores(cells[cells["n_train"].isin(conv["n_train"].unique())])
    body = []
    for (eq, n), d in scores.groupby(["equation", "n_train"], sort=True):
        krg = d[(d["kind"] == "kriging") & (d["ok"] > 0) & (d["failed"] == 0) & (d["over"] == 0)]
        best_k = krg.loc[krg["jac"].idxmin()] if len(krg) else None
        for method in sorted(d.loc[d["method"].str.endswith("converged"), "method"]):
            short = d[d["method"] == method.removesuffix(" · converged")]
            c = d[d["method"] == method].iloc[0]
            s = short["jac"].iloc[0] if len(short) else np.nan
            s_time = short["fit_wall"].iloc[0] if len(short) else np.nan
            flags = cells[(cells["equation"] == eq) & (cells["n_train"] == n) & (cells["method"] == method)]
            improving = int((flags["still_improving"] == 1).sum())
            krg_text = (f"{best_k['method']}: {fmt_num(best_k['jac'])} ({fmt_num(best_k['fit_wall'])} s)"
                        if best_k is not None else "–")  # fmt: skip
            body.append([eq, str(n), method.removesuffix(" · converged"), fmt_num(s), fmt_num(s_time),
                         fmt_num(c["jac"]), fmt_num(c["fit_wall"]), fmt_num(s / c["jac"]),
                         f"{improving} of {len(flags)}", krg_text,
                         fmt_num(c["jac"] / best_k["jac"]) if best_k is not None else "–"])  # fmt: skip
    cols = ["equation", "n_train", "recipe", "600 steps: error (headline)", "600 steps: training s",
            "converged: error (headline)", "converged: training s", "gain", "still improving",
            "best kriging: error (training s)", "converged / kriging"]  # fmt: skip
    return Table(cols, body, caption="the Sobolev networks at the map's budget and at a converged one (2400 Adam "
                 "steps + 200 L-BFGS; geometric mean over seeds); gain > 1: the longer training helped; the last "
                 "column > 1: kriging still more accurate", text=True, links=headline_links(cols))  # fmt: skip


def cost_table(cells: pd.DataFrame) -> Table | Note:
    ok = _sized(cells)
    if ok.empty:
        return Note("Skipped: no finished cells of the size axis.")
    g = ok.groupby(["method", "n_train"])[["fit_wall", "fit_cpu", "predict_1k"]].median().reset_index()
    body = [[r.method, str(int(r.n_train)), fmt_num(r.fit_wall), fmt_num(r.fit_cpu), fmt_num(r.predict_1k)]
            for r in g.itertuples()]  # fmt: skip
    cols = ["method", "n_train", "fit wall s", "fit CPU s", "predict s / 1000 Jacobians"]
    return Table(cols, body, caption="cost per method and size (median over the size axis's sets and seeds; one "
                 "thread per cell, two cells at a time on the 2-core machine)", text=True)  # fmt: skip


def not_finished_table(cells: pd.DataFrame) -> Table | Note:
    bad = cells[cells["status"] != "ok"]
    if bad.empty:
        return Note("Every cell finished.")
    cols = ["run", "equation", "n_train", "method", "seed", "status", "reason"]
    body = [[r.run, r.equation, str(int(r.n_train)), r.method, str(int(r.seed)), r.status, r.error[:300]]
            for r in bad.sort_values(["status", "equation", "n_train"]).itertuples()]  # fmt: skip
    return Table(cols, body, caption=f"{len(bad)} cell(s) did not finish", text=True)


def _sobolev_points(map_dir: Path) -> Table | Note:
    mains = [run for run, profile in run_folders(map_dir) if profile != CONVERGED]
    if not mains:
        return Note("Skipped: no map run.")
    ratio = fig_training.points_ratio(fig_fidelity.cell_errors(load_run(mains[-1])))
    return _points_tables(ratio) if not ratio.empty else Note("Skipped: no recipe ran value and Sobolev at 2+ sizes.")


def sections(map_dir: Path, cells: pd.DataFrame) -> list[Section]:
    S = lambda title: Section(title, GUIDES[title])  # noqa: E731
    out = [S("Which surrogate for my problem").add(choice_table(choice_rows(cells)))]
    s = S("Crossover: where networks overtake kriging")
    for block in crossover_table(crossover(cells)):
        s.add(block)
    out.append(s)
    out.append(_figure(S("Error against training-set size"), "map_error_vs_n", lambda: error_vs_n(cells),
                       "Jacobian error against n_train per method"))  # fmt: skip
    out.append(_figure(S("Training cost against training-set size"), "map_cost_vs_n", lambda: cost_vs_n(cells),
                       "training seconds against n_train per method"))  # fmt: skip
    out.append(_figure(S("Error against dimension"), "map_error_vs_dim", lambda: error_vs_dim(cells),
                       "Jacobian error against n_in per method"))  # fmt: skip
    out.append(_figure(S("Error against training seconds"), "map_pareto", lambda: pareto(cells),
                       "Jacobian error against training seconds, Pareto front"))  # fmt: skip
    out.append(S("Converged networks").add(converged_table(cells)))
    out.append(S("Sobolev: times fewer points").add(_sobolev_points(map_dir)))
    out.append(S("Cost per method").add(cost_table(cells)))
    out.append(S("Failed and over-budget cells").add(not_finished_table(cells)))
    return out


def build_map_report(map_dir: str | os.PathLike) -> Path:
    """Write report.html, report.md and figures/*.png of the map into ``map_dir``; returns report.html's path."""
    map_dir = Path(map_dir)
    cells = map_cells(map_dir)
    if cells.empty:
        raise FileNotFoundError(f"{map_dir}: no run folders with cells (run `python -m bench map --out {map_dir}`)")
    for old in (map_dir / "figures").glob("*.png"):
        old.unlink()
    runs = ", ".join(f"{r} ({p})" for r, p in cells[["run", "profile"]].drop_duplicates().itertuples(index=False))
    counts = cells["status"].value_counts()
    sets = ", ".join(sorted(cells["equation"].unique()))
    intro = (
        f"The map: {len(cells)} cells from {runs}: {counts.get('ok', 0)} finished, {counts.get('failed', 0)} failed, "
        f"{counts.get(results.OVER_BUDGET, 0)} over their time budget. Sets: {sets}. "
        "Scores are the headline Jacobian error on the test split (defined below; 0 exact, 1 as wrong as zero "
        "derivatives). Kriging is SMT's (bench.peers.smt), trained by its own code."
    )  # fmt: skip
    secs = sections(map_dir, cells)
    title = "jacbench map: which surrogate for which data size and dimension"
    (map_dir / "report.md").write_text(to_markdown(title, intro, secs, map_dir, HEADLINE_TEXT), encoding="utf-8")
    (map_dir / "report.html").write_text(to_html(title, intro, secs, HEADLINE_TEXT), encoding="utf-8")
    return map_dir / "report.html"
