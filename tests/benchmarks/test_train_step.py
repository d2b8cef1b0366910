"""Training-step time per family, eager against compiled (`train.compile_step`): `pytest --benchmark-only
tests/benchmarks/test_train_step.py`.

One benchmark per (family, beta, mode): one full-batch Adam step of `bench.fidelity.train` at the probe's size
(1000 points, 4 -> 4, the zoo's default sizes), one thread as a grid worker runs it. The group is the family and
beta, so eager and compiled compare side by side. The warm-up rounds include the compilation.
"""

import pytest
import torch

import models
from bench.fidelity import train
from bench.fidelity.train import TrainConfig

FAMILIES = ["efficient_kan", "fastkan", "chebykan", "mlp_tanh"]


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("beta", [1.0, 0.5], ids=["value", "sobolev"])
@pytest.mark.parametrize("family", FAMILIES)
def test_training_step(benchmark, family, beta, mode):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1000, 4, generator=g) * 1.6 - 0.8
        y, J = torch.sin(x), torch.diag_embed(torch.cos(x))
        model = models.create_model(family, seed=0)
        cfg = TrainConfig(beta=beta, compile_step="on" if mode == "compiled" else "off")
        loss_fn = train._Loss(model, cfg, notes := [], rows=len(x))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model, x, y, J if beta < 1 else None, None).backward()
            opt.step()

        benchmark.group = f"train step {family} beta={beta}"
        benchmark.pedantic(step, rounds=20, warmup_rounds=3)
        assert not notes, notes  # compiled where asked: a failure would have been noted
    finally:
        torch.set_num_threads(threads)
