"""Datasets and splits: exact float64 data, user arrays with domain checks, disjoint seeded splits."""

import numpy as np
import pytest
import torch

from equations.base import DomainError, EquationSet
from equations.data import Dataset, make_dataset, max_abs_residual, split, split_indices


def affine_eq():
    A = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.5, 0.0]], dtype=torch.float64)
    eq = EquationSet("affine", lambda x: x @ A.to(x).T + 1.0, (0.0, -1.0), (1.0, 1.0), ("a", "b"), ("p", "q", "r"))
    return eq, A


@pytest.mark.parametrize("method", ["lhs", "sobol", "uniform"])
def test_make_dataset_is_exact_float64(method):
    eq, A = affine_eq()
    ds = make_dataset(eq, 20, method, seed=1)
    assert len(ds) == 20 and ds.input_names == ("a", "b") and ds.output_names == ("p", "q", "r")
    for t in (ds.x, ds.y, ds.J):
        assert t.dtype == torch.float64
    torch.testing.assert_close(ds.y, ds.x @ A.T + 1.0, rtol=0, atol=0)
    torch.testing.assert_close(ds.J, A.expand(20, 3, 2), rtol=0, atol=0)
    assert max_abs_residual(ds, eq).tolist() == [0.0, 0.0, 0.0]


def test_make_dataset_is_deterministic(forum_eq):
    eq = forum_eq
    a, b, c = make_dataset(eq, 16, seed=4), make_dataset(eq, 16, seed=4), make_dataset(eq, 16, seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.J, b.J)
    assert not torch.equal(a.x, c.x)
    # outputs of very different magnitude: what makes de-normalization matter
    spread = a.y.abs().amax(0)
    assert spread.max() / spread.min() > 100


def test_forum_jacobian_spot_check(forum_eq):
    # df4/dx1 = 400 x1 + 3 x1^2 and df1/dx3 = 0.35 x3^2.5, by hand
    eq = forum_eq
    ds = make_dataset(eq, 8, "uniform", seed=0)
    x1, x3 = ds.x[:, 0], ds.x[:, 2]
    torch.testing.assert_close(ds.J[:, 3, 0], 400 * x1 + 3 * x1**2, rtol=1e-14, atol=0)
    torch.testing.assert_close(ds.J[:, 0, 2], 0.35 * x3**2.5, rtol=1e-14, atol=0)


def test_from_arrays_computes_y_and_exact_jacobian():
    eq, A = affine_eq()
    x = np.array([[0.5, 0.25], [0.0, -1.0], [1.0, 1.0]], dtype=np.float32)  # any float input -> float64
    ds = Dataset.from_arrays(eq, x)
    assert ds.x.dtype == torch.float64
    torch.testing.assert_close(ds.y, ds.x @ A.T + 1.0, rtol=0, atol=0)
    torch.testing.assert_close(ds.J, A.expand(3, 3, 2), rtol=0, atol=0)


def test_from_arrays_keeps_user_outputs_and_reports_residual():
    eq, A = affine_eq()
    x = torch.tensor([[0.5, 0.25], [0.1, -0.5]], dtype=torch.float64)
    y = x @ A.T + 1.0
    y[1, 2] += 0.125  # the user's (noisy) measurement is kept as given
    ds = Dataset.from_arrays(eq, x, y)
    assert torch.equal(ds.y, y)
    assert max_abs_residual(ds, eq).tolist() == [0.0, 0.0, 0.125]


def test_from_arrays_outside_domain_names_row_and_input(forum_eq):
    eq = forum_eq
    x = torch.full((3, 4), 1.0, dtype=torch.float64)
    x[2, 2] = -0.5  # negative x3: x3^(7/2) would be NaN
    with pytest.raises(DomainError, match=r"row 2, input 'x3' = -0.5 lies outside its domain \[0.1, 3\]"):
        Dataset.from_arrays(eq, x)


def test_from_arrays_bad_shapes_and_values():
    eq, _ = affine_eq()
    with pytest.raises(ValueError, match=r"shape \(B, 2\) with columns \['a', 'b'\], got shape \(4, 3\)"):
        Dataset.from_arrays(eq, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"outputs for 'affine' must have shape \(4, 3\)"):
        Dataset.from_arrays(eq, torch.zeros(4, 2), torch.zeros(4, 2))
    y = torch.zeros(4, 3)
    y[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"supplied output 'q' = inf at row 3"):
        Dataset.from_arrays(eq, torch.zeros(4, 2), y)


def test_equation_returning_nan_inside_its_box_is_reported():
    eq = EquationSet("log", lambda x: torch.log(x - 0.5), (0.0,), (1.0,), ("x",), ("f",))
    with pytest.raises(ValueError, match=r"'log' returned output 'f' = nan at row 0"):
        Dataset.from_arrays(eq, torch.tensor([[0.25], [0.75]]))


def test_infinite_jacobian_is_reported():
    eq = EquationSet("sqrt", lambda x: torch.sqrt(x), (0.0,), (1.0,), ("x",), ("f",))
    with pytest.raises(ValueError, match=r"df/dx = inf at row 1"):
        Dataset.from_arrays(eq, torch.tensor([[0.25], [0.0]]))


def test_dataset_validates_its_fields():
    with pytest.raises(ValueError, match=r"Dataset.J has shape"):
        Dataset(
            torch.zeros(2, 1, dtype=torch.float64),
            torch.zeros(2, 1, dtype=torch.float64),
            torch.zeros(2, 1, dtype=torch.float64),
            ("x",),
            ("f",),
        )
    with pytest.raises(ValueError, match="must be float64"):
        Dataset(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1, 1), ("x",), ("f",))


@pytest.mark.parametrize(("n", "val", "test"), [(100, 0.15, 0.15), (7, 0.15, 0.15), (10, 0.0, 0.2), (3, 0.0, 0.0)])
def test_split_indices_disjoint_covering_reproducible(n, val, test):
    tr, va, te = split_indices(n, val, test, seed=2)
    every = torch.cat([tr, va, te])
    assert sorted(every.tolist()) == list(range(n))  # disjoint and covering
    assert len(va) == (max(1, round(val * n)) if val else 0)
    assert len(te) == (max(1, round(test * n)) if test else 0)
    again = split_indices(n, val, test, seed=2)
    assert all(torch.equal(a, b) for a, b in zip((tr, va, te), again, strict=True))


def test_split_seeds_differ_and_subsets_match_indices(forum_eq):
    eq = forum_eq
    ds = make_dataset(eq, 40, "uniform", seed=0)
    s1, s2 = split(ds, seed=0), split(ds, seed=1)
    assert not torch.equal(s1.train.x, s2.train.x)
    assert [len(s) for s in s1] == [28, 6, 6]
    tr, va, te = split_indices(40, seed=0)
    for part, idx in zip(s1, (tr, va, te), strict=True):
        assert torch.equal(part.x, ds.x[idx]) and torch.equal(part.J, ds.J[idx])
        assert part.input_names == ds.input_names
    rows = {tuple(r) for part in s1 for r in part.x.tolist()}
    assert len(rows) == 40  # no sample in two splits


@pytest.mark.parametrize(
    ("val", "test", "msg"), [(-0.1, 0.1, "must lie in"), (0.5, 0.5, "leaves no training"), (0.4, 0.4, "too few")]
)
def test_bad_split_fractions(val, test, msg):
    with pytest.raises(ValueError, match=msg):
        split_indices(2, val, test)
