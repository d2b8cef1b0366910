"""Size a model to a parameter budget: fair comparisons match parameters (and report FLOPs beside them)."""

from __future__ import annotations

import warnings
from typing import Any

from models.registry import accepted_overrides, create_model

MAX_WIDTH = 1 << 16


def match_params(name: str, budget: int, n_in: int = 4, n_out: int = 4, **overrides: Any) -> dict:
    """The overrides (``overrides`` plus the chosen ``width``) whose parameter count is closest to ``budget``.

    Depth and every other option stay as given (or at the model's default); only the hidden width varies.
    Counts grow with width, so an exponential then binary search needs about 2 log2(width) builds.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"match_params: budget must be a positive integer, got {budget!r}")
    accepted = accepted_overrides(name)
    if accepted is not None and "width" not in accepted:
        raise ValueError(f"match_params: model {name!r} has no 'width' option to size; it accepts {accepted}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    clash = [k for k in ("width", "hidden", "layers") if k in overrides]
    if clash:
        raise ValueError(f"match_params chooses the width itself; drop {clash} (depth may be given)")

    def count(width: int) -> int:
        with warnings.catch_warnings():  # e.g. fastkan's 1-D LayerNorm warning: the count is still right
            warnings.simplefilter("ignore")
            return create_model(name, n_in, n_out, seed=0, width=width, **overrides).param_count()

    hi = 1
    while count(hi) < budget and hi < MAX_WIDTH:
        hi *= 2
    lo = max(hi // 2, 1)  # count(lo) < budget <= count(hi), unless hi == 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < budget:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda w: (abs(count(w) - budget), w))
    return {**overrides, "width": best}
