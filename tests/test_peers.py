"""Peers (bench.peers): JENN trained by its own code, scored by ours at the boundary, never bent.

Known answers: a linear map's Jacobian is its matrix; JENN's own parameter arrays give its parameter count; a
central difference of a quadratic is exact; a peer whose API Jacobian disagrees with its values is refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench import peers
from bench.fidelity import finite_diff as fd
from bench.fidelity.cell import run_cell
from bench.peers.jenn import PEER as JENN
from bench.run import results
from bench.run.config import Config, GridConfig, RunConfig, grid_cells, skipped_cells

pytest.importorskip("jenn")


def test_the_registry_and_the_results_schema_agree_on_which_families_are_peers():
    assert {peers.get(n).family for n in peers.list_peers()} == set(results.PEER_FAMILIES)
    assert peers.is_peer("jenn") and not peers.is_peer("mlp_tanh")
    with pytest.raises(KeyError, match="peers: jenn"):
        peers.get("jen")


def test_beta_maps_onto_jenn_gamma_with_beta_half_its_default():
    assert JENN.gamma(1.0) == 0.0 and JENN.gamma(0.5) == 1.0 and JENN.gamma(0.2) == pytest.approx(4.0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"beta must lie in \(0, 1\]"):
            JENN.gamma(bad)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("budget", [100, 2000, 8000])
def test_match_params_picks_the_width_closest_to_the_budget(depth, budget):
    kw = JENN.match_params(budget, 4, 3, depth=depth)
    best = min(range(1, 3000), key=lambda w: (abs(JENN.param_count(4, 3, depth=depth, width=w) - budget), w))
    assert kw == {"depth": depth, "width": best}
    with pytest.raises(ValueError, match="chooses the jenn width itself"):
        JENN.match_params(budget, 4, 3, width=5)


def test_unknown_options_name_the_accepted_ones():
    with pytest.raises(ValueError, match=r"does not accept \['widht'\].*width, depth"):
        JENN.options(widht=3)
    with pytest.raises(ValueError, match="activation 'gelu'"):
        JENN.options(activation="gelu")


def _linear_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    A = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, 1.5]])
    x = rng.uniform(-1, 1, (n, 3))
    y = x @ A.T + np.array([0.2, -1.0])
    return x, y, np.broadcast_to(A, (n, 2, 3)).copy(), A


def test_gradient_enhanced_jenn_learns_a_linear_maps_matrix_and_its_count_is_its_own():
    x, y, J, A = _linear_data()
    fitted = JENN.fit(x, y, J, 0.5, seed=0, max_iter=300)
    y_pred, J_pred = fitted.predict(x)
    assert y_pred.shape == (200, 2) and J_pred.shape == (200, 2, 3)
    # tolerance: a 3 -> 12 x 12 -> 2 tanh net after 300 iterations fits a linear map's matrix to about 1% of its
    # scale (median over samples and entries), worst at the corners of the box
    err = np.abs(J_pred - A) / np.abs(A).max()
    assert np.median(err) < 0.02 and err.max() < 0.15
    assert fitted.gamma == 1.0 and fitted.steps == len(fitted.history) > 0
    W, b = fitted.net.parameters.W, fitted.net.parameters.b  # layer 0 is JENN's untrained identity placeholder
    assert np.array_equal(W[0], np.eye(3)) and not b[0].any()
    assert sum(w.size + c.size for w, c in zip(W[1:], b[1:], strict=True)) == JENN.param_count(3, 2)
    # JENN's API Jacobian is the derivative of its own values (float64 central differences, h = 1e-6 of the range)
    err, tol = fd.fd_check(fitted.predict_values, J_pred[:32], x[:32], np.full(3, 2e-6))
    assert err < tol < 2 * fd.FD_CHECK_TOL  # outputs of order 1: the rounding bound adds little


def test_value_only_jenn_is_given_no_partials_and_enhancement_needs_them():
    x, y, J, _ = _linear_data()
    a = JENN.fit(x, y, None, 1.0, seed=3, max_iter=20)
    b = JENN.fit(x, y, J, 1.0, seed=3, max_iter=20)  # beta = 1: J is not used even when given
    assert a.gamma == 0.0 and np.array_equal(a.predict(x)[1], b.predict(x)[1])
    with pytest.raises(ValueError, match="needs training Jacobians"):
        JENN.fit(x, y, None, 0.5, seed=0)


def test_central_hessian_of_a_quadratic_is_exact_and_symmetric():
    Q = np.array([[2.0, 0.5], [0.5, -1.0]])

    def jac(x):  # f(x) = [x^T Q x / 2, sum x]: J rows Q x and ones
        return np.stack([x @ Q, np.ones_like(x)], axis=1)

    H = fd.central_hessian(jac, np.random.default_rng(0).normal(size=(5, 2)), np.array([1e-3, 1e-3]))
    assert H.shape == (5, 2, 2, 2)
    assert np.allclose(H[:, 0], Q, atol=1e-10) and np.allclose(H[:, 1], 0, atol=1e-10)  # exact for a quadratic


def _config(tmp_path, **grid) -> Config:
    g = GridConfig(**{"equations": ("forum4x4",), "models": ("jenn",), "seeds": (0,), "betas": (1.0, 0.5),
                      "n_train": (128,), "n_test": 64, "val_fraction": 0.2, **grid})  # fmt: skip
    return Config(g, RunConfig(out=str(tmp_path), workers=1, threads=1), {"steps": 5})


@pytest.mark.slow
def test_a_jenn_cell_is_scored_by_the_zoo_metrics_in_physical_units(tmp_path):
    cfg = _config(tmp_path, match_params=500)
    rows = {}
    for cell in grid_cells(cfg.grid):
        res = run_cell(cell, cfg, "t")
        rows[cell.variant] = {
            (r["split"], r["metric"]): r for r in res.rows if not r.get("output") and not r.get("bin")
        }
        assert {r["family"] for r in res.rows} == {"jenn"}
        assert abs(res.rows[0]["params"] - 500) < 40 and res.jacobians is not None
    for variant, r in rows.items():
        assert r[("test", "jac_fd_check")]["value"] < 2 * fd.FD_CHECK_TOL  # its API Jacobian: its values' derivative
        assert "central differences" in r[("test", "jac_fd_check")]["error"]
        assert np.isfinite(r[("test", "hess_err_rms")]["value"]), variant
        assert r[("", "train_steps")]["value"] == 200  # JENN's own budget, max_iter = 200
    # gradient enhancement (JENN's gamma = 1) buys a better Jacobian than none, on the same split and seed
    assert rows["sobolev"][("test", "jac_err_rms")]["value"] < rows["value"][("test", "jac_err_rms")]["value"]


class _LyingPeer:
    """JENN's fit, but an API Jacobian twice the derivative of its values: the cell must refuse it."""

    name = family = "liar"
    variants = ("value", "sobolev")

    def __getattr__(self, attr):
        return getattr(JENN, attr)

    def fit(self, *args, **kwargs):
        fitted = JENN.fit(*args, **kwargs)

        class Lying(type(fitted)):
            def predict(self, x):
                y, J = super().predict(x)
                return y, 2 * J

        return Lying(**{f.name: getattr(fitted, f.name) for f in dataclasses.fields(fitted)})


@pytest.mark.slow
def test_a_peer_whose_jacobian_is_not_its_values_derivative_fails_its_cell(tmp_path, monkeypatch):
    monkeypatch.setitem(peers.PEERS, "jenn", _LyingPeer())
    cfg = _config(tmp_path, betas=(1.0,))
    with pytest.raises(RuntimeError, match="differs from central differences of its own values"):
        run_cell(grid_cells(cfg.grid)[0], cfg, "t")


def test_a_peer_cell_that_cannot_run_is_left_out_with_the_reason(tmp_path):
    cfg = _config(tmp_path, models=("jenn", "mlp_tanh"), hess_weights=(0.0, 0.1), hess_betas=(0.5,))
    cells = grid_cells(cfg.grid)
    assert not [c for c in cells if c.model == "jenn" and c.variant == "hessian"]
    assert [c.model for c in cells if c.variant == "hessian"] == ["mlp_tanh"]
    skipped = skipped_cells(cfg.grid)
    assert [(c.model, c.variant) for c, _ in skipped] == [("jenn", "hessian")]
    assert "has no hessian variant (it trains: value, sobolev)" in skipped[0][1]
    assert not grid_cells(_config(tmp_path, betas=(0.0,)).grid)  # beta = 0 has no JENN equivalent


def test_wildcards_name_the_zoo_and_a_peer_is_named_on_purpose():
    from bench.run.names import expand_models

    assert "jenn" not in expand_models("*") and expand_models("mlp_tanh,jenn") == ("mlp_tanh", "jenn")


def test_the_throughput_sweep_of_a_run_leaves_peers_out(tmp_path):
    from bench.fidelity.cell import trained_configurations

    cfg = _config(tmp_path, models=("jenn", "mlp_tanh"))
    assert [c[0] for c in trained_configurations(cfg)] == ["mlp_tanh"]


def test_the_fd_check_allows_for_rounding_of_a_large_offset_and_still_catches_a_wrong_jacobian():
    # absolute pressure: 101325 Pa plus a 0.1 Pa variation; the exact Jacobian, and one 1% off
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 2))

    def values(z):
        return 101325.0 + 0.1 * np.stack([np.sin(3 * z[:, 0]) * z[:, 1], z[:, 0] ** 2], 1)

    J = 0.1 * np.stack([np.stack([3 * np.cos(3 * x[:, 0]) * x[:, 1], np.sin(3 * x[:, 0])], 1),
                        np.stack([2 * x[:, 0], 0 * x[:, 0]], 1)], 1)  # fmt: skip
    h = np.full(2, fd.JAC_STEP)
    err, tol = fd.fd_check(values, J, x, h)
    assert fd.FD_CHECK_TOL < err < tol  # rounding alone exceeds the bare 1e-5, and is allowed for
    err_wrong, tol_wrong = fd.fd_check(values, 1.01 * J, x, h)
    assert err_wrong > tol_wrong  # a 1% error is still caught
