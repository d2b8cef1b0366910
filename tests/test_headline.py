"""The headline derivative error (bench.fidelity.headline): the properties the issue names, each with a known answer.

Every check runs in float64; the tolerances beside them are rounding of a few operations on O(1e3) numbers.
"""

import math

import numpy as np
import pytest
import torch

import equations
from bench.fidelity import metrics
from bench.fidelity.headline import derivative_error, summarize
from bench.fidelity.hessian_metrics import hessian_rows
from equations.data import make_dataset

# Every built-in set with exact derivatives, and generated sets of each family (the verdict's population).
SETS = [n for n in equations.list() if not n.startswith("gen:")]
SETS += [f"gen:{fam}:{i}" for fam in ("smooth", "mixed", "hard") for i in range(3)]


def _data(name: str, n: int = 300, seed: int = 0):
    eq = equations.get(name)
    ds = make_dataset(eq, n, "lhs", seed)
    return eq, ds, np.asarray(eq.upper, float) - np.asarray(eq.lower, float)


def test_headline_sets_are_the_registry():
    assert "forum4x4" in SETS and "sine1d" in SETS and len(SETS) >= 10


@pytest.mark.parametrize("name", SETS)
def test_zero_and_twice_the_truth_score_exactly_one_and_the_truth_zero(name):
    eq, ds, r = _data(name)
    J = ds.J.numpy()
    for wrong in (0 * J, 2 * J):  # 100% wrong at every sample: RMS over samples exactly 1, nothing compressed
        assert summarize(metrics.jacobian_error(J, wrong, r))["rms"] == pytest.approx(1.0, rel=1e-12)
    assert (metrics.jacobian_error(J, J, r) == 0).all()
    if eq.has_hessian:
        H = eq.hessian(ds.x).numpy()
        head = derivative_error(H, 2 * H, r, order=2)
        live = np.isfinite(head.output_rms())
        assert live.any(), name
        assert summarize(head.per_sample)["rms"] == pytest.approx(1.0, rel=1e-12)
        np.testing.assert_allclose(head.output_rms()[live], 1.0, rtol=1e-12)
        assert (metrics.hessian_error(H, H, r)[np.isfinite(metrics.hessian_error(H, H, r))] == 0).all()


def test_the_old_adversarial_cases_score_what_they_are():
    # forum4x4: f4's derivatives are ~700x f1-f3's in physical units. Zeroing f1-f3 scored a median of 1.28% under
    # the old Frobenius norm over all outputs; here each zeroed output counts 1/4: RMS exactly sqrt(3/4).
    _eq, ds, r = _data("forum4x4", 500)
    J = ds.J.numpy()
    J_pred = J.copy()
    J_pred[:, :3] = 0.0
    assert summarize(metrics.jacobian_error(J, J_pred, r))["rms"] == pytest.approx(math.sqrt(3 / 4), rel=1e-12)
    # gen:hard:0: 2 x J scored a median of 16% under the old floor; RMS here is exactly 100%.
    _eq, ds, r = _data("gen:hard:0", 500)
    J = ds.J.numpy()
    assert summarize(metrics.jacobian_error(J, 2 * J, r))["rms"] == pytest.approx(1.0, rel=1e-12)


def test_every_output_weighs_the_same_on_forum4x4():
    eq, ds, r = _data("forum4x4", 500)
    J, H = ds.J.numpy(), eq.hessian(ds.x).numpy()
    for true, err_fn in ((J, metrics.jacobian_error), (H, metrics.hessian_error)):
        all_zero = summarize(err_fn(true, 0 * true, r))["rms"]
        one = []
        for i in range(eq.n_out):
            pred = true.copy()
            pred[:, i] = 0.0
            one.append(summarize(err_fn(true, pred, r))["rms"])
        # exactly sqrt(1/n_out) whichever output it is (the issue asks within 20%), >= 1/n_out of zeroing all
        np.testing.assert_allclose(one, math.sqrt(1 / eq.n_out), rtol=1e-12)
        assert min(one) >= all_zero / eq.n_out


def test_unit_invariance_under_any_input_and_output_rescaling():
    rng = np.random.default_rng(0)
    eq, ds, r = _data("forum4x4", 200)
    J = ds.J.numpy()
    J_pred = J * (1 + 0.1 * rng.normal(size=J.shape)) + 0.05 * rng.normal(size=J.shape)
    H = eq.hessian(ds.x).numpy()
    H_pred = H * (1 + 0.1 * rng.normal(size=H.shape))
    c_in = np.array([1e-3, 7.0, 1.0, 250.0])  # x_j -> c_j x_j (its box with it): J_ij -> J_ij / c_j
    c_out = np.array([1e4, 1.0, 1e-6, 3.0])  # f_i -> d_i f_i: J_ij -> d_i J_ij
    Jt = J * c_out[None, :, None] / c_in[None, None, :]
    Jp = J_pred * c_out[None, :, None] / c_in[None, None, :]
    np.testing.assert_allclose(metrics.jacobian_error(Jt, Jp, r * c_in), metrics.jacobian_error(J, J_pred, r),
                               rtol=1e-12)  # fmt: skip
    sc = c_out[None, :, None, None] / (c_in[None, None, :, None] * c_in[None, None, None, :])
    np.testing.assert_allclose(metrics.hessian_error(H * sc, H_pred * sc, r * c_in),
                               metrics.hessian_error(H, H_pred, r), rtol=1e-12)  # fmt: skip
    # through the rows the runner writes: the same rescaling of the box leaves every headline row unchanged
    lo, hi = np.asarray(eq.lower, float), np.asarray(eq.upper, float)
    x, y = ds.x.numpy(), ds.y.numpy()
    a = metrics.fidelity_rows(x, y, y, J, J_pred, lo, hi, eq.input_names, eq.output_names)
    b = metrics.fidelity_rows(x * c_in, y * c_out, y * c_out, Jt, Jp, lo * c_in, hi * c_in, eq.input_names,
                              eq.output_names)  # fmt: skip
    heads = [m for m in ("jac_err_rms", "jac_err_median", "jac_err_p90", "jac_err_max", "jac_out_err", "jac_entry_err")]
    va = [row["value"] for row in a if row["metric"] in heads]
    vb = [row["value"] for row in b if row["metric"] in heads]
    assert len(va) == 4 + 4 + 16
    np.testing.assert_allclose(vb, va, rtol=1e-12)


def test_a_constant_offset_on_sine1d_scores_flat_without_a_floor():
    # u = sin x on [0, 2 pi]: cos x crosses 0 twice. A constant offset c scores c x range / RMS(cos x x range) at
    # every sample: no bump at the zeros (the old plain ratio: 51% there), nothing divided by a floor.
    x = torch.linspace(0, 2 * math.pi, 2001, dtype=torch.float64)[:, None]
    J = torch.cos(x)[:, :, None]
    err = metrics.jacobian_error(J, J + 1e-3, [2 * math.pi])
    np.testing.assert_allclose(err, 1e-3 / float(J.pow(2).mean().sqrt()), rtol=1e-9)  # rounding of cos + 1e-3
    profile = [med for _, med, _, _ in metrics.jac_error_by_edge(x, [0.0], [2 * math.pi], J, J + 1e-3)]
    assert max(profile) / min(profile) == pytest.approx(1.0, rel=1e-9)
    # a large error at one sample is not hidden: doubling the prediction at 1 of 2001 samples shows in the max
    J_pred = J.clone()
    J_pred[500] *= 100.0
    s = summarize(metrics.jacobian_error(J, J_pred, [2 * math.pi]))
    assert s["max"] == pytest.approx(99 * abs(float(J[500, 0, 0])) / float(J.pow(2).mean().sqrt()), rel=1e-9)
    assert s["median"] == 0.0 and s["p90"] == 0.0


def test_breakdowns_add_up_to_the_headline():
    rng = np.random.default_rng(1)
    _eq, ds, r = _data("forum4x4", 300)
    J = ds.J.numpy()
    J_pred = J + rng.normal(size=J.shape) * np.abs(J).mean(axis=0)
    head = derivative_error(J, J_pred, r, order=1)
    # per output: RMS over samples; its squares' mean is the headline's square; per entry: squares sum to per output
    np.testing.assert_allclose(np.mean(head.output_rms() ** 2), head.summary()["rms"] ** 2, rtol=1e-12)
    np.testing.assert_allclose(np.sum(head.per_entry**2, axis=1), head.output_rms() ** 2, rtol=1e-12)
    # the output's scale is the RMS over samples of its range-scaled gradient norm, in its own units
    np.testing.assert_allclose(head.output_scale, np.sqrt(np.mean(np.sum((J * r) ** 2, axis=2), axis=0)), rtol=1e-12)


def test_an_output_with_identically_zero_derivatives_is_nan_with_the_reason():
    rng = np.random.default_rng(2)
    J = rng.normal(size=(50, 2, 3))
    J[:, 1] = 0.0  # a constant output
    J_pred = J + 0.1
    head = derivative_error(J, J_pred, [1.0, 2.0, 3.0], order=1)
    assert math.isnan(head.output_rms()[1]) and "identically 0" in head.output_notes[1]
    assert "absolute range-scaled RMS error" in head.output_notes[1]
    assert np.isfinite(head.per_sample).all() and "left out: output 1" in head.note  # the other output still scores
    rows = metrics.fidelity_rows(rng.uniform(size=(50, 3)), J[:, :, 0], J[:, :, 0], J, J_pred, [0, 0, 0], [1, 2, 3],
                                 ("a", "b", "c"), ("f", "g"))  # fmt: skip
    by = {(row["metric"], row["output"]): row for row in rows}
    assert math.isnan(by[("jac_out_err", "g")]["value"]) and "identically 0" in by[("jac_out_err", "g")]["error"]
    assert "left out" in by[("jac_err_rms", "")]["error"]
    none = derivative_error(np.zeros((5, 1, 2)), np.ones((5, 1, 2)), [1, 1], order=1)
    assert np.isnan(none.per_sample).all() and "every output" in none.note
    # a linear output's Hessian: the same rule one derivative up, in the Hessian rows
    H = np.zeros((50, 2, 3, 3))
    H[:, 0] = np.eye(3)
    rows = hessian_rows(rng.uniform(size=(50, 3)), H, H * 1.1, np.trace(H * 1.1, axis1=2, axis2=3), [0] * 3, [1] * 3,
                        ("a", "b", "c"), ("f", "g"))  # fmt: skip
    by = {(row["metric"], row["output"]): row for row in rows}
    assert by[("hess_err_rms", "")]["value"] == pytest.approx(0.1, rel=1e-12)  # output f alone: 10% everywhere
    assert math.isnan(by[("hess_out_err", "g")]["value"]) and "second derivatives" in by[("hess_out_err", "g")]["error"]


def test_nan_predictions_propagate_and_bad_ranges_are_clear_errors():
    J = np.ones((4, 2, 3))
    bad = J.copy()
    bad[2, 0, 1] = np.nan
    head = derivative_error(J, bad, [1, 1, 1], order=1)
    assert math.isnan(head.summary()["rms"]) and "NaN/inf" in head.note
    # a NaN prediction on an output without a scale (left out of the pooling) still makes its sample NaN
    J0 = np.ones((4, 2, 3))
    J0[:, 1] = 0.0
    bad0 = J0.copy()
    bad0[1, 1, 0] = np.inf
    head0 = derivative_error(J0, bad0, [1, 1, 1], order=1)
    assert np.isnan(head0.per_sample[1]) and np.isfinite(head0.per_sample[[0, 2, 3]]).all()
    with pytest.raises(ValueError, match=r"J_true has NaN/inf values \(first at index \(2, 0, 1\)\)"):
        metrics.jacobian_error(bad, J, [1, 1, 1])
    with pytest.raises(ValueError, match="input_ranges has 2 entries"):
        metrics.jacobian_error(J, J, [1, 1])
    with pytest.raises(ValueError, match="finite and > 0"):
        metrics.jacobian_error(J, J, [1, 0, 1])
    with pytest.raises(ValueError, match=r"\(B, n_out, n_in, n_in\)"):
        metrics.hessian_error(J, J, [1, 1, 1])
    # torch in, float64 inside: the same numbers as numpy
    t = torch.tensor(J, dtype=torch.float32)
    np.testing.assert_array_equal(
        metrics.jacobian_error(t, 2 * t, [1, 1, 1]), metrics.jacobian_error(J, 2 * J, [1] * 3)
    )
