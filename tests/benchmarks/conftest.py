"""Fixtures of the throughput benchmarks: `pytest --benchmark-only` (plain `pytest` skips them).

Models are untrained and frozen (a Jacobian's cost does not depend on the weights); inputs are drawn in
the model's input range with a fixed seed. The timed callable ends with the device's synchronize.
"""

from __future__ import annotations

import functools

import pytest
import torch

import models
from bench.engines.base import UnsupportedEngine
from bench.speed import roofline
from bench.speed import sweep as throughput
from bench.speed.timing import synchronizer


@functools.cache
def frozen_model(name: str, device: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create_model(name).to(device=device, dtype=dtype).eval().requires_grad_(False)


@functools.cache
def inputs(name: str, device: str, batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return throughput.make_inputs(frozen_model(name, device, dtype), batch, torch.device(device), dtype, seed=0)


@pytest.fixture
def time_jacobians(benchmark):
    """time_jacobians(model_name, engine, timed, device, batch, rounds): benchmark one call on one batch.

    Skips with the engine's reason where it does not support the model; records in extra_info the
    engine, Jacobians per call and Jacobians per second (median), and the FLOPs of one Jacobian.
    """

    def run(model_name: str, engine: str, timed: throughput.Timed, device: str, batch: int, rounds: int) -> None:
        model, dtype = frozen_model(model_name, device), torch.float32
        reason = timed.supports(model, torch.device(device), dtype)
        if reason is not None:
            pytest.skip(reason)
        call, sync = timed.prepare(model, inputs(model_name, device, batch)), synchronizer(device)
        try:
            call()  # compiles where the engine compiles; some find out only now that they cannot
        except UnsupportedEngine as err:
            pytest.skip(str(err))

        def once():
            call()
            sync()

        benchmark.group = f"{model_name} {device} batch {batch}"
        benchmark.extra_info.update(
            model=model_name, engine=engine, device=device, dtype="float32", jacobians_per_call=batch,
            flops_per_jac=roofline.forward_flops(model) if engine == throughput.FORWARD else
            roofline.jacobian_flops(model),
        )  # fmt: skip
        benchmark.pedantic(once, rounds=rounds, warmup_rounds=1, iterations=1)
        if benchmark.stats is not None:  # None under --benchmark-disable (one untimed run)
            benchmark.extra_info["jac_per_s"] = batch / benchmark.stats.stats.median

    return run
