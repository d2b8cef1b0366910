"""Samplers: seeded designs in the unit cube, mapped onto an equation set's input box.

``SAMPLERS`` is a plain dict from name to ``fn(n, d, seed) -> np.ndarray (n, d)`` in [0, 1):

- ``"lhs"``: Latin hypercube optimized by random coordinate swaps that lower the centered
  discrepancy (``scipy.stats.qmc.LatinHypercube(optimization="random-cd")``), the forum post's
  "olhs_samples". Every one of the n strata of every dimension holds exactly one point.
- ``"sobol"``: scrambled Sobol' sequence; the first n points of a 2^m draw, so any n works.
- ``"uniform"``: independent uniform draws from ``numpy.random.default_rng(seed)``.

All are deterministic for a given seed.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import qmc
from torch import Tensor

from equations.base import EquationSet

Sampler = Callable[[int, int, int], np.ndarray]  # (n, d, seed) -> (n, d) in [0, 1)

# The random-cd optimization grows with n (10,000 swap trials, each O(n)), while its gain over a plain
# scrambled LHS fades as n grows. Above this size the design is a
# plain scrambled LHS: still one point per stratum in every dimension, just not discrepancy-optimized.
LHS_OPTIMIZE_MAX_N = 4096


def _seed_keyword(engine: type) -> str:
    # scipy >= 1.15 names the seed argument `rng` (SPEC 7); older releases call it `seed`.
    return "rng" if "rng" in inspect.signature(engine).parameters else "seed"


def _lhs(n: int, d: int, seed: int) -> np.ndarray:
    optimization = "random-cd" if n <= LHS_OPTIMIZE_MAX_N else None
    engine = qmc.LatinHypercube(d, optimization=optimization, **{_seed_keyword(qmc.LatinHypercube): seed})
    return engine.random(n)


def _sobol(n: int, d: int, seed: int) -> np.ndarray:
    # Sobol' points balance only at powers of two, and scipy warns on any other n; draw the next power
    # of two and keep the first n, which is the same prefix `random(n)` would return.
    engine = qmc.Sobol(d, scramble=True, **{_seed_keyword(qmc.Sobol): seed})
    return engine.random_base2(max(0, math.ceil(math.log2(n))))[:n]


def _uniform(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d))


SAMPLERS: dict[str, Sampler] = {"lhs": _lhs, "sobol": _sobol, "uniform": _uniform}


def sample_unit(n: int, d: int, method: str = "lhs", seed: int = 0) -> np.ndarray:
    """Draw n points in [0, 1)^d with a named sampler: (n, d) float64."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampling method {method!r}; choose one of {sorted(SAMPLERS)}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"number of samples must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    u = np.asarray(SAMPLERS[method](int(n), int(d), int(seed)), dtype=np.float64)
    assert u.shape == (n, d), f"sampler {method!r} returned shape {u.shape}, expected {(n, d)}"
    return u


def sample_inputs(eq: EquationSet, n: int, method: str = "lhs", seed: int = 0) -> Tensor:
    """Draw n inputs inside ``eq``'s box: x (n, n_in) float64 on the CPU.

    The unit-cube design u is mapped affinely, x = lower + u (upper - lower), and clamped to the box so
    that rounding can never put a sample a hair outside it.
    """
    u = torch.from_numpy(sample_unit(n, eq.n_in, method, seed))
    lo, hi = eq.bounds(torch.float64)
    return torch.minimum(torch.maximum(lo + u * (hi - lo), lo), hi)
