"""`python -m bench run`: plugin models reach every worker and survive resume; resume honours or refuses flags."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main

PLUGIN = textwrap.dedent('''
    import models
    from models.mlp import mlp


    @models.register_model
    def plugin_net_{tag}(n_in=4, n_out=4, width=6):
        """A tiny MLP from a plugin file."""
        return mlp(n_in=n_in, n_out=n_out, width=width, depth=1)
''')


def _plugin(tmp_path: Path, tag: str) -> Path:
    path = tmp_path / f"my_models_{tag}.py"
    path.write_text(PLUGIN.replace("{tag}", tag))
    return path


def _cells(run: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f, keep_default_na=False) for f in sorted((run / "cells").glob("*.csv"))])


@pytest.mark.slow
def test_a_plugin_model_runs_in_two_workers_and_resumes(tmp_path):
    plugin = _plugin(tmp_path, "a")
    base = ["--plugin", str(plugin), "run", "--models", "plugin_net_a", "--equations", "forum4x4", "--steps", "5",
            "--set", "grid.n_test=20", "--n-train", "32", "--workers", "2", "--threads", "1",
            "--set", "grid.hess_weights=0", "--no-progress"]  # fmt: skip
    assert main([*base, "--seeds", "0,1", "--out", str(tmp_path / "res")]) == 0
    run = (tmp_path / "res" / "latest").resolve()
    cells = _cells(run)
    assert set(cells["status"]) == {"ok"} and cells["cell_id"].nunique() == 4  # both workers knew the model
    assert json.loads((run / "config.json").read_text())["run"]["plugins"] == [str(plugin.resolve())]
    (run / "cells" / sorted(p.name for p in (run / "cells").glob("*.csv"))[0]).unlink()  # one cell to redo
    # a fresh process would not know plugin_net_a: the resumed run loads it from config.json, in its workers too
    assert main(["run", "--resume", str(run), "--workers", "2", "--no-progress"]) == 0
    assert set(_cells(run)["status"]) == {"ok"} and _cells(run)["cell_id"].nunique() == 4


def test_resume_refuses_a_new_plugin(tmp_path, capsys):
    plugin, other = _plugin(tmp_path, "b"), _plugin(tmp_path, "c")
    args = ["--plugin", str(plugin), "run", "--models", "plugin_net_b", "--equations", "forum4x4", "--steps", "1",
            "--set", "grid.n_test=5", "--n-train", "8", "--seeds", "0", "--betas", "1", "--workers", "1",
            "--no-progress", "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 0
    run = (tmp_path / "res" / "latest").resolve()
    assert main(["--plugin", str(other), "run", "--resume", str(run)]) == 2
    assert "a resumed run keeps its models" in capsys.readouterr().err


@pytest.fixture
def finished_run(tmp_path) -> Path:
    args = ["run", "--models", "mlp_tanh", "--equations", "forum4x4", "--steps", "1", "--set", "grid.n_test=5",
            "--n-train", "8", "--seeds", "0,1", "--betas", "1", "--workers", "1", "--no-progress",
            "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 0
    return (tmp_path / "res" / "latest").resolve()


def test_resume_dry_run_stays_dry(finished_run, capsys):
    first = sorted((finished_run / "cells").glob("*.csv"))[0]
    first.unlink()
    env_before = (finished_run / "env.json").read_text()
    capsys.readouterr()
    assert main(["run", "--resume", str(finished_run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 done, 1 to run" in out and first.stem in out
    assert not first.exists()  # nothing ran
    assert (finished_run / "env.json").read_text() == env_before  # nothing recorded either


@pytest.mark.parametrize(
    "flags",
    [["--device", "cpu"], ["--dtype", "float64"], ["--out", "elsewhere"], ["--set", "run.engine=vmap_jacrev"],
     ["--set", "run.jacobian_rows=3"], ["--profile", "full"], ["--steps", "3"]],
    ids=lambda f: " ".join(f),
)  # fmt: skip
def test_resume_refuses_flags_it_cannot_honour(finished_run, flags, capsys):
    assert main(["run", "--resume", str(finished_run), *flags]) == 2
    err = capsys.readouterr().err
    assert "cannot honour" in err and flags[0] in err and (flags[0] != "--set" or flags[1].split("=")[0] in err)


def test_resume_takes_new_workers_and_threads(finished_run):
    assert main(["run", "--resume", str(finished_run), "--workers", "1", "--threads", "1", "--no-progress"]) == 0


@pytest.mark.slow
def test_throughput_from_a_run_measures_the_configurations_it_trained(tmp_path):
    # sine1d is 1 -> 1 and --match-params resizes every model: the default 4 -> 4 networks are other networks.
    args = ["run", "--models", "mlp_tanh,chebykan", "--equations", "forum4x4,sine1d", "--match-params", "300",
            "--steps", "1", "--set", "grid.n_test=5", "--n-train", "8", "--seeds", "0", "--betas", "1",
            "--workers", "1", "--no-progress", "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 0
    run = (tmp_path / "res" / "latest").resolve()
    assert main(["throughput", "--from-run", str(run), "--engines", "vmap_jacrev", "--batch-sizes", "4",
                 "--repeats", "1", "--warmup", "0", "--no-jax", "--device", "cpu"]) == 0  # fmt: skip
    from bench.report.leaderboard import leaderboard
    from bench.report.load import load_run

    data = load_run(run)
    cells = data.ok.drop_duplicates(["equation", "model"]).set_index("model_config")["params"]
    speed = data.throughput[data.throughput["engine"] == "vmap_jacrev"].set_index("model_config")["params"]
    assert len(cells) == 4 and sorted(cells.index) == sorted(speed.index)  # one measured row per trained network
    assert (speed[cells.index] == cells).all()  # and the parameter counts agree
    assert "sine1d" not in str(cells.index) and any("1->1" in c for c in cells.index)
    board = leaderboard(data)
    assert board["jac_per_s_cpu"].notna().all() and not board["speed_missing"].any()


def test_plugins_given_as_a_config_key_are_loaded_too(tmp_path):
    plugin = _plugin(tmp_path, "d")
    args = ["run", "--models", "plugin_net_d", "--equations", "forum4x4", "--steps", "1", "--set", "grid.n_test=5",
            "--n-train", "8", "--seeds", "0", "--betas", "1", "--workers", "1", "--no-progress",
            "--set", f"run.plugins=['{plugin}']", "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 0
    run = (tmp_path / "res" / "latest").resolve()
    assert json.loads((run / "config.json").read_text())["run"]["plugins"] == [str(plugin.resolve())]


def test_a_misspelt_engine_is_an_error_before_any_cell_trains(tmp_path, capsys):
    args = ["run", "--models", "mlp_tanh", "--equations", "forum4x4", "--steps", "1", "--seeds", "0", "--betas", "1",
            "--set", "run.engine=vmap_jacrevv", "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 2
    assert "run.engine: unknown engine 'vmap_jacrevv' (did you mean 'vmap_jacrev'" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()  # nothing was started


def test_a_cell_keeps_its_training_history_and_says_whether_it_was_still_improving(tmp_path):
    args = ["run", "--models", "mlp_tanh", "--equations", "forum4x4", "--steps", "40", "--set", "grid.n_test=5",
            "--n-train", "32", "--seeds", "0", "--betas", "1", "--workers", "1", "--no-progress",
            "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 0
    run = (tmp_path / "res" / "latest").resolve()
    (hist,) = sorted((run / "history").glob("*.csv"))
    h = pd.read_csv(hist)
    assert list(h.columns) == ["step", "seconds", "lr", "loss", "val_loss"] and h["step"].iloc[-1] == 40
    cells = _cells(run)
    flag = cells[cells["metric"] == "still_improving"]["value"]
    assert len(flag) == 1 and float(flag.iloc[0]) in (0.0, 1.0)


def test_the_learning_rate_is_chosen_on_the_validation_split_and_recorded_per_cell(tmp_path):
    args = ["run", "--models", "mlp_tanh", "--equations", "sine1d", "--steps", "60", "--set", "grid.n_test=5",
            "--set", "train.lr_grid=1e-7,1e-2", "--n-train", "40", "--seeds", "0", "--betas", "1,0.5",
            "--workers", "1", "--no-progress", "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) == 0
    cells = _cells(tmp_path / "res" / "latest")
    assert cells["cell_id"].nunique() == 2
    for _, c in cells.groupby("cell_id"):
        trials = c[c["metric"] == "lr_trial_val_loss"]
        assert list(trials["bin"]) == ["1e-07", "0.01"] and set(trials["split"]) == {"val"}
        best = trials.loc[trials["value"].astype(float).idxmin(), "bin"]
        chosen = float(c[c["metric"] == "lr"]["value"].iloc[0])
        assert chosen == float(best) == 1e-2  # 1e-7 cannot fit in 60 steps: the choice is known
        assert float(c[c["metric"] == "tune_seconds"]["value"].iloc[0]) > 0


def test_an_lr_grid_without_validation_points_is_refused_before_any_cell(tmp_path, capsys):
    args = ["run", "--models", "mlp_tanh", "--equations", "sine1d", "--steps", "5", "--set", "train.lr_grid=1e-3,1e-2",
            "--set", "grid.val_fraction=0", "--no-progress", "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) != 0
    assert "validation split" in capsys.readouterr().err and not (tmp_path / "res").exists()


def test_a_width_override_under_match_params_is_an_error_before_any_cell(tmp_path, capsys):
    args = ["run", "--models", "mlp_tanh", "--equations", "sine1d", "--steps", "5", "--match-params", "3000",
            "--set", "model_overrides.mlp_tanh.width=16", "--no-progress", "--out", str(tmp_path / "res")]  # fmt: skip
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "drop ['width']" in err and "--match-params 0" in err and not (tmp_path / "res").exists()
