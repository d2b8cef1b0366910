"""Compare two runs: which fidelity metrics moved beyond seed noise, and which throughputs moved beyond a ratio.

Fidelity metrics. Both runs' finished cells are grouped per key (equation, model, variant, beta, n_train,
split, metric, output, input, bin); each side's values are its seeds. A metric is tested with **Welch's
two-sample t-test** on the seed values (unequal variances; scipy.stats.ttest_ind(equal_var=False)), and
the p-values of all tested metrics are corrected together with **Benjamini-Hochberg** (scipy.stats.
false_discovery_control): a metric is **flagged** when its q-value is below ``alpha`` (default 0.05), so
the expected share of false flags among the flagged stays below ``alpha`` however many metrics a run has.
Seeds differ between runs or not: the test compares the two sets of values either way.

- A metric with fewer than two finite seed values on a side cannot be tested: it is listed as
  ``untestable`` and never flagged (run at least 2 seeds per side; 3+ for useful power).
- Both sides without spread (every seed identical): equal means -> p = 1, different means -> p = 0.
- Metrics that do not measure fidelity (wall time, step counts, the round-off of the de-normalization
  check, the data's Jacobian scale; ``OTHER_METRICS``) are kept out of the test and the correction, and
  listed apart with their change.

Throughput. Rows of both throughput.csv tables are joined on the measured configuration (model_config,
engine, device, dtype, batch size) and compared by the ratio of medians B / A, as pytest-benchmark's
``--benchmark-compare-fail`` does: a ratio beyond ``1 ± speed_tol`` (default 10%) is flagged (slower or
faster). Timings on a shared machine move by a few percent between runs; set the threshold accordingly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.load import RunData, load_run
from bench.report.render import Table, table_md
from bench.report.stats import CONFIG_KEYS, ENTRY_KEYS, fmt_key, fmt_num
from bench.run import results

# model_config too: a --match-params run and a plain one train other networks under the same model name
KEYS = [k for k in CONFIG_KEYS if k != "family"] + ["model_config", "hess_weight"] + ENTRY_KEYS
HIGHER_IS_BETTER = {"r2", "r2_min", "jac_sign_agree"}
# Not fidelity: timing, effort, round-off of the chain-rule check, and properties of the data, not the model
OTHER_METRICS = {
    "train_seconds",
    "train_steps",
    "denorm_check",
    "jac_fd_check",  # a peer's self-check (central differences), not a fidelity score
    "jac_out_scale",  # the set's typical range-scaled gradient per output: the data, not the model
    "loss_drop_last10",
    "hess_out_scale",
}
OTHER_METRICS |= {"still_improving", "lr", "lr_trial_val_loss", "tune_seconds", *results.COST_METRICS}
ALPHA = 0.05  # false-discovery rate of the flags
SPEED_TOL = 0.10  # throughput ratio beyond 1 ± this is flagged
SPEED_KEYS = ["model_config", "model", "engine", "device", "dtype", "batch_size"]


def direction(metric: str, delta: float) -> str:
    """better / worse / changed for a move of ``delta`` in ``metric``."""
    if metric in OTHER_METRICS or delta == 0 or not np.isfinite(delta):
        return "changed"
    return "better" if (delta > 0) == (metric in HIGHER_IS_BETTER) else "worse"


def _seed_values(run: RunData) -> pd.DataFrame:
    ok = run.ok
    ok = ok[np.isfinite(ok["value"])]
    return ok.groupby(KEYS, dropna=False, sort=False)["value"].agg(list).reset_index()


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test; NaN with fewer than 2 values on a side; exact 0/1 without spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return np.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def compare_runs(a: RunData, b: RunData, alpha: float = ALPHA) -> pd.DataFrame:
    """Every metric present in both runs, with its move, its test and whether it is flagged (module doc).

    Columns: KEYS, mean_a, mean_b, n_a, n_b, std_a, std_b, delta, rel_delta, p, q, kind (``fidelity`` or
    ``other``), rule, flagged, direction; flagged rows first, smallest q first.
    """
    va, vb = _seed_values(a), _seed_values(b)
    df = va.merge(vb, on=KEYS, how="inner", suffixes=("_a", "_b"))
    for tag in ("a", "b"):
        vals = df[f"value_{tag}"].map(np.asarray)
        df[f"n_{tag}"] = vals.map(len)
        df[f"mean_{tag}"] = vals.map(np.mean)
        df[f"std_{tag}"] = vals.map(lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else np.nan)
    df["delta"] = df["mean_b"] - df["mean_a"]
    with np.errstate(divide="ignore", invalid="ignore"):
        df["rel_delta"] = df["delta"] / df["mean_a"].abs()
    df["p"] = [welch_p(x, y) for x, y in zip(df["value_a"], df["value_b"], strict=True)]
    df["kind"] = np.where(df["metric"].isin(list(OTHER_METRICS)), "other", "fidelity")
    testable = (df["kind"] == "fidelity") & np.isfinite(df["p"])
    df["q"] = np.nan
    if testable.any():
        df.loc[testable, "q"] = stats.false_discovery_control(df.loc[testable, "p"].to_numpy(), method="bh")
    df["rule"] = np.select(
        [df["kind"] == "other", ~testable],
        ["not fidelity: not tested", "untestable: < 2 seeds on a side"],
        f"Welch t-test, BH q < {alpha:g}",
    )
    df["flagged"] = testable & (df["q"] < alpha)
    df["direction"] = [direction(m, d) for m, d in zip(df["metric"], df["delta"], strict=True)]
    df = df.drop(columns=["value_a", "value_b"])
    df = df.sort_values(["flagged", "q"], ascending=[False, True], na_position="last").reset_index(drop=True)
    df.attrs["rule"] = rule_text(alpha)
    return df


def rule_text(alpha: float) -> str:
    return (
        f"Welch's t-test on the seed values of each fidelity metric, Benjamini-Hochberg false-discovery rate "
        f"{alpha:g} across the table"
    )


def compare_throughput(a: RunData, b: RunData, tol: float = SPEED_TOL) -> pd.DataFrame:
    """Throughput rows of the same configuration in both runs: ratio B / A, flagged beyond 1 ± tol.

    A row timed in A but not in B (its status became mismatch, failed or unsupported) is flagged as ``lost``
    with B's status and reason: an engine that starts returning wrong Jacobians never vanishes silently.
    Repeated measurements of one key (appended sweeps) are summarized by their median first.
    """
    cols = [*SPEED_KEYS, "jac_per_s_a", "jac_per_s_b", "ratio", "status_b", "error_b", "flagged", "direction"]
    if a.throughput is None or b.throughput is None:
        return pd.DataFrame(columns=cols)

    def rows(t: pd.DataFrame) -> pd.DataFrame:
        t = t.copy()
        if "model_config" not in t or (t["model_config"] == "").all():
            t["model_config"] = t["model"]  # tables written before configurations were recorded
        ok = t[(t["status"] == "ok") & np.isfinite(t["jac_per_s"])]
        rate = ok.groupby(SPEED_KEYS, dropna=False)["jac_per_s"].median()
        status = t.groupby(SPEED_KEYS, dropna=False)[["status", "error"]].last()
        out = status.join(rate, how="left").reset_index()
        return out.assign(status=np.where(out["jac_per_s"].notna(), "ok", out["status"]))

    df = rows(a.throughput).merge(rows(b.throughput), on=SPEED_KEYS, suffixes=("_a", "_b"))
    df = df[df["status_a"] == "ok"].reset_index(drop=True)  # what A timed is what B is held to
    with np.errstate(divide="ignore", invalid="ignore"):
        df["ratio"] = df["jac_per_s_b"] / df["jac_per_s_a"]
    lost = df["status_b"] != "ok"
    df["flagged"] = lost | (df["ratio"] < 1 - tol) | (df["ratio"] > 1 + tol)
    df["direction"] = np.select(
        [lost, df["ratio"] > 1, df["ratio"] < 1], ["lost: " + df["status_b"].astype(str), "faster", "slower"], "same"
    )
    df = df.sort_values(["flagged", "ratio"], ascending=[False, True], na_position="first").reset_index(drop=True)
    return df[cols]


def status_changes(a: RunData, b: RunData) -> pd.DataFrame:
    """Cell configurations (over seeds) whose failed-cell count differs between the runs."""

    def failures(run: RunData) -> pd.Series:
        cells = run.metrics.drop_duplicates("cell_id")
        return cells.assign(failed=cells["status"] != "ok").groupby(CONFIG_KEYS, dropna=False)["failed"].sum()

    fa, fb = failures(a), failures(b)
    both = pd.concat({"failed_a": fa, "failed_b": fb}, axis=1).fillna(0).astype(int)
    return both[both["failed_a"] != both["failed_b"]].reset_index()


def _label(row) -> str:
    """The metric's key in one short string: `r2 f1`, `jac_entry_nrmse f2/x3`, `jac_err_by_edge bin 0.1`."""
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
            f"{r['rel_delta']:+.1%}" if np.isfinite(r["rel_delta"]) else "–", f"{r['n_a']}/{r['n_b']}",
            fmt_num(r["q"], 2), r["direction"],
        ])  # fmt: skip
    cols = ["equation", "model", "variant", "beta", "n_train", "split", "metric", "mean A", "mean B", "Δ", "Δ rel."]
    return Table([*cols, "seeds A/B", "q (BH)", "direction"], rows)


def speed_table(df: pd.DataFrame, limit: int | None = None) -> Table:
    rows = [
        [r["model_config"], r["engine"], r["device"], r["dtype"], fmt_key(r["batch_size"]),
         fmt_num(r["jac_per_s_a"]), fmt_num(r["jac_per_s_b"]),
         f"{r['ratio']:.3f}" if np.isfinite(r["ratio"]) else "–",
         r["direction"] if r["status_b"] == "ok" else f"{r['direction']} ({str(r['error_b'])[:80]})"]
        for _, r in df.head(limit).iterrows()
    ]  # fmt: skip
    cols = ["configuration", "engine", "device", "dtype", "batch", "Jacobians/s A", "Jacobians/s B", "B / A"]
    return Table([*cols, "direction"], rows)


def default_out(a: RunData, b: RunData) -> Path:
    """Where compare writes unless told: a folder of its own beside run B (the inputs are never written)."""
    return b.path.parent / f"compare-{a.run_id}-vs-{b.run_id}"


def write_compare(
    run_a: str | os.PathLike,
    run_b: str | os.PathLike,
    out: str | os.PathLike | None = None,
    alpha: float = ALPHA,
    speed_tol: float = SPEED_TOL,
) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Compare two run folders; write compare.csv, compare_throughput.csv and compare.md into ``out``.

    ``out`` defaults to ``default_out`` (``<results>/compare-<A>-vs-<B>/``): neither run folder is modified.
    Returns the metric comparison, the throughput comparison and the folder written to.
    """
    a, b = load_run(run_a), load_run(run_b)
    df = compare_runs(a, b, alpha)
    df.attrs["version_warning"] = version_warning(a, b)
    speed = compare_throughput(a, b, speed_tol)
    out = Path(out) if out is not None else default_out(a, b)
    if out.resolve() in (a.path.resolve(), b.path.resolve()):
        raise ValueError(f"--out {out} is one of the compared run folders; compare never writes into its inputs")
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "compare.csv", index=False)
    speed.to_csv(out / "compare_throughput.csv", index=False)
    (out / "compare.md").write_text(compare_markdown(a, b, df, speed, alpha, speed_tol), encoding="utf-8")
    return df, speed, out


def metrics_version(run: RunData) -> int:
    """The metric definitions a run was measured with (config.json; runs from before the field: 1)."""
    return int(run.config.get("metrics_version", 1)) if isinstance(run.config, dict) and run.config else 1


def version_warning(a: RunData, b: RunData) -> str:
    """A line saying the runs define some metrics differently, or ""."""
    va, vb = metrics_version(a), metrics_version(b)
    if va == vb:
        return ""
    return (
        f"WARNING: A was measured with metric definitions v{va}, B with v{vb} (bench.run.results.METRICS_VERSION): "
        "metrics whose definition changed (e.g. jac_rel_fro_* in v2, replaced by the unit-invariant jac_err_* in v3) "
        "move by definition, not by the model; a metric only one run has is not compared."
    )


def compare_markdown(a: RunData, b: RunData, df: pd.DataFrame, speed: pd.DataFrame, alpha: float, tol: float) -> str:
    fid = df[df["kind"] == "fidelity"]
    flagged, untestable = fid[fid["flagged"]], fid[~np.isfinite(fid["p"])]
    warning = version_warning(a, b)
    lines = [
        f"# jacbench compare: {a.run_id} (A) -> {b.run_id} (B)",
        "",
        *([f"**{warning}**", ""] if warning else []),
        f"{len(fid)} fidelity metrics in both runs; {len(flagged)} flagged ({rule_text(alpha)}); "
        f"{len(untestable)} untestable (fewer than 2 seeds on a side).",
        "",
        table_md(compare_table(flagged)) if len(flagged) else "No fidelity metric moved beyond seed noise.",
    ]
    other = df[df["kind"] == "other"]
    if len(other):
        lines += ["", "## Other metrics (not fidelity: listed, never flagged)", "", table_md(compare_table(other))]
    if len(speed):
        moved = speed[speed["flagged"]]
        lines += ["", f"## Throughput (ratio B / A beyond 1 ± {tol:g})", ""]
        lines += [table_md(speed_table(moved)) if len(moved) else f"No throughput moved beyond 1 ± {tol:g}."]
    changes = status_changes(a, b)
    if not changes.empty:
        cols = [*CONFIG_KEYS, "failed_a", "failed_b"]
        rows = [[fmt_key(v) for v in r] for r in changes[cols].itertuples(False)]
        lines += ["", "## Failed cells that differ", "", table_md(Table(cols, rows))]
    return "\n".join(lines) + "\n"
