"""The trainer: determinism, early stopping, budgets, opt-in KAN features, and that Sobolev training helps."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from bench.fidelity import metrics, train
from bench.fidelity.train import TrainConfig, TrainData, TrainingDiverged, fit


def _mlp(n_in=2, width=16, n_out=1, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, n_out)
    ).to(dtype)


def _target(x):
    """f(x1, x2) = sin(3 x1) cos(2 x2) and its exact Jacobian, x (B, 2) -> y (B, 1), J (B, 1, 2)."""
    y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:])
    J = torch.stack(
        [3 * torch.cos(3 * x[:, 0]) * torch.cos(2 * x[:, 1]), -2 * torch.sin(3 * x[:, 0]) * torch.sin(2 * x[:, 1])], -1
    )
    return y, J[:, None, :]


def _xyJ(n, seed, dtype=torch.float32):
    x = 2 * torch.rand(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1
    y, J = _target(x)
    return x.to(dtype), y.to(dtype), J.to(dtype)


def _data(n, seed, dtype=torch.float32):
    return TrainData(*_xyJ(n, seed, dtype))


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_same_seed_gives_bitwise_identical_weights(beta):
    cfg = TrainConfig(steps=60, batch_size=16, beta=beta, lr=1e-2)
    runs = []
    for _ in range(2):
        model = _mlp()
        fit(model, _data(64, 0), _data(32, 1), cfg, seed=7)
        runs.append(_params(model))
    assert torch.equal(runs[0], runs[1])


def test_different_seeds_give_different_weights():
    cfg = TrainConfig(steps=60, batch_size=16, lr=1e-2)
    a, b = _mlp(), _mlp()
    fit(a, _data(64, 0), None, cfg, seed=1)
    fit(b, _data(64, 0), None, cfg, seed=2)  # same init, different mini-batch order
    assert not torch.equal(_params(a), _params(b))


def test_early_stopping_restores_the_best_weights():
    x, y, J = _xyJ(64, 0)
    val = TrainData(x, -y, -J)  # the opposite target: the validation loss rises as the model learns the training one
    cfg = TrainConfig(steps=2000, lr=1e-2, eval_every=5, patience=50)
    model = _mlp()
    res = fit(model, TrainData(x, y, J), val, cfg, seed=0)
    assert res.stopped_early and res.steps < 2000 and res.steps - res.best_step >= 50
    val_losses = [h["val_loss"] for h in res.history]
    assert min(val_losses) == res.best_val_loss < val_losses[-1]
    with torch.no_grad():
        restored = float(torch.mean((model(x) - val.y) ** 2))
    assert restored == pytest.approx(res.best_val_loss, rel=1e-6)  # float32 forward, recomputed


def test_beta_one_never_computes_a_jacobian(monkeypatch):
    calls = []
    real, one_pass = train._engine_jacobian, train.value_and_jacobian  # the engine, or values and J in one pass
    monkeypatch.setattr(train, "_engine_jacobian", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(train, "value_and_jacobian", lambda *a, **k: calls.append(1) or one_pass(*a, **k))
    x, y, J = _xyJ(32, 0)
    fit(_mlp(), TrainData(x, y, None), TrainData(x, y, J), TrainConfig(steps=20), seed=0)  # no J needed for training
    assert calls == []
    fit(_mlp(), TrainData(x, y, J), None, TrainConfig(steps=3, beta=0.5), seed=0)
    assert len(calls) == 3  # one batched call per step, never one per sample


def test_sobolev_needs_training_jacobians():
    x, y, _ = _xyJ(8, 0)
    with pytest.raises(ValueError, match="needs J_n"):
        fit(_mlp(), TrainData(x, y, None), None, TrainConfig(steps=1, beta=0.5), seed=0)


def test_nan_loss_raises_training_diverged():
    x, y, J = _xyJ(16, 0)
    y[3, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"training loss is nan at step 0"):
        fit(_mlp(), TrainData(x, y, J), None, TrainConfig(steps=5), seed=0)
    with pytest.raises(TrainingDiverged, match="validation loss is nan"):
        fit(_mlp(), _data(16, 0), TrainData(x, y, J), TrainConfig(steps=5, eval_every=1), seed=0)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="beta"):
        TrainConfig(beta=1.5)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="budget"):
        TrainConfig(steps=None)


@pytest.mark.parametrize("schedule", ["cosine", "exponential", "constant"])
def test_schedule_runs_from_lr_to_final_lr(schedule):
    cfg = TrainConfig(lr=1e-2, schedule=schedule, final_lr_ratio=0.1)
    end = 1e-2 if schedule == "constant" else 1e-3
    assert train._lr(cfg, 0.0) == pytest.approx(1e-2) and train._lr(cfg, 1.0) == pytest.approx(end)
    assert train._lr(cfg, 0.3) >= train._lr(cfg, 0.7)


def test_time_budget_stops_the_run():
    res = fit(_mlp(), _data(32, 0), None, TrainConfig(steps=None, max_seconds=0.3), seed=0)
    assert 0 < res.steps and 0.3 <= res.seconds < 5


class _KanLike(nn.Module):
    """An MLP with efficient-KAN's opt-in hooks, counting how the trainer uses them."""

    def __init__(self):
        super().__init__()
        self.net = _mlp()
        self.grid_calls, self.reg_calls = [], 0

    def forward(self, x):
        return self.net(x)

    def update_grid(self, x):
        assert not torch.is_grad_enabled()
        self.grid_calls.append(len(x))

    def regularization_loss(self):
        self.reg_calls += 1
        return sum(p.abs().sum() for p in self.net.parameters())


def test_grid_updates_and_regularization_are_opt_in():
    data = _data(32, 0)
    m = _KanLike()
    fit(m, data, None, TrainConfig(steps=25), seed=0)
    assert m.grid_calls == [] and m.reg_calls == 0
    m = _KanLike()
    fit(m, data, None, TrainConfig(steps=25, grid_update_every=10, reg_weight=1e-3), seed=0)
    assert m.grid_calls == [32, 32] and m.reg_calls == 25  # at steps 10 and 20, on the full training inputs
    res = fit(_mlp(), data, None, TrainConfig(steps=2, grid_update_every=10, reg_weight=1e-3), seed=0)
    assert len(res.notes) == 2 and "update_grid" in res.notes[0] and "regularization_loss" in res.notes[1]


def test_lbfgs_polish_lowers_the_training_loss():
    x, y, J = _xyJ(64, 0, torch.float64)
    losses = []
    for lbfgs in (0, 50):
        model = _mlp(dtype=torch.float64)
        res = fit(model, TrainData(x, y, J), None, TrainConfig(steps=100, lr=1e-2, lbfgs_steps=lbfgs), seed=0)
        with torch.no_grad():
            losses.append(float(torch.mean((model(x) - y) ** 2)))
    assert res.lbfgs_steps == 50 and res.notes == []
    assert losses[1] < 0.5 * losses[0]


@pytest.mark.slow
def test_sobolev_training_lowers_the_test_jacobian_error():
    # 2-D smooth target, 30 samples: value-only training fits the samples but not the slopes between them.
    # Sobolev training must at least halve the headline test error (RMS over points).
    train_data, test = _data(30, 0), _data(500, 1)
    errs = {}
    for beta in (1.0, 0.5):
        model = _mlp()
        fit(model, train_data, None, TrainConfig(steps=300, lr=1e-2, beta=beta), seed=0)
        J_pred = torch.func.vmap(torch.func.jacrev(model))(test.x).detach()
        errs[beta] = metrics.summarize(metrics.jacobian_error(test.J, J_pred, [2.0, 2.0]))["rms"]  # box [-1, 1]²
    assert errs[0.5] < 0.5 * errs[1.0], errs


def test_convergence_criterion_known_answers():
    from bench.fidelity.train import convergence

    flat = [{"step": s, "loss": 1.0, "val_loss": 0.5} for s in range(10, 101, 10)]
    assert convergence(flat) == (0.0, "val_loss")  # nothing left to learn
    falling = [{**h, "val_loss": 0.5 if h["step"] <= 90 else 0.25} for h in flat]
    drop, which = convergence(falling)
    assert drop == pytest.approx(0.5) and which == "val_loss"  # halved over the last 10% of the steps
    no_val = [{"step": h["step"], "loss": 2.0 - h["step"] / 100} for h in flat]
    drop, which = convergence(no_val)
    assert which == "loss" and drop == pytest.approx((1.1 - 1.0) / 1.1)  # best before step 90 was 1.1
    assert math.isnan(convergence(flat[:1])[0])  # one evaluation: cannot tell


def test_lr_selection_keeps_the_candidate_with_the_lowest_validation_loss():
    # 1e-6 cannot move the weights in 150 steps; 1e-2 fits; 1e4 throws the tanh units into saturation. The choice
    # is the middle one, the kept model is bitwise the one plain fit trains at that lr, and every candidate is on
    # record. A linear model at lr 1e30 overflows float32: that candidate is recorded as diverged and skipped.
    # Stacked (the default: one launch for all candidates) the same choice is made and the kept weights equal the
    # plain fit's to float32 rounding of a differently ordered sum (atol 1e-4 after 150 steps).
    one_by_one = TrainConfig(steps=150, lr=1.0, lr_grid=(1e-6, 1e-2, 1e4), schedule="constant", eval_every=10,
                             stack_candidates=False)  # fmt: skip
    tr, va = _data(64, 0), _data(32, 1)
    direct = _mlp()
    fit(direct, tr, va, TrainConfig(steps=150, lr=1e-2, schedule="constant", eval_every=10), seed=3)
    for cfg in (one_by_one, dataclasses.replace(one_by_one, stack_candidates=True)):
        model, res, trials = train.fit_selecting_lr(_mlp, tr, va, cfg, seed=3)
        assert res.lr == 1e-2 and [t.lr for t in trials] == [1e-6, 1e-2, 1e4]
        assert trials[1].val_loss == res.best_val_loss < min(trials[0].val_loss, trials[2].val_loss)
        if not cfg.stack_candidates:
            assert torch.equal(_params(direct), _params(model))
        else:
            assert torch.allclose(_params(direct), _params(model), atol=1e-4)
            assert all(t.note.startswith("trained stacked with 3") for t in trials)

    def linear():
        torch.manual_seed(0)
        return nn.Linear(2, 1)

    cfg = TrainConfig(steps=100, lr_grid=(1e-2, 1e30), schedule="constant", eval_every=5)
    _, res, trials = train.fit_selecting_lr(linear, tr, va, cfg)
    assert res.lr == 1e-2 and math.isnan(trials[1].val_loss) and trials[1].note.startswith("diverged")


def test_lr_selection_needs_validation_data_and_reports_total_divergence():
    tr = _data(64, 0)
    with pytest.raises(ValueError, match="validation"):
        train.fit_selecting_lr(_mlp, tr, None, TrainConfig(steps=5, lr_grid=(1e-3, 1e-2)))
    with pytest.raises(TrainingDiverged, match="every learning rate"):
        cfg = TrainConfig(steps=100, lr_grid=(1e30, 1e31), schedule="constant")
        train.fit_selecting_lr(lambda: nn.Linear(2, 1), tr, _data(16, 1), cfg)
    with pytest.raises(ValueError, match="distinct, finite, positive"):
        TrainConfig(lr_grid=(1e-3, -1.0))
    assert TrainConfig(lr_grid="1e-3, 3e-3").lr_grid == (1e-3, 3e-3)  # the command line's comma list
    for bad in ((True,), (1e-3, float("inf"))):
        with pytest.raises(ValueError, match="learning rates"):
            TrainConfig(lr_grid=bad)
    with pytest.raises(ValueError, match="restore_best"):  # the criterion is the best weights' validation loss
        TrainConfig(lr_grid=(1e-3, 1e-2), restore_best=False)


def _hessians(x):
    """Exact Hessians of _target: (B, 1, 2, 2) from torch.func on the float64 formula."""
    f = lambda xi: torch.sin(3 * xi[:1]) * torch.cos(2 * xi[1:])  # noqa: E731
    return torch.func.vmap(torch.func.hessian(f))(x.double())


def test_a_hessian_term_lowers_the_test_hessian_error():
    # the same 30-sample target: Jacobian supervision fits slopes, a Hessian term the curvature between samples.
    # The Hessian term must lower the headline test Hessian error by 30% or more.
    from bench.engines import hessian

    train_data, test = _data(30, 0), _data(500, 1)
    H_train = _hessians(train_data.x).float()
    errs = {}
    for w in (0.0, 0.1):
        model = _mlp()
        fit(
            model,
            dataclasses.replace(train_data, H=H_train),
            None,
            TrainConfig(steps=300, lr=1e-2, beta=0.5, hess_weight=w),
            seed=0,
        )
        errs[w] = metrics.summarize(metrics.hessian_error(_hessians(test.x), hessian(model, test.x), [2.0, 2.0]))["rms"]
    assert errs[0.1] < 0.7 * errs[0.0], errs


def test_a_hessian_term_needs_training_hessians_and_a_valid_weight():
    with pytest.raises(ValueError, match="needs H_n"):
        fit(_mlp(), _data(8, 0), None, TrainConfig(steps=1, beta=0.5, hess_weight=0.1))
    with pytest.raises(ValueError, match="hess_weight = -1"):
        TrainConfig(hess_weight=-1.0)


def _kan(family, seed=0, dtype=torch.float64):
    import models

    return models.create_model(family, n_in=2, n_out=1, width=6, depth=1, seed=seed).to(dtype)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["efficient_kan", "chebykan", "fastkan"])
def test_compiled_training_step_equals_eager(family):
    """compile_step = on: the same weights as eager training to float64 rounding (15 Adam steps at beta 0.5 with
    validation, restore-best and an L-BFGS polish; relative 1e-9: inductor reorders sums, Adam amplifies little
    in 15 steps), and no note about a failure."""
    cfg = dict(steps=15, beta=0.5, lr=1e-2, eval_every=5, lbfgs_steps=3)
    train_data, val_data = _data(64, 0, torch.float64), _data(16, 1, torch.float64)
    runs = {}
    for mode in ("off", "on"):
        model = _kan(family)
        res = fit(model, train_data, val_data, TrainConfig(**cfg, compile_step=mode), seed=0)
        runs[mode] = (_params(model), res)
    (w_eager, r_eager), (w_comp, r_comp) = runs["off"], runs["on"]
    assert not any("compiled" in n for n in r_comp.notes), r_comp.notes
    assert (w_comp - w_eager).abs().max() <= 1e-9 * w_eager.abs().max()
    assert r_comp.best_val_loss == pytest.approx(r_eager.best_val_loss, rel=1e-9)


def test_compile_step_is_per_family_and_says_why_not():
    assert train.compile_reason(_kan("chebykan"), TrainConfig(beta=0.5), rows=1000) is None  # 4000 x 1000 row-steps
    assert "does not repay" in train.compile_reason(_kan("chebykan"), TrainConfig(steps=600), rows=256)
    assert train.compile_reason(_kan("chebykan"), TrainConfig(steps=None, max_seconds=600), rows=10) is None
    assert "family mlp" in train.compile_reason(__import__("models").create_model("mlp_tanh"), TrainConfig())
    assert train.compile_reason(_mlp(), TrainConfig(compile_step="on")) is None
    assert "off" in train.compile_reason(_kan("chebykan"), TrainConfig(compile_step="off"))
    assert "Hessian" in train.compile_reason(_kan("chebykan"), TrainConfig(hess_weight=0.1), rows=1000)
    with pytest.raises(ValueError, match="compile_step"):
        TrainConfig(compile_step="yes")


def test_one_pass_values_equal_the_models_forward():
    """Sobolev steps take the values from the tangent pass (bench.engines.tangents.value_and_jacobian): they equal
    the model's own forward to float32 rounding for every zoo family (bitwise where the formulas are the same)."""
    import models
    from bench.engines.tangents import value_and_jacobian

    for name in models.list_models():
        m = models.create_model(name, seed=0)
        if not train._one_pass(m, TrainConfig(beta=0.5)):
            continue  # no tangent rules (a plugin): the separate forward and the engine, as before
        x = torch.rand(50, 4) * 1.6 - 0.8
        with torch.enable_grad():
            y, _ = value_and_jacobian(m, x, True)
        y0 = m(x)
        assert (y - y0).abs().max() <= 1e-5 * y0.abs().max(), name


def test_a_failing_compilation_trains_eagerly_and_says_so(monkeypatch):
    def broken(*args):
        raise RuntimeError("inductor cannot lower this graph")

    monkeypatch.setattr(train, "_compiled_loss", lambda: broken)
    model, reference = _kan("chebykan"), _kan("chebykan")
    cfg = TrainConfig(steps=5, beta=0.5, lr=1e-2, compile_step="on")
    res = fit(model, _data(32, 0, torch.float64), None, cfg, seed=0)
    assert any("compiled training step failed (RuntimeError: inductor cannot lower" in n for n in res.notes)
    fit(reference, _data(32, 0, torch.float64), None, TrainConfig(steps=5, beta=0.5, lr=1e-2, compile_step="off"))
    assert torch.equal(_params(model), _params(reference))  # the eager fallback is the eager training


def test_a_compilation_failing_on_a_later_shape_trains_eagerly_from_there(monkeypatch):
    """Mini-batches of 12 over 32 points: the last batch (8 rows) is a new shape; if compiling it fails, the fit goes
    on eagerly, notes why, and ends exactly where eager training ends."""

    def picky(model, x, y, J, cfg, H):
        if x.shape[0] != 12:
            raise RuntimeError("cannot compile this shape")
        return train.sobolev_loss(model, x, y, J, cfg, H)

    monkeypatch.setattr(train, "_compiled_loss", lambda: picky)
    model, reference = _kan("chebykan"), _kan("chebykan")
    base = dict(steps=6, beta=0.5, lr=1e-2, batch_size=12)
    res = fit(model, _data(32, 0, torch.float64), None, TrainConfig(**base, compile_step="on"), seed=0)
    assert any("cannot compile this shape" in n for n in res.notes)
    fit(reference, _data(32, 0, torch.float64), None, TrainConfig(**base, compile_step="off"), seed=0)
    assert torch.equal(_params(model), _params(reference))
    assert "full-batch" in train.compile_reason(_kan("chebykan"), TrainConfig(batch_size=100), rows=10_000)


def test_training_data_is_typed_and_checked():
    x, y, J = _xyJ(8, 0)
    with pytest.raises(TypeError, match=r"expected bench.fidelity.train.TrainData\(x, y, J, H\), got tuple"):
        fit(_mlp(), (x, y, J), None, TrainConfig(steps=1), seed=0)
    with pytest.raises(ValueError, match=r"J \(8, 2, 2\) must be \(B, n_out, n_in\) = \(8, 1, 2\)"):
        TrainData(x, y, J.expand(8, 2, 2))
    with pytest.raises(ValueError, match=r"x \(8, 2\) and y \(7, 1\)"):
        TrainData(x, y[:7])
    with pytest.raises(ValueError, match="H"):
        TrainData(x, y, J, torch.zeros(8, 1, 2))
    part = TrainData(x, y, J).rows(torch.tensor([1, 3]))
    assert torch.equal(part.x, x[[1, 3]]) and torch.equal(part.J, J[[1, 3]]) and part.H is None and len(part) == 2
    with pytest.raises(ValueError, match="J must be a tensor or None, got ndarray"):
        TrainData(x, y, J.numpy())
