"""`compare RUN_A RUN_B`: Welch's t-test on the seeds with a Benjamini-Hochberg correction; throughput by ratio.

Known answers: two runs of one grid with disjoint seeds (same distribution) give (almost) no flags; a
deliberately degraded model is flagged; wall time never is; neither input folder is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_fixtures as rf
from scipy import stats

from bench.cli import main
from bench.report.compare import compare_runs, compare_throughput, direction, welch_p, write_compare
from bench.report.load import load_run


def _write(root: Path, name: str, metrics: pd.DataFrame, throughput: pd.DataFrame | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    metrics.assign(run_id=name).to_csv(run / "metrics.csv", index=False)
    (run / "config.json").write_text(json.dumps({"profile": name}))
    if throughput is not None:
        throughput.to_csv(run / "throughput.csv", index=False)
    return run


def _select(m: pd.DataFrame, model: str, metric: str, eq: str = "forum4x4") -> pd.Series:
    return (
        (m["equation"] == eq) & (m["model"] == model) & (m["variant"] == "value") & (m["n_train"] == 1024)
        & (m["split"] == "test") & (m["metric"] == metric)
    )  # fmt: skip


def _get(df: pd.DataFrame, model: str, metric: str) -> pd.Series:
    r = df[(df["equation"] == "forum4x4") & (df["model"] == model) & (df["variant"] == "value")]
    r = r[(r["n_train"] == 1024) & (r["split"] == "test") & (r["metric"] == metric)]
    assert len(r) == 1
    return r.iloc[0]


def _noisy_grid(seeds, shift: dict[str, float] | None = None, n_models: int = 6, n_metrics: int = 60) -> pd.DataFrame:
    """One grid measured at ``seeds``: metric k of model m is base[m, k] + N(0, sd[m, k]) per seed (fixed RNG).

    The same distribution for every seed, so two runs with disjoint seeds differ only by noise; ``shift``
    adds model -> a multiple of sd to every jac_* metric of that model (a degraded model).
    """
    base_rng = np.random.default_rng(1234)
    base = base_rng.uniform(0.01, 1.0, (n_models, n_metrics))
    sd = base * base_rng.uniform(0.05, 0.3, (n_models, n_metrics))
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(10_000 + seed)
        noise = rng.normal(size=(n_models, n_metrics))
        for m in range(n_models):
            model = f"model{m}"
            for k in range(n_metrics):
                metric = "jac_entry_nrmse" if k else "jac_err_rms"
                value = base[m, k] + sd[m, k] * (noise[m, k] + (shift or {}).get(model, 0.0))
                rows.append(dict(
                    run_id="", cell_id=f"eq__{model}__value__n512__s{seed}", equation="eq", model=model,
                    family="mlp", params=100, flops=200, seed=seed, variant="value", beta=1.0, n_train=512,
                    split="test", metric=metric, output=f"f{k}" if k else "", input="x1" if k else "", bin=np.nan,
                    value=value, status="ok", error="",
                ))  # fmt: skip
            rows.append(dict(rows[-1], metric="train_seconds", output="", input="", value=5.0 + 50 * seed))
    return pd.DataFrame(rows)


def test_disjoint_seeds_of_one_grid_give_almost_no_flags(tmp_path):
    # 360 fidelity metrics, 3 vs 3 seeds from the same distribution: the old "|Δ| > 2 pooled std" rule flags
    # about 7% of them (~25); with the FDR correction at 5% the chance of even one flag is <= 5%.
    a = _write(tmp_path, "a", _noisy_grid((0, 1, 2)))
    b = _write(tmp_path, "b", _noisy_grid((3, 4, 5)))
    df = compare_runs(load_run(a), load_run(b))
    fid = df[df["kind"] == "fidelity"]
    assert len(fid) == 360 and fid["p"].notna().all()
    assert fid["flagged"].sum() <= 1
    pooled = np.sqrt((fid["std_a"] ** 2 + fid["std_b"] ** 2) / 2)  # n_a == n_b: the old rule's pooled std
    assert (fid["delta"].abs() > 2 * pooled).sum() > 10  # what the old rule flagged on the same numbers
    other = df[df["metric"] == "train_seconds"]
    assert len(other) == 6 and not other["flagged"].any() and (other["kind"] == "other").all()
    assert (other["delta"] == 150.0).all()  # wall time moved a lot, listed, not a verdict


def test_a_degraded_model_is_flagged(tmp_path):
    a = _write(tmp_path, "a", _noisy_grid((0, 1, 2, 3, 4)))
    b = _write(tmp_path, "b", _noisy_grid((5, 6, 7, 8, 9), shift={"model2": 8.0}))
    df = compare_runs(load_run(a), load_run(b))
    fid = df[df["kind"] == "fidelity"]
    degraded = fid[fid["model"] == "model2"]
    assert degraded["flagged"].mean() > 0.9 and (degraded.loc[degraded["flagged"], "direction"] == "worse").all()
    assert fid.loc[fid["model"] != "model2", "flagged"].sum() <= 1
    assert list(df["flagged"][: int(df["flagged"].sum())]) == [True] * int(df["flagged"].sum())  # flagged first


def test_welch_p_and_its_edge_cases():
    a, b = np.array([1.0, 1.2, 0.9, 1.1]), np.array([1.5, 1.7, 1.4])
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert np.isnan(welch_p([1.0], [1.0, 2.0]))  # one seed: untestable
    assert welch_p([2.0, 2.0], [2.0, 2.0, 2.0]) == 1.0 and welch_p([2.0, 2.0], [3.0, 3.0]) == 0.0


def test_single_seed_runs_are_untestable_never_flagged(tmp_path):
    a = rf.metrics_table("a")
    a = a[a["seed"] == 0]
    b = a.copy()
    b.loc[_select(b, "fastkan", "jac_err_rms"), "value"] *= 10
    df = compare_runs(load_run(_write(tmp_path, "a", a)), load_run(_write(tmp_path, "b", b)))
    row = _get(df, "fastkan", "jac_err_rms")
    assert not row["flagged"] and row["rule"].startswith("untestable") and row["delta"] > 0
    assert not df["flagged"].any()


def test_throughput_is_compared_by_ratio(tmp_path):
    t = rf.throughput_table()
    t_b = t.copy()
    slow = (t_b["model"] == "fastkan") & (t_b["engine"] == "vmap_jacrev") & (t_b["device"] == "cpu")
    t_b.loc[slow, "jac_per_s"] *= 0.5
    t_b.loc[t_b["engine"] == "forward_tangents", "jac_per_s"] *= 1.03  # within the 10% threshold
    m = rf.metrics_table("x")
    a, b = _write(tmp_path, "a", m, t), _write(tmp_path, "b", m, t_b)
    speed = compare_throughput(load_run(a), load_run(b), tol=0.10)
    moved = speed[speed["flagged"]]
    assert len(moved) == int(slow.sum()) and np.allclose(moved["ratio"], 0.5, rtol=1e-12)
    assert (moved["direction"] == "slower").all()


def test_files_and_cli_never_write_the_inputs(tmp_path, capsys):
    a_m = rf.metrics_table("a")
    b_m = a_m.copy()
    # 0.30 -> 1.50 with the seed spread unchanged (0.03): Welch p ~ 1e-6, q ~ 0.005 over the 4500 metrics
    b_m.loc[_select(b_m, "fastkan", "jac_err_rms"), "value"] += 1.2
    b_m = b_m[b_m["status"] == "ok"]  # the failed cell of A is not in B
    a, b = _write(tmp_path, "run-a", a_m), _write(tmp_path, "run-b", b_m)
    before = {p: p.read_bytes() for p in [*a.rglob("*"), *b.rglob("*")] if p.is_file()}
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 flagged" in text and "fastkan" in text and "worse" in text
    csv = pd.read_csv(out / "compare.csv")
    assert len(csv) > 1000 and csv["flagged"].sum() == 1
    md = (out / "compare.md").read_text()
    assert "| forum4x4 | fastkan | value |" in md
    assert "Other metrics" in md and "train_seconds" in md
    assert "Failed cells that differ" in md and "efficient_kan" in md
    _, _, where = write_compare(a, b)
    assert where == tmp_path / "compare-run-a-vs-run-b" and (where / "compare.md").exists()
    after = {p: p.read_bytes() for p in [*a.rglob("*"), *b.rglob("*")] if p.is_file()}
    assert after == before  # readers do not modify their inputs
    with pytest.raises(ValueError, match="never writes into its inputs"):
        write_compare(a, b, out=b)


def test_direction():
    assert direction("r2_min", 0.1) == "better" and direction("r2_min", -0.1) == "worse"
    assert direction("jac_err_rms", -0.1) == "better" and direction("train_steps", 5) == "changed"
    assert direction("jac_err_rms", np.nan) == "changed"


def test_an_engine_that_stops_being_timed_is_flagged_not_dropped(tmp_path):
    t = rf.throughput_table()
    t_b = t.copy()
    gone = (t_b["model"] == "chebykan") & (t_b["engine"] == "forward_tangents") & (t_b["status"] == "ok")
    t_b.loc[gone, ["status", "error"]] = ["mismatch", "Jacobian differs from the float64 reference by 0.3"]
    t_b.loc[gone, "jac_per_s"] = np.nan
    t_b = pd.concat([t_b, t_b[t_b["engine"] == "vmap_jacrev"]])  # an appended repeat of a sweep: no cross-join
    m = rf.metrics_table("x")
    speed = compare_throughput(load_run(_write(tmp_path, "a", m, t)), load_run(_write(tmp_path, "b", m, t_b)))
    lost = speed[speed["direction"] == "lost: mismatch"]
    assert len(lost) == int(gone.sum()) and lost["flagged"].all()
    assert len(speed) == int((t["status"] == "ok").sum())  # one row per measured key, repeats summarized


def test_runs_with_other_metric_definitions_are_warned_about(tmp_path, capsys):
    m = rf.metrics_table("x")
    a, b = _write(tmp_path, "a", m), _write(tmp_path, "b", m)
    (b / "config.json").write_text(json.dumps({"profile": "b", "metrics_version": 2}))  # A has none: v1
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    assert "metric definitions v1, B with v2" in capsys.readouterr().out
    assert "metric definitions v1, B with v2" in (tmp_path / "cmp" / "compare.md").read_text()
