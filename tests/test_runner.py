"""The suite runner with a fast fake cell: stable ids, resumption, failures as rows, atomic files.

The fake cells are module-level functions so that spawned worker processes can unpickle them. Each call
leaves a marker file under ``<results root>/calls/`` so a test can count how often a cell really ran.
"""

import io
import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest

from bench.run import results, runner
from bench.run.config import Cell, Config, GridConfig, RunConfig, grid_cells
from bench.run.results import CellResult


def fake_cell(cell: Cell, config: Config, run_id: str) -> CellResult:
    """Two metric rows per cell; behaviour chosen by the model name (boom, kill, interrupt, nan)."""
    calls = Path(config.run.out, "calls")
    calls.mkdir(exist_ok=True)
    (calls / f"{results.cell_filename(cell.cell_id)}.{uuid.uuid4().hex}").touch()
    if cell.model == "boom":
        raise ValueError(f"boom in {cell.cell_id}")
    if cell.model == "kill":
        os._exit(3)  # the worker process dies without a word
    if cell.model == "interrupt" and not Path(config.run.out, "no-interrupt").exists():
        raise KeyboardInterrupt
    value = float("nan") if cell.model == "nan" else cell.seed + cell.beta
    base = results.cell_row(cell, run_id)
    rows = [
        {**base, "family": "fake", "params": 1, "flops": 2, "split": "test", "metric": "r2_min", "value": value,
         "status": "ok", "error": ""},
        {**base, "family": "fake", "params": 1, "flops": 2, "split": "", "metric": "train_seconds", "value": 0.0,
         "status": "ok", "error": ""},
    ]  # fmt: skip
    jac = pd.DataFrame({"x1": [0.5], "df1_dx1": [1.0], "df1_dx1_true": [1.0]})
    return CellResult(rows, jac)


def calls(root: Path) -> list[str]:
    d = root / "calls"
    return sorted(p.name.rsplit(".", 1)[0] for p in d.iterdir()) if d.exists() else []


def make_config(root: Path, models=("a", "b"), seeds=(0, 1), betas=(1.0, 0.5), workers=1) -> Config:
    grid = GridConfig(equations=("eq",), models=tuple(models), seeds=tuple(seeds), betas=tuple(betas))
    return Config(grid, RunConfig(profile="test", out=str(root), workers=workers, threads=1))


def new_run(root: Path, config: Config) -> Path:
    run_dir = root / "run"
    (run_dir / "cells").mkdir(parents=True, exist_ok=True)
    results.write_json(run_dir / "config.json", config.to_dict())
    return run_dir


# ---- cell ids ----


def test_cell_ids_are_stable_and_carry_every_dimension():
    grid = GridConfig(equations=("forum4x4", "gen:smooth:3"), models=("fastkan",), seeds=(0, 1), betas=(1.0, 1e-7))
    ids = [c.cell_id for c in grid_cells(grid)]
    assert ids[:4] == [
        "forum4x4__fastkan__value__n512__s0",
        "forum4x4__fastkan__value__n512__s1",
        "forum4x4__fastkan__sobolev1e-07__n512__s0",
        "forum4x4__fastkan__sobolev1e-07__n512__s1",
    ]
    assert ids == [c.cell_id for c in grid_cells(grid)]  # same grid, same ids, same order
    assert len(set(ids)) == len(ids) == 8
    assert Cell("forum4x4", "fastkan", 0.5, 512, 0).variant == "sobolev"


def test_cell_file_names_are_safe_and_distinct():
    names = ["gen:smooth:3__m__value__n8__s0", "gen_smooth_3__m__value__n8__s0", "file:a/b.py__m__value__n8__s0"]
    stems = [results.cell_filename(n) for n in names]
    assert all("/" not in s and ":" not in s for s in stems)
    assert len(set(stems)) == 3
    assert results.cell_filename("forum4x4__mlp_tanh__value__n512__s0") == "forum4x4__mlp_tanh__value__n512__s0"


# ---- running, failures, resumption ----


def test_a_run_writes_every_cell_and_metrics(tmp_path):
    cfg = make_config(tmp_path)
    run_dir = new_run(tmp_path, cfg)
    summary = runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    assert summary.exit_code == 0 and summary.planned == 8 and len(summary.outcomes) == 8
    assert runner.finish_run(summary, out=io.StringIO()) == 0
    table = pd.read_csv(run_dir / "metrics.csv", keep_default_na=False)
    assert list(table.columns) == list(results.METRIC_COLUMNS)
    assert len(table) == 16 and set(table["status"]) == {"ok"}
    assert len(list((run_dir / "jacobians").glob("*.csv"))) == 8


def test_a_failing_cell_is_a_row_and_the_grid_goes_on(tmp_path, capsys):
    cfg = make_config(tmp_path, models=("a", "boom"))
    run_dir = new_run(tmp_path, cfg)
    summary = runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    assert summary.exit_code == 1
    assert len(summary.failures) == 4 and all("boom in" in o.error for o in summary.failures)
    assert runner.finish_run(summary) == 1
    out = capsys.readouterr().out
    assert "4 failed cells" in out and "eq__boom__value__n512__s0: ValueError: boom in" in out
    table = results.read_cells(run_dir)
    failed = table[table["status"] == "failed"]
    assert len(failed) == 4 and set(failed["metric"]) == {"failed"} and failed["value"].isna().all()
    assert set(table[table["model"] == "a"]["status"]) == {"ok"}
    assert "Traceback" in (run_dir / "errors" / "eq__boom__value__n512__s0.txt").read_text()


def test_rows_outside_the_schema_fail_the_cell(tmp_path):
    cfg = make_config(tmp_path, models=("a",), seeds=(0,), betas=(1.0,))
    run_dir = new_run(tmp_path, cfg)

    summary = runner.run_grid(cfg, run_dir, bad_columns_cell, progress=False)
    assert summary.failures and "outside the results schema" in summary.failures[0].error


def bad_columns_cell(cell, config, run_id):
    return CellResult([{**results.cell_row(cell, run_id), "metric": "r2", "value": 1.0, "colour": "red"}])


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    # grid order: a (4 cells), interrupt (4 cells), z (4 cells); Ctrl-C arrives in the 5th cell
    cfg = make_config(tmp_path, models=("a", "interrupt", "z"))
    run_dir = new_run(tmp_path, cfg)
    first = runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    assert first.interrupted and first.exit_code == 130 and len(first.outcomes) == 4
    done = sorted(p.stem for p in (run_dir / "cells").glob("*.csv"))
    assert done == sorted(results.cell_filename(c.cell_id) for c in grid_cells(cfg.grid)[:4])
    assert not list(run_dir.rglob(f"*{results.TMP_MARK}*"))  # nothing half-written

    (tmp_path / "no-interrupt").touch()
    second = runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    assert second.exit_code == 0 and second.skipped == 4 and len(second.outcomes) == 8
    n_calls = pd.Series(calls(tmp_path)).value_counts()
    assert len(n_calls) == 12
    assert n_calls[[results.cell_filename(c.cell_id) for c in grid_cells(cfg.grid)[:4]]].eq(1).all()
    assert n_calls.max() == 2  # only the interrupted cell ran twice
    assert len(results.read_cells(run_dir)) == 24

    third = runner.run_grid(cfg, run_dir, fake_cell, progress=False)  # all done: nothing runs
    assert third.skipped == 12 and not third.outcomes and len(calls(tmp_path)) == 13


def test_retry_failed_reruns_only_failed_cells(tmp_path):
    cfg = make_config(tmp_path, models=("a", "boom"), seeds=(0,), betas=(1.0,))
    run_dir = new_run(tmp_path, cfg)
    runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    again = runner.run_grid(cfg, run_dir, fake_cell, retry_failed=True, progress=False)
    assert [o.cell_id for o in again.outcomes] == ["eq__boom__value__n512__s0"]


def test_stale_temporary_files_are_removed_on_resume(tmp_path):
    cfg = make_config(tmp_path, models=("a",), seeds=(0,), betas=(1.0,))
    run_dir = new_run(tmp_path, cfg)
    stale = run_dir / "cells" / f"x.csv{results.TMP_MARK}999"
    stale.write_text("half a ta")
    runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    assert not stale.exists()


def test_process_pool_runs_the_grid(tmp_path):
    cfg = make_config(tmp_path, models=("a", "boom"), seeds=(0, 1), betas=(1.0,), workers=2)
    run_dir = new_run(tmp_path, cfg)
    summary = runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    assert len(summary.outcomes) == 4 and len(summary.failures) == 2
    assert len(list((run_dir / "cells").glob("*.csv"))) == 4


def test_a_cell_that_kills_its_worker_is_failed_and_the_rest_finish(tmp_path):
    cfg = make_config(tmp_path, models=("a", "kill", "z"), seeds=(0,), betas=(1.0,), workers=2)
    run_dir = new_run(tmp_path, cfg)
    summary = runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    status = {o.cell_id: o.status for o in summary.outcomes}
    assert status == {
        "eq__a__value__n512__s0": "ok",
        "eq__kill__value__n512__s0": "failed",
        "eq__z__value__n512__s0": "ok",
    }
    table = results.read_cells(run_dir)
    assert "worker process died" in table.loc[table["model"] == "kill", "error"].iloc[0]
    assert summary.exit_code == 1


# ---- results folder ----


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "cells.csv"
    results.atomic_write_text(target, "old\n")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        results.atomic_write_text(target, "new but never finished\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cells.csv"]  # no temporary file left behind


def test_run_folders_and_the_latest_pointer(tmp_path, monkeypatch):
    first = results.create_run_dir(tmp_path, "quick")
    results.write_json(first / "config.json", {})
    second = results.create_run_dir(tmp_path, "quick")  # same second: a suffix keeps it distinct
    results.write_json(second / "config.json", {})
    assert first != second and first.name.endswith("-quick")
    assert results.resolve_run_dir(tmp_path / "latest") == second.resolve()

    def no_symlinks(*a, **k):
        raise OSError("symlinks not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    results.set_latest(tmp_path, first)
    assert (tmp_path / "LATEST").read_text().strip() == first.name
    (tmp_path / "latest").unlink()
    assert results.resolve_run_dir(tmp_path) == first
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        results.resolve_run_dir(tmp_path / "nothing")


def test_open_run_writes_config_and_env_and_resume_reuses_them(tmp_path):
    cfg = make_config(tmp_path, models=("a",), seeds=(0,), betas=(1.0,))
    resolved, run_dir = runner.open_run(cfg)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["run_id"] == run_dir.name and saved["grid"]["models"] == ["a"]
    env = json.loads((run_dir / "env.json").read_text())
    for key in ("jacbench_commit", "torch_version", "python", "device_name", "dtype", "tf32", "torch_threads"):
        assert key in env
    assert resolved.run.workers == 1 and resolved.run.device == "cpu"

    other = make_config(tmp_path, models=("z",), workers=1)
    again, same_dir = runner.open_run(other, resume=run_dir)
    assert same_dir == run_dir and again.grid.models == ("a",)  # the saved grid wins
    assert len(json.loads((run_dir / "env.json").read_text())["resumed"]) == 1


def test_interrupt_in_a_worker_stops_the_pool_and_keeps_finished_cells(tmp_path):
    cfg = make_config(tmp_path, models=("a", "interrupt"), seeds=(0,), betas=(1.0,), workers=2)
    run_dir = new_run(tmp_path, cfg)
    summary = runner.run_grid(cfg, run_dir, fake_cell, progress=False)
    assert summary.interrupted and summary.exit_code == 130
    assert not (run_dir / "cells" / "eq__interrupt__value__n512__s0.csv").exists()
    assert not list(run_dir.rglob(f"*{results.TMP_MARK}*"))


# ---- a tiny real grid, end to end through the CLI ----


@pytest.mark.slow
def test_tiny_real_grid_end_to_end(tmp_path, capsys):
    from bench.cli import main

    args = ["run", "--equations", "forum4x4", "--models", "mlp_tanh", "--seeds", "0", "--betas", "1,0.5",
            "--n-train", "64", "--steps", "30", "--set", "grid.n_test=50", "--set", "model_overrides.mlp_tanh.width=16",
            "--match-params", "0",
            "--workers", "2", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    run_dir = results.resolve_run_dir(tmp_path / "latest")
    table = pd.read_csv(run_dir / "metrics.csv", keep_default_na=False)
    # the default (quick) profile's Hessian variant comes along: Sobolev plus a Hessian term on forum4x4
    assert set(table["status"]) == {"ok"} and set(table["variant"]) == {"value", "sobolev", "hessian"}
    assert "hess_err_rms" in set(table["metric"]) and set(table["hess_weight"].astype(float)) == {0.0, 0.1}
    assert set(table["family"]) == {"mlp"} and (table["params"].astype(int) > 0).all()
    for metric in ("r2", "r2_min", "rmse", "jac_err_rms", "jac_err_median", "jac_err_p90",
                   "jac_err_max", "jac_entry_nrmse", "jac_sign_agree", "jac_err_by_edge", "denorm_check",
                   "train_seconds", "train_steps"):  # fmt: skip
        assert metric in set(table["metric"]), metric
    assert set(table.loc[table["metric"] == "r2", "split"]) == {"train", "test"}
    assert (table.loc[table["metric"] == "denorm_check", "value"].astype(float) < 1e-9).all()
    assert (table.loc[table["metric"] == "train_steps", "value"].astype(float) == 30).all()
    jac = pd.read_csv(run_dir / "jacobians" / "forum4x4__mlp_tanh__value__n64__s0.csv")
    assert len(jac) == 50 and list(jac.columns[:6]) == ["x1", "x2", "x3", "x4", "df1_dx1", "df1_dx1_true"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["grid"]["models"] == ["mlp_tanh"] and config["train_resolved"]["steps"] == 30
    capsys.readouterr()
    assert main(["run", "--resume", str(tmp_path / "latest"), "--no-progress"]) == 0  # nothing left to do
    assert "3 already done, 0 finished now" in capsys.readouterr().out


@pytest.mark.slow
def test_a_real_cell_whose_model_returns_nan_fails_and_the_grid_goes_on(tmp_path, monkeypatch):
    import torch
    from torch import nn

    import models
    from models.base import ZooModule

    class NanNet(ZooModule, nn.Module):
        family = "test"

        def __init__(self, n_in, n_out):
            super().__init__()
            self.n_in, self.n_out, self.lin = n_in, n_out, nn.Linear(n_in, n_out)

        def forward(self, x):
            return self.lin(x) * torch.nan

        def flops_per_sample(self):
            return 0

    monkeypatch.setitem(models.registry._MODELS, "nan_net", lambda n_in=4, n_out=4: NanNet(n_in, n_out))
    grid = GridConfig(equations=("forum4x4",), models=("nan_net", "mlp_tanh"), n_train=(32,), n_test=20)
    cfg = Config(grid, RunConfig(out=str(tmp_path), workers=1, threads=1), {"steps": 5})
    run_dir = new_run(tmp_path, cfg)
    from bench.fidelity.cell import run_cell

    summary = runner.run_grid(cfg, run_dir, run_cell, progress=False)
    assert summary.exit_code == 1
    (failure,) = summary.failures
    assert failure.cell_id == "forum4x4__nan_net__value__n32__s0" and "nan" in failure.error.lower()
    table = results.read_cells(run_dir)
    assert set(table.loc[table["model"] == "mlp_tanh", "status"]) == {"ok"}


def test_a_pool_that_broke_before_a_submit_gets_the_cell_back_unrun(tmp_path):
    """The race CI met: a worker dies between the wait and the next submit; that cell must go back, not crash."""
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    from bench.run.runner import _Schedule

    class BrokenPool:
        def submit(self, *args, **kwargs):
            raise BrokenProcessPool("a child process terminated abruptly")

    cfg = make_config(tmp_path, models=("a", "z"), seeds=(0,), betas=(1.0,), workers=2)
    cells = grid_cells(cfg.grid)

    class Bar:
        def __init__(self):
            self.running = []

        def start(self, cell_id):
            self.running.append(cell_id)

    sched = _Schedule(fake_cell, cells, cfg, tmp_path, runner.RunSummary(tmp_path, len(cells), 0), Bar())
    assert sched._fill(BrokenPool()) is False
    assert list(sched.pending) == cells and not sched.inflight  # nothing lost, nothing marked as running
    sched.pending, sched.suspects = deque(), deque(cells[:1])
    assert sched._fill(BrokenPool()) is False and list(sched.suspects) == cells[:1]
