"""The suite runner: a grid of cells over a process pool or a Ray cluster, resumable, one atomic file per cell.

Workers compute (``compute_cell`` returns the cell's tables); the driver alone writes the run folder
(``write_payload``), whichever executor runs the cells: ``local`` (this machine's process pool) or ``ray``
(``bench.run.ray_executor``). Resumption works at the level of cells: a cell is done when ``cells/<cell>.csv``
exists, and the driver writes that file atomically the moment the cell's result arrives (its
``jacobians/<cell>.csv`` and ``history/<cell>.csv`` first). A re-run of the same folder, with either executor,
skips done cells, so a crash, a killed worker or Ctrl-C loses only the cells in flight.
A cell that raises is recorded as a ``failed`` row with its message (traceback in ``errors/<cell>.txt``) and
the grid goes on. A worker that dies takes its in-flight cells with it: they are retried one at a time, and
a cell that kills its worker when running alone is recorded as failed.

The cell function is a parameter (``cell_fn(cell, config, run_id) -> CellResult``) so tests can inject a
fast fake; it must be picklable (a module-level function) when more than one worker runs.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

import equations
import models
from bench.run import budget, results
from bench.run.config import Cell, Config, ConfigError, TrainConfig, grid_cells
from bench.run.envinfo import collect_env
from bench.run.machine import resolve_device, set_threads, usable_cores
from bench.run.results import CellResult
from equations.datafile import sha256

CellFn = Callable[[Cell, Config, str], CellResult]


@dataclass(frozen=True)
class Outcome:
    cell_id: str
    status: str  # ok | failed | over_budget (results.OVER_BUDGET: ran past its method's time budget, not an error)
    error: str
    seconds: float


@dataclass
class RunSummary:
    run_dir: Path
    planned: int  # cells in the grid
    skipped: int  # already done before this run started
    outcomes: list[Outcome] = field(default_factory=list)  # cells finished by this run
    interrupted: bool = False

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status not in ("ok", results.OVER_BUDGET)]

    @property
    def over_budget(self) -> list[Outcome]:
        """Cells whose method ran past its time budget: a measured outcome (the map's ceiling), not a failure."""
        return [o for o in self.outcomes if o.status == results.OVER_BUDGET]

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failures else 0)


def resolve_parallelism(config: Config, n_cells: int) -> Config:
    """Fill in device, workers and threads (``auto``/0 in the config) for this machine."""
    run = config.run
    device = resolve_device(run.device)
    if run.executor == "ray":  # the cluster decides how many cells run at once; each declares its threads
        return dataclasses.replace(config, run=dataclasses.replace(run, device=device, threads=run.threads or 1))
    cores = usable_cores()
    workers = run.workers or (min(4, cores) if device.startswith("cuda") else cores)
    workers = max(1, min(workers, max(n_cells, 1)))
    threads = run.threads or max(1, cores // workers)
    return dataclasses.replace(config, run=dataclasses.replace(run, device=device, workers=workers, threads=threads))


def load_plugins(paths) -> None:
    """Import the run's --plugin files (models.load_plugin; loading a file twice is a no-op)."""
    if paths:
        for path in paths:
            models.load_plugin(path)


def _init_worker(threads: int, plugins: tuple[str, ...] = ()) -> None:
    """A spawned worker starts from a fresh interpreter: threads first, then the run's plugin models."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    set_threads(threads)
    load_plugins(plugins)


def write_failed(cell: Cell, run_dir: Path, run_id: str, error: str, detail: str = "", status: str = "failed") -> None:
    """The driver records a cell that produced no result of its own (its worker died, its task was lost, or its
    method's budget ruled it out: status over_budget)."""
    frame = results.rows_frame(results.failed_rows(cell, run_id, error, status))
    write_payload(run_dir, Payload(cell.cell_id, frame, None, None, detail, 0.0))


@dataclass
class Payload:
    """One cell's result as a worker sends it back; only the driver writes it (``write_payload``)."""

    cell_id: str
    frame: pd.DataFrame  # the cell's metrics.csv rows (its one ``failed`` row when it raised)
    jacobians: pd.DataFrame | None
    history: pd.DataFrame | None
    detail: str  # the traceback of a failure, "" when the cell finished
    seconds: float


def node_name() -> str:
    """Where a cell ran (the ``node`` column): the host name."""
    return socket.gethostname()


def compute_cell(cell_fn: CellFn, cell: Cell, config: Config, run_id: str, node: str | None = None) -> Payload:
    """Run one cell in this process and return its tables; any exception becomes the cell's failed row."""
    t0 = time.perf_counter()
    node = node or node_name()
    try:
        res = cell_fn(cell, config, run_id)
        if not res.rows:
            raise RuntimeError("the cell function returned no rows")
        frame = results.rows_frame([{**r, "node": node} for r in res.rows])
        return Payload(cell.cell_id, frame, res.jacobians, res.history, "", time.perf_counter() - t0)
    except Exception as err:  # any failure of a cell is a result, the grid goes on
        msg = f"{type(err).__name__}: {err}"
        status = getattr(err, "cell_status", "failed")  # OverBudget says over_budget
        rows = [{**r, "node": node} for r in results.failed_rows(cell, run_id, msg, status)]
        return Payload(
            cell.cell_id, results.rows_frame(rows), None, None, traceback.format_exc(), time.perf_counter() - t0
        )


def write_payload(run_dir: Path, p: Payload) -> Outcome:
    """The driver writes one cell's files atomically: Jacobians and history first, the cell table (done) last."""
    stem = results.cell_filename(p.cell_id)
    if p.jacobians is not None:
        results.atomic_write_csv(run_dir / "jacobians" / f"{stem}.csv", p.jacobians)
    if p.history is not None:
        (run_dir / "history").mkdir(exist_ok=True)
        results.atomic_write_csv(run_dir / "history" / f"{stem}.csv", p.history)
    if p.detail:
        (run_dir / "errors").mkdir(exist_ok=True)
        results.atomic_write_text(run_dir / "errors" / f"{stem}.txt", p.detail)
    results.atomic_write_csv(run_dir / "cells" / f"{stem}.csv", p.frame)
    failed = p.frame[p.frame["status"] != "ok"]
    error = str(failed["error"].iloc[0]) if len(failed) else ""
    return Outcome(p.cell_id, str(failed["status"].iloc[0]) if len(failed) else "ok", error, p.seconds)


def skip_over_budget(cell: Cell, config: Config, run_dir: Path) -> Outcome | None:
    """Record ``cell`` as over_budget without running it where its smaller sizes rule it out (bench.run.budget)."""
    why = budget.ruled_out(cell, config, run_dir)
    if not why:
        return None
    write_failed(cell, run_dir, run_dir.name, why, status=results.OVER_BUDGET)
    return Outcome(cell.cell_id, results.OVER_BUDGET, why, 0.0)


def execute_cell(cell_fn: CellFn, cell: Cell, config: Config, run_dir: Path, run_id: str) -> Outcome:
    """Run one cell here and write its files (the sequential path)."""
    return write_payload(run_dir, compute_cell(cell_fn, cell, config, run_id))


def pending_cells(cells: list[Cell], run_dir: Path, retry_failed: bool = False) -> list[Cell]:
    """Cells without a finished file (and, with retry_failed, cells recorded as failed or over budget)."""
    todo = []
    for c in cells:
        path = run_dir / "cells" / f"{results.cell_filename(c.cell_id)}.csv"
        if not path.exists() or (retry_failed and results.cell_status(path) != "ok"):
            todo.append(c)
    return todo


class _Progress:
    """tqdm bar with the cells in flight as its postfix; silent when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, unit="cell", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
        self.running: list[str] = []

    def start(self, cell_id: str) -> None:
        self.running.append(cell_id)
        self.bar.set_postfix_str(", ".join(self.running), refresh=True)

    def done(self, o: Outcome) -> None:
        if o.cell_id in self.running:
            self.running.remove(o.cell_id)
        if o.status != "ok":
            self.bar.write(f"{o.status.upper()} {o.cell_id}: {o.error}", file=sys.stderr)
        self.bar.set_postfix_str(", ".join(self.running), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_grid(
    config: Config,
    run_dir: str | Path,
    cell_fn: CellFn,
    retry_failed: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Run every unfinished cell of ``config.grid`` into ``run_dir`` (config already resolved)."""
    run_dir = Path(run_dir)
    for sub in ("cells", "jacobians"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    results.remove_stale_tmp(run_dir)
    cells = grid_cells(config.grid)
    todo = pending_cells(cells, run_dir, retry_failed)
    summary = RunSummary(run_dir, len(cells), len(cells) - len(todo))
    bar = _Progress(len(todo), progress)
    try:
        if config.run.executor == "ray":
            from bench.run.ray_executor import run_ray  # ray_executor builds on this module

            run_ray(cell_fn, todo, config, run_dir, summary, bar)
        elif config.run.workers <= 1:
            set_threads(config.run.threads or usable_cores())
            load_plugins(config.run.plugins)
            for cell in todo:
                bar.start(cell.cell_id)
                outcome = skip_over_budget(cell, config, run_dir)
                summary.outcomes.append(outcome or execute_cell(cell_fn, cell, config, run_dir, run_dir.name))
                bar.done(summary.outcomes[-1])
        else:
            _run_pool(cell_fn, todo, config, run_dir, summary, bar)
    except KeyboardInterrupt:
        summary.interrupted = True
        results.remove_stale_tmp(run_dir)  # workers are stopped by now; a killed one may have left a half file
    finally:
        bar.close()
    return summary


def _run_pool(cell_fn: CellFn, todo: list[Cell], config: Config, run_dir: Path, summary: RunSummary, bar) -> None:
    """Keep ``workers`` cells in flight; after a worker dies, retry its cells alone (quarantine)."""
    sched = _Schedule(cell_fn, todo, config, run_dir, summary, bar)
    while sched.pending or sched.suspects:
        pool = ProcessPoolExecutor(
            config.run.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            initargs=(config.run.threads, tuple(config.run.plugins)),
        )  # fmt: skip
        try:
            sched.drain(pool)
        except BaseException:
            _terminate(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


class _Schedule:
    """The cells of one pooled run: pending ones, suspects (in flight when a worker died) and those in flight."""

    def __init__(self, cell_fn: CellFn, todo: list[Cell], config: Config, run_dir: Path, summary: RunSummary, bar):
        self.cell_fn, self.config, self.run_dir, self.summary, self.bar = cell_fn, config, run_dir, summary, bar
        self.pending, self.suspects = deque(todo), deque()
        self.quarantined: set[str] = set()  # cells that were in flight when a worker died
        self.inflight: dict[Future, Cell] = {}

    def drain(self, pool: ProcessPoolExecutor) -> None:
        """Run cells on ``pool`` until none is left or a worker dies (the pool is broken: the caller makes another)."""
        while self.pending or self.suspects or self.inflight:
            if not self._fill(pool) and not self.inflight:
                return  # the pool broke with nothing of ours in flight: the caller makes another
            done, _ = wait(self.inflight, return_when=FIRST_COMPLETED)
            crashed = [cell for fut in done if (cell := self._collect(fut)) is not None]
            if crashed:  # every cell still in flight went down with the pool, except one whose result came back
                for fut in [f for f in self.inflight if f.done() and not f.cancelled() and f.exception() is None]:
                    self._collect(fut)
                crashed += self.inflight.values()
                self.inflight.clear()
                for outcome in _triage(crashed, self.run_dir, self.suspects, self.bar):
                    self._record(outcome)
                return

    def _fill(self, pool: ProcessPoolExecutor) -> bool:
        """Submit a suspect alone (a second crash convicts it), else pending cells up to the worker count.

        False when the pool turned out broken (a worker died since the last wait): the cell goes back unrun.
        """
        if self.suspects and not self.inflight:
            cell = self.suspects.popleft()
            self.quarantined.add(cell.cell_id)
            if not self._submit(pool, cell, self.suspects):
                return False
        solo = self.suspects or any(c.cell_id in self.quarantined for c in self.inflight.values())
        while self.pending and not solo and len(self.inflight) < self.config.run.workers:
            if not self._submit(pool, self.pending.popleft(), self.pending):
                return False
        return True

    def _submit(self, pool: ProcessPoolExecutor, cell: Cell, origin: deque) -> bool:
        skipped = skip_over_budget(cell, self.config, self.run_dir)
        if skipped is not None:  # its method's budget rules it out: recorded here, the worker stays free
            self.bar.start(cell.cell_id)
            self._record(skipped)
            return True
        try:
            fut = pool.submit(compute_cell, self.cell_fn, cell, self.config, self.run_dir.name)
        except BrokenProcessPool:  # a worker died between the last wait and this submit: the cell never ran
            origin.appendleft(cell)
            return False
        self.inflight[fut] = cell
        self.bar.start(cell.cell_id)
        return True

    def _collect(self, fut: Future) -> Cell | None:
        """Record a finished future's outcome; returns its cell if its worker died instead."""
        cell = self.inflight.pop(fut)
        try:
            outcome = write_payload(self.run_dir, fut.result())
        except BrokenProcessPool:
            return cell
        except Exception as err:  # e.g. the cell function could not be pickled
            msg = f"{type(err).__name__}: {err}"
            write_failed(cell, self.run_dir, self.run_dir.name, msg, traceback.format_exc())
            outcome = Outcome(cell.cell_id, "failed", msg, 0.0)
        self._record(outcome)
        return None

    def _record(self, outcome: Outcome) -> None:
        self.summary.outcomes.append(outcome)
        self.bar.done(outcome)


def _triage(crashed: list[Cell], run_dir: Path, suspects: deque, bar: _Progress) -> list[Outcome]:
    """A worker died with these cells in flight. One alone is guilty (failed); several are retried alone."""
    out = []
    for cell in crashed:  # none has a result: the driver writes a cell only once its result is collected
        if len(crashed) == 1:
            msg = "the worker process died while running this cell alone (crash or out of memory)"
            write_failed(cell, run_dir, run_dir.name, msg)
            out.append(Outcome(cell.cell_id, "failed", msg, 0.0))
        else:
            if cell.cell_id in bar.running:
                bar.running.remove(cell.cell_id)
            suspects.append(cell)
    return out


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel queued cells and kill the workers (their cells are simply not done)."""
    procs = list(getattr(pool, "_processes", {}).values())  # no public API before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


# ---- a run from start to finish: folder, config.json, env.json, the grid, metrics.csv, the summary ----


def _record(config: Config) -> dict:
    """config.json: the resolved config, plus TrainConfig with its defaults filled in where available."""
    rec = {"metrics_version": results.METRICS_VERSION, **config.to_dict()}
    rec["train_resolved"] = dataclasses.asdict(TrainConfig(**config.train))

    data = [e for e in config.grid.equations if e.startswith("data:")]  # what a data set's errors are measured against
    rec["references"] = {e: equations.get(e).reference for e in data}

    rec["data_sha256"] = {e: sha256(e) for e in data}  # the exact file a data set's numbers came from
    return rec


def open_run(
    config: Config, resume: str | Path | None = None, plugins=(), record: bool = True, name: str | None = None
) -> tuple[Config, Path]:
    """Resolve device/workers/threads and create (or reopen) the run folder with config.json and env.json.

    On resume the folder's saved grid, training config, device, dtype and plugins are used; only
    ``config.run``'s workers and threads (how the run executes, not what it measures) are taken from
    ``config``. ``plugins`` (the --plugin files of a resumed command) must be among the saved ones; the
    saved ones are loaded here. ``record=False`` (a dry run) leaves env.json as it is. ``name``: the new run id's
    suffix (default the profile's name).
    """
    if resume is not None:
        run_dir = results.resolve_run_dir(resume)
        saved = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
        extra = sorted(set(map(str, plugins)) - set(saved.run.plugins))
        if extra:
            raise ConfigError(
                f"--plugin {', '.join(extra)}: {run_dir} was started with plugins {list(saved.run.plugins) or 'none'} "
                "(config.json); a resumed run keeps its models. Drop --plugin, or start a new run"
            )
        load_plugins(saved.run.plugins)
        how = {k: getattr(config.run, k) for k in ("workers", "threads", "executor", "address")}
        run = dataclasses.replace(saved.run, **how)
        config = resolve_parallelism(dataclasses.replace(saved, run=run), len(grid_cells(saved.grid)))
        if record:
            env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").exists() else {}
            env.setdefault("resumed", []).append(_env(config))
            results.write_json(run_dir / "env.json", env)
        return config, run_dir
    config = resolve_parallelism(config, len(grid_cells(config.grid)))
    run_dir = results.create_run_dir(config.run.out, name or config.run.profile)
    results.write_json(run_dir / "config.json", {"run_id": run_dir.name, **_record(config)})
    results.write_json(run_dir / "env.json", _env(config))
    return config, run_dir


def _env(config: Config) -> dict:
    """env.json (bench.run.envinfo) plus how the cells are executed."""
    env = collect_env(config.run.device, config.run.dtype, config.run.threads)
    env["executor"] = config.run.executor
    if config.run.executor == "ray":
        env["ray_address"] = config.run.address or "local instance"
        try:
            env["ray"] = version("ray")
        except Exception:  # not installed: run_ray says so when it starts
            env["ray"] = None
    return env


def finish_run(summary: RunSummary, out=None) -> int:
    """Rebuild metrics.csv, print what happened and the failures (to ``out``, default stdout); the exit code."""
    out = out or sys.stdout
    table = results.write_metrics(summary.run_dir)
    n_ok = sum(o.status == "ok" for o in summary.outcomes)
    secs = [o.seconds for o in summary.outcomes if o.seconds > 0]
    timing = f", {sum(secs) / len(secs):.1f} s per cell" if secs else ""
    print(
        f"{summary.run_dir}: {summary.planned} cells, {summary.skipped} already done, {n_ok} finished now, "
        f"{len(summary.failures)} failed, {len(summary.over_budget)} over their time budget{timing}; "
        f"{len(table)} rows in metrics.csv",
        file=out,
    )
    if summary.over_budget:
        print(f"{len(summary.over_budget)} cells ran past their method's time budget (recorded as over_budget):",
              file=out)  # fmt: skip
        for o in summary.over_budget:
            print(f"  {o.cell_id}: {o.error}", file=out)
    if summary.failures:
        print(f"{len(summary.failures)} failed cells (details in errors/ and cells/):", file=out)
        for o in summary.failures:
            print(f"  {o.cell_id}: {o.error}", file=out)
    if summary.interrupted:
        print(f"interrupted; finished cells are saved. Resume with: python -m bench run --resume {summary.run_dir}",
              file=out)  # fmt: skip
    return summary.exit_code
