"""The map report (bench.report.map) on a synthetic map with known answers, and `python -m bench map`'s resumption.

Kriging's error falls like n^-0.5 from 1e-3 at n_train 64, the network's like n^-1.5 from 1e-2: kriging leads at
64 and 256, the network from 1024 (1.6e-4 < 2.5e-4). On forum4x4 kriging runs past its budget at 1024. Seeds 0
and 1 scale every error by 0.5 and 2, so each geometric mean over seeds is exactly the base value.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.commands.map_cmd import existing_run
from bench.report import map as mr
from bench.run import results

SEED_FACTOR = {0: 0.5, 1: 2.0}


def base_error(model: str, n: int, converged: bool = False) -> float:
    if model == "krg":
        return 1e-3 * (n / 64) ** -0.5
    return 1e-2 * (n / 64) ** -1.5 * (0.5 if converged else 1.0)


def _cell(run_id, eq, n_in, model, variant, beta, n, seed, status="ok", error="") -> list[dict]:
    tag = "value" if variant == "value" else f"sobolev{beta!r}"
    base = {"run_id": run_id, "cell_id": f"{eq}__{model}__{tag}__n{n}__s{seed}", "equation": eq, "model": model,
            "family": "kriging" if model == "krg" else "efficient_kan", "n_in": n_in, "n_out": 4, "model_config": "",
            "params": 100, "flops": 10, "seed": seed, "variant": variant, "beta": beta, "n_train": n, "output": "",
            "input": "", "bin": "", "node": "t", "hess_weight": 0.0, "status": status, "error": error}  # fmt: skip
    if status != "ok":
        return [{**base, "split": "", "metric": "failed", "value": np.nan}]
    jac = base_error(model, n, run_id == "conv") * SEED_FACTOR[seed]
    cost = (n / 64) ** 3 if model == "krg" else n / 64.0
    return [{**base, "split": "test", "metric": results.JAC_HEADLINE, "value": jac},
            {**base, "split": "", "metric": results.FIT_WALL, "value": cost},
            {**base, "split": "", "metric": results.FIT_CPU, "value": cost},
            {**base, "split": "", "metric": results.PREDICT_PER_1K, "value": 0.1},
            {**base, "split": "", "metric": "still_improving", "value": 0.0}]  # fmt: skip


def write_run(root: Path, name: str, profile: str, cells: list[list[dict]]) -> Path:
    run = root / name
    (run / "cells").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_id": name, "run": {"profile": profile}}))
    for rows in cells:
        results.atomic_write_csv(run / "cells" / f"{results.cell_filename(rows[0]['cell_id'])}.csv",
                                 results.rows_frame(rows))  # fmt: skip
    return run


@pytest.fixture(scope="module")
def map_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("map")
    cells = []
    for eq in ("gen:smooth:0", "forum4x4"):
        for n in (64, 256, 1024):
            for seed in (0, 1):
                if eq == "forum4x4" and n == 1024:
                    cells.append(_cell("map", eq, 4, "krg", "value", 1.0, n, seed, results.OVER_BUDGET,
                                       "not run: predicted 4000 s"))  # fmt: skip
                else:
                    cells.append(_cell("map", eq, 4, "krg", "value", 1.0, n, seed))
                cells.append(_cell("map", eq, 4, "efficient_kan", "sobolev", 0.5, n, seed))
    for seed in (0, 1):  # the dimension axis: one 8-input set at 256
        cells.append(_cell("map", "gen:smooth:0:8x4", 8, "krg", "value", 1.0, 256, seed))
        cells.append(_cell("map", "gen:smooth:0:8x4", 8, "efficient_kan", "sobolev", 0.5, 256, seed))
    write_run(root, "map", "map", cells)
    conv = [_cell("conv", eq, 4, "efficient_kan", "sobolev", 0.5, n, s)
            for eq in ("gen:smooth:0", "forum4x4") for n in (256, 1024) for s in (0, 1)]  # fmt: skip
    write_run(root, "conv", "map_converged", conv)
    return root


def test_the_cells_of_every_run_are_read_with_their_method_and_cost(map_dir):
    cells = mr.map_cells(map_dir)
    assert len(cells) == 2 * 3 * 2 * 2 + 4 + 8
    assert set(cells["method"]) == {"krg · value", "efficient_kan · sobolev β=0.5",
                                    "efficient_kan · sobolev β=0.5 · converged"}  # fmt: skip
    assert (cells["status"] == results.OVER_BUDGET).sum() == 2
    assert set(cells.loc[cells["model"] == "krg", "kind"]) == {"kriging"}


def test_the_crossover_is_where_the_network_stays_ahead(map_dir):
    summary = mr.crossover_summary(mr.crossover(mr.map_cells(map_dir))).set_index("family")
    assert summary.loc["smooth", "crossover"] == "n_train 1024 on"
    assert summary.loc["forum4x4", "crossover"] == "none up to n_train 256"  # kriging's 1024 never finished
    assert summary.loc["forum4x4", "kriging_over_budget_from"] == 1024


def test_the_choice_table_ranks_by_geometric_means_and_names_who_was_not_eligible(map_dir):
    rows = mr.choice_rows(mr.map_cells(map_dir)).set_index(["n_train", "n_in"])
    top64 = rows.loc[(64, 4), "ranked"].iloc[0]
    assert top64["method"] == "krg · value" and top64["jac"] == pytest.approx(1e-3, rel=1e-12)  # both sets: 1e-3
    at1024 = rows.loc[(1024, 4)]
    assert at1024["ranked"]["method"].tolist() == ["efficient_kan · sobolev β=0.5"]
    assert at1024["not_eligible"] == ["krg · value (over budget on 2 cell(s))"]
    assert rows.loc[(256, 8), "ranked"].iloc[0]["method"] == "krg · value"
    assert rows.loc[(256, 4), "network_over_kriging"] == pytest.approx(base_error("e", 256) / base_error("krg", 256))
    assert "converged" not in " ".join(rows.loc[(256, 4), "ranked"]["method"])  # like-with-like budgets only


def test_the_report_has_every_section_figure_and_the_converged_gain(map_dir):
    html = mr.build_map_report(map_dir)
    md = (map_dir / "report.md").read_text()
    for title in mr.GUIDES:
        assert f"## {title}" in md
    for fig in ("map_error_vs_n", "map_cost_vs_n", "map_error_vs_dim", "map_pareto"):
        assert (map_dir / "figures" / f"{fig}.png").stat().st_size > 5000
    assert "| forum4x4 | 1024 | efficient_kan · sobolev β=0.5 |" in md and "| 2.00 |" in md  # converged: 2x better
    assert "not run: predicted 4000 s" in md and html.exists()
    cost = md.split("## Cost per method")[1].split("\n## ")[0]
    assert "| krg · value | 1024 | 4096 | 4096 | 0.100 |" in cost  # (n/64)^3 s to fit, 0.1 s per 1000 predictions


def test_the_map_command_rebuilds_the_report_and_finds_each_profiles_run(map_dir, capsys):
    assert existing_run(map_dir, "map_converged") == map_dir / "conv"
    assert existing_run(map_dir, "quick") is None
    assert main(["map", "--report-only", "--out", str(map_dir)]) == 0
    assert "report.html" in capsys.readouterr().out


def test_training_seconds_stand_beside_every_error_compared_and_the_headline_is_linked(map_dir):
    mr.build_map_report(map_dir)
    md = (map_dir / "report.md").read_text()
    html = (map_dir / "report.html").read_text()
    choice = md.split("## Which surrogate for my problem")[1].split("\n## ")[0]
    # at (256, 4): kriging 1e-3 * 4^-0.5 in (256/64)^3 s, the network 1e-2 * 4^-1.5 in 256/64 s
    assert "| 256 | 4 | 2 | krg · value | 5.00e-04 | 64.0 | efficient_kan · sobolev β=0.5 | 0.00125 | 4.00 |" in choice
    cross = md.split("## Crossover: where networks overtake kriging")[1].split("\n## ")[0]
    assert "| smooth | 256 | efficient_kan · sobolev β=0.5 | 0.00125 | 4.00 | krg · value | 5.00e-04 | 64.0 |" in cross
    conv = md.split("## Converged networks")[1].split("\n## ")[0]
    assert "| forum4x4 | 256 | efficient_kan · sobolev β=0.5 | 0.00125 | 4.00 | 6.25e-04 | 4.00 | 2.00 |" in conv
    assert "[its Jacobian error (headline)](#headline)" in choice and '<a id="headline"></a>' in md
    assert 'id="headline"' in html and 'href="#headline"' in html and '<nav class="toc"' in html
