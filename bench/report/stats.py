"""Seed statistics: mean ± 95% confidence interval (Student t), and how numbers are printed.

Numbers are kept raw in the tables and rounded only here, when rendered.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
CONFIG_KEYS = ["equation", "model", "family", "variant", "beta", "n_train"]  # a cell without its seed
ENTRY_KEYS = ["split", "metric", "output", "input", "bin"]  # which number of a cell


def aggregate(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, std, n and CI half-width of ``value`` over the rows of each ``keys`` group (i.e. over seeds).

    Non-finite values (NaN with a reason in ``error``) are left out of the mean and of n.
    """
    value = df["value"].where(np.isfinite(df["value"]))
    out = value.groupby([df[k] for k in keys], dropna=False, sort=False).agg(["mean", "std", "count"])
    out = out.rename(columns={"count": "n"}).reset_index()
    n = out["n"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        t = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1))
        out["ci"] = np.where(n >= 2, t * out["std"] / np.sqrt(n), np.nan)
    return out


def fmt_num(x: float, digits: int = 3) -> str:
    """A number for a table: fixed point in [1e-3, 1e5), else scientific; ``digits`` significant."""
    if x is None or not np.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
        return f"{x:.{decimals}f}"
    return f"{x:.{digits - 1}e}"


def fmt_key(x) -> str:
    """A grid coordinate or count (beta, n_train, seed, params): ``%g`` to 8 digits, ``–`` where missing."""
    if isinstance(x, str):
        return x
    return f"{x:.8g}" if x is not None and np.isfinite(x) else "–"


def fmt_ci(mean: float, ci: float, n: int) -> str:
    """``mean ± ci`` with the mean printed to the CI's precision; ``mean (n=1)`` with one seed."""
    if n == 0 or not np.isfinite(mean):
        return "–"
    if n == 1 or not np.isfinite(ci):
        return f"{fmt_num(mean, 4)} (n={n})"
    if ci == 0:
        return f"{fmt_num(mean, 4)} ± 0"
    if 1e-3 <= abs(mean) < 1e5:
        decimals = min(max(1 - math.floor(math.log10(ci)), 0), 7)  # two significant digits of the CI
        ci_text = f"{ci:.{decimals}f}" if ci >= 10.0 ** (1 - decimals) else f"{ci:.1e}"
        return f"{mean:.{decimals}f} ± {ci_text}"
    digits = min(max(2 + math.floor(math.log10(abs(mean) / ci)), 2), 6) if mean != 0 else 2
    return f"{mean:.{digits - 1}e} ± {ci:.1e}"
