"""Jacobian throughput of every engine, the forward pass and JAX: `pytest --benchmark-only` (or `make benchmark`).

One benchmark per (model, engine, device); the group is the model, device and batch, so engines compare
side by side. extra_info carries jacobians_per_call and jac_per_s (median). Sizes keep the whole suite
within about 5 minutes on a 2-core CPU: batch 4096 on CPU, 2^16 on CUDA, 64 for the per-sample loop and
the other engines whose cost grows faster than the batch.
For the full sweep with ratios use `python -m bench throughput`.
"""

import pytest
import torch

from bench.speed import sweep as throughput

try:
    from bench.engines import ENGINES
except ImportError:  # before the engines registry exists: forward pass and JAX only
    ENGINES = {}

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
MODELS = ["mlp_forum", "fastkan", "efficient_kan", "chebykan"]
BATCH = {"cpu": 4096, "cuda": 1 << 16}
SMALL_BATCH = 64  # engines whose cost grows faster than the batch (throughput.SMALL_BATCH_ONLY): the forum loop
ROUNDS = {"cpu": 5, "cuda": 20}

TIMED = throughput.timed_set(list(ENGINES), throughput.SweepConfig(forward=True, jax=True), ENGINES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("engine", list(TIMED))
@pytest.mark.parametrize("model_name", MODELS)
def test_jacobian_throughput(time_jacobians, model_name, engine, device):
    batch = SMALL_BATCH if engine in throughput.SMALL_BATCH_ONLY else BATCH[device]
    time_jacobians(model_name, engine, TIMED[engine], device, batch, ROUNDS[device])
