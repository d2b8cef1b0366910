"""The leaderboard: per equation set, one row per (architecture, training), mean ± 95% CI over seeds.

Columns: params, FLOPs per forward, fit R² (min over outputs), the headline Jacobian error (``JAC_HEADLINE``: RMS
over test points of bench.fidelity.headline's per-point error) with its median / p90 / max beside it, the Hessian's
likewise, the training seconds, and the best torch engine's Jacobians/s on each device in
throughput.csv. Rows use the largest n_train each configuration has. ``family_summary`` condenses the sets of each
family (``style.set_family``) into one row per method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.load import RunData, largest_n_train, speed_key
from bench.report.ranking import method_label
from bench.report.render import HEADLINE_ANCHOR, Note, Table
from bench.report.stats import CONFIG_KEYS, aggregate, fmt_ci, fmt_key, fmt_num
from bench.report.style import family_sort_key, set_family, training_label
from bench.run.results import (
    CONVERGENCE_DROP,
    CONVERGENCE_WINDOW,
    HESS_HEADLINE,
    HESS_TAIL,
    JAC_HEADLINE,
    JAC_TAIL,
)

# The headline's definition in a table header (bench.fidelity.headline; HEADLINE_TEXT, which the header links to,
# says it in full at the top of the report).
HEADLINE_DEF = "headline: range-scaled, ÷ each output's typical gradient, RMS over points; 1 = as bad as zero"
JAC_TITLE = f"Jacobian error ({HEADLINE_DEF})"
HESS_TITLE = f"Hessian error ({HEADLINE_DEF})"
HEADLINE_TEXT = (
    "The headline derivative error: each output's Jacobian (Hessian) is scaled by the widths of the input box "
    "(J_ij x range_j), its error at a point divided by that output's typical range-scaled gradient over the test "
    "split, the outputs' squares averaged at each point, and the RMS taken over points. Units cancel, every output "
    "weighs the same, nothing is floored: 0 is exact, 1 (100%) is as wrong as predicting zero derivatives or twice "
    "the true ones."
)
TRAIN_S = "training s (all lr candidates)"  # wall seconds of a cell's recipe: every learning rate it tried


def headline_links(columns: list[str]) -> dict[int, str]:
    """Columns that show a headline error (their title says "(headline") -> the definition's anchor."""
    return {j: HEADLINE_ANCHOR for j, c in enumerate(columns) if "(headline" in c}


SCORES = {  # metric (test split) -> (column title, whether larger is better)
    "r2_min": ("fit R² (min)", True),
    JAC_HEADLINE: (JAC_TITLE, False),
    HESS_HEADLINE: (HESS_TITLE, False),
}
OPTIONAL_SCORES = (HESS_HEADLINE,)  # shown only where the run measured them
# The tail beside each headline: median / p90 / max over the test points, means over seeds, one column.
TAILS = {JAC_HEADLINE: ("Jacobian err. median / p90 / max", JAC_TAIL),
         HESS_HEADLINE: ("Hessian err. median / p90 / max", HESS_TAIL)}  # fmt: skip
STILL_IMPROVING_NOTE = (
    f"STILL IMPROVING: in that many seeds the best validation loss still fell by more than {CONVERGENCE_DROP:.0%} "
    f"over the last {CONVERGENCE_WINDOW:.0%} of the steps; the row compares a model that had not finished "
    "learning, and a longer budget may change it"
)
# A tuned learning rate chosen at one end of its grid this often: the grid may be too narrow. A two-point grid
# always has one end above half, so it is flagged only when the choice is this lopsided.
EDGE_SHARE = {2: 0.8, 3: 0.5}  # candidates in the grid (3: three or more) -> share of cells
NOT_MEASURED = "not measured†"
MISSING_NOTE = (
    "† no throughput row of this exact configuration (model, dimensions, overrides, parameter count); "
    "another configuration's speed is never shown in its place. `python -m bench throughput --from-run RUN_DIR` "
    "measures the configurations a run trained"
)
PEER_PREFIX = "jax"  # engines that are a peer implementation, not a way to run the torch model
FORWARD = "forward"  # pseudo-engine of throughput.csv: the forward pass alone (samples/s), a yardstick


def training_order(df: pd.DataFrame) -> pd.Series:
    """Sort key: value training first, then Sobolev from large to small beta."""
    return np.where(df["variant"] == "value", np.inf, df["beta"].astype(float))


def best_throughput(throughput: pd.DataFrame | None, peers: bool = False, dtype: str | None = None) -> pd.DataFrame:
    """Fastest torch engine (or, with ``peers``, fastest JAX peer) per (configuration, device), over batch sizes
    and dtypes.

    Columns: config (``model_config``, or the model name in tables that recorded none), model_config, model,
    family, params, device, jac_per_s, engine, dtype, batch_size, flops_per_jac, peak_flops.
    """
    cols = ["config", "model_config", "model", "family", "params", "device", "jac_per_s", "engine", "dtype"]
    cols += ["batch_size", "flops_per_jac", "peak_flops"]
    if throughput is None:
        return pd.DataFrame(columns=cols)
    t = throughput[(throughput["status"] == "ok") & np.isfinite(throughput["jac_per_s"])]
    t = t[(t["engine"].str.startswith(PEER_PREFIX) == peers) & (t["engine"] != FORWARD)]
    if dtype:
        t = t[t["dtype"] == dtype]
    if t.empty:
        return pd.DataFrame(columns=cols)
    t = t.assign(config=speed_key(t))
    return t.loc[t.groupby(["config", "device"])["jac_per_s"].idxmax(), cols].reset_index(drop=True)


def training_seconds(run: RunData) -> pd.DataFrame:
    """Mean over seeds of what a cell's recipe cost to train: every learning-rate candidate (tune_seconds) where
    the cell chose among several, else its one training (train_seconds); CONFIG_KEYS + mean, ci, n."""
    ok = run.ok[run.ok["metric"].isin(["train_seconds", "tune_seconds"])]
    if ok.empty:
        return pd.DataFrame(columns=[*CONFIG_KEYS, "mean", "std", "n", "ci"])
    per = ok.pivot_table(index=["cell_id", *CONFIG_KEYS], columns="metric", values="value", aggfunc="first")
    total = per["tune_seconds"].fillna(per["train_seconds"]) if "tune_seconds" in per else per["train_seconds"]
    df = total.rename("value").reset_index()
    return aggregate(largest_n_train(df, ["equation", "model", "variant", "beta"]), CONFIG_KEYS)


def still_improving(run: RunData) -> pd.DataFrame:
    """Per configuration (CONFIG_KEYS): ``improving`` seeds whose loss still fell by more than the threshold over
    the last tenth of the budget (metric still_improving), out of ``judged`` seeds that could be judged."""
    m = run.ok[(run.ok["metric"] == "still_improving") & np.isfinite(run.ok["value"])]
    cols = [*CONFIG_KEYS, "improving", "judged"]
    if m.empty:
        return pd.DataFrame(columns=cols)
    g = m.groupby(CONFIG_KEYS, dropna=False)["value"]
    return pd.concat({"improving": g.sum(), "judged": g.count()}, axis=1).reset_index()[cols]


def chosen_lr(run: RunData) -> pd.DataFrame:
    """Per configuration (CONFIG_KEYS): ``lr_chosen``, the initial learning rates the cells trained with, as
    "value ×seeds" (the choice on the validation split under train.lr_grid, else the one configured)."""
    m = run.ok[(run.ok["metric"] == "lr") & np.isfinite(run.ok["value"])]
    if m.empty:
        return pd.DataFrame(columns=[*CONFIG_KEYS, "lr_chosen"])
    g = m.groupby(CONFIG_KEYS, dropna=False)["value"]
    text = g.agg(lambda v: ", ".join(f"{lr:g} ×{n}" for lr, n in sorted(v.value_counts().items())))
    return text.rename("lr_chosen").reset_index()


def chosen_lr_table(run: RunData) -> Table | Note:
    """How often each candidate learning rate was chosen, per (architecture, training), over all cells."""
    ok = run.ok
    lr = ok[(ok["metric"] == "lr") & np.isfinite(ok["value"])]
    trials = ok[ok["metric"] == "lr_trial_val_loss"]
    if lr.empty:
        return Note("Learning rates: this run predates their record.")
    if trials.empty:
        fixed = ", ".join(f"{v:g}" for v in sorted(lr["value"].unique()))
        return Note(f"Learning rates: fixed, none chosen (train.lr = {fixed}; set train.lr_grid to choose one per "
                    "cell on the validation split).")  # fmt: skip
    grid = sorted(trials["bin"].dropna().unique())
    rows, edges = [], {"largest": [], "smallest": []}
    for (model, variant, beta), d in lr.groupby(["model", "variant", "beta"], sort=True):
        share = {c: float(np.isclose(d["value"], c, rtol=1e-12, atol=0).mean()) for c in grid}
        rows.append([model, training_label(variant, beta), str(len(d))] + [f"{share[c]:.0%}" for c in grid])
        limit = EDGE_SHARE[min(len(grid), 3)] if len(grid) > 1 else np.inf
        for edge, c in (("largest", grid[-1]), ("smallest", grid[0])):
            if share[c] >= limit:
                edges[edge].append(f"{model} · {training_label(variant, beta)} ({share[c]:.0%})")
    cols = ["architecture", "training", "cells", *[f"lr {c:g}" for c in grid]]
    caption = ("initial learning rate chosen per cell on its validation split (lowest best validation loss among "
               "train.lr_grid, same initialization and budget): share of cells")  # fmt: skip
    for edge, who in edges.items():
        if who:
            caption += (f". AT THE GRID'S EDGE: {', '.join(who)} chose the {edge} candidate in at least "
                        f"{limit:.0%} of cells, so the best learning rate may lie "
                        f"{'above' if edge == 'largest' else 'below'} the grid: widen train.lr_grid")  # fmt: skip
    return Table(cols, rows, caption=caption)


def run_dtype(run: RunData) -> str | None:
    """The dtype the run trained and evaluated in (config.json), None where unknown."""
    return (run.config.get("run") or {}).get("dtype") if isinstance(run.config, dict) else None


def attach_throughput(df: pd.DataFrame, throughput: pd.DataFrame | None, dtype: str | None = None) -> pd.DataFrame:
    """Add ``jac_per_s_<device>`` / ``engine_<device>`` to fidelity rows (with model_config and params) from the
    throughput rows of exactly that configuration: same model_config and parameter count. A row without a
    matching measurement gets NaN, never another configuration's number (``speed_missing`` marks it). With
    ``dtype`` (the run's), only rows timed in that dtype count."""
    best = best_throughput(throughput, dtype=dtype)
    best = best[best["model_config"] != ""]  # older tables: what was measured is unknown, so nothing matches
    out = df.copy()
    for device in sorted(best["device"].unique()):
        b = best[best["device"] == device][["model_config", "params", "jac_per_s", "engine"]]
        b = b.rename(columns={"jac_per_s": f"jac_per_s_{device}", "engine": f"engine_{device}"})
        out = out.merge(b, on=["model_config", "params"], how="left")
    speed = [c for c in out.columns if c.startswith("jac_per_s_")]
    out["speed_missing"] = out[speed].isna().any(axis=1) if speed else throughput is not None
    return out


def leaderboard(run: RunData) -> pd.DataFrame:
    """Numbers behind the leaderboard: one row per (equation, model, variant, beta) at its largest n_train.

    For each score: ``<metric>_mean``, ``_ci`` (95% half-width, NaN with one seed) and ``_n`` (seeds);
    ``jac_per_s_<device>`` and ``engine_<device>`` for each device in throughput.csv.
    """
    ok = run.ok
    ok = ok[(ok["split"] == "test") & ok["metric"].isin([*SCORES, *JAC_TAIL, *HESS_TAIL])]
    if ok.empty:
        return pd.DataFrame()
    ok = largest_n_train(ok, ["equation", "model", "variant", "beta"])
    agg = aggregate(ok, [*CONFIG_KEYS, "metric"])
    wide = agg.set_index([*CONFIG_KEYS, "metric"])[["mean", "ci", "n"]].unstack("metric")
    wide.columns = [f"{metric}_{stat}" for stat, metric in wide.columns]
    wide = wide.reset_index()
    cost = ok.groupby(["equation", "model"], dropna=False)[["params", "flops", "model_config"]].first().reset_index()
    wide = attach_throughput(wide.merge(cost, on=["equation", "model"], how="left"), run.throughput, run_dtype(run))
    wide = wide.merge(still_improving(run), on=[*CONFIG_KEYS], how="left")
    wide = wide.merge(chosen_lr(run), on=[*CONFIG_KEYS], how="left")
    secs = training_seconds(run)[[*CONFIG_KEYS, "mean", "ci", "n"]]
    secs = secs.rename(columns={"mean": "train_s_mean", "ci": "train_s_ci", "n": "train_s_n"})
    wide = wide.merge(secs, on=[*CONFIG_KEYS], how="left")
    wide["training"] = [training_label(v, b) for v, b in zip(wide["variant"], wide["beta"], strict=True)]
    wide["_order"] = training_order(wide)
    jac = wide.get(f"{JAC_HEADLINE}_mean", pd.Series(np.nan, index=wide.index))
    wide = wide.assign(_jac=jac).sort_values(["equation", "_order", "_jac"], ascending=[True, False, True])
    return wide.drop(columns=["_order", "_jac"]).reset_index(drop=True)


def _best_rows(values: pd.Series, larger: bool) -> set[int]:
    """Positions holding the best finite value (all of them on a tie)."""
    v = values.to_numpy(dtype=float)
    if not np.isfinite(v).any():
        return set()
    best = np.nanmax(v) if larger else np.nanmin(v)
    return {i for i, x in enumerate(v) if np.isfinite(x) and x == best}


def leaderboard_table(board: pd.DataFrame, equation: str) -> Table:
    """The rendered leaderboard of one equation set; the best value of each score column is marked."""
    df = board[board["equation"] == equation].reset_index(drop=True)
    measured = {m for m in SCORES if f"{m}_mean" in df and df[f"{m}_mean"].notna().any()}
    scores = {m: v for m, v in SCORES.items() if m not in OPTIONAL_SCORES or m in measured}
    devices = sorted(c.removeprefix("jac_per_s_") for c in df.columns if c.startswith("jac_per_s_"))
    columns = ["architecture", "family", "training"]
    show_n = df["n_train"].nunique(dropna=False) > 1
    columns += ["n_train"] if show_n else []
    columns += ["params", "FLOPs / forward", "seeds"]
    for m, (title, _) in scores.items():
        columns += [title] + ([TAILS[m][0]] if m in TAILS else [])
    columns += [TRAIN_S]
    columns += [f"best Jacobians/s ({d})" for d in devices]
    judged = "judged" in df and df["judged"].notna().any()
    columns += ["converged"] if judged else []
    show_lr = "lr_chosen" in df and df["lr_chosen"].notna().any()
    columns += ["lr (×seeds)"] if show_lr else []
    rows = []
    for _, r in df.iterrows():
        row = [r["model"], r["family"], r["training"]]
        row += [fmt_key(r["n_train"])] if show_n else []
        counts = [float(r.get(f"{m}_n", 0) or 0) for m in scores]  # a set without derivatives has R² seeds only
        seeds = int(max((c for c in counts if np.isfinite(c)), default=0))
        row += [fmt_key(r["params"]), fmt_key(r["flops"]), str(seeds)]
        for m in scores:
            row.append(fmt_ci(r.get(f"{m}_mean", np.nan), r.get(f"{m}_ci", np.nan), int(r.get(f"{m}_n", 0) or 0)))
            if m in TAILS:
                row.append(" / ".join(fmt_num(r.get(f"{t}_mean", np.nan)) for t in TAILS[m][1]))
        row.append(fmt_num(r.get("train_s_mean", np.nan)))
        for d in devices:
            row.append(fmt_num(r[f"jac_per_s_{d}"]) if np.isfinite(r[f"jac_per_s_{d}"]) else NOT_MEASURED)
        if judged:
            k, n = r.get("improving", np.nan), r.get("judged", np.nan)
            row.append("–" if not np.isfinite(n) else (f"STILL IMPROVING ({int(k)}/{int(n)} seeds)" if k else "yes"))
        if show_lr:
            row.append(r["lr_chosen"] if isinstance(r["lr_chosen"], str) else "–")
        rows.append(row)
    bold = set()
    for metric, (title, larger) in scores.items():
        if f"{metric}_mean" in df:
            bold |= {(i, columns.index(title)) for i in _best_rows(df[f"{metric}_mean"], larger)}
    for d in devices:
        bold |= {(i, columns.index(f"best Jacobians/s ({d})")) for i in _best_rows(df[f"jac_per_s_{d}"], True)}
    n_train = sorted(df["n_train"].dropna().unique())
    caption = f"{equation}: test split, n_train = {', '.join(fmt_key(n) for n in n_train)}"
    if "speed_missing" in df and df["speed_missing"].any():
        caption += f". {NOT_MEASURED}: {MISSING_NOTE}"
    if judged and (df["improving"].fillna(0) > 0).any():
        caption += f". {STILL_IMPROVING_NOTE}"
    return Table(columns, rows, bold, caption, links=headline_links(columns))


def _geo(x: pd.Series) -> float:
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.log(x).mean())) if len(x) else np.nan


def _scored(board: pd.DataFrame) -> pd.DataFrame:
    """Leaderboard rows with a finite headline error, with their set family and method label."""
    jac = f"{JAC_HEADLINE}_mean"
    if board.empty or jac not in board:
        return pd.DataFrame(columns=[*board.columns, "set_family", "method"])
    b = board[np.isfinite(board[jac])]
    labels = [method_label(*k) for k in zip(b["model"], b["variant"], b["beta"], strict=True)]
    return b.assign(set_family=b["equation"].map(set_family), method=labels)


def family_scores(board: pd.DataFrame) -> pd.DataFrame:
    """Per (set family, method): sets with a finite headline error (``sets``) out of the family's scored sets
    (``of``), the geometric mean of the per-set mean errors (``jac``) and the median of the per-set mean training
    seconds (``train_s``) over those sets."""
    cols = ["family", "method", "sets", "of", "jac", "train_s"]
    b = _scored(board)
    if b.empty:
        return pd.DataFrame(columns=cols)
    of = b.groupby("set_family")["equation"].nunique()
    g = b.groupby(["set_family", "method"], sort=True)
    out = pd.DataFrame({"sets": g["equation"].nunique(), "jac": g[f"{JAC_HEADLINE}_mean"].agg(_geo),
                        "train_s": g["train_s_mean"].median()}).reset_index()  # fmt: skip
    out = out.rename(columns={"set_family": "family"})
    return out.assign(of=out["family"].map(of).astype(int))[cols]


def family_summary(board: pd.DataFrame) -> Table | Note:
    """One row per method, per set family two columns: the geometric mean headline error over the family's sets
    (with "k/N sets" where the method ran on some of them) and the median training seconds. The best error of
    each family among the methods that ran on all its sets is marked. Methods that ran everywhere come first, by
    their geometric mean error over all sets."""
    fs, b = family_scores(board), _scored(board)
    if fs.empty:
        return Note("Summary by set family: no set has headline Jacobian errors.")
    families = sorted(fs["family"].unique(), key=family_sort_key)
    of = fs.groupby("family")["of"].first()
    total = b["equation"].nunique()
    overall = b.groupby("method").agg(sets=("equation", "nunique"), jac=(f"{JAC_HEADLINE}_mean", _geo))
    order = list(overall.assign(partial=overall["sets"] < total).sort_values(["partial", "jac"]).index)
    columns = ["method (architecture · training)", "sets"]
    for fam in families:
        n = of[fam]
        columns += [f"{fam} ({n} set{'s' if n > 1 else ''}): Jacobian error (headline)", f"{fam}: training s"]
    cells = fs.set_index(["family", "method"])
    rows = []
    for method in order:
        row = [method, f"{int(overall.at[method, 'sets'])} of {total}"]
        for fam in families:
            if (fam, method) not in cells.index:
                row += ["–", "–"]
                continue
            c = cells.loc[(fam, method)]
            part = f" ({int(c['sets'])}/{int(c['of'])} sets)" if c["sets"] < c["of"] else ""
            row += [fmt_num(c["jac"]) + part, fmt_num(c["train_s"])]
        rows.append(row)
    bold = set()
    for k, fam in enumerate(families):
        full = fs[(fs["family"] == fam) & (fs["sets"] == fs["of"])]
        best = set(full.loc[full["jac"] == full["jac"].min(), "method"]) if len(full) else set()
        bold |= {(i, 2 + 2 * k) for i, m in enumerate(order) if m in best}
    caption = (f"each method over the sets of each family. Jacobian error: the {HEADLINE_DEF} (test split, largest "
               "n_train), the mean over seeds on each set, then the geometric mean over the family's sets, since "
               "errors span decades; bold: the lowest among the methods that ran on every set of the family; k/N "
               "sets: ran on k of its N. Training s: wall seconds of all learning-rate candidates, mean over seeds, "
               "median over the family's sets")  # fmt: skip
    return Table(columns, rows, bold, caption, links=headline_links(columns))
