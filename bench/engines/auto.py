"""The measured table behind engine "auto": the fastest engine per model, device, dtype and batch size.

Rows (model, family, n_in, n_out, device, dtype, batch_size, engine, jac_per_s) come from throughput sweeps
(`python -m bench throughput`). Two tables are read, the user's rows replacing the shipped ones of the same
(model, device, dtype, batch size):

- shipped defaults, `bench/engines/auto_table.csv`, measured on the 2-core CPU this project is developed on
  (`python -m bench throughput --models '*' --auto-table bench/engines/auto_table.csv`);
- the user's own, refreshed by every sweep of the zoo's configurations (`$JACBENCH_AUTO_TABLE`, default
  ~/.cache/jacbench/auto_table.csv; `--no-auto-table` leaves it alone; `--from-run` sweeps, of a run's resized
  networks, do not write it), so `auto` follows the machine it runs on once it has been measured there. A
  sweep's row replaces only the same engine's row at that configuration, device, dtype and batch size.

A model is looked up by its zoo name (`models.create_model` sets `zoo_name`; a PhysicalModel by its network's),
else by its family, at its own n_in -> n_out, on the same device type and dtype, at the measured
batch size nearest to the batch in log scale. `ranked` returns the engines fastest first; `bench.engines.choose`
takes the first that supports the model and the call (never a batch-sum engine, never one without a graph when
create_graph is asked for, a compiled engine only when allowed), and falls back to the fixed order where the
table knows nothing. The rates are measured without a graph, so create_graph=True keeps the fixed order.
"""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

COLUMNS = ("model", "family", "n_in", "n_out", "device", "dtype", "batch_size", "engine", "jac_per_s")
SHIPPED = Path(__file__).with_name("auto_table.csv")
ENV = "JACBENCH_AUTO_TABLE"
RECHECK_S = 1.0  # how often `ranked` looks whether a table file changed (a stat per call cost more than the pick)
_CACHE: dict[Path, tuple[tuple[float, int], list[dict]]] = {}
_INDEX: dict = {"key": None, "checked": -math.inf, "index": {}}
_WARNED: set[Path] = set()


def user_table() -> Path:
    """The user's table: $JACBENCH_AUTO_TABLE, default ~/.cache/jacbench/auto_table.csv."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "jacbench" / "auto_table.csv")


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


def read(path: Path) -> list[dict]:
    """The valid rows of one table (none if it does not exist), cached until the file changes.

    A table that cannot be read (not a CSV, not UTF-8, a directory) counts as empty, with one warning naming it:
    `auto` then falls back to the fixed order instead of failing every Jacobian.
    """
    stamp = _stamp(path)
    if stamp is None:
        return []
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in map(_parse, csv.DictReader(f)) if r is not None]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        if path not in _WARNED:
            _WARNED.add(path)
            msg = (f"engine table {path} is unreadable ({type(err).__name__}: {err}); engine 'auto' ignores it "
                   "(delete it, or run `python -m bench throughput` to write a new one)")  # fmt: skip
            warnings.warn(msg, stacklevel=2)
        rows = []
    _CACHE[path] = (stamp, rows)
    return rows


def _parse(r: dict) -> dict | None:
    """A row with every field valid (positive finite rate, batch >= 1), or None: a damaged row is no measurement."""
    try:
        out = {k: str(r[k]).strip() for k in ("model", "family", "device", "dtype", "engine")}
        out["batch_size"] = int(r["batch_size"])
        out["jac_per_s"] = float(r["jac_per_s"])
        out["n_in"] = int(r.get("n_in") or 4)  # the shipped defaults: the zoo's 4 -> 4 configurations
        out["n_out"] = int(r.get("n_out") or 4)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    ok = all(out[k] for k in ("model", "device", "dtype", "engine")) and out["batch_size"] >= 1
    return out if ok and math.isfinite(out["jac_per_s"]) and out["jac_per_s"] > 0 else None


def _key(r: dict) -> tuple:
    """One measurement: an engine at one model configuration, device, dtype and batch size."""
    return (r["model"], int(r["n_in"]), int(r["n_out"]), r["device"], r["dtype"], int(r["batch_size"]), r["engine"])


def table() -> list[dict]:
    """Shipped rows, with the user's replacing those of the same measurement (_key)."""
    user = read(user_table())
    mine = {_key(r) for r in user}
    return [r for r in read(SHIPPED) if _key(r) not in mine] + user


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _index() -> dict:
    """(device, dtype) -> {("model"|"family", name, n_in, n_out): {batch: engines fastest first}}, rebuilt when a
    table file changed (looked at no more than every RECHECK_S seconds)."""
    now = time.monotonic()
    user = user_table()
    if _INDEX["key"] is not None and _INDEX["key"][0] == user and now - _INDEX["checked"] < RECHECK_S:
        return _INDEX["index"]
    key = (user, _stamp(user), _stamp(SHIPPED))
    _INDEX["checked"] = now
    if key == _INDEX["key"]:
        return _INDEX["index"]
    grouped: dict = {}
    for r in table():
        at = grouped.setdefault((r["device"], r["dtype"]), {})
        for kind, name in (("model", r["model"]), ("family", r["family"])):
            if name:
                at.setdefault((kind, name, r["n_in"], r["n_out"]), {}).setdefault(r["batch_size"], []).append(r)
    index = {dd: {k: {b: list(dict.fromkeys(x["engine"] for x in sorted(rows, key=lambda x: -x["jac_per_s"])))
                      for b, rows in by_batch.items()} for k, by_batch in groups.items()}
             for dd, groups in grouped.items()}  # fmt: skip
    _INDEX.update(key=key, index=index)
    return index


def ranked(model: nn.Module, device: torch.device, dtype: torch.dtype, batch: int) -> list[str]:
    """Engines measured for this model (its zoo name, else its family, at its n_in -> n_out), device type and dtype
    at the measured batch size nearest to `batch` (log scale), fastest first; [] where the table has no such rows."""
    groups = _index().get((torch.device(device).type, _dtype_name(dtype)))
    if not groups:
        return []
    inner = getattr(model, "model", model) if type(model).__name__ == "PhysicalModel" else model  # the wrapper's net
    name, family = getattr(inner, "zoo_name", None), getattr(inner, "family", None)
    dims = (int(getattr(model, "n_in", 0) or 0), int(getattr(model, "n_out", 0) or 0))
    by_batch = groups.get(("model", name, *dims)) or groups.get(("family", family, *dims))
    if not by_batch:
        return []
    target = math.log2(max(batch, 1))
    nearest = min(by_batch, key=lambda b: (abs(math.log2(b) - target), b))
    return by_batch[nearest]


def refresh(rows: list[dict], path: Path | None = None, engines=None) -> int:
    """Merge a sweep's `ok` Jacobian rows of real engines (not the forward pass, not the JAX peer) into the table at
    `path` (default: the user's): each replaces the row of the same measurement (_key), others stay; returns how many
    rows were written."""
    if engines is None:
        from bench.engines import ENGINES as engines  # the registry imports this module
    path = user_table() if path is None else Path(path)
    new = [
        p
        for p in (_parse(r) for r in rows if r.get("status") == "ok" and int(r.get("order", 1) or 1) == 1)
        if p is not None and p["engine"] in engines
    ]
    if not new:
        return 0
    keys = {_key(r) for r in new}
    kept = [r for r in read(path) if _key(r) not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(sorted(kept + new, key=lambda r: (*_key(r)[:6], -r["jac_per_s"])))
    tmp.replace(path)
    return len(new)
