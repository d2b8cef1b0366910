"""The report, built from a synthetic results folder with known numbers (tests/report_fixtures.py): no training."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_fixtures as rf
from PIL import Image
from scipy import stats

from bench.cli import main
from bench.report import SECTION_TITLES, build_report, load_run
from bench.report.leaderboard import leaderboard
from bench.report.stats import aggregate, fmt_ci

FIGURES = {"fidelity_vs_fit", "entry_heatmaps", "pred_vs_true", "edge_error", "beta_sweep", "n_train", "throughput"}
FIGURES |= {"accuracy_vs_speed", "learning_curves", "cd_diagram", "win_rates"}
FIGURES |= {"hessian_heatmaps", "pred_vs_true_hessian", "edge_error_hessian", "training_comparison"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return rf.built_run(tmp_path_factory)


@pytest.fixture(scope="module")
def html(run) -> str:
    return (run / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def md(run) -> str:
    return (run / "report.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def board(run) -> pd.DataFrame:
    return leaderboard(load_run(run))


def _row(board: pd.DataFrame, model: str, variant: str = "value", beta: float = 1.0, eq: str = "forum4x4"):
    r = board[(board["equation"] == eq) & (board["model"] == model) & (board["variant"] == variant)]
    r = r[np.isclose(r["beta"], beta)]
    assert len(r) == 1, (model, variant, beta)
    return r.iloc[0]


def test_every_section_is_in_html_and_markdown(html, md):
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in html
        assert f"## {title}" in md
    assert html.count("How to read it:") == len(SECTION_TITLES)


def test_every_figure_is_an_embedded_png_and_a_file(run, html, md):
    sources = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', html)
    assert len(sources) == html.count("<img") == len(FIGURES)
    for data in sources:
        img = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        assert img.format == "PNG" and img.width > 200 and img.height > 100
    assert {p.stem for p in (run / "figures").glob("*.png")} == FIGURES
    linked = set(re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\.png\)", md))
    assert linked == FIGURES
    assert "Skipped" not in html  # the synthetic run has data for every section


def test_html_is_self_contained(html):
    assert "<style>" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing to fetch
    assert "<script" not in html


def test_leaderboard_means_are_the_means_put_in(board):
    r = _row(board, "mlp_tanh")
    assert r["n_train"] == 1024 and r["r2_min_n"] == 3
    assert r["r2_min_mean"] == pytest.approx(1 - rf.expected_value_error("mlp_tanh"), abs=1e-12)
    assert r["jac_err_rms_mean"] == pytest.approx(rf.expected_jac_error("mlp_tanh"), rel=1e-12)
    assert r["jac_err_p90_mean"] == pytest.approx(2.5 * rf.expected_jac_error("mlp_tanh"), rel=1e-12)
    seeds = [rf.expected_jac_error("mlp_tanh") * rf.SEED_FACTOR[s] for s in rf.SEEDS]
    ci = stats.t.ppf(0.975, 2) * np.std(seeds, ddof=1) / math.sqrt(3)
    assert r["jac_err_rms_ci"] == pytest.approx(ci, rel=1e-9)
    s = _row(board, "fastkan", "sobolev", 1e-7)
    assert s["jac_err_rms_mean"] == pytest.approx(rf.expected_jac_error("fastkan", "sobolev", 1e-7), rel=1e-12)
    assert r["params"] == rf.params_of("mlp_tanh", "forum4x4") and r["flops"] == 2 * r["params"]


def test_leaderboard_numbers_are_rendered(board, html, md):
    r = _row(board, "mlp_tanh")
    text = fmt_ci(r["jac_err_rms_mean"], r["jac_err_rms_ci"], 3)
    assert text == "0.0200 ± 0.0050"
    assert f"<td>{text}</td>" in html and text in md


def test_leaderboard_best_values_are_marked(board, html, md):
    best_fit = _row(board, "fastkan")  # the best fit (1 - R² = 5e-5) ...
    best_jac = _row(board, "mlp_tanh", "sobolev", 1e-7)  # ... and the most faithful Jacobians
    fit = fmt_ci(best_fit["r2_min_mean"], best_fit["r2_min_ci"], 3)
    jac = fmt_ci(best_jac["jac_err_rms_mean"], best_jac["jac_err_rms_ci"], 3)
    forum = html[
        html.index('<p class="caption">forum4x4') : html.index("</table>", html.index('<p class="caption">forum4x4'))
    ]
    assert f'<td class="best">{fit}</td>' in forum
    assert f'<td class="best">{jac}</td>' in forum
    assert f"**{fit}**" in md and f"**{jac}**" in md
    worst = fmt_ci(_row(board, "fastkan")["jac_err_rms_mean"], _row(board, "fastkan")["jac_err_rms_ci"], 3)
    assert f'<td class="best">{worst}</td>' not in forum
    # throughput: the fastest torch engine per device, the JAX peer left out
    assert best_fit["engine_cuda"] == "forward_tangents"  # not `forward`: a forward pass is no Jacobian
    assert not board["engine_cpu"].str.startswith("jax").any()


def test_speed_belongs_to_the_exact_configuration_measured(board, html):
    # The sweep measured the 4 -> 4 networks only: gen:smooth:3's 3 -> 2 networks (other parameter counts) get
    # no speed, never their 4 -> 4 namesake's.
    forum = board[board["equation"] == "forum4x4"]
    gen = board[board["equation"] == "gen:smooth:3"]
    peer, forum = forum[forum["family"] == "jenn"], forum[forum["family"] != "jenn"]
    assert forum["jac_per_s_cpu"].notna().all() and not forum["speed_missing"].any()
    assert len(peer) and peer["jac_per_s_cpu"].isna().all()  # a peer is not a torch module: no engine timed it
    assert gen["jac_per_s_cpu"].isna().all() and gen["jac_per_s_cuda"].isna().all() and gen["speed_missing"].all()
    cap = html.index('<p class="caption">gen:smooth:3')
    table = html[cap : html.index("</table>", cap)]
    assert "not measured†" in table and "exact configuration" in table


def test_rows_still_improving_at_the_end_of_the_budget_are_flagged(board, md):
    fast = _row(board, "fastkan")
    assert fast["improving"] == 2 and fast["judged"] == 3
    assert _row(board, "mlp_tanh")["improving"] == 0
    forum = md[md.index("*forum4x4: test split") :].split("\n#")[0]
    assert "STILL IMPROVING (2/3 seeds)" in forum and "STILL IMPROVING: in that many seeds" in forum
    assert "| yes |" in forum


def test_n_train_slopes_recover_the_power_laws_put_in(run, md):
    # the synthetic errors: 1 - R² proportional to 1 / n_train, the Jacobian error to n_train ** -0.5
    from bench.report.fig_training import n_train_slopes

    slopes = n_train_slopes(load_run(run)).set_index(["equation", "model", "training"])
    r = slopes.loc[("forum4x4", "mlp_tanh", "value")]
    assert r["sizes"] == 2 and r["cells"] == 6
    assert r["value_err_slope"] == pytest.approx(-1.0, abs=1e-9) and r["jac_slope"] == pytest.approx(-0.5, abs=1e-9)
    assert np.isfinite(r["jac_ci"])
    section = md[md.index("## Training-set size") : md.index("## Throughput")]
    assert "log-log slopes against" in section and "| -1.00 ± 0.16 | -0.50 ± 0.16 |" in section


def test_the_ranking_across_sets_orders_methods_by_the_errors_put_in(md):
    # every synthetic set has the same errors, so ranks follow expected_jac_error exactly on both sets
    from tests.report_fixtures import FAILED, MODELS, SOBOLEV, expected_jac_error

    methods = [(m, "value", 1.0) for m in MODELS] + [(m, "sobolev", b) for m in MODELS for b in SOBOLEV]
    best = min(methods, key=lambda c: expected_jac_error(*c))
    worst = max(methods, key=lambda c: expected_jac_error(*c))
    section = md.split("## Ranking across equation sets")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| ") and "·" in line][1:]  # after the header
    assert table[0].startswith(f"| {best[0]} · sobolev β={best[2]:g} | **1.00** |")
    # last on both sets, except that on gen:smooth:3 the method with a failed seed (FAILED) ranks below it
    failed = (FAILED[1], FAILED[2], FAILED[3])
    assert table[-1].startswith(f"| {worst[0]} · value | {len(methods) - 0.5:.2f} |")
    assert any(line.startswith(f"| {failed[0]} · sobolev β={failed[2]:g} |") for line in table)
    assert "Friedman test over 2 sets" in section and "Nemenyi critical difference" in section


def test_spurious_derivatives_are_shown_in_the_per_entry_section(md):
    section = md[md.index("## Per-entry Jacobian error") : md.index("## Predicted vs true derivatives")]
    assert "spurious derivatives on structural zeros" in section
    # condensed: one row per architecture over the sets with structural zeros (forum4x4 only), units explained
    assert "| fastkan | 1 | 40.0% | 40.0% (forum4x4) | 4.00 (forum4x4) |" in section
    assert "| mlp_tanh | 1 | 10.0% | 10.0% (forum4x4) | 1.00 (forum4x4) |" in section
    assert "exceeds 1% of output i's RMS true derivative" in section and "in units of that RMS" in section
    # then the main set's worst zero entries per architecture
    assert "| fastkan | 40.0% | 4.00 | ∂f4/∂x3 40% |" in section
    assert section.count("| fastkan |") == 2  # nothing per set beyond the main one


def test_a_neighbours_speed_is_never_joined(tmp_path):
    # Same model name and dimensions, other overrides (a --match-params run): no match; same id but another
    # parameter count: no match either.
    run = rf.make_run(tmp_path, jacobians=False)
    t = pd.read_csv(run / "throughput.csv")
    t["model_config"] = t["model_config"] + ' {"width": 17}'
    t.to_csv(run / "throughput.csv", index=False)
    assert leaderboard(load_run(run))["jac_per_s_cpu"].isna().all()
    t = rf.throughput_table()
    t["params"] += 1
    t.to_csv(run / "throughput.csv", index=False)
    assert leaderboard(load_run(run))["jac_per_s_cpu"].isna().all()
    # the same networks timed in float32, while the run trained and evaluated them in float64: not its speed
    rf.throughput_table().to_csv(run / "throughput.csv", index=False)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "run": {"dtype": "float64"}}))
    board = leaderboard(load_run(run))
    assert "jac_per_s_cpu" not in board and board["speed_missing"].all()
    (run / "config.json").write_text(json.dumps({**cfg, "run": {"dtype": "float32"}}))
    board = leaderboard(load_run(run)).query("equation == 'forum4x4' and family != 'jenn'")
    assert board["jac_per_s_cpu"].notna().all()


def test_failed_cell_is_listed_and_counted(board, html, md):
    eq, model, variant, beta, n, seed = rf.FAILED
    cid = rf.cell_id(eq, model, variant, beta, n, seed)
    for text in (html, md):
        assert cid in text
    assert rf.FAILED_ERROR in md
    assert rf.FAILED_ERROR.replace("'", "&#x27;") in html
    assert _row(board, model, variant, beta, eq)["jac_err_rms_n"] == 2  # the failed seed is not in the mean


def test_environment_and_config_are_shown(run, html):
    env = json.loads((run / "env.json").read_text())
    assert env["device_name"] in html and env["jacbench_commit"] in html
    assert "&quot;profile&quot;: &quot;synthetic&quot;" in html


def test_report_never_imports_torch_models_or_equations(run, tmp_path):
    code = f"""
import sys
import bench.report, bench.commands.report, bench.commands.compare
from bench.report import load_run
from bench.report.leaderboard import leaderboard
from bench.report.compare import compare_runs
r = load_run({str(run)!r})
assert len(leaderboard(r)) and len(compare_runs(r, r))
from bench.cli import main  # the CLI builds every command's parser: none of them may import torch to do so
assert main(["report", {str(run)!r}, "--out", {str(tmp_path / "cli")!r}]) == 0
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "models", "equations", "jax"))
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _small_run(root: Path, name: str, keep) -> Path:
    """A run folder holding only metrics.csv, env/config, and the rows ``keep`` selects."""
    src = rf.metrics_table(name)
    run = root / name
    run.mkdir(parents=True)
    src[keep(src)].to_csv(run / "metrics.csv", index=False)
    (run / "config.json").write_text(json.dumps({"profile": name}))
    return run


def test_sections_without_data_are_skipped_with_a_note(tmp_path, capsys):
    run = _small_run(
        tmp_path,
        "value-only",
        lambda m: (m["equation"] == "forum4x4") & m["model"].isin(["mlp_tanh", "fastkan"]) & (m["variant"] == "value")
        & (m["n_train"] == 1024),
    )  # fmt: skip
    out = tmp_path / "elsewhere"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(b"")  # from an older report: must not survive
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    md = (out / "report.md").read_text()
    for note in ("no Sobolev cells", "single n_train", "no throughput.csv", "no jacobians/<cell>.csv"):
        assert note in md
    assert "No failed cells." in md and "No env.json" in md
    assert (run / "metrics.csv").exists() and not (run / "report.html").exists()
    assert {p.name for p in (out / "figures").iterdir()} == {
        "fidelity_vs_fit.png",
        "entry_heatmaps.png",
        "edge_error.png",
        "hessian_heatmaps.png",
        "edge_error_hessian.png",
    }
    assert "one training only (value)" in md


def test_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_the_report_reads_cells_and_writes_nothing_into_its_inputs(tmp_path):
    run = rf.make_run(tmp_path, throughput=False, jacobians=False)
    cells = sorted((run / "cells").glob("*.csv"))
    cells[0].unlink()  # an interrupted run: one cell fewer than its (stale) metrics.csv
    stale = (run / "metrics.csv").read_bytes()
    r = load_run(run)
    assert r.metrics["cell_id"].nunique() == len(rf.grid()) - 1  # cells/ is the truth
    build_report(run, tmp_path / "out")
    assert (run / "metrics.csv").read_bytes() == stale  # a reader never rewrites its input
    assert not (run / "report.html").exists() and (tmp_path / "out" / "report.html").exists()


def test_a_throughput_folder_alone_can_be_reported(tmp_path):
    folder = tmp_path / "tp"
    folder.mkdir()
    rf.throughput_table().to_csv(folder / "throughput.csv", index=False)
    (folder / "env.json").write_text('{"torch": "2.13.0"}')
    html = build_report(folder).read_text()
    assert "Throughput" in html and "fastest engine per model configuration" in html
    assert "No fidelity grid in this folder" in html and "None" not in html  # no grid: the sections say so
    assert "Throughput folder tp: " in html and "over equation sets" not in html


def test_ci_is_student_t_and_one_seed_says_n1():
    three = aggregate(pd.DataFrame({"k": ["a"] * 3, "value": [1.0, 2.0, 4.0]}), ["k"]).iloc[0]
    # known answer: values 1, 2, 4 have sample std sqrt(7/3); the 95% t-interval uses t(0.975, 2) = 4.3027
    assert three["ci"] == pytest.approx(4.302652729749464 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-12)
    assert fmt_ci(0.25, float("nan"), 1) == "0.2500 (n=1)"
    df = pd.DataFrame({"k": ["a", "a", "b"], "value": [1.0, 3.0, 5.0]})
    agg = aggregate(df, ["k"]).set_index("k")
    assert agg.loc["a", "mean"] == 2 and agg.loc["a", "n"] == 2 and agg.loc["b", "n"] == 1
    assert math.isnan(agg.loc["b", "ci"])


def test_nan_values_are_left_out_of_means():
    df = pd.DataFrame({"k": ["a", "a", "a"], "value": [1.0, np.nan, 3.0]})
    agg = aggregate(df, ["k"]).iloc[0]
    assert agg["mean"] == 2 and agg["n"] == 2


def test_committed_example_rebuilds_with_todays_report_code(tmp_path):
    """results/example (linked from the README) still loads, and its rebuilt report has every section it should."""
    example = Path(__file__).resolve().parents[1] / "results" / "example"
    run = load_run(example)
    assert run.config["metrics_version"] == 3  # measured under the headline
    assert set(run.metrics["model"]) == {"mlp_tanh", "fastkan", "efficient_kan", "chebykan", "jenn"}
    assert set(run.metrics["seed"]) == {0, 1, 2}
    assert main(["report", str(example), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    for title in SECTION_TITLES:
        assert title in md, title
    assert "WARNING" not in md.split("\n## ")[0]  # no metric-version warning in the introduction
    # one training-set size: that section says so; every other figure is drawn (Hessians, JENN and the data set too)
    for name in FIGURES - {"n_train"}:
        assert (tmp_path / "figures" / f"{name}.png").exists(), name
    assert "data:equations/examples/oscillator.csv" in md and "Peers: JENN and SMT kriging" in md


def test_the_points_ratio_recovers_the_power_laws_put_in():
    # value: err = 0.1 (n/100)^-0.5, Sobolev: 0.4 (n/100)^-0.5 on sizes 64..1024 -> the value error at 1024 is
    # 0.03125, which Sobolev reaches at n = 1024 * 16 > its sizes (clipped: k <= 1); Sobolev 0.05 (n/100)^-0.5
    # reaches it at 1024/4 = 256, inside the sizes: k = 4 exactly (the seed factors are common to both fits)
    from bench.report.fig_training import points_ratio, pooled_points_ratio

    def frame(c_sob):
        rows = []
        for training, variant, c in (("value", "value", 0.1), ("sobolev β=0.5", "sobolev", c_sob)):
            for n in (64, 256, 1024):
                for f in (0.99, 1.0, 1.01):
                    rows.append(dict(equation="e", model="m", training=training, variant=variant, n_train=n,
                                     jac=c * f * (n / 100) ** -0.5))  # fmt: skip
        return pd.DataFrame(rows)

    r = points_ratio(frame(0.05)).iloc[0]
    assert r["k"] == pytest.approx(4.0, rel=1e-9) and r["bound"] == "" and r["k_lo"] <= 4.0 <= r["k_hi"] < 4.4
    assert r["n_sobolev"] == pytest.approx(256.0) and r["target_jac"] == pytest.approx(0.03125, rel=1e-3)
    worse = points_ratio(frame(0.4)).iloc[0]
    assert worse["bound"] == "≤" and worse["k"] == 1.0 and worse["k_hi"] <= 1.0  # never extrapolated past 1024
    flat = frame(0.05)
    flat.loc[flat["variant"] == "sobolev", "jac"] = 0.001  # far better and flat: already there at 64
    r = points_ratio(flat).iloc[0]
    assert r["bound"] == "≥" and r["k"] == 16.0 and np.isfinite([r["k_lo"], r["k_hi"]]).all()
    pooled = pooled_points_ratio(pd.concat([points_ratio(frame(0.05)).assign(equation=e) for e in "abc"]))
    assert pooled.iloc[0]["k"] == pytest.approx(4.0) and pooled.iloc[0]["sets"] == 3


def test_generated_sets_share_one_panel_per_family_and_dimensions():
    import pandas as pd

    from bench.report.style import set_group, set_panels

    assert set_group("gen:hard:7") == "gen:hard:*" and set_group("gen:hard:3:2x5") == "gen:hard:*:2x5"
    assert set_group("forum4x4") == "forum4x4" and set_group("file:my.py") == "file:my.py"
    df = pd.DataFrame({"equation": ["gen:mixed:1", "forum4x4", "gen:mixed:0", "gen:hard:2", "gen:mixed:1"]})
    panel, order, titles = set_panels(df)
    assert order == ["forum4x4", "gen:hard:*", "gen:mixed:*"]  # named sets first
    assert titles["gen:mixed:*"] == "gen:mixed:* (2 sets)" and titles["gen:hard:*"] == "gen:hard:* (1 set)"
    assert list(panel) == ["gen:mixed:*", "forum4x4", "gen:mixed:*", "gen:hard:*", "gen:mixed:*"]


def test_learning_rates_chosen_at_the_grids_edge_are_flagged():
    import pandas as pd

    from bench.report.leaderboard import chosen_lr_table
    from bench.report.load import RunData

    def table(grid, choices):
        rows = []
        for model, chosen in choices.items():
            for seed, lr in enumerate(chosen):
                key = dict(equation="e", model=model, family=model, variant="value", beta=1.0, n_train=64, seed=seed,
                           status="ok", cell_id=f"e__{model}__{seed}", output="", input="")  # fmt: skip
                rows.append({**key, "split": "", "metric": "lr", "bin": np.nan, "value": lr})
                trial = {**key, "split": "val", "metric": "lr_trial_val_loss", "value": 1.0}
                rows += [{**trial, "bin": c} for c in grid]
        return chosen_lr_table(RunData(Path("."), pd.DataFrame(rows), None))

    third = 10**-2.5  # 0.0031622776601683794: more digits than %g keeps, still matched
    t = table((1e-3, third, 1e-2), {"mlp_tanh": [1e-2, 1e-2, third], "chebykan": [1e-3, 1e-3, 1e-2]})
    assert t.rows == [["chebykan", "value", "3", "67%", "0%", "33%"], ["mlp_tanh", "value", "3", "0%", "33%", "67%"]]
    assert "AT THE GRID'S EDGE: mlp_tanh · value (67%) chose the largest candidate in at least 50%" in t.caption
    assert "chebykan · value (67%) chose the smallest" in t.caption
    two = table((3e-3, 1e-2), {"mlp_tanh": [1e-2, 1e-2, 3e-3], "fastkan": [1e-2] * 5})
    assert "EDGE: fastkan · value (100%) chose the largest candidate in at least 80%" in two.caption
    assert "mlp_tanh" not in two.caption  # 67% of a two-point grid is not lopsided enough to say


def test_an_archived_folder_with_metrics_csv_gz_reads_the_same(run, tmp_path):
    import gzip
    import shutil

    plain, packed = tmp_path / "plain", tmp_path / "packed"
    for d in (plain, packed):
        shutil.copytree(run, d, ignore=shutil.ignore_patterns("cells", "figures", "report.*"))
    with open(packed / "metrics.csv", "rb") as src, gzip.open(packed / "metrics.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (packed / "metrics.csv").unlink()
    pd.testing.assert_frame_equal(load_run(plain).metrics, load_run(packed).metrics)


def test_leaderboard_has_the_hessian_error_put_in(board, md):
    for model in rf.MODELS:
        for variant, beta in (("value", 1.0), ("sobolev", 0.5), ("hessian", 0.5)):
            if variant == "hessian" and rf.MODELS[model][0] == "jenn":
                continue  # the peer has no Hessian-supervised training
            r = _row(board, model, variant, beta)
            assert r["hess_err_rms_mean"] == pytest.approx(rf.expected_hess_error(model, variant), rel=1e-12)
    board_md = md.split("## Leaderboard")[1].split("\n## ")[0]
    assert board_md.count("[Hessian error (headline: range-scaled") == 2  # both sets measured it, linked definition
    # the Hessian variant exists on forum4x4 only: gen:smooth:3 has no such row, and the ranking leaves it out
    assert not ((board["equation"] == "gen:smooth:3") & (board["variant"] == "hessian")).any()
    ranking_section = md.split("## Ranking across equation sets")[1].split("\n## ")[0]
    assert "Methods left out of the ranks (they have no cell on some equation sets" in ranking_section
    assert "mlp_tanh · hessian β=0.5" in ranking_section and "Friedman test over 2 sets" in ranking_section


def test_the_second_derivative_section_shows_the_hessian_entries(run, md):
    from bench.report import fig_fidelity

    data = load_run(run)
    section = md.split("## Second derivatives")[1].split("\n## ")[0]
    for name in ("hessian_heatmaps", "pred_vs_true_hessian", "edge_error_hessian"):
        assert f"figures/{name}.png" in section
    # the heatmap matrix is symmetric, each distinct pair from its one row, mean over seeds
    d = fig_fidelity.reference_rows(fig_fidelity.test_metric(data, "hess_entry_nrmse"))
    d = d[(d["equation"] == "forum4x4") & (d["model"] == "chebykan") & (d["output"] == "f2")]
    mat = fig_fidelity._hessian_matrix(d, ["x1", "x2", "x3", "x4"])
    hess = rf.expected_hess_error("chebykan")
    assert np.allclose(mat, mat.T) and mat[0, 3] == pytest.approx(hess * (0.5 + ((1 + 0 + 6) % 5) / 2), rel=1e-12)
    # the worst Hessian entries are Hessian columns (and the Jacobian figure's are Jacobian ones)
    cid = rf.cell_id("forum4x4", "fastkan", "value", 1.0, max(rf.N_TRAIN), 0)
    jac = data.jacobians(cid)
    inputs, jac_cols, hess_cols = fig_fidelity.entry_columns(jac)
    assert inputs == ["x1", "x2", "x3", "x4"] and len(jac_cols) == 16 and len(hess_cols) == 4 * 10
    worst = fig_fidelity.worst_entries(jac, 3, fig_fidelity.cell_entry_nrmse(data, cid, 2), hess_cols)
    assert all(c.startswith("d2f") for c, _ in worst)
    # the runner's nRMSE of the worst pair: fastkan's error (seed 0) times the pattern's largest factor, 2.5
    assert worst[0][1] == pytest.approx(rf.expected_hess_error("fastkan") * rf.SEED_FACTOR[0] * 2.5, rel=1e-12)
    assert all(c in jac_cols for c, _ in fig_fidelity.worst_entries(jac, 3, None, jac_cols))
    assert fig_fidelity.entry_label("d2f1_dx1_dx3", inputs, order=2) == "∂²f1/∂x1∂x3"
    assert fig_fidelity.entry_label("df2_dx3", inputs) == "∂f2/∂x3"


def test_value_sobolev_and_hessian_training_are_compared_side_by_side(md):
    section = md.split("## Value, Sobolev and Hessian training")[1].split("\n## ")[0]
    assert "figures/training_comparison.png" in section
    rows = {line.split(" | ")[2]: line for line in section.splitlines() if line.startswith("| mlp_tanh |")}
    assert set(rows) == {"value", "sobolev β=0.5", "sobolev β=0.001", "sobolev β=1e-07", "hessian β=0.5 γ=0.1"}
    hess = fmt_ci(
        rf.expected_hess_error("mlp_tanh", "hessian"), *_seed_ci(rf.expected_hess_error("mlp_tanh", "hessian"))
    )
    assert hess in rows["hessian β=0.5 γ=0.1"]


def _seed_ci(mean: float) -> tuple[float, int]:
    """(95% CI half-width, n) of the three synthetic seeds of a configuration whose mean is ``mean``."""
    seeds = [mean * rf.SEED_FACTOR[s] for s in rf.SEEDS]
    return stats.t.ppf(0.975, 2) * np.std(seeds, ddof=1) / math.sqrt(3), 3


def test_the_peer_section_compares_jenn_with_the_zoo_best_and_the_comparable_size_best(run, md):
    from bench.report.peers import COMPARABLE, comparison

    comp = comparison(load_run(run))
    for eq in rf.EQUATIONS:
        c = comp[comp["equation"] == eq].set_index("role")
        errors = {(m, v, b): rf.expected_jac_error(m, v, b) for m in rf.MODELS for v, b in
                  [("value", 1.0), *(("sobolev", b) for b in rf.SOBOLEV), ("hessian", rf.HESSIAN[0])]
                  if not (v == "hessian" and (m == "jenn" or eq != rf.HESSIAN[2]))}  # fmt: skip
        zoo = {k: e for k, e in errors.items() if k[0] != "jenn"}
        peer_best = min(e for k, e in errors.items() if k[0] == "jenn")
        best = min(zoo, key=zoo.get)
        size = rf.params_of("jenn", eq)
        near = {k: e for k, e in zoo.items() if 1 / COMPARABLE <= rf.params_of(k[0], eq) / size <= COMPARABLE}
        best_near = min(near, key=near.get)
        assert c.loc["zoo best", "model"] == best[0] and c.loc["zoo best", "jac"] == pytest.approx(zoo[best])
        assert c.loc["zoo best, comparable size", "model"] == best_near[0] == "chebykan"  # the MLPs are 3x larger
        assert c.loc["zoo best, comparable size", "jac"] == pytest.approx(near[best_near])
        assert c[c.index.str.startswith("peer")]["jac"].min() == pytest.approx(peer_best)
    section = md.split("## Peers: JENN and SMT kriging")[1].split("\n## ")[0]
    assert "zoo's best recipe beats jenn's best Jacobian error on 2 of 2 set(s)" in section
    assert f"error ratio zoo / peer: median {0.003 / 0.018:.3f}" in section  # mlp_tanh vs jenn at beta 1e-7
    assert "Not in this run: SMT kriging (add `krg`" in section and "Not in this run: JENN" not in section


def test_the_main_equation_is_a_scored_formula_before_a_data_set():
    from types import SimpleNamespace

    from bench.report.build import main_equation

    rows = pd.DataFrame({"equation": ["data:a.csv", "data:b.csv", "gen:smooth:1"], "metric": "jac_err_rms",
                         "value": [np.nan, 0.1, 0.2]})  # fmt: skip
    assert main_equation(SimpleNamespace(ok=rows)) == "gen:smooth:1"
    assert main_equation(SimpleNamespace(ok=rows[rows["equation"] != "gen:smooth:1"])) == "data:b.csv"
    assert main_equation(SimpleNamespace(ok=rows.assign(equation=["forum4x4", "x", "y"]))) == "forum4x4"


def test_the_leaderboards_are_summarized_by_family_then_folded_per_set(board, html, md):
    """Above the per-set leaderboards, one row per method and set family with its geometric mean error and training
    seconds; each set's table sits folded (closed <details>) under its family's heading, in the contents."""
    from bench.report.leaderboard import family_scores

    fs = family_scores(board).set_index(["family", "method"])
    assert set(fs.index.get_level_values("family")) == {"smooth", "named"}  # gen:smooth:3 and forum4x4
    r = fs.loc[("named", "mlp_tanh · value")]
    assert r["jac"] == pytest.approx(rf.expected_jac_error("mlp_tanh"), rel=1e-12) and r["sets"] == r["of"] == 1
    assert r["train_s"] == pytest.approx(10 + rf.params_of("mlp_tanh", "forum4x4") / 1000, rel=1e-12)
    assert fs.loc[("named", "mlp_tanh · hessian β=0.5"), "sets"] == 1
    assert ("smooth", "mlp_tanh · hessian β=0.5") not in fs.index  # the Hessian variant ran on forum4x4 only
    section = md.split("## Leaderboard")[1].split("\n## ")[0]
    summary = section.split("### Summary by set family")[1].split("\n### ")[0]
    head = next(line for line in summary.splitlines() if line.startswith("| method"))
    assert head.index("smooth (1 set)") < head.index("named (1 set)")  # generated families first
    assert "| mlp_tanh · value | 2 of 2 | 0.0200 | 41.2 | 0.0200 | 41.2 |" in summary  # error, then training s
    assert "| mlp_tanh · hessian β=0.5 | 1 of 2 | – | – |" in summary  # ran on the named set only
    # each set folded under its family, the summary line naming the best method and its training time
    for eq in rf.EQUATIONS:
        m = re.search(rf'<details id="([^"]+)"><summary><span class="title">{re.escape(eq)}</span>'
                      r'<span class="summary">([^<]*)</span></summary>', html)  # fmt: skip
        assert m, eq
        assert "lowest Jacobian error 0.00300: mlp_tanh · sobolev β=1e-07" in m.group(2) and " s training)" in m[2]
        assert f'href="#{m.group(1)}"' in html  # linked from the contents
    assert "<details open" not in html and html.count("<details") == len(rf.EQUATIONS)
    assert section.index("### Smooth generated sets") < section.index("#### gen:smooth:3")
    assert section.index("### Named sets") < section.index("#### forum4x4")


def test_every_link_of_the_contents_has_its_target(html, md):
    """HTML: every in-page link names an element id that exists, ids are unique; Markdown: every link of the
    contents is the GitHub anchor of a heading (or the headline definition's own anchor)."""
    from bench.report.render import slug

    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    links = set(re.findall(r'href="#([^"]+)"', html))
    assert links and links <= set(ids), links - set(ids)
    for title in SECTION_TITLES:
        assert f'href="#{slug(title)}"' in html
    headings = [slug(h) for h in re.findall(r"^#{2,6} (.+)$", md, re.M)]
    targets = set(re.findall(r"\]\(#([^)]+)\)", md))
    assert targets <= set(headings) | {"headline"}, targets - set(headings)
    assert '<a id="headline"></a>' in md and "](#leaderboard)" in md and "](#forum4x4)" in md


def test_anchors_follow_githubs_rules():
    from bench.report.render import Group, Section, anchors, slug

    assert slug("Peers: JENN and SMT kriging") == "peers-jenn-and-smt-kriging"
    assert slug("Value, Sobolev and Hessian training") == "value-sobolev-and-hessian-training"
    assert slug("Training-set size") == "training-set-size" and slug("gen:smooth:3") == "gensmooth3"
    assert slug("Sobolev β sweep") == "sobolev-β-sweep" and slug("lorenz96_8") == "lorenz96_8"
    a, b = Section("Failed cells", ""), Section("Failed cells", "")
    g = Group("forum4x4")
    a.add(g)
    ids = anchors([a, b])
    assert (ids[id(a)], ids[id(b)], ids[id(g)]) == ("failed-cells", "failed-cells-1", "forum4x4")


def test_headline_columns_carry_and_link_their_definition(html, md):
    """Wherever a headline error is a column (leaderboards, family summary, ranking, peers, training comparison),
    its header says what it is and links to the definition at the top."""
    from bench.report.leaderboard import HEADLINE_DEF

    assert '<p class="definition" id="headline">' in html and "0 is exact, 1 (100%)" in html
    heads = re.findall(r'<th><a class="h" href="#headline">([^<]*)</a></th>', html)
    assert len(heads) >= 2 * len(rf.EQUATIONS) + 4
    assert all("(headline" in h for h in heads)
    for title in ("Ranking across equation sets", "Peers: JENN and SMT kriging", "Value, Sobolev and Hessian training"):
        section = md.split(f"## {title}")[1].split("\n## ")[0]
        assert f"({HEADLINE_DEF}" in section and "](#headline)" in section, title


def test_training_seconds_stand_beside_the_error_wherever_methods_are_compared(md):
    from bench.report.leaderboard import TRAIN_S

    for title in ("Ranking across equation sets", "Leaderboard", "Peers: JENN and SMT kriging",
                  "Value, Sobolev and Hessian training"):  # fmt: skip
        section = md.split(f"## {title}")[1].split("\n## ")[0]
        assert "training s" in section, title
    forum = md[md.index("*forum4x4: test split") :].split("\n#")[0]
    head = next(line for line in forum.splitlines() if line.startswith("| architecture"))
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols.index(TRAIN_S) == cols.index("Hessian err. median / p90 / max") + 1
    row = next(line for line in forum.splitlines() if line.startswith("| mlp_tanh | mlp | value |"))
    assert row.split("|")[1:-1][cols.index(TRAIN_S)].strip() == "41.2"  # 10 + params / 1000, mean over seeds


def test_engines_keep_one_distinct_colour_and_marker_and_configurations_read_plainly():
    from bench.report.fig_speed import _engine_look
    from bench.report.style import ENGINE_STYLES, config_label, engine_style

    colours = [c for c, _ in ENGINE_STYLES.values()]
    markers = [m for _, m in ENGINE_STYLES.values()]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)
    assert engine_style("some_new_engine") == engine_style("some_new_engine")  # stable, whatever else is drawn
    assert _engine_look("vmap_jacrev")["marker"] == ENGINE_STYLES["vmap_jacrev"][1]
    assert config_label('mlp_tanh 4->4 {"width": 61}') == "mlp_tanh · 4→4 · width=61"
    assert config_label("mlp_tanh") == "mlp_tanh"
    long = config_label('kan 2->3 {"grid": [1, 2, 3], "hidden": [64, 64, 64, 64], "spline_order": 3}')
    assert long.startswith("kan · 2→3 · grid=[1,2,3], hidden=") and long.endswith("…") and "{" not in long


def test_throughput_panels_are_titled_without_json(run):
    from bench.report import fig_speed, style

    with style.theme():
        fig = fig_speed.throughput_curves(load_run(run))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles and not any("{" in t or '"' in t for t in titles)
    assert any("mlp_tanh · 4→4" in t for t in titles)


def test_robust_axis_limits_leave_outliers_out():
    from bench.report.fig_fidelity import robust_limits

    rng = np.random.default_rng(0)
    true = rng.normal(size=1000)
    pred = true + 0.1 * rng.normal(size=1000)
    pred[:3] = [1e6, -1e6, np.nan]  # three wild predictions
    lo, hi = robust_limits(true, pred)
    assert -4 < lo < -2 and 2 < hi < 4  # the outliers do not set the scale
    assert robust_limits(np.ones(5), np.ones(5)) == pytest.approx((0.992, 1.008))  # a constant still gets a range


def test_predicted_vs_true_panels_say_their_set_and_how_many_points_fall_outside(run):
    from bench.report import fig_fidelity, style

    with style.theme():
        fig = fig_fidelity.pred_vs_true(load_run(run), "forum4x4")
    assert fig.get_suptitle().startswith("forum4x4: ")
    for ax in (a for a in fig.axes if a.get_visible()):
        assert ax.get_xlim() == ax.get_ylim()  # the identity line is the diagonal
