"""A damped oscillator, u = exp(-0.3 t) cos(omega t), and its velocity v = du/dt, for t in [0, 5], omega in [0.5, 2].

An example of a user-defined equation set (the module docstring becomes its description). Use it with
    python -m bench selfcheck --equations file:equations/examples/my_equations.py
or equations.get("file:equations/examples/my_equations.py"). Copy this file and edit f, DOMAIN and the names.
"""

import torch

DOMAIN = [(0.0, 5.0), (0.5, 2.0)]  # one (lo, hi) per input: the box the benchmark samples
INPUTS = ("t", "omega")  # optional, default x1, x2, ...
OUTPUTS = ("u", "v")  # optional, default f1, f2, ...
NAME = "damped_oscillator"  # optional, default "file:<path>"


def f(x: torch.Tensor) -> torch.Tensor:
    """x: (..., 2) -> (..., 2). Use torch ops on x[..., i] and stack on the last axis: then the set works
    batched, under torch.func.vmap, in float32 and float64, on CPU and GPU."""
    t, omega = x[..., 0], x[..., 1]
    decay = torch.exp(-0.3 * t)
    u = decay * torch.cos(omega * t)
    v = -decay * (0.3 * torch.cos(omega * t) + omega * torch.sin(omega * t))
    return torch.stack([u, v], dim=-1)


# Optional: JACOBIAN = a hand-derived x (..., n_in) -> J (..., n_out, n_in), checked by the self-check;
# HESSIAN = a hand-derived x (..., n_in) -> H (..., n_out, n_in, n_in), checked by it too;
# FORMULAS = ("u = ...", "v = ...") readable formulas, one per output.
