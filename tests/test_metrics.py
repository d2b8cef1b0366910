"""Fidelity metrics on cases with known answers."""

import math

import numpy as np
import pytest
import torch

from bench.fidelity import metrics
from equations.scaling import PhysicalModel, Scaler


@pytest.fixture
def forum(forum_jacobian):
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 2.9 * torch.rand(200, 4, generator=g, dtype=torch.float64)
    return x, forum_jacobian(x)


def test_perfect_predictor_scores_r2_one_and_zero_jacobian_error(forum):
    _x, J = forum
    y = torch.randn(200, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r2, why = metrics.r2_per_output(y, y)
    assert r2.tolist() == [1.0] * 4 and why == [""] * 4
    assert (metrics.rmse_per_output(y, y) == 0).all()
    err = metrics.jacobian_error(J, J, [2.9] * 4)
    assert (err == 0).all()
    assert metrics.summarize(err) == {"rms": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    nrmse, _ = metrics.jac_entry_nrmse(J, J)
    assert (nrmse == 0).all()
    assert metrics.jac_sign_agreement(J, J) == (1.0, "")


def test_constant_offset_scores_exactly_its_range_scaled_norm_and_entries(forum):
    _x, J = forum
    D = torch.tensor([[0.3, -0.1, 0.0, 2.0], [1.0, 0.0, -0.5, 0.25], [0.0] * 4, [4.0, -3.0, 0.0, 1.0]], dtype=J.dtype)
    r = torch.tensor([2.9, 1.0, 0.5, 3.0], dtype=J.dtype)
    err = metrics.jacobian_error(J, J + D, r)
    sigma = (J * r).pow(2).sum(2).mean(0).sqrt()  # each output's typical range-scaled gradient norm
    expected = float(((D * r).pow(2).sum(1) / sigma.pow(2)).mean().sqrt())  # the same at every sample
    # float64: J + D - J loses at most ~1 ulp of |J| (up to ~1300 for f4) per entry
    np.testing.assert_allclose(err, expected, rtol=1e-10, atol=0)
    np.testing.assert_allclose(metrics.jac_entry_rmse(J, J + D), D.abs().numpy(), rtol=0, atol=1e-12)
    scale, _notes = metrics.entry_scales(J)
    nrmse, _ = metrics.jac_entry_nrmse(J, J + D)
    np.testing.assert_allclose(nrmse, D.abs().numpy() / scale, rtol=0, atol=1e-12)


def test_constant_entry_has_finite_nrmse_and_nan_r2_with_reason(forum):
    _x, J = forum
    J_pred = J + 0.01 * torch.randn(J.shape, dtype=J.dtype, generator=torch.Generator().manual_seed(2))
    scale, notes = metrics.entry_scales(J)
    assert scale[1, 2] == pytest.approx(5.0, abs=1e-12) and notes[1][2] == ""  # df2/dx3 = 5: RMS is 5
    nrmse, _ = metrics.jac_entry_nrmse(J, J_pred)
    assert np.isfinite(nrmse).all()
    r2, why = metrics.jac_entry_r2(J, J_pred)
    for i, j in [(1, 2), (1, 3)]:  # df2/dx3 = 5, df2/dx4 = 6
        assert math.isnan(r2[i, j]) and "constant" in why[i][j]
    assert np.isfinite(r2[0]).all() and why[0] == [""] * 4


def test_identically_zero_entry_falls_back_to_its_row_scale():
    J = torch.zeros(10, 2, 2, dtype=torch.float64)
    J[:, 0, 0] = torch.linspace(1, 2, 10, dtype=torch.float64)  # row 0: one live entry, one zero entry
    scale, notes = metrics.entry_scales(J)
    row_rms = float(J[:, 0, :].pow(2).mean().sqrt())
    assert scale[0, 1] == pytest.approx(row_rms) and "row 0" in notes[0][1]
    assert scale[1, 0] > 0 and "whole true Jacobian" in notes[1][0]  # row 1 identically zero
    scale, notes = metrics.entry_scales(torch.zeros(3, 2, 2, dtype=torch.float64))
    assert (scale == 1).all() and "absolute" in notes[0][0]


def test_spurious_derivatives_on_structural_zeros():
    # Truth: df1/dx2 = 0 everywhere (a structural zero), df1/dx1 = 2, row RMS sqrt(2).
    J = torch.zeros(100, 1, 2, dtype=torch.float64)
    J[:, 0, 0] = 2.0
    frac, worst, per_entry, note = metrics.jac_spurious(J, J)
    assert frac == 0.0 and worst == 0.0 and note == ""
    assert math.isnan(per_entry[0, 0]) and per_entry[0, 1] == 0.0  # df1/dx1 is never 0: no verdict there
    J_pred = J.clone()
    J_pred[:30, 0, 1] = 0.5  # invented sensitivity on 30 of 100 samples: 0.5 / sqrt(2) = 35% of the row's RMS
    J_pred[30:60, 0, 1] = 1e-3  # tiny, below the 1% threshold: not spurious
    frac, worst, per_entry, _ = metrics.jac_spurious(J, J_pred)
    assert frac == pytest.approx(0.30) and per_entry[0, 1] == pytest.approx(0.30)
    assert worst == pytest.approx(0.5 / math.sqrt(2))
    assert metrics.jac_sign_agreement(J, J_pred) == (1.0, "")  # sign agreement alone would call this perfect
    assert math.isnan(metrics.jac_spurious(J + 1.0, J)[0])  # no true zero: undefined, with a reason
    frac, _, _, note = metrics.jac_spurious(J, torch.full_like(J, float("nan")))
    assert math.isnan(frac) and "NaN" in note  # a NaN prediction is no evidence of "no spurious derivative"


def test_constant_output_has_nan_r2_with_reason():
    y = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]], dtype=torch.float64)
    r2, why = metrics.r2_per_output(y, y + 0.1)
    assert math.isnan(r2[0]) and "constant" in why[0]
    assert np.isfinite(r2[1]) and why[1] == ""


def test_sign_agreement_on_a_constructed_case():
    # row 0 has RMS ~ 1: entry 1e-6 is below 1e-3 x RMS, so it has no sign to compare
    J_true = torch.tensor([[[1.0, -2.0, 1e-6], [3.0, 4.0, -1.0]]], dtype=torch.float64)
    J_pred = torch.tensor([[[0.5, 2.0, -1.0], [3.0, -4.0, -2.0]]], dtype=torch.float64)
    frac, note = metrics.jac_sign_agreement(J_true, J_pred)
    assert frac == pytest.approx(3 / 5) and note == ""  # agree: (0,0), (1,0), (1,2); disagree: (0,1), (1,1)
    frac, note = metrics.jac_sign_agreement(torch.zeros(2, 1, 1), torch.ones(2, 1, 1))
    assert math.isnan(frac) and "~0" in note


def test_edge_bins_on_points_at_known_distances():
    lower, upper = np.array([1.0, -2.0]), np.array([3.0, 2.0])
    # normalized distances 0.05, 0.15, 0.35, 0.45, 0.5 (centre), 0.02 (near the upper face of input 2)
    u = np.array([[0.05, 0.5], [0.5, 0.15], [0.35, 0.4], [0.55, 0.45], [0.5, 0.5], [0.5, 0.98]])
    x = lower + u * (upper - lower)
    np.testing.assert_allclose(metrics.edge_distance(x, lower, upper), [0.05, 0.15, 0.35, 0.45, 0.5, 0.02])
    J = torch.ones(6, 1, 2, dtype=torch.float64)
    rel = torch.tensor([0.6, 0.2, 0.3, 0.4, 0.5, 0.1], dtype=torch.float64)  # relative error per sample
    J_pred = J * (1 + rel)[:, None, None]
    bins = metrics.jac_error_by_edge(x, lower, upper, J, J_pred)
    assert [b[0] for b in bins] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert [b[2] for b in bins] == [2, 1, 0, 1, 2]
    assert bins[0][1] == pytest.approx(0.35)  # median of 0.6 and 0.1
    assert bins[1][1] == pytest.approx(0.2)
    assert math.isnan(bins[2][1]) and bins[2][3] == "no samples in this bin"
    assert bins[4][1] == pytest.approx(0.45)  # 0.45 and the centre 0.5 share the last, closed bin


class _WrongWrapper(PhysicalModel):
    """De-normalizes outputs with twice the scale: its Jacobian disagrees with the chain rule."""

    def forward(self, x):
        y_n = self.model(self.scaler.transform_x(x))
        return 2 * self.scaler.inverse_y(y_n) - self.scaler.inverse_y(torch.zeros_like(y_n))


def test_denorm_check_is_tiny_for_physical_model_and_large_for_a_wrong_wrapper():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))  # float32
    lo, hi = torch.tensor([0.1, -1.0, 5.0], dtype=torch.float64), torch.tensor([3.0, 1.0, 105.0], dtype=torch.float64)
    x = lo + (hi - lo) * torch.rand(64, 3, dtype=torch.float64)
    y = torch.stack([1000 * x[:, 0] + x[:, 2], 0.01 * x[:, 1]], -1)  # outputs on very different scales
    scaler = Scaler.fit(x, y, "minmax")
    # float64 throughout: the chain rule agrees to rounding (|J| up to ~1e3 here)
    assert metrics.denorm_check(PhysicalModel(model, scaler), x[:16]) < 1e-9
    assert metrics.denorm_check(_WrongWrapper(model, scaler), x[:16]) > 1e-3
    assert model[0].weight.dtype == torch.float32  # the check worked on a float64 copy


def test_fidelity_rows_follow_the_results_schema(forum):
    x, J = forum
    y = torch.randn(200, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    names_in, names_out = ("x1", "x2", "x3", "x4"), ("f1", "f2", "f3", "f4")
    rows = metrics.fidelity_rows(x, y, y + 0.01, J, J + 0.1, [0.1] * 4, [3.0] * 4, names_in, names_out)
    assert all(set(r) == {"metric", "output", "input", "bin", "value", "error"} for r in rows)
    count = {}
    for r in rows:
        count[r["metric"]] = count.get(r["metric"], 0) + 1
    assert count == {
        "r2": 4,
        "r2_min": 1,
        "rmse": 4,
        "jac_err_rms": 1,
        "jac_err_median": 1,
        "jac_err_p90": 1,
        "jac_err_max": 1,
        "jac_out_err": 4,
        "jac_out_scale": 4,
        "jac_entry_err": 16,
        "jac_entry_nrmse": 16,
        "jac_sign_agree": 1,
        "jac_spurious": 1,
        "jac_spurious_max": 1,
        "jac_entry_spurious": 1,  # forum4x4's one structural zero: df4/dx3
        "jac_err_by_edge": 5,
    }
    by = {(r["metric"], r["output"], r["input"]): r for r in rows}
    assert by[("rmse", "f3", "")]["value"] == pytest.approx(0.01)
    assert by[("jac_entry_nrmse", "f2", "x3")]["value"] == pytest.approx(0.1 / 5)
    assert all(isinstance(r["value"], float) for r in rows)
    assert all(r["error"] for r in rows if math.isnan(r["value"]))  # every NaN says why
    with_r2 = metrics.fidelity_rows(x, y, y, J, J, [0.1] * 4, [3.0] * 4, names_in, names_out, include_entry_r2=True)
    r2_f2_x3 = next(r for r in with_r2 if r["metric"] == "jac_entry_r2" and (r["output"], r["input"]) == ("f2", "x3"))
    assert math.isnan(r2_f2_x3["value"]) and "constant" in r2_f2_x3["error"]


def test_mismatched_shapes_and_names_are_clear_errors(forum):
    x, J = forum
    with pytest.raises(ValueError, match="same shape"):
        metrics.jac_entry_nrmse(J, J[:, :3])
    with pytest.raises(ValueError, match="output names"):
        metrics.fidelity_rows(x, J[:, :, 0], J[:, :, 0], J, J, [0.1] * 4, [3.0] * 4, ("x1",) * 4, ("f1",) * 3)


# --- second derivatives --------------------------------------------------------------------------------------


def test_hessian_metrics_have_known_answers():
    from bench.fidelity.hessian_metrics import hess_entry_nrmse, hessian_rows, lap_nrmse

    B = 40
    rng = np.random.default_rng(0)
    H_true = rng.normal(size=(B, 2, 3, 3))
    H_true = H_true + H_true.transpose(0, 1, 3, 2)
    H_true[:, 1] = 0.0  # output 2 is linear: no curvature at all
    H_pred = H_true * 1.1  # 10% too curved everywhere on output 1
    err = metrics.hessian_error(H_true, H_pred, [1.0] * 3)
    # output 2 has no curvature: left out (not averaged in as a perfect 0), so the RMS is output 1's 10% exactly
    assert np.sqrt(np.mean(err**2)) == pytest.approx(0.1, rel=1e-12)
    nrmse, notes = hess_entry_nrmse(H_true, H_pred)
    assert np.allclose(nrmse[0], 0.1) and np.allclose(nrmse[1], 0.0)
    assert "RMS of the whole true Hessian" in notes[1][0]  # a zero row falls back (entry_scales' rule, in H's words)
    L_true = np.trace(H_true, axis1=2, axis2=3)
    lap, lap_notes = lap_nrmse(H_true, L_true + np.array([0.0, 0.5]))
    assert lap[0] == 0.0 and lap[1] == 0.5 and "no curvature" in lap_notes[1]  # absolute where there is none
    x = rng.uniform(size=(B, 3))
    rows = hessian_rows(x, H_true, H_pred, L_true, [0] * 3, [1] * 3, ("a", "b", "c"), ("f", "g"))
    by = {(r["metric"], r["output"], r["input"]): r["value"] for r in rows}
    assert by[("hess_err_rms", "", "")] == pytest.approx(0.1, rel=1e-12)  # 10% too curved: RMS exactly 10%
    assert by[("hess_out_err", "f", "")] == pytest.approx(0.1, rel=1e-12)
    assert by[("hess_entry_nrmse", "f", "a,c")] == pytest.approx(0.1)
    assert ("hess_entry_nrmse", "f", "c,a") not in by  # the distinct pairs j <= k only: 6 per output
    assert sum(1 for r in rows if r["metric"] == "hess_entry_nrmse") == 2 * 6
    assert {r["bin"] for r in rows if r["metric"] == "hess_err_by_edge"} == {0.1, 0.2, 0.3, 0.4, 0.5}
