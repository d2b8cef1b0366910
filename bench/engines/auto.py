"""The measured table behind engine "auto": the fastest engine per model, device, dtype and batch size.

Rows (model, family, device, dtype, batch_size, engine, jac_per_s) come from throughput sweeps
(`python -m bench throughput`). Two tables are read, the user's rows replacing the shipped ones of the same
(model, device, dtype, batch size):

- shipped defaults, `bench/engines/auto_table.csv`, measured on the 2-core CPU this project is developed on
  (`python -m bench throughput --models '*' --auto-table bench/engines/auto_table.csv`);
- the user's own, refreshed by every sweep (`$JACBENCH_AUTO_TABLE`, default ~/.cache/jacbench/auto_table.csv;
  `--no-auto-table` leaves it alone), so `auto` follows the machine it runs on once it has been measured there.

A model is looked up by its zoo name (`models.create_model` sets `zoo_name`; a PhysicalModel by its network's),
else by its family, on the same device type and dtype, at the measured
batch size nearest to the batch in log scale. `ranked` returns the engines fastest first; `bench.engines.choose`
takes the first that supports the model and the call (never a batch-sum engine, never one without a graph when
create_graph is asked for, a compiled engine only when allowed), and falls back to the fixed order where the
table knows nothing. The rates are measured without a graph, so create_graph=True keeps the fixed order.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import torch
from torch import nn

COLUMNS = ("model", "family", "device", "dtype", "batch_size", "engine", "jac_per_s")
SHIPPED = Path(__file__).with_name("auto_table.csv")
ENV = "JACBENCH_AUTO_TABLE"
_CACHE: dict[Path, tuple[tuple[float, int], list[dict]]] = {}


def user_table() -> Path:
    """The user's table: $JACBENCH_AUTO_TABLE, default ~/.cache/jacbench/auto_table.csv."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "jacbench" / "auto_table.csv")


def read(path: Path) -> list[dict]:
    """The rows of one table (none if it does not exist), cached until the file changes."""
    try:
        st = path.stat()
    except OSError:
        return []
    stamp = (st.st_mtime, st.st_size)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with path.open(newline="") as f:
        rows = [_parse(r) for r in csv.DictReader(f)]
    rows = [r for r in rows if r is not None]
    _CACHE[path] = (stamp, rows)
    return rows


def _parse(r: dict) -> dict | None:
    try:
        return {**r, "batch_size": int(r["batch_size"]), "jac_per_s": float(r["jac_per_s"])}
    except (KeyError, TypeError, ValueError):  # a damaged row is no measurement: skip it
        return None


def _key(r: dict) -> tuple:
    return (r["model"], r["device"], r["dtype"], r["batch_size"])


def table() -> list[dict]:
    """Shipped rows, with the user's replacing those of the same (model, device, dtype, batch size)."""
    user = read(user_table())
    mine = {_key(r) for r in user}
    return [r for r in read(SHIPPED) if _key(r) not in mine] + user


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def ranked(model: nn.Module, device: torch.device, dtype: torch.dtype, batch: int) -> list[str]:
    """Engines measured for this model (by zoo name, else family), device type and dtype at the measured batch
    size nearest to `batch` (log scale), fastest first; [] where the table has no such rows."""
    rows = [r for r in table() if r["device"] == torch.device(device).type and r["dtype"] == _dtype_name(dtype)]
    inner = getattr(model, "model", model) if type(model).__name__ == "PhysicalModel" else model  # the wrapper's net
    name, family = getattr(inner, "zoo_name", None), getattr(inner, "family", None)
    same = [r for r in rows if name is not None and r["model"] == name]
    if not same:
        same = [r for r in rows if family is not None and r["family"] == family]
    if not same:
        return []
    target = math.log2(max(batch, 1))
    nearest = min({r["batch_size"] for r in same}, key=lambda b: (abs(math.log2(b) - target), b))
    at = sorted((r for r in same if r["batch_size"] == nearest), key=lambda r: -r["jac_per_s"])
    return list(dict.fromkeys(r["engine"] for r in at))


def refresh(rows: list[dict], path: Path | None = None, engines=None) -> int:
    """Merge a sweep's `ok` Jacobian rows of real engines (not the forward pass, not the JAX peer) into the table at
    `path` (default: the user's), replacing its rows of the same (model, device, dtype, batch size); returns how
    many rows were written."""
    if engines is None:
        from bench.engines import ENGINES as engines
    path = user_table() if path is None else Path(path)
    new = [
        {c: r[c] for c in COLUMNS}
        for r in rows
        if r.get("status") == "ok" and int(r.get("order", 1) or 1) == 1 and r.get("engine") in engines
    ]
    if not new:
        return 0
    keys = {_key({**r, "batch_size": int(r["batch_size"])}) for r in new}
    kept = [r for r in read(path) if _key(r) not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        merged = sorted(kept + new, key=lambda r: (r["model"], r["device"], r["dtype"], int(r["batch_size"]),
                                                   -float(r["jac_per_s"])))  # fmt: skip
        w.writerows(merged)
    tmp.replace(path)
    return len(new)
