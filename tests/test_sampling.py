"""Samplers: deterministic per seed, inside the box, and LHS stratified."""

import numpy as np
import pytest
import torch

from equations.base import EquationSet
from equations.sampling import LHS_OPTIMIZE_MAX_N, SAMPLERS, sample_inputs, sample_unit

METHODS = sorted(SAMPLERS)


def _box_eq() -> EquationSet:
    # a badly scaled box (ranges 2.9, 1000, 1e-3) so mapping errors would show
    return EquationSet(
        name="box",
        fn=lambda x: x[..., :1] * x[..., 1:2],
        lower=(0.1, -500.0, 1.0),
        upper=(3.0, 500.0, 1.001),
        input_names=("x1", "x2", "x3"),
        output_names=("f1",),
    )


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_per_seed_and_different_across_seeds(method):
    a = sample_unit(50, 3, method, seed=7)
    b = sample_unit(50, 3, method, seed=7)
    c = sample_unit(50, 3, method, seed=8)
    assert a.shape == (50, 3) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 37, 64])  # 37: not a power of two (Sobol must not warn: warnings are errors)
def test_samples_lie_in_the_box(method, n):
    eq = _box_eq()
    x = sample_inputs(eq, n, method, seed=3)
    assert x.shape == (n, 3) and x.dtype == torch.float64
    lo, hi = eq.bounds()
    assert bool(((x >= lo) & (x <= hi)).all())
    eq.check_domain(x)
    if n > 1:  # spread over the box, not collapsed to a corner
        assert bool(((x.amax(0) - x.amin(0)) > 0.5 * (hi - lo)).all())


@pytest.mark.parametrize("n", [1, 2, 37, LHS_OPTIMIZE_MAX_N + 1])  # optimized, and plain LHS above the cap
def test_lhs_hits_each_stratum_exactly_once(n):
    u = sample_unit(n, 4, "lhs", seed=11)
    assert bool(((u >= 0) & (u < 1)).all())
    strata = np.floor(u * n).astype(int)  # stratum k is [k/n, (k+1)/n)
    for d in range(4):
        np.testing.assert_array_equal(np.sort(strata[:, d]), np.arange(n))


def test_lhs_in_the_box_keeps_its_strata():
    eq = _box_eq()
    n = 40
    x = sample_inputs(eq, n, "lhs", seed=0)
    lo, hi = eq.bounds()
    strata = torch.floor((x - lo) / (hi - lo) * n).clamp(max=n - 1).long()
    for d in range(eq.n_in):
        assert sorted(strata[:, d].tolist()) == list(range(n))


def test_sobol_prefix_is_stable():
    # the first n points do not depend on how many more were drawn (2^m draw, truncated)
    np.testing.assert_array_equal(sample_unit(37, 2, "sobol", 5), sample_unit(64, 2, "sobol", 5)[:37])


def test_unknown_method_lists_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown sampling method 'olhs'; choose one of \['lhs', 'sobol', 'uniform'\]"
    ):
        sample_inputs(_box_eq(), 10, "olhs")


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_sample_count(n):
    with pytest.raises(ValueError, match="positive integer"):
        sample_unit(n, 2, "uniform")


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        sample_unit(4, 2, "lhs", seed=-1)


def test_lhs_is_discrepancy_optimized():
    # "lhs" is the optimized LHS: its centered discrepancy beats plain scrambled LHS designs of the same size
    from scipy.stats import qmc

    from equations.sampling import _seed_keyword  # `rng` on scipy >= 1.15, `seed` before

    opt = qmc.discrepancy(sample_unit(64, 4, "lhs", seed=0))
    plain = [
        qmc.discrepancy(qmc.LatinHypercube(4, **{_seed_keyword(qmc.LatinHypercube): s}).random(64)) for s in range(5)
    ]
    assert opt < min(plain)
