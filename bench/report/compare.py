"""Compare two runs: which metrics moved by more than their seed-to-seed spread.

Both runs' finished cells are aggregated over seeds per key (equation, model, variant, beta, n_train, split,
metric, output, input, bin) and joined. A metric is **flagged** when

    |mean_B - mean_A| > K * pooled_std,   pooled_std = sqrt(((n_A - 1) s_A² + (n_B - 1) s_B²) / (n_A + n_B - 2))

with K = 2 by default (``--k``), i.e. the shift is larger than twice the typical seed-to-seed scatter. Where
no spread can be estimated (one seed on both sides) a relative change above ``rtol`` (default 5%) is
flagged instead, and the row says so (``rule = "rtol (n=1)"``). Cells failed in one run and finished in the
other are listed separately.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.load import RunData, load_run
from bench.report.render import Table, table_md
from bench.report.stats import CONFIG_KEYS, ENTRY_KEYS, aggregate, fmt_key, fmt_num

KEYS = [k for k in CONFIG_KEYS if k != "family"] + ENTRY_KEYS
HIGHER_IS_BETTER = {"r2", "r2_min", "jac_sign_agree"}
NEUTRAL = {"train_steps"}  # a change, but neither better nor worse


def direction(metric: str, delta: float) -> str:
    """better / worse / changed for a move of ``delta`` in ``metric``."""
    if metric in NEUTRAL or delta == 0 or not np.isfinite(delta):
        return "changed"
    return "better" if (delta > 0) == (metric in HIGHER_IS_BETTER) else "worse"


def compare_runs(a: RunData, b: RunData, k: float = 2.0, rtol: float = 0.05) -> pd.DataFrame:
    """Every metric present in both runs, with its move and whether it is flagged (see the module doc).

    Columns: KEYS, mean_a, mean_b, n_a, n_b, std_a, std_b, delta, rel_delta, pooled_std, z (|delta| /
    pooled_std), rule, flagged, direction; flagged rows first, largest z first.
    """
    aggs = []
    for run, tag in ((a, "a"), (b, "b")):
        agg = aggregate(run.ok, KEYS)[[*KEYS, "mean", "std", "n"]]
        aggs.append(agg.rename(columns={c: f"{c}_{tag}" for c in ("mean", "std", "n")}))
    df = aggs[0].merge(aggs[1], on=KEYS, how="inner")
    df = df[(df["n_a"] > 0) & (df["n_b"] > 0)].reset_index(drop=True)
    df["delta"] = df["mean_b"] - df["mean_a"]
    with np.errstate(divide="ignore", invalid="ignore"):
        df["rel_delta"] = df["delta"] / df["mean_a"].abs()
        dof = df["n_a"] + df["n_b"] - 2
        var = ((df["n_a"] - 1) * df["std_a"].fillna(0) ** 2 + (df["n_b"] - 1) * df["std_b"].fillna(0) ** 2) / dof
        df["pooled_std"] = np.where(dof > 0, np.sqrt(var), np.nan)
        df["z"] = df["delta"].abs() / df["pooled_std"]
    spread = dof > 0
    scale = np.maximum(df["mean_a"].abs(), df["mean_b"].abs())
    by_spread = df["delta"].abs() > k * df["pooled_std"]
    by_rtol = df["delta"].abs() > rtol * scale
    df["rule"] = np.where(spread, f"|Δ| > {k:g} pooled std", f"|Δ| > {rtol:g} relative (n=1)")
    df["flagged"] = np.where(spread, by_spread, by_rtol)
    df["direction"] = [direction(m, d) for m, d in zip(df["metric"], df["delta"], strict=True)]
    df = df.sort_values(["flagged", "z"], ascending=[False, False], na_position="last").reset_index(drop=True)
    df.attrs["rule"] = rule_text(k, rtol)
    return df


def rule_text(k: float, rtol: float) -> str:
    return f"|Δ mean| > {k:g} x pooled std over seeds; with one seed on both sides, a relative change > {rtol:.0%}"


def status_changes(a: RunData, b: RunData) -> pd.DataFrame:
    """Cell configurations (over seeds) whose failed-cell count differs between the runs."""

    def failures(run: RunData) -> pd.Series:
        cells = run.metrics.drop_duplicates("cell_id")
        return cells.assign(failed=cells["status"] != "ok").groupby(CONFIG_KEYS, dropna=False)["failed"].sum()

    fa, fb = failures(a), failures(b)
    both = pd.concat({"failed_a": fa, "failed_b": fb}, axis=1).fillna(0).astype(int)
    return both[both["failed_a"] != both["failed_b"]].reset_index()


def _label(row) -> str:
    """The metric's key in one short string: `r2 f1`, `jac_entry_nrmse f2/x3`, `jac_rel_fro_by_edge bin 0.1`."""
    parts = [row["metric"]]
    if row["output"] or row["input"]:
        parts.append("/".join(x for x in (row["output"], row["input"]) if x))
    if np.isfinite(row["bin"]):
        parts.append(f"bin {fmt_num(row['bin'])}")
    return " ".join(parts)


def compare_table(df: pd.DataFrame, limit: int | None = None) -> Table:
    rows = []
    for _, r in df.head(limit).iterrows():
        rows.append([
            r["equation"], r["model"], r["variant"], fmt_key(r["beta"]), fmt_key(r["n_train"]), r["split"],
            _label(r), fmt_num(r["mean_a"], 4), fmt_num(r["mean_b"], 4), fmt_num(r["delta"], 3),
            f"{r['rel_delta']:+.1%}" if np.isfinite(r["rel_delta"]) else "–", fmt_num(r["z"], 3), r["direction"],
        ])  # fmt: skip
    cols = ["equation", "model", "variant", "beta", "n_train", "split", "metric", "mean A", "mean B", "Δ", "Δ rel."]
    return Table([*cols, "|Δ| / pooled std", "direction"], rows)


def write_compare(run_a: str | os.PathLike, run_b: str | os.PathLike, out: str | os.PathLike | None = None,
                  k: float = 2.0, rtol: float = 0.05) -> tuple[pd.DataFrame, Path]:  # fmt: skip
    """Compare two run folders; write compare.csv (every joined metric) and compare.md (the flagged ones).

    Returns the comparison and the folder written to (``out``, default run B's folder).
    """
    a, b = load_run(run_a), load_run(run_b)
    df = compare_runs(a, b, k, rtol)
    out = Path(out) if out is not None else b.path
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "compare.csv", index=False)
    flagged = df[df["flagged"]]
    changes = status_changes(a, b)
    lines = [
        f"# jacbench compare: {a.run_id} (A) -> {b.run_id} (B)",
        "",
        f"{len(df)} metrics in both runs, {len(flagged)} moved beyond their seed-to-seed spread "
        f"({rule_text(k, rtol)}).",
        "",
        table_md(compare_table(flagged)) if len(flagged) else "No metric moved beyond its seed-to-seed spread.",
    ]
    if not changes.empty:
        cols = [*CONFIG_KEYS, "failed_a", "failed_b"]
        rows = [[fmt_key(v) for v in r] for r in changes[cols].itertuples(False)]
        lines += ["", "## Failed cells that differ", "", table_md(Table(cols, rows))]
    (out / "compare.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return df, out
