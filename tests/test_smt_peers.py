"""SMT's kriging peers (bench.peers.smt): trained by SMT's own code, scored by ours, refused or stopped with a reason.

Known answers: the vectorized distance derivative is SMT's own formula (compared with SMT's loop); kriging
interpolates a quadratic and its Jacobian from a few dozen points; partials help GEKPLS where values are scarce; a
design kriging cannot use fails with SMT's (or our) reason; a fit past its budget is over_budget, not failed.
"""

from __future__ import annotations

import dataclasses
import signal
import warnings

import numpy as np
import pytest

import equations
from bench import peers
from bench.fidelity.cell import run_cell
from bench.fidelity.headline import jacobian_error
from bench.peers import smt as ps
from bench.run import results, runner
from bench.run.config import Config, GridConfig, RunConfig, grid_cells, skipped_cells
from equations.data import make_dataset


def _quadratic(n: int, seed: int = 0):
    """y0 = x0^2 + x0 x1 - x1, y1 = 3 x1^2 - x0 on [-1, 1]^2, with its exact Jacobian."""
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    y = np.stack([x[:, 0] ** 2 + x[:, 0] * x[:, 1] - x[:, 1], 3 * x[:, 1] ** 2 - x[:, 0]], axis=1)
    J = np.stack([np.stack([2 * x[:, 0] + x[:, 1], x[:, 0] - 1], 1), np.stack([-np.ones(n), 6 * x[:, 1]], 1)], 1)
    return x, y, J


def _err(J_true, J_pred) -> float:
    return float(np.sqrt(np.mean(np.asarray(jacobian_error(J_true, J_pred, np.array([2.0, 2.0]))) ** 2)))


def test_the_three_peers_are_registered_with_their_variants():
    assert {"krg", "kpls", "gekpls"} <= set(peers.list_peers())
    assert peers.get("krg").variants == ("value",) and peers.get("gekpls").variants == ("sobolev",)
    assert {peers.get(n).family for n in ("krg", "kpls", "gekpls")} == {"kriging"}
    assert "kriging" in results.PEER_FAMILIES
    with pytest.raises(ValueError, match=r"does not accept \['extra_points'\]"):
        ps.KRG.options(extra_points=1)  # only GEKPLS adds points
    g = GridConfig(equations=("forum4x4",), models=("krg", "gekpls"), betas=(1.0, 0.5), n_train=(32,))
    assert {(c.model, c.variant) for c in grid_cells(g)} == {("krg", "value"), ("gekpls", "sobolev")}
    assert {(c.model, c.variant) for c, _ in skipped_cells(g)} == {("krg", "sobolev"), ("gekpls", "value")}


@pytest.mark.parametrize("peer", [ps.KRG, ps.KPLS, ps.GEKPLS], ids=lambda p: p.name)
def test_the_vectorized_distance_derivative_is_smts_own_formula(peer):
    """Our one vectorized method against SMT's loop (the parent class's method), on a fitted model: rtol 1e-12."""
    x, y, J = _quadratic(12)
    x = np.concatenate([x, x[:, :1] * 0.5 + 0.1], axis=1)  # 3 inputs, so that 2 PLS components reduce something
    J = np.concatenate([J, np.zeros((12, 2, 1))], axis=2)
    fitted = peer.fit(x, y, J, 0.5, 0, n_start=1)
    model = fitted.models[0]
    dx = np.random.default_rng(1).normal(size=(40, 3))
    theta = np.asarray(model.optimal_theta)
    ours = model._componentwise_distance(dx, theta=theta, return_derivative=True)
    smts = type(model).__mro__[1]._componentwise_distance(model, dx, theta=theta, return_derivative=True)
    np.testing.assert_allclose(ours, smts, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("peer", [ps.KRG, ps.KPLS, ps.GEKPLS], ids=lambda p: p.name)
def test_kriging_recovers_a_quadratics_jacobian_from_forty_points(peer):
    x, y, J = _quadratic(40)
    xt, _, Jt = _quadratic(200, seed=1)
    fitted = peer.fit(x, y, J, 0.5, 0, n_start=1)
    y_pred, J_pred = fitted.predict(xt)
    assert y_pred.shape == (200, 2) and J_pred.shape == (200, 2, 2)
    # 1.0 is as wrong as zero derivatives; kriging on 40 points of a quadratic measured 1.3e-5 to 2.2e-5 across
    # the three: 1e-3 leaves SMT's optimizer 50x of room and still fails any visibly wrong Jacobian
    assert _err(Jt, J_pred) < 1e-3
    assert fitted.params == 2 * 40 * 3 + peer.param_count(2, 2)  # its training points and hyperparameters
    assert fitted.steps == 2  # one likelihood optimization per output (n_start 1)


def test_partials_help_where_values_are_scarce():
    """Six points of a wavy function: GEKPLS, told the partials too, has the better Jacobian (by far, measured)."""
    rng = np.random.default_rng(3)
    x, xt = rng.uniform(-1, 1, (6, 2)), rng.uniform(-1, 1, (300, 2))

    def f(z):
        y = np.stack([np.sin(2 * z[:, 0]) + np.cos(1.5 * z[:, 1])], 1)
        J = np.stack([2 * np.cos(2 * z[:, 0]), -1.5 * np.sin(1.5 * z[:, 1])], 1)[:, None, :]
        return y, J

    (y, J), (_, Jt) = f(x), f(xt)
    plain = _err(Jt, ps.KRG.fit(x, y, None, 1.0, 0, n_start=1).predict(xt)[1])
    enhanced = _err(Jt, ps.GEKPLS.fit(x, y, J, 0.5, 0, n_start=1).predict(xt)[1])
    assert enhanced < 0.5 * plain


def test_designs_kriging_cannot_use_fail_with_a_reason():
    x, y, J = _quadratic(20)
    with pytest.raises(ps.PeerFitError, match="at least 3 training points, got 2"):
        ps.KRG.fit(x[:2], y[:2], None, 1.0, 0)
    dup = np.concatenate([x, x[3:4]])
    with pytest.raises(ps.PeerFitError, match=r"appear more than once \(first: row 3"):
        ps.KRG.fit(dup, np.concatenate([y, y[3:4]]), None, 1.0, 0)
    with pytest.raises(ps.PeerFitError, match=r"gekpls \(SMT GEKPLS\) on output 0 of 20 points: .*n_components"):
        ps.GEKPLS.fit(x, y, J, 0.5, 0, n_comp=3)  # SMT's own message: 3 PLS components of 2 inputs
    with pytest.raises(ValueError, match="needs training Jacobians"):
        ps.GEKPLS.fit(x, y, None, 0.5, 0)


def test_a_budget_stops_the_fit_and_restores_the_alarm():
    x, y, _ = _quadratic(300)
    with pytest.raises(ps.OverBudget, match=r"max_seconds = 0\.05"):
        ps.KRG.fit(x, y, None, 1.0, 0, n_start=5, max_seconds=0.05)  # 5 starts on 300 points take seconds
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert ps.OverBudget.cell_status == results.OVER_BUDGET


def _config(tmp_path, models, **overrides) -> Config:
    g = GridConfig(equations=("forum4x4",), models=models, seeds=(0,), betas=(1.0, 0.5), n_train=(48,), n_test=32,
                   val_fraction=0.2, model_overrides=overrides)  # fmt: skip
    return Config(g, RunConfig(out=str(tmp_path), workers=1, threads=1), {"steps": 5})


def test_a_kriging_cell_is_scored_with_its_cost(tmp_path):
    cfg = _config(tmp_path, ("krg", "gekpls"), krg={"n_start": 1}, gekpls={"n_start": 1})
    for cell in grid_cells(cfg.grid):
        res = run_cell(cell, cfg, "t")
        r = {(x["split"], x["metric"]): x for x in res.rows if not x.get("output") and not x.get("bin")}
        assert {x["family"] for x in res.rows} == {"kriging"}
        assert r[("test", "jac_fd_check")]["value"] <= ps.KRG.fd_check_tol  # its API Jacobian is its values' derivative
        assert np.isfinite(r[("test", "jac_err_rms")]["value"]) and np.isfinite(r[("test", "hess_err_rms")]["value"])
        assert r[("", results.FIT_WALL)]["value"] > 0 and r[("", results.FIT_CPU)]["value"] > 0
        assert r[("", results.PREDICT_PER_1K)]["value"] > 0
        assert res.rows[0]["params"] == 4 * 48 * 5 + peers.get(cell.model).param_count(4, 4)


def test_a_cell_past_its_budget_is_recorded_over_budget_and_the_grid_goes_on(tmp_path):
    cfg = _config(tmp_path, ("krg", "mlp_tanh"), krg={"n_start": 20, "max_seconds": 0.05})
    cfg, run_dir = runner.open_run(cfg)
    summary = runner.run_grid(cfg, run_dir, run_cell, progress=False)
    status = {o.cell_id.split("__")[1] + "/" + o.cell_id.split("__")[2]: o.status for o in summary.outcomes}
    assert status["krg/value"] == results.OVER_BUDGET
    assert {v for k, v in status.items() if k.startswith("mlp_tanh")} == {"ok"}
    assert summary.failures == [] and summary.exit_code == 0  # a ceiling is a measurement, not an error
    cell = next(c for c in grid_cells(cfg.grid) if c.model == "krg")
    assert results.cell_status(run_dir / "cells" / f"{results.cell_filename(cell.cell_id)}.csv") == "over_budget"
    assert runner.pending_cells([cell], run_dir, retry_failed=True) == [cell]  # --retry-failed runs it again


def test_larger_sizes_a_budget_rules_out_are_recorded_without_running(tmp_path):
    """n_train 24 runs; 48 is predicted from 24's measured fit x 2^3 against a budget set just below that; 96
    follows 48 (already over budget). Each says why, with the numbers."""
    cfg = _config(tmp_path, ("krg",), krg={"n_start": 1})
    cfg = dataclasses.replace(cfg, grid=dataclasses.replace(cfg.grid, n_train=(24, 48, 96), betas=(1.0,)))
    cfg, run_dir = runner.open_run(cfg)
    first = runner.run_grid(cfg, run_dir, run_cell, progress=False)  # every size runs: no budget
    assert [o.status for o in first.outcomes] == ["ok"] * 3
    small = grid_cells(cfg.grid)[0]
    rows = results.read_cell(run_dir / "cells" / f"{results.cell_filename(small.cell_id)}.csv")
    wall = float(rows.loc[rows["metric"] == results.FIT_WALL, "value"].iloc[0])
    tight = {**cfg.grid.model_overrides, "krg": {"n_start": 1, "max_seconds": 0.9 * wall * 8}}
    cfg = dataclasses.replace(cfg, grid=dataclasses.replace(cfg.grid, model_overrides=tight))
    for c in grid_cells(cfg.grid)[1:]:
        (run_dir / "cells" / f"{results.cell_filename(c.cell_id)}.csv").unlink()
    second = runner.run_grid(cfg, run_dir, run_cell, progress=False)
    by_n = {o.cell_id.split("__")[3]: o for o in second.outcomes}
    assert by_n["n48"].status == results.OVER_BUDGET and "x (48/24)^3" in by_n["n48"].error
    assert by_n["n96"].status == results.OVER_BUDGET and "at n_train 48" in by_n["n96"].error
    assert by_n["n48"].seconds == 0.0 and second.exit_code == 0  # not run, and no failure


def test_size_equations_cross_the_size_axis_with_sets_at_one_size():
    g = GridConfig(equations=("forum4x4", "gen:smooth:0:8x4"), models=("mlp_tanh",), n_train=(256, 64, 1024),
                   size_equations=("forum4x4",))  # fmt: skip
    sizes = {(c.equation, c.n_train) for c in grid_cells(g)}
    assert sizes == {("forum4x4", 256), ("forum4x4", 64), ("forum4x4", 1024), ("gen:smooth:0:8x4", 256)}
    everywhere = dataclasses.replace(g, size_equations=())
    assert len(grid_cells(everywhere)) == 6


def test_a_kriging_cell_whose_values_are_noisy_is_kept_and_flagged(tmp_path, monkeypatch):
    """A peer that keeps such cells (kriging) records the disagreement in jac_fd_check; JENN-like peers fail."""
    from bench.fidelity import cell as cell_mod

    cfg = _config(tmp_path, ("krg",), krg={"n_start": 1})
    cell = grid_cells(cfg.grid)[0]
    monkeypatch.setattr(ps.SmtKriging, "fd_check_tol", -1.0)  # every agreement now counts as a disagreement
    res = run_cell(cell, cfg, "t")
    check = next(r for r in res.rows if r["metric"] == "jac_fd_check")
    assert check["error"].startswith(cell_mod.FD_DISAGREES) and np.isfinite(check["value"])
    monkeypatch.setattr(ps.SmtKriging, "fd_check_fails_cell", True)
    with pytest.raises(RuntimeError, match="cannot be trusted"):
        run_cell(cell, cfg, "t")


def _smt_gekpls(x, y, J, out):
    """SMT's own GEKPLS with our defaults, fitted on output ``out``."""
    from smt.surrogate_models import GEKPLS

    m = GEKPLS(print_global=False, n_comp=2, n_start=1, hyper_opt="Cobyla", seed=0, extra_points=1,
               xlimits=np.stack([x.min(0), x.max(0)], 1))  # fmt: skip
    m.set_training_values(x, y[:, out : out + 1])
    for k in range(x.shape[1]):
        m.set_training_derivatives(x, np.ascontiguousarray(J[:, out, k : k + 1]), k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's "y residual is constant"
        m.train()
    return m


def test_gekpls_fits_an_output_that_depends_on_one_input():
    """gen:smooth:1's f4 depends on x1 alone: GEKPLS's second PLS direction is 0/0 at every training point, and
    SMT 2.15 fails with "A has a NaN entry" (the quick profile's cell). Ours zeroes that direction, keeps the
    first, and recovers the Jacobian; where every direction is defined the coefficients are SMT's, unchanged."""
    eq = equations.get("gen:smooth:1")
    d = make_dataset(eq, 456, "lhs", 0)
    x, y, J = (np.ascontiguousarray(a.numpy(), dtype=np.float64) for a in (d.x, d.y, d.J))
    (x, xt), (y, _), (J, Jt) = ((a[:256], a[256:]) for a in (x, y, J))
    assert np.all(J[:, 3, 1:] == 0) and np.all(J[:, 3, 0] != 0)  # the premise: f4's gradient is along x1
    with pytest.raises(ValueError, match="NaN"):
        _smt_gekpls(x, y, J, 3)  # SMT's own failure, which ours must not have

    fitted = ps.GEKPLS.fit(x, y[:, [0, 3]], J[:, [0, 3]], 0.5, 0)
    one_input = np.asarray(fitted.models[1].coeff_pls)
    assert np.isfinite(one_input).all()
    assert one_input[0, 0] > 0.99 and np.all(np.abs(one_input[1:, 0]) < 1e-12)  # the first direction is x1 alone
    _, J_pred = fitted.predict(xt)
    # relative error of f4's Jacobian: 1 is as wrong as zero derivatives; measured below 1e-4
    rel = np.linalg.norm(J_pred[:, 1] - Jt[:, 3]) / np.linalg.norm(Jt[:, 3])
    assert rel < 1e-2
    # where SMT succeeds (f1 depends on several inputs) our coefficients are SMT's own
    np.testing.assert_allclose(fitted.models[0].coeff_pls, _smt_gekpls(x, y, J, 0).coeff_pls, rtol=0, atol=1e-12)


def test_gekpls_still_fails_loudly_on_bad_partials():
    """The 0/0 handling applies to directions without signal only: a NaN partial is SMT's (scikit-learn's) error."""
    x = np.random.default_rng(0).uniform(-1, 1, (40, 3))
    y = (x[:, 0] * x[:, 1] + np.sin(x[:, 2]))[:, None]
    J = np.stack([x[:, 1], x[:, 0], np.cos(x[:, 2])], 1)[:, None, :]
    for row in (0, 5):
        bad = J.copy()
        bad[row, 0, 1] = np.nan
        with pytest.raises(ps.PeerFitError, match=r"gekpls \(SMT GEKPLS\) on output 0 of 40 points: .*NaN"):
            ps.GEKPLS.fit(x, y, bad, 0.5, 0)
