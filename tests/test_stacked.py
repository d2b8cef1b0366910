"""Many models in one launch (bench.fidelity.stacked): equal to training each member alone with train.fit."""

import pytest
import torch

import models
from bench.fidelity import stacked
from bench.fidelity.train import TrainConfig, TrainData, fit


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8
    y = torch.stack([torch.sin(2 * x[:, 0]) * x[:, 1], x[:, 0] ** 2], -1)
    J = torch.zeros(n, 2, 2, dtype=torch.float64)
    J[:, 0, 0], J[:, 0, 1] = 2 * torch.cos(2 * x[:, 0]) * x[:, 1], torch.sin(2 * x[:, 0])
    J[:, 1, 0] = 2 * x[:, 0]
    return TrainData(x, y, J)


def _model(family, seed):
    return models.create_model(family, n_in=2, n_out=2, width=6, depth=1, seed=seed).double()


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("family", ["mlp_tanh", "efficient_kan", "chebykan", "fastkan"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_stacked_members_equal_separate_training(family, optimizer):
    """Four members (seeds 0-3: own initialization and data; betas 1, 0.5, 0.5, 0; two learning rates), 40 full-batch
    steps with a cosine schedule, validation every 10, restore-best, patience on one member, an L-BFGS polish:
    each member's weights equal train.fit's to float64 rounding (1e-9 relative: Adam written out elementwise,
    the same operations in a vmapped order)."""
    betas, lrs = [1.0, 0.5, 0.5, 0.0], [1e-2, 1e-2, 3e-3, 1e-2]
    base = dict(steps=40, eval_every=10, optimizer=optimizer, weight_decay=1e-3, lbfgs_steps=2, compile_step="off")
    cfgs = [
        TrainConfig(**base, beta=b, lr=lr, patience=20 if i == 2 else 0)
        for i, (b, lr) in enumerate(zip(betas, lrs, strict=True))
    ]
    trains = [_data(48, s) for s in range(4)]
    vals = [_data(12, 10 + s) for s in range(4)]
    alone = []
    for s, c in enumerate(cfgs):
        m = _model(family, s)
        r = fit(m, trains[s], vals[s], c, seed=s)
        alone.append((_params(m), r))
    together = [_model(family, s) for s in range(4)]
    results = stacked.fit_stacked(together, trains, vals, cfgs)
    for s in range(4):
        w, r = alone[s]
        assert (_params(together[s]) - w).abs().max() <= 1e-9 * w.abs().max(), (family, s)
        assert results[s].best_step == r.best_step and results[s].stopped_early == r.stopped_early
        assert results[s].best_val_loss == pytest.approx(r.best_val_loss, rel=1e-9)


def test_stacking_refuses_what_it_cannot_stack():
    ms = [_model("mlp_tanh", s) for s in range(2)]
    data = [_data(8, s) for s in range(2)]
    with pytest.raises(ValueError, match="differ in beta, lr, lr_grid, patience only, not \\['steps'\\]"):
        stacked.fit_stacked(ms, data, None, [TrainConfig(steps=5), TrainConfig(steps=6)])
    with pytest.raises(ValueError, match="max_seconds"):
        stacked.fit_stacked(ms, data, None, [TrainConfig(steps=5, max_seconds=10)] * 2)
    with pytest.raises(ValueError, match="batch_size"):
        stacked.fit_stacked(ms, data, None, [TrainConfig(steps=5, batch_size=4)] * 2)
    with pytest.raises(ValueError, match="architecture"):
        stacked.fit_stacked([ms[0], _model("chebykan", 0)], data, None, [TrainConfig(steps=5)] * 2)
    with pytest.raises(ValueError, match="one shape"):
        stacked.fit_stacked(ms, [data[0], _data(9, 1)], None, [TrainConfig(steps=5)] * 2)


def test_a_stack_whose_members_carry_different_derivatives_is_refused_with_a_reason():
    a, b = _data(8, 0), _data(8, 1)
    ms = [_model("mlp_tanh", s) for s in range(2)]
    reason = stacked.stack_reason(ms, [a, TrainData(b.x, b.y)], [TrainConfig(steps=5)] * 2)
    assert reason is not None and "one shape" in reason
