"""An example jacbench model plugin: `python -m bench ... --plugin tests/data/example_plugin.py`."""

import torch
from torch import nn

from models import ZooModule, register_model


class ResTanh(ZooModule, nn.Module):
    """x -> x W0 + tanh(x W1 + b1) W2: a linear skip plus one tanh layer."""

    family = "example"
    input_range = (-1.0, 1.0)  # the harness normalizes inputs into this box

    def __init__(self, n_in: int, n_out: int, width: int) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.skip, self.inner, self.outer = nn.Linear(n_in, n_out), nn.Linear(n_in, width), nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., n_in) -> (..., n_out), per sample
        return self.skip(x) + self.outer(torch.tanh(self.inner(x)))

    def flops_per_sample(self) -> int:  # param_count() defaults to counting trainable parameters
        w = self.inner.out_features
        return 2 * self.n_in * self.n_out + self.n_out + 2 * self.n_in * w + 2 * w + 2 * w * self.n_out + 2 * self.n_out


@register_model
def example_restanh(n_in: int = 4, n_out: int = 4, width: int = 32) -> ResTanh:
    """Example plugin: linear skip + one tanh layer of 32."""
    return ResTanh(n_in, n_out, width)
