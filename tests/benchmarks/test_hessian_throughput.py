"""Hessian throughput of every Hessian engine and JAX's `jit(vmap(hessian))`: `pytest --benchmark-only`.

One benchmark per (model, engine, device); the group is the model, device and batch, so engines compare side by
side; extra_info carries hessians_per_call, hess_per_s (median) and passes_ideal, forward mode's ideal cost in
forward passes per sample (1 + n_in + n_in (n_in + 1) / 2). The forum MLP runs at B = 65536 on CPU (issue 14's
goal: the best engine >= 1.0x JAX there and >= 100x the per-sample loop), the KANs at 4096, the loop at 64.
"""

import pytest
import torch
from conftest import frozen_model, inputs

from bench.engines import HESSIAN_ENGINES, UnsupportedEngine, hessian
from bench.engines.hessians import ideal_passes
from bench.speed import jax_peer
from bench.speed.timing import synchronizer

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
MODELS = ["mlp_forum", "fastkan", "efficient_kan", "chebykan"]
BATCH = {("mlp_forum", "cpu"): 1 << 16, "cpu": 4096, "cuda": 1 << 16}
SMALL = {"loop": 64, "vmap_jacrev_jacrev": 4096}  # engines far slower than the rest: a batch they finish in seconds
ROUNDS = {"cpu": 3, "cuda": 10}
ENGINES = [*HESSIAN_ENGINES, jax_peer.HESSIAN_ENGINE]


def _call(engine: str, model, x):
    if engine == jax_peer.HESSIAN_ENGINE:
        reason = jax_peer.supports(model, x.device, x.dtype)
        if reason is not None:
            pytest.skip(reason)
        return jax_peer.prepare_hessian(model, x)
    return lambda: hessian(model, x, engine=engine)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("model_name", MODELS)
def test_hessian_throughput(benchmark, model_name, engine, device):
    batch = BATCH.get((model_name, device), BATCH[device])
    batch = min(batch, SMALL.get(engine, batch))
    model = frozen_model(model_name, device)
    x = inputs(model_name, device, batch)
    call, sync = _call(engine, model, x), synchronizer(device)
    try:
        call()
    except UnsupportedEngine as err:
        pytest.skip(str(err))

    def once():
        call()
        sync()

    benchmark.group = f"hessian {model_name} {device}"
    benchmark.extra_info.update(model=model_name, engine=engine, device=device, dtype="float32",
                                hessians_per_call=batch, passes_ideal=ideal_passes(x.shape[1]))  # fmt: skip
    benchmark.pedantic(once, rounds=ROUNDS[device], warmup_rounds=1, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["hess_per_s"] = batch / benchmark.stats.stats.median
