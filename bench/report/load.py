"""Read one run folder (results/README.md) into data frames: metrics, throughput, env, config, Jacobians.

Only pandas and the standard library: no torch, no models, no equations.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.run import results  # the runner's side of the folder contract (pandas only, no torch)
from bench.run.results import METRIC_COLUMNS, resolve_run_dir

_TEXT = ["run_id", "cell_id", "equation", "model", "family", "model_config", "variant", "split", "metric"]
_TEXT += ["output", "input", "status", "error", "node"]
_NUMBER = ["n_in", "n_out", "params", "flops", "seed", "beta", "n_train", "bin", "value", "hess_weight"]


@dataclass
class RunData:
    """One run folder, read: tidy tables as the runner wrote them (nothing rounded, nothing dropped)."""

    path: Path
    metrics: pd.DataFrame  # metrics.csv rows, all cells incl. failed ones
    throughput: pd.DataFrame | None  # throughput.csv, or None where the run has none
    env: dict = field(default_factory=dict)  # env.json
    config: dict = field(default_factory=dict)  # config.json
    jacobian_files: dict[str, Path] = field(default_factory=dict)  # cell_id -> jacobians/<cell>.csv
    history_files: dict[str, Path] = field(default_factory=dict)  # cell_id -> history/<cell>.csv

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def ok(self) -> pd.DataFrame:
        """Rows of finished cells only."""
        return self.metrics[self.metrics["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        """One row per failed cell, with its error."""
        return self.metrics[self.metrics["status"] != "ok"].drop_duplicates("cell_id")

    def history(self, cell_id: str) -> pd.DataFrame | None:
        """The cell's training history (results.HISTORY_COLUMNS), None where the run kept none."""
        path = self.history_files.get(cell_id)
        return None if path is None else pd.read_csv(path)

    def jacobians(self, cell_id: str) -> pd.DataFrame | None:
        path = self.jacobian_files.get(cell_id)
        return None if path is None else pd.read_csv(path)


def _clean_metrics(df: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in METRIC_COLUMNS if c not in df.columns and c not in results.LATER_COLUMNS]
    if missing:
        raise ValueError(f"{source}: missing columns {missing} (see results/README.md)")
    df = df.copy()
    for c in results.LATER_COLUMNS:  # tables from before these columns existed: no configuration recorded
        if c not in df.columns:
            df[c] = ""
    for c in _TEXT:
        df[c] = df[c].fillna("").astype(str)
    for c in _NUMBER:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df.loc[df["variant"] == "value", "beta"] = df.loc[df["variant"] == "value", "beta"].fillna(1.0)
    df["hess_weight"] = df["hess_weight"].fillna(0.0)  # tables from before the Hessian term: none
    return df


def read_metrics(run: Path) -> pd.DataFrame:
    """All metric rows of a run: the cells/ tables (the resumption unit) where present, else metrics.csv.

    A reader: nothing in the folder is written (an interrupted run's metrics.csv is simply not used).
    A throughput-only folder (``python -m bench throughput`` without a grid) has no metric rows. A shared or
    archived folder may hold ``metrics.csv.gz`` (gzip) instead of metrics.csv.
    """
    path = run / "metrics.csv"
    if not path.exists() and (run / "metrics.csv.gz").exists():
        path = run / "metrics.csv.gz"
    cells = results.read_cells(run)
    if cells.empty:
        if not path.exists():
            if (run / "throughput.csv").exists():
                return _clean_metrics(pd.DataFrame(columns=list(METRIC_COLUMNS)), str(path))
            raise FileNotFoundError(f"{run}: neither metrics.csv nor cells/*.csv (is this a run folder?)")
        return _clean_metrics(results.read_cell(path), str(path))  # as text; numbers parsed below
    return _clean_metrics(cells, f"{run / 'cells'}/*.csv")


def read_throughput(run: Path) -> pd.DataFrame | None:
    path = run / "throughput.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    missing = [c for c in ("model", "engine", "device", "dtype", "batch_size", "jac_per_s", "status") if c not in df]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (the throughput.csv schema: results/README.md)")
    for c in results.THROUGHPUT_NUMBERS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("model", "family", "model_config", "engine", "device", "device_name", "dtype", "status", "error"):
        df[c] = df[c].astype(object).fillna("").astype(str) if c in df.columns else ""
    df["order"] = df["order"].fillna(1) if "order" in df.columns else 1.0  # tables from before the column: Jacobians
    return df[df["order"] == 1].reset_index(drop=True)  # the report's speed is Jacobians/s


def speed_key(df: pd.DataFrame) -> pd.Series:
    """The configuration a throughput row measured; the bare model name where an older table recorded none
    (good for labels only: such rows are never joined to fidelity rows)."""
    return pd.Series([results.config_of(c, m) for c, m in zip(df["model_config"], df["model"], strict=True)],
                     index=df.index, dtype=object)  # fmt: skip


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def resolve_folder(path: str | os.PathLike) -> Path:
    """A run folder (config.json), or a throughput folder (throughput.csv without a grid)."""
    p = Path(path)
    if not (p / "config.json").is_file() and (p / "throughput.csv").is_file():
        return p.resolve()
    if p.is_file() and p.name == "throughput.csv":
        return p.parent.resolve()
    return resolve_run_dir(p)


def load_run(path: str | os.PathLike) -> RunData:
    """Read a run folder or a throughput folder (see results/README.md)."""
    run = resolve_folder(path)
    metrics = read_metrics(run)
    jac = {cid: run / "jacobians" / f"{results.cell_filename(cid)}.csv" for cid in metrics["cell_id"].unique()}
    jac = {cid: p for cid, p in jac.items() if p.exists()}
    hist = {cid: run / "history" / f"{results.cell_filename(cid)}.csv" for cid in metrics["cell_id"].unique()}
    hist = {cid: p for cid, p in hist.items() if p.exists()}
    return RunData(
        run, metrics, read_throughput(run), _read_json(run / "env.json"), _read_json(run / "config.json"), jac, hist
    )


def largest_n_train(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows at the largest n_train of each ``keys`` group (a leaderboard compares like with like)."""
    top = df.groupby(keys, dropna=False)["n_train"].transform("max")
    return df[np.isclose(df["n_train"], top) | (df["n_train"].isna() & top.isna())]
