"""`compare RUN_A RUN_B`: a metric moved by a lot is flagged, one moved within seed noise is not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_fixtures as rf

from bench.cli import main
from bench.report.compare import compare_runs, direction, write_compare
from bench.report.load import load_run


def _write(root: Path, name: str, metrics: pd.DataFrame) -> Path:
    run = root / name
    run.mkdir(parents=True)
    metrics.assign(run_id=name).to_csv(run / "metrics.csv", index=False)
    (run / "config.json").write_text(json.dumps({"profile": name}))
    return run


def _select(m: pd.DataFrame, model: str, metric: str, eq: str = "forum4x4") -> pd.Series:
    return (
        (m["equation"] == eq) & (m["model"] == model) & (m["variant"] == "value") & (m["n_train"] == 1024)
        & (m["split"] == "test") & (m["metric"] == metric)
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    a = rf.metrics_table("a")
    b = a.copy()
    big = _select(b, "fastkan", "jac_rel_fro_median")
    b.loc[big, "value"] *= 3.0  # 0.30 -> 0.90 with a seed spread of 0.03: far beyond noise
    small = _select(b, "mlp_tanh", "jac_rel_fro_p90")
    b.loc[small, "value"] *= 1.02  # +2% against a 10% seed spread: noise
    better = _select(b, "chebykan", "r2_min")
    b.loc[better, "value"] = 1 - (1 - b.loc[better, "value"]) / 10  # ten times smaller value error
    b = b[b["status"] == "ok"]  # the failed cell is gone from B (e.g. retried and removed)
    return _write(root, "run-a", a), _write(root, "run-b", b)


def _get(df: pd.DataFrame, model: str, metric: str) -> pd.Series:
    r = df[(df["equation"] == "forum4x4") & (df["model"] == model) & (df["variant"] == "value")]
    r = r[(r["n_train"] == 1024) & (r["split"] == "test") & (r["metric"] == metric)]
    assert len(r) == 1
    return r.iloc[0]


def test_a_large_move_is_flagged_and_noise_is_not(runs):
    df = compare_runs(load_run(runs[0]), load_run(runs[1]))
    big = _get(df, "fastkan", "jac_rel_fro_median")
    assert big["flagged"] and big["direction"] == "worse"
    assert big["delta"] == pytest.approx(0.6) and big["n_a"] == big["n_b"] == 3
    assert big["z"] > 2
    small = _get(df, "mlp_tanh", "jac_rel_fro_p90")
    assert not small["flagged"] and small["delta"] > 0
    better = _get(df, "chebykan", "r2_min")
    assert better["flagged"] and better["direction"] == "better"
    untouched = _get(df, "mlp_tanh", "jac_rel_fro_median")
    assert not untouched["flagged"] and untouched["delta"] == 0
    assert df["flagged"].sum() == 2
    assert list(df["flagged"][:2]) == [True, True]  # flagged rows first


def test_pooled_std_rule(runs):
    df = compare_runs(load_run(runs[0]), load_run(runs[1]), k=2.0)
    ok = df["pooled_std"].notna()
    expected = df.loc[ok, "delta"].abs() > 2.0 * df.loc[ok, "pooled_std"]
    assert (df.loc[ok, "flagged"] == expected).all()
    stricter = compare_runs(load_run(runs[0]), load_run(runs[1]), k=1000.0)
    assert not _get(stricter, "fastkan", "jac_rel_fro_median")["flagged"]


def test_single_seed_runs_use_the_relative_rule(tmp_path):
    a = rf.metrics_table("a")
    a = a[a["seed"] == 0]
    b = a.copy()
    b.loc[_select(b, "fastkan", "jac_rel_fro_median"), "value"] *= 1.10
    b.loc[_select(b, "mlp_tanh", "jac_rel_fro_median"), "value"] *= 1.01
    df = compare_runs(load_run(_write(tmp_path, "a", a)), load_run(_write(tmp_path, "b", b)))
    assert _get(df, "fastkan", "jac_rel_fro_median")["flagged"]
    assert not _get(df, "mlp_tanh", "jac_rel_fro_median")["flagged"]
    assert "relative" in _get(df, "fastkan", "jac_rel_fro_median")["rule"]


def test_files_and_cli(runs, tmp_path, capsys):
    a, b = runs
    assert main(["compare", str(a), str(b), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 moved beyond their seed-to-seed spread" in out
    assert "fastkan" in out and "jac_rel_fro_median" in out and "worse" in out
    csv = pd.read_csv(tmp_path / "compare.csv")
    assert len(csv) > 1000 and csv["flagged"].sum() == 2
    md = (tmp_path / "compare.md").read_text()
    assert "| forum4x4 | fastkan | value |" in md
    assert "Failed cells that differ" in md and "efficient_kan" in md  # the failed cell of A is not in B
    _, where = write_compare(a, b)
    assert where == b and (b / "compare.md").exists()


def test_direction():
    assert direction("r2_min", 0.1) == "better" and direction("r2_min", -0.1) == "worse"
    assert direction("jac_rel_fro_median", -0.1) == "better" and direction("train_steps", 5) == "changed"
    assert direction("jac_rel_fro_median", np.nan) == "changed"
