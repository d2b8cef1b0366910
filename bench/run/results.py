"""The results folder: run ids, the `latest` pointer, atomic writes, and reading cells back.

Layout (the contract with the report, see results/README.md)::

    results/<run-id>/config.json, env.json, cells/<cell>.csv, jacobians/<cell>.csv, metrics.csv

Every file is written to a temporary name in the same folder and then ``os.replace``d into place, so a
crash or Ctrl-C leaves either the old file or the complete new one, never half a table.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# metrics.csv columns, in order (results/README.md)
METRIC_COLUMNS = (
    "run_id", "cell_id", "equation", "model", "family", "n_in", "n_out", "model_config", "params", "flops", "seed",
    "variant", "beta", "n_train", "split", "metric", "output", "input", "bin", "value", "status", "error", "node",
    "hess_weight",
)  # fmt: skip
# throughput.csv columns, in order (results/README.md); numbers are the ones THROUGHPUT_NUMBERS lists
THROUGHPUT_COLUMNS = (
    "model", "family", "n_in", "n_out", "model_config", "params", "flops", "engine", "device", "device_name",
    "dtype", "tf32", "batch_size", "jac_per_s", "jac_per_s_q25", "jac_per_s_q75", "repeats", "flops_per_jac",
    "peak_flops", "status", "error", "threads", "order",
)  # fmt: skip
THROUGHPUT_NUMBERS = (
    "n_in", "n_out", "params", "flops", "batch_size", "jac_per_s", "jac_per_s_q25", "jac_per_s_q75", "repeats",
    "flops_per_jac", "peak_flops", "threads", "order",
)  # fmt: skip
# Columns added after the first runs were written: a reader fills them in empty for older tables.
LATER_COLUMNS = ("n_in", "n_out", "model_config", "node", "hess_weight")
# The definitions behind metrics.csv; config.json records it and `compare` warns when two runs differ.
# 1: the first wave. 2: jac_rel_fro floored at the split's typical norm; jac_fro_scale; jac_spurious*.
# 3: the unit-invariant headline (bench.fidelity.headline): jac_err_* / hess_err_* per sample, jac_out_err /
#    hess_out_err per output, jac_entry_err; the floored jac_rel_fro_* / hess_rel_fro_* are gone.
METRICS_VERSION = 3
# The headline derivative errors (bench.fidelity.headline, test split): the RMS over samples of the per-sample
# errors; 1.0 = as wrong as predicting zero derivatives. Every table, figure, ranking and comparison reads these
# names, never the strings: JAC_HEADLINE and HESS_HEADLINE are the scores, *_TAIL the statistics shown beside them.
HEADLINE_STATS = ("rms", "median", "p90", "max")  # over the split's samples; rms is the headline
JAC_STATS = tuple(f"jac_err_{k}" for k in HEADLINE_STATS)
HESS_STATS = tuple(f"hess_err_{k}" for k in HEADLINE_STATS)
JAC_HEADLINE, JAC_TAIL = JAC_STATS[0], JAC_STATS[1:]  # "jac_err_rms"; median, p90, max
HESS_HEADLINE, HESS_TAIL = HESS_STATS[0], HESS_STATS[1:]  # "hess_err_rms"; median, p90, max
# What a cell's method cost (every method alike: zoo, JENN, SMT): the whole fit, learning-rate candidates included,
# in wall and CPU seconds (CPU: this process's, all its threads), and values plus Jacobians of the test split in
# one call, in seconds per 1000 samples (the cell's device and engine; a peer through its own API).
# A cell whose method ran past its time budget (a peer's max_seconds): a status beside ok and failed. It counts as
# a loss in the rankings like a failure, but the run's exit status ignores it: a ceiling is a measurement.
OVER_BUDGET = "over_budget"
FIT_WALL, FIT_CPU, PREDICT_PER_1K = "fit_wall_seconds", "fit_cpu_seconds", "predict_seconds_per_1k"
COST_METRICS = (FIT_WALL, FIT_CPU, PREDICT_PER_1K)
COST_NOTES = {
    FIT_WALL: "wall seconds of the whole fit (every learning-rate candidate, a peer's own training)",
    FIT_CPU: "CPU seconds of the whole fit (this process, all threads)",
    PREDICT_PER_1K: "seconds per 1000 test samples for values and Jacobians in one call",
}
JAC_PER_OUTPUT = "jac_out_err"
HESS_PER_OUTPUT = "hess_out_err"
JAC_BY_EDGE = "jac_err_by_edge"
HESS_BY_EDGE = "hess_err_by_edge"
# "Still improving" (metric still_improving): the best validation loss (training loss without validation data)
# fell by more than CONVERGENCE_DROP over the last CONVERGENCE_WINDOW of the steps. The report flags such rows: a
# comparison at a budget some architectures had not finished with says so.
CONVERGENCE_WINDOW = 0.10
CONVERGENCE_DROP = 0.05
# Families that are peers (bench.peers: other projects' surrogates trained by their own code); the report compares
# the zoo against them. tests/test_peers.py checks this matches bench.peers.
PEER_FAMILIES = ("jenn", "kriging")
HISTORY_COLUMNS = ("step", "seconds", "lr", "loss", "val_loss")  # history/<cell>.csv, every eval_every steps
TMP_MARK = ".tmp-"  # temporary files are <name>.tmp-<pid>; never matched by *.csv
LATEST = "latest"  # symlink results/latest -> <run-id>; text file LATEST where symlinks are refused
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


@dataclass
class CellResult:
    """What a cell function returns: its metric rows and, optionally, its per-sample test Jacobians."""

    rows: list[dict]  # metrics.csv rows (results/README.md columns)
    jacobians: pd.DataFrame | None = None  # forum layout: x1..xn, df1_dx1, df1_dx1_true, ... (<= 1000 rows)
    history: pd.DataFrame | None = None  # training history: step, seconds, lr, loss, val_loss (HISTORY_COLUMNS)


def limit_rate(flops_per_jac: Any, peak_flops: Any) -> Any:
    """The FLOP limit as a rate: peak FLOP/s / FLOPs per Jacobian (numbers or arrays; NaN where unknown)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.asarray(peak_flops, dtype=float) / np.asarray(flops_per_jac, dtype=float)
    rate = np.where(np.isfinite(rate) & (rate > 0), rate, np.nan)
    return float(rate) if rate.ndim == 0 else rate


def limit_fraction(jac_per_s: Any, flops_per_jac: Any, peak_flops: Any) -> Any:
    """Share of the device's FLOP limit a rate reaches: jac_per_s / limit_rate (NaN where unknown)."""
    out = np.asarray(jac_per_s, dtype=float) / limit_rate(flops_per_jac, peak_flops)
    return float(out) if np.ndim(out) == 0 else out


def config_of(model_config: str, model: str) -> str:
    """The configuration a throughput row names: its model_config, or its model name in tables without one."""
    return model_config or model


def model_config_id(model: str, n_in: int, n_out: int, overrides: Mapping[str, Any] | None = None) -> str:
    """The identity of one model configuration: name, dimensions and the factory overrides that shape it.

    ``mlp_tanh 4->4`` or ``mlp_tanh 8->8 {"width": 17}``: the overrides as sorted JSON (None values dropped,
    as ``create_model`` drops them). A throughput row and a fidelity row describe the same network only
    when this string (and the parameter count) agree: the report joins them on it.
    """
    kw = {k: v for k, v in sorted((overrides or {}).items()) if v is not None}
    text = f"{model} {int(n_in)}->{int(n_out)}"
    return f"{text} {json.dumps(kw, sort_keys=True, default=list)}" if kw else text


def cell_row(cell: Any, run_id: str) -> dict:
    """The columns every row of a cell shares, from a bench.run.config.Cell."""
    return {
        "run_id": run_id, "cell_id": cell.cell_id, "equation": cell.equation, "model": cell.model,
        "seed": cell.seed, "variant": cell.variant, "beta": cell.beta, "n_train": cell.n_train,
        "hess_weight": getattr(cell, "hess_weight", 0.0),
    }  # fmt: skip


def failed_rows(cell: Any, run_id: str, error: str, status: str = "failed") -> list[dict]:
    """The single row that records a failed cell (metric ``failed``, value NaN, the message in ``error``); status
    ``failed``, or ``over_budget`` for a method that ran past its time budget."""
    return [{**cell_row(cell, run_id), "split": "", "metric": "failed", "value": float("nan"),
             "status": status, "error": error}]  # fmt: skip


def new_run_id(profile: str, now: _dt.datetime | None = None) -> str:
    """A sortable run id like ``20261123-190102-quick``."""
    now = now or _dt.datetime.now()
    return f"{now:%Y%m%d-%H%M%S}-{_UNSAFE.sub('_', profile)}"


def create_run_dir(root: str | Path, profile: str) -> Path:
    """Make ``root/<run-id>/`` (with a numeric suffix if that id is taken) and point ``latest`` at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = new_run_id(profile)
    for k in range(1, 1000):
        run_dir = root / (base if k == 1 else f"{base}-{k}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        for sub in ("cells", "jacobians", "history"):
            (run_dir / sub).mkdir()
        set_latest(root, run_dir)
        return run_dir
    raise RuntimeError(f"could not create a fresh run folder under {root}")


def set_latest(root: str | Path, run_dir: str | Path) -> None:
    """Point ``root/latest`` at run_dir (a relative symlink), or write its name into ``root/LATEST``."""
    root, name = Path(root), Path(run_dir).name
    link, tmp = root / LATEST, root / f"{LATEST}{TMP_MARK}{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # no symlinks here (some Windows setups, some mounts): a text file instead
        atomic_write_text(root / "LATEST", name + "\n")


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder from its path, or from ``results/latest`` / a results root holding LATEST."""
    p = Path(path)
    if (p / "config.json").is_file():
        return p.resolve()  # results/latest -> results/<run-id>: the folder name is the run id
    roots = (p, p.parent) if p.name == LATEST else (p,)  # `results`, or `results/latest` as a text pointer
    for pointer_root in roots:
        pointer = pointer_root / "LATEST"
        if pointer.is_file():
            cand = pointer_root / pointer.read_text().strip()
            if (cand / "config.json").is_file():
                return cand.resolve()
    if (p / LATEST / "config.json").is_file():
        return (p / LATEST).resolve()
    raise FileNotFoundError(f"{p} is not a run folder (no config.json); pass results/<run-id> or results/latest")


def cell_filename(cell_id: str) -> str:
    """A file-system-safe, collision-free file stem for a cell id (``gen:smooth:3`` has colons, ``file:`` slashes)."""
    safe = _UNSAFE.sub("_", cell_id)
    if safe != cell_id:
        safe += "-" + hashlib.sha1(cell_id.encode()).hexdigest()[:8]
    return safe


def _tmp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to path atomically (temporary file in the same folder, fsync, os.replace)."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text (UTF-8, newlines as given) to path atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | Path, df: pd.DataFrame) -> None:
    """Write a DataFrame as CSV atomically; floats keep full precision (never rounded at the source)."""
    atomic_write_text(path, df.to_csv(index=False, float_format="%.17g"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale_tmp(run_dir: str | Path) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    n = 0
    for sub in ("cells", "jacobians", "history", "errors", "."):
        for f in Path(run_dir, sub).glob(f"*{TMP_MARK}*"):
            f.unlink(missing_ok=True)
            n += 1
    return n


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the metrics.csv columns, in order (missing ones empty)."""
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in METRIC_COLUMNS]
    if extra:
        raise ValueError(f"metric rows have columns outside the results schema: {extra}")
    return df.reindex(columns=list(METRIC_COLUMNS))


def read_cell(path: str | Path) -> pd.DataFrame:
    # keep_default_na=False: an empty `output`/`error` stays "", not NaN; `value` is parsed as float below
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    if "value" in df:
        df["value"] = pd.to_numeric(df["value"].replace("", "nan"), errors="coerce")
    return df


def read_cells(run_dir: str | Path) -> pd.DataFrame:
    """All finished cells of a run, concatenated (sorted by file name, so the order is stable)."""
    files = sorted(Path(run_dir, "cells").glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    return pd.concat([read_cell(f) for f in files], ignore_index=True)


def cell_status(path: str | Path) -> str:
    """``ok``, ``failed`` or ``over_budget`` for a finished cell file (the first row that is not ok decides)."""
    status = read_cell(path).get("status", pd.Series(dtype=str))
    bad = status[status != "ok"]
    return str(bad.iloc[0]) if len(bad) else "ok"


def write_metrics(run_dir: str | Path) -> pd.DataFrame:
    """Rebuild ``metrics.csv`` from ``cells/*.csv``; returns the table."""
    df = read_cells(run_dir)
    atomic_write_text(Path(run_dir, "metrics.csv"), df.to_csv(index=False, float_format="%.17g"))
    return df


def jacobian_frame(
    x: Any,
    J_pred: Any,
    J_true: Any,
    input_names: Sequence[str],
    output_names: Sequence[str],
    max_rows: int = 1000,
    H_pred: Any = None,
    H_true: Any = None,
) -> pd.DataFrame:
    """Per-sample Jacobians in the forum layout: inputs, then ``df1_dx1, df1_dx1_true, df1_dx2, ...``, then the
    per-sample norms ``jac_norm_true`` (||J_true||_F) and ``jac_norm_err`` (||J_pred - J_true||_F).

    x (B, n_in), J_pred and J_true (B, n_out, n_in) as numpy arrays in physical units; the first
    ``max_rows`` samples. Columns are named ``d<output>_d<input>`` from the equation set's names. With Hessians
    (B, n_out, n_in, n_in), their distinct entries follow: ``d2<output>_d<input j>_d<input k>`` (j <= k) and
    ``..._true``, then ``hess_norm_true`` and ``hess_norm_err``.
    """
    n = min(len(x), max_rows)
    cols: dict[str, Any] = {name: x[:n, k] for k, name in enumerate(input_names)}
    for i, out in enumerate(output_names):
        for j, inp in enumerate(input_names):
            cols[f"d{out}_d{inp}"] = J_pred[:n, i, j]
            cols[f"d{out}_d{inp}_true"] = J_true[:n, i, j]
    # per-sample norms, so any relative-error definition can be recomputed from the table
    flat_true = np.asarray(J_true[:n]).reshape(n, -1)
    cols["jac_norm_true"] = np.linalg.norm(flat_true, axis=1)
    cols["jac_norm_err"] = np.linalg.norm(np.asarray(J_pred[:n]).reshape(n, -1) - flat_true, axis=1)
    if H_pred is not None:
        m = len(input_names)
        for i, out in enumerate(output_names):
            for j in range(m):
                for k in range(j, m):
                    name = f"d2{out}_d{input_names[j]}_d{input_names[k]}"
                    cols[name], cols[f"{name}_true"] = H_pred[:n, i, j, k], H_true[:n, i, j, k]
        flat_h = np.asarray(H_true[:n]).reshape(n, -1)
        cols["hess_norm_true"] = np.linalg.norm(flat_h, axis=1)
        cols["hess_norm_err"] = np.linalg.norm(np.asarray(H_pred[:n]).reshape(n, -1) - flat_h, axis=1)
    return pd.DataFrame(cols)
