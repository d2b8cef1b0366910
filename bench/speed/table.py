"""The sweep's rows as a table: throughput.csv (written atomically) and the derived ratios for printing."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.run import results
from bench.speed import jax_peer
from bench.speed.sweep import COLUMNS, FORWARD, LOOP


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, append: bool = False) -> None:
    """Write rows as throughput.csv (COLUMNS order, raw values), atomically: a crash leaves no half file.

    append: keep the rows already in `path` (several sweeps, e.g. CPU and GPU, in one table); rows of another
    derivative order (column ``order``; 1 in tables from before it) are refused.
    """
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    if append and os.path.exists(path):
        old = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
        old["order"] = (
            pd.to_numeric(old["order"], errors="coerce").fillna(1) if "order" in old else 1
        )  # older: Jacobians
        mixed = set(old["order"].astype(int)) ^ set(df["order"].dropna().astype(int))
        if len(old) and len(df) and mixed:
            raise ValueError(
                f"--append: {path} holds derivative order {sorted(set(old['order'].astype(int)))} rows and this sweep "
                f"measured order {sorted(set(df['order'].astype(int)))}: Jacobians/s and Hessians/s do not belong in "
                "one table (Hessian sweeps go to hessian_throughput.csv)"
            )
        df = pd.concat([old, df])
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    results.atomic_write_csv(path, df)


def _config(row: Mapping[str, Any]) -> str:
    """The row's configuration id (its model name where an older table has none)."""
    return results.config_of(str(row.get("model_config") or ""), str(row["model"]))


def summary(rows: Sequence[Mapping[str, Any]], peer: str = jax_peer.ENGINE):
    """The rows with derived ratios, for printing (a pandas DataFrame of raw numbers; NaN where undefined).

    x_loop: jac_per_s over the loop's at the same batch, or at the loop's largest measured batch where it
    was capped (its rate does not depend on the batch); x_jax: over the JAX peer's (``peer``) at the same batch;
    roofline: fraction of the FLOP limit; jac_over_fwd: time of the batch's Jacobians / time of its forward pass.
    """
    rate, loop_largest = {}, {}
    for r in sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["batch_size"]):
        rate[_config(r), r["device"], r["dtype"], r["batch_size"], r["engine"]] = r["jac_per_s"]
        if r["engine"] == LOOP:
            loop_largest[_config(r), r["device"], r["dtype"]] = r["jac_per_s"]
    nan = math.nan
    out = []
    for r in rows:
        key = (_config(r), r["device"], r["dtype"], r["batch_size"])
        jps = r["jac_per_s"] if r["status"] == "ok" else nan
        is_jac = r["engine"] != FORWARD
        loop = rate.get((*key, LOOP), loop_largest.get(key[:3], nan))
        roof = results.limit_fraction(jps, r["flops_per_jac"], r["peak_flops"])
        out.append({
            **{c: r[c] for c in ("model", "device", "dtype", "batch_size", "engine", "jac_per_s_q25", "jac_per_s_q75")},
            "model_config": _config(r),
            "jac_per_s": jps,
            "x_loop": jps / loop if is_jac else nan,
            "x_jax": jps / rate.get((*key, peer), nan) if is_jac else nan,
            "roofline": roof,
            "jac_over_fwd": rate.get((*key, FORWARD), nan) / jps if is_jac else nan,
            "ideal_over_fwd": r["flops_per_jac"] / r["flops"] if is_jac and r["flops"] else nan,
            "status": r["status"],
            "error": r["error"],
        })  # fmt: skip
    return pd.DataFrame(out)
