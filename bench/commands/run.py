"""`python -m bench run`: the fidelity grid (equations x models x variants x sizes x seeds) -> results/<run-id>/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "run"
HELP = "train every model of a grid on every equation set and measure fit and Jacobian fidelity -> results/<run-id>/"

DEFAULT_PROFILE = "quick"
# flag -> dotted config key; the value is passed as typed (lists as comma-separated strings)
_GRID_FLAGS = {
    "models": "grid.models", "equations": "grid.equations", "seeds": "grid.seeds", "betas": "grid.betas",
    "n_train": "grid.n_train", "match_params": "grid.match_params", "steps": "train.steps",
}  # fmt: skip
_RUN_FLAGS = {
    "workers": "run.workers", "threads": "run.threads", "device": "run.device", "dtype": "run.dtype", "out": "run.out",
    "executor": "run.executor", "address": "run.address",
}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile", default=None,
        help=f"base profile (default {DEFAULT_PROFILE}; `python -m bench list profiles`; timed: results/measurements)",
    )  # fmt: skip
    p.add_argument(
        "--config", metavar="FILE", help="TOML file whose keys override the profile's ([grid], [train], [run])"
    )
    p.add_argument("--models", help="comma-separated model names or patterns, e.g. 'fastkan*,mlp_tanh'")
    p.add_argument("--equations", help="comma-separated equation sets or patterns, e.g. 'forum4x4,gen:smooth:*'")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--betas", help="value-loss weights, e.g. 1,0.5 (1 = value only, < 1 = Sobolev)")
    p.add_argument("--n-train", dest="n_train", help="training-set sizes, e.g. 256,1024")
    p.add_argument("--steps", type=int, help="optimizer steps per cell (train.steps)")
    p.add_argument("--match-params", dest="match_params", type=int, metavar="N", help="size every model to ~N params")
    p.add_argument("--workers", type=int, help="worker processes (0 = one per core; CUDA: up to 4)")
    p.add_argument("--threads", type=int, help="torch threads per worker (0 = cores // workers; ray: 1 per cell)")
    p.add_argument("--executor", choices=["local", "ray"],
                   help="local: a process pool on this machine (default); ray: one Ray task per cell")  # fmt: skip
    p.add_argument("--address", help="with --executor ray: 'auto' or HOST:PORT of a running Ray cluster "
                   "(default: start a Ray instance on this machine)")  # fmt: skip
    p.add_argument("--device", help="cpu | cuda | auto")
    p.add_argument("--dtype", help="float32 | float64")
    p.add_argument("--out", metavar="DIR", help="results root (default results); the run goes to DIR/<run-id>")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="any config key, e.g. --set train.lr=1e-3 --set 'grid.betas=[1, 0.1]'; repeatable")  # fmt: skip
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run folder (or results/latest): finished cells are kept"
    )
    p.add_argument("--retry-failed", action="store_true", help="with --resume: also re-run cells recorded as failed")
    p.add_argument("--dry-run", action="store_true", help="print the resolved grid and its cells, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict:
    return {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag) is not None}


# What --resume can honour: how the run executes (workers, threads, executor), never what it measures or where it
# goes. They are not inherited: a resumed run uses the ones given now (defaults: local, one worker per core).
_RESUMABLE = {"workers": "run.workers", "threads": "run.threads", "executor": "run.executor", "address": "run.address"}


def _resume_conflicts(args: argparse.Namespace, sets: dict) -> list[str]:
    """The flags a resumed run cannot honour (its grid, training, device, dtype and folder are saved)."""
    flags = {**_GRID_FLAGS, **{f: k for f, k in _RUN_FLAGS.items() if f not in _RESUMABLE}}
    bad = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f) is not None]
    bad += [f"--set {k}" for k in sets if k not in _RESUMABLE.values()]
    bad += ["--config"] if args.config else []
    bad += [f"--profile {args.profile}"] if args.profile is not None else []
    return bad


def run(args: argparse.Namespace) -> int:
    from bench.run import config as C
    from bench.run import runner

    sets = C.parse_overrides(args.set)
    plugins = [str(Path(p).resolve()) for p in getattr(args, "plugin", [])]
    if args.resume:
        bad = _resume_conflicts(args, sets)
        if bad:
            raise C.ConfigError(
                f"--resume continues a run with its saved config (grid, training, device, dtype, results folder); "
                f"it cannot honour {', '.join(bad)}. Drop them, or start a new run without --resume "
                "(--workers, --threads, --executor and --address may change)"
            )
        cfg = C.load_config(None, None, {**_overrides(args, _RESUMABLE), **sets}, expand=False)
        _check_executor(cfg)
        cfg, run_dir = runner.open_run(cfg, resume=args.resume, plugins=plugins, record=not args.dry_run)
        if args.dry_run:
            return _print_plan(cfg, runner.pending_cells(C.grid_cells(cfg.grid), run_dir, args.retry_failed))
    else:
        overrides = {**_overrides(args, _GRID_FLAGS), **_overrides(args, _RUN_FLAGS), **sets}
        if plugins:
            overrides["run.plugins"] = plugins
        cfg = C.load_config(args.profile or DEFAULT_PROFILE, args.config, overrides)
        _check_engines(cfg)
        _check_sizes(cfg)
        _check_executor(cfg)
        if args.dry_run:
            return _print_plan(cfg)
        cfg, run_dir = runner.open_run(cfg, name=_run_name(cfg, args, sets))
    r = cfg.run
    cells = C.grid_cells(cfg.grid)
    n = len(cells)
    if any(w > 0 for w in cfg.grid.hess_weights) and not any(c.variant == "hessian" for c in cells):
        g = cfg.grid
        print(f"note: grid.hess_weights {list(g.hess_weights)} selects no cell of this grid (grid.hess_equations "
              f"{list(g.hess_equations)}, grid.hess_betas {list(g.hess_betas)} against its equations and betas): no "
              "Hessian-supervised training in this run", file=sys.stderr)  # fmt: skip
    _print_skipped(cfg)
    _note_hessian_betas(cfg, cells, args)
    where = f"{r.workers} workers x {r.threads} threads" if r.executor == "local" else (
        f"Ray {'at ' + r.address if r.address else 'on this machine'}, {r.threads} CPU(s) per cell")  # fmt: skip
    print(f"{run_dir}: {n} cells, {where}, {r.device} {r.dtype}", flush=True)
    from bench.fidelity.cell import run_cell  # the runner is handed its cell function

    summary = runner.run_grid(cfg, run_dir, run_cell, retry_failed=args.retry_failed, progress=not args.no_progress)
    return runner.finish_run(summary)


def _run_name(cfg, args: argparse.Namespace, sets: dict) -> str:
    """The new run's name: its profile's, or "<profile>-custom" when the grid or training was changed, so a run is
    never mistaken for the profile it started from."""
    grid_flags = [f for f in _GRID_FLAGS if getattr(args, f) is not None]
    changed = grid_flags or args.config or any(k.split(".")[0] in ("grid", "train") for k in sets)
    return f"{cfg.run.profile}-custom" if changed else cfg.run.profile


def _note_hessian_betas(cfg, cells, args: argparse.Namespace) -> None:
    """--betas sets the plain cells' betas; say which Hessian cells (several times a plain cell each: measured in
    results/measurements/README.md, "Training with a Hessian term") the grid keeps."""
    hess = [c for c in cells if c.variant == "hessian"]
    if args.betas is None or not hess:
        return
    betas = sorted({c.beta for c in hess})
    print(f"note: --betas {args.betas} applies to the plain cells; the grid keeps {len(hess)} Hessian-supervised "
          f"cells at beta {', '.join(f'{b:g}' for b in betas)} (grid.hess_betas {list(cfg.grid.hess_betas)}, "
          f"hess_weights {[w for w in cfg.grid.hess_weights if w > 0]}), each about 10x a plain cell's cost. Drop "
          "them with --set 'grid.hess_weights=[0]'", file=sys.stderr)  # fmt: skip


def _check_engines(cfg) -> None:
    """run.engine and train.jac_engine name engines (or auto): checked before any cell trains."""
    from bench.engines import ENGINES
    from bench.engines.base import UnknownEngine, check_engine_name
    from bench.run.config import ConfigError

    for key, name in (("run.engine", cfg.run.engine), ("train.jac_engine", cfg.train.get("jac_engine", "auto"))):
        try:
            check_engine_name(name, ["auto", *ENGINES])
        except UnknownEngine as err:
            raise ConfigError(f"{key}: {err}") from None


def _check_executor(cfg) -> None:
    """--executor ray: Ray is installed and the cluster answers, before any folder is made."""
    if cfg.run.executor == "ray":
        from bench.run.ray_executor import preflight

        preflight(cfg.run.address)


def _check_sizes(cfg) -> None:
    """Every model can be built as configured (model_overrides, sized to grid.match_params): before any cell."""
    from bench import peers
    from bench.fidelity.cell import model_overrides, trained_configurations
    from bench.run.availability import check_sizes
    from bench.run.config import ConfigError

    check_sizes(cfg.grid)  # a data set with fewer rows than the splits need
    try:
        trained_configurations(cfg)
        for name in (m for m in cfg.grid.models if peers.is_peer(m)):  # a peer's options, sized like the zoo's
            for eq in {(e.n_in, e.n_out) for e in map(_equation, cfg.grid.equations)}:
                peers.get(name).options(**model_overrides(name, cfg.grid, *eq))
    except ValueError as err:
        hint = ""
        if cfg.grid.match_params and "match_params" in str(err):
            hint = (f" (grid.match_params = {cfg.grid.match_params} sizes every model; give --match-params 0 to use "
                    "model_overrides' sizes instead)")  # fmt: skip
        raise ConfigError(f"{err}{hint}") from None


def _equation(name: str):
    import equations

    return equations.get(name)


def _print_skipped(cfg) -> None:
    """A note on the cells the grid leaves out because they cannot run (bench.run.availability), by reason."""
    from collections import Counter

    from bench.run.config import skipped_cells

    for why, k in Counter(why for _, why in skipped_cells(cfg.grid)).items():
        print(f"note: {k} cell(s) left out: {why}", file=sys.stderr)


def _print_plan(cfg, todo=None) -> int:
    """The resolved grid and its cells; with ``todo`` (a resumed run), only the cells still to run."""
    from bench.run.config import grid_cells

    g = cfg.grid
    cells = grid_cells(g)
    _print_skipped(cfg)
    if todo is None:
        print(f"profile {cfg.run.profile}: {len(cells)} cells")
    else:
        print(f"profile {cfg.run.profile}: {len(cells)} cells, {len(cells) - len(todo)} done, {len(todo)} to run")
    for key in ("equations", "models", "betas", "n_train", "seeds"):
        print(f"  {key}: {', '.join(map(str, getattr(g, key)))}")
    print(f"  train: {dict(cfg.train)}")
    for c in cells if todo is None else todo:
        print(f"  {c.cell_id}")
    return 0
