"""Test doubles for the speed pipeline: fake engines with known behaviour, a small MLP, a fast sweep config."""

import torch
from torch import nn

from bench.engines.base import UnsupportedEngine
from bench.speed.sweep import SweepConfig, sweep


class FakeEngine:
    def __init__(self, fn, reason=None):
        self.fn, self._reason = fn, reason

    def supports(self, model, device, dtype):
        if isinstance(self._reason, Exception):
            raise self._reason
        return self._reason


def vmap_jacrev(model, x):
    return torch.func.vmap(torch.func.jacrev(model))(x)


def boom(model, x):
    raise RuntimeError("boom")


def cannot_compile(model, x):
    raise UnsupportedEngine("could not compile model Sequential: LayerNorm under vmap(jacfwd)")


ENGINES = {
    "loop": FakeEngine(lambda m, x: torch.stack([torch.autograd.functional.jacobian(m, xi) for xi in x])),
    "vmap_jacrev": FakeEngine(vmap_jacrev),
    "explodes": FakeEngine(boom),
    "cannot_compile": FakeEngine(cannot_compile),
    "refuses": FakeEngine(boom, reason="needs a batch-independent model"),
    "supports_raises": FakeEngine(vmap_jacrev, reason=TypeError("bad supports")),
}


def forum_mlp(width=100, depth=4, n_in=4, n_out=4, act=nn.Sigmoid):
    """The forum's nn.Sequential: n_in -> width x depth (act) -> n_out."""
    layers, d = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, n_out))


def small_mlp(name="tiny"):
    torch.manual_seed(0)
    return forum_mlp(width=8, depth=2, n_in=3, n_out=2)


def fast_cfg(**kw):
    base = dict(
        models=("tiny",),
        batch_sizes=(2, 8),
        device="cpu",
        repeats=2,
        warmup=1,
        jax=False,
        max_batch=(("loop", 4),),
        measure_peak=False,
    )
    return SweepConfig(**{**base, **kw})


def run_sweep(cfg, engines=ENGINES, factory=small_mlp):
    return sweep(cfg, model_factory=factory, engines=engines)
