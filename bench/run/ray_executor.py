"""The Ray executor: one Ray task per cell, on a Ray instance started here or on a running cluster.

    python -m bench run ... --executor ray                       # a Ray instance on this machine
    python -m bench run ... --executor ray --address auto        # the cluster `ray start` joined this node to
    python -m bench run ... --executor ray --address HOST:6379   # a cluster's head

Each cell is a task declaring the resources the config gives it: ``num_cpus`` = run.threads (torch threads
per cell) and, on CUDA runs, ``num_gpus`` = run.gpus_per_cell (a fraction: several cells share a GPU). Ray
places them; the driver submits a bounded window of tasks, and writes each cell's tables to the run folder
the moment its result arrives (``runner.write_payload``), so resume, ``--retry-failed``, failure rows and
the report work as with the local executor, and either executor can resume a run the other started.

Code on the workers: jacbench's packages travel in the job's runtime_env (``py_modules``) when joining a
cluster, so a node needs only the dependencies (torch, pandas, scipy, scikit-learn, ray); a Ray instance
started here uses this interpreter's installation. ``--plugin`` files and ``file:`` equation sets travel as
their contents inside the task arguments: a node where the path does not hold the same file runs a local
copy under the same name.

Faults: a task whose worker process dies is retried by Ray (``RETRIES`` times); one that still fails is
recorded as a failed cell with Ray's reason. Ctrl-C cancels the tasks not finished; finished cells are
already on disk. An address where no cluster answers is a clear error naming it.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import bench
import equations
import models
from bench.run import results
from bench.run.config import Cell, Config
from bench.run.machine import set_threads, usable_cores
from bench.run.runner import Outcome, compute_cell, load_plugins, write_failed, write_payload

RETRIES = 2  # Ray re-runs a task whose worker died this many times before the cell is recorded as failed
WINDOW_PER_SLOT = 2  # tasks in flight per cell slot of the cluster: enough to keep it busy, few to cancel
CONNECT_TIMEOUT_S = 5.0
WAIT_S = 0.5  # the driver's wait for the next result, in slices so that Ctrl-C is seen at once


class RayUnavailable(ValueError):
    """Ray is not installed, or no cluster answers at the address given (bad input: the CLI prints it)."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "--executor ray needs Ray: pip install 'jacbench[ray]' (or pip install 'ray[default]')"
        ) from None
    return ray


def check_address(address: str) -> None:
    """A HOST:PORT address must accept a connection now (Ray's own retries would wait a minute or more)."""
    if address in ("", "auto") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise RayUnavailable(
            f"no Ray cluster answers at {address} ({err.strerror or err}): start its head with "
            f"`ray start --head --port {port}`, or check the address (`ray status` on the head prints it)"
        ) from None


def preflight(address: str) -> None:
    """Before a run folder is made: Ray imports, and a HOST:PORT address answers."""
    _import_ray()
    check_address(address)


def _package_dirs() -> list[str]:
    """jacbench's three top-level packages, for the job's runtime_env (py_modules)."""
    return [str(Path(m.__file__).resolve().parent) for m in (bench, models, equations)]


def _keep_ctrl_c(connect_fn) -> None:
    """Run ``connect_fn`` (ray.init) and install the SIGINT handler it had again, so that Ctrl-C still raises
    KeyboardInterrupt in the driver (an inherited SIG_IGN, e.g. under nohup, stays ignored). Always re-installed:
    a handler replaced below Python (sigaction) is invisible to signal.getsignal."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    connect_fn()
    if main and before is not None:
        signal.signal(signal.SIGINT, before)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def connect(ray, address: str) -> None:
    """ray.init: a fresh local instance without ``address``, else join the running cluster at it."""
    if ray.is_initialized():
        return
    check_address(address)
    if not address:
        _keep_ctrl_c(lambda: ray.init(num_cpus=usable_cores(), include_dashboard=False, log_to_driver=False,
                                      configure_logging=False))  # fmt: skip
        return
    _token_auth_like_ray_start()
    try:
        _keep_ctrl_c(lambda: ray.init(address=address, runtime_env={"py_modules": _package_dirs()},
                                      log_to_driver=False, configure_logging=False))  # fmt: skip
    except ConnectionError as err:
        raise RayUnavailable(f"could not join a Ray cluster at {address!r}: {err}") from None


def _token_auth_like_ray_start() -> None:
    """Join with the authentication rule `ray start` applies: token mode when RAY_AUTH_MODE is unset and a token
    exists (e.g. ~/.ray/auth_token, which a local ``ray.init()`` writes). Without it, a driver on a machine holding a
    token cannot join a head that `ray start` began in token mode ("InvalidAuthToken"); a token-mode driver also
    joins a head without authentication."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def shipped_files(config: Config) -> dict[str, bytes]:
    """The files a worker needs by path: --plugin files, file: equation sets, and data: sets with their sidecars
    (path -> contents)."""
    paths = list(config.run.plugins)
    paths += [e.removeprefix("file:") for e in config.grid.equations if e.startswith("file:")]
    data = [e.removeprefix("data:") for e in config.grid.equations if e.startswith("data:")]
    paths += [q for p in data for q in (p, str(Path(p).with_suffix(".json")))]
    return {p: Path(p).read_bytes() for p in paths if Path(p).is_file()}


def _local_copy(path: str, data: bytes) -> str:
    """``path`` itself when it holds ``data`` on this node, else a copy under the temp folder (same basename)."""
    try:
        if Path(path).read_bytes() == data:
            return path
    except OSError:
        pass
    digest = hashlib.sha256(data).hexdigest()[:16]
    local = Path(tempfile.gettempdir()) / "jacbench-shipped" / digest / Path(path).name
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        results.atomic_write_bytes(local, data)
    return str(local)


def ray_cell(cell_fn, cell: Cell, config: Config, run_id: str, files: dict[str, bytes]):
    """The task: this worker's threads, the shipped files, then the cell (runner.compute_cell)."""
    import ray

    set_threads(config.run.threads)
    local = {p: _local_copy(p, data) for p, data in files.items()}
    for path, copy in local.items():
        if copy != path:
            equations.registry.use_file_copy(path, copy)
    plugins = tuple(local.get(p, p) for p in config.run.plugins)
    load_plugins(plugins)
    node = f"{socket.gethostname()} (ray {ray.get_runtime_context().get_node_id()[:8]})"
    return compute_cell(cell_fn, cell, replace(config, run=replace(config.run, plugins=plugins)), run_id, node)


def _slots(ray, config: Config) -> int:
    """How many cells the cluster can run at once with the resources each declares."""
    res = ray.cluster_resources()
    slots = res.get("CPU", 1) // max(config.run.threads, 1)
    if config.run.device.startswith("cuda"):
        slots = min(slots, res.get("GPU", 0) // config.run.gpus_per_cell)
    return max(int(slots), 1)


def run_ray(cell_fn, todo: list[Cell], config: Config, run_dir: Path, summary, bar) -> None:
    """Run ``todo`` as Ray tasks; the driver writes each result as it arrives (see the module docstring)."""
    ray = _import_ray()
    connect(ray, config.run.address)
    try:
        gpus = config.run.gpus_per_cell if config.run.device.startswith("cuda") else 0
        task = ray.remote(ray_cell).options(num_cpus=config.run.threads, num_gpus=gpus, max_retries=RETRIES,
                                            retry_exceptions=False)  # fmt: skip
        files = ray.put(shipped_files(config))
        window = WINDOW_PER_SLOT * _slots(ray, config)
        pending, inflight = deque(todo), {}
        try:
            while pending or inflight:
                while pending and len(inflight) < window:
                    cell = pending.popleft()
                    inflight[task.remote(cell_fn, cell, config, run_dir.name, files)] = (cell, time.perf_counter())
                    bar.start(cell.cell_id)
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=WAIT_S)  # Ctrl-C lands between waits
                for ref in ready:
                    cell, t0 = inflight.pop(ref)
                    try:
                        outcome = write_payload(run_dir, ray.get(ref))
                    except ray.exceptions.RayError as err:  # the task died RETRIES + 1 times, or was lost
                        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                        msg = f"the Ray task failed ({type(err).__name__}, {RETRIES} retries): {first}"
                        write_failed(cell, run_dir, run_dir.name, msg, str(err))
                        outcome = Outcome(cell.cell_id, "failed", msg, time.perf_counter() - t0)
                    summary.outcomes.append(outcome)
                    bar.done(outcome)
        except KeyboardInterrupt:
            for ref in inflight:  # finished cells are on disk; the others are simply not done
                ray.cancel(ref, force=True)
            raise
    finally:
        ray.shutdown()
        results.remove_stale_tmp(run_dir)
