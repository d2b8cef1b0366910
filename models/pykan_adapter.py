"""pykan's ``KAN`` (PyPI ``pykan``, the original KAN paper's code) in the zoo, through the plugin path.

Installed with ``pip install 'jacbench[pykan]'``; jacbench's own ``pyproject.toml`` declares this module as an
entry point of the ``jacbench.models`` group, exactly as a third-party package would, so ``pykan`` appears in
``list_models()`` when the package is importable and nothing is registered when it is not.

The adapter subclasses pykan's class (its state_dict keys are pykan's own: ``act_fun.0.coef``, ``node_scale_0``,
...; a ``torch.save(model.state_dict())`` of a pykan model loads with ``strict=True``) and changes three things
for derivative work:
- ``forward`` accepts any leading shape, including one ``(n_in,)`` sample under ``torch.func.vmap``
  (pykan indexes ``x[:, ...]`` and needs a 2-D batch);
- ``save_act=False`` and ``symbolic_enabled=False``: pykan's activation bookkeeping takes standard deviations
  over the batch (a cross-sample operation, although detached) and the symbolic branch is unused until a user
  fixes symbolic functions; its affine parameters are frozen so that every trainable parameter gets a gradient;
- ``auto_save=False``: pykan otherwise writes a checkpoint folder ``./model`` on construction.
The spline grid spans ``grid_range`` (default [-1, 1]), extended by ``k`` intervals as in efficient-KAN.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch

from models.base import ZooModule, check_positive_int, check_range, resolve_widths
from models.efficient_kan import SILU_FLOPS, bspline_basis_flops
from models.registry import register_model

try:
    from kan import KAN as _PyKAN
except ImportError:  # the extra is not installed: register nothing
    _PyKAN = None

if _PyKAN is not None:

    class PyKAN(ZooModule, _PyKAN):
        family = "pykan"

        def __init__(self, widths: list[int], grid: int, k: int, grid_range: tuple[float, float], seed: int):
            self.n_in, self.n_out, self.widths = widths[0], widths[-1], list(widths)
            self.grid_size, self.spline_order = grid, k
            self.input_range = grid_range
            np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002 (pykan seeds the globals)
            try:
                with torch.random.fork_rng(devices=[]):
                    super().__init__(
                        width=list(widths), grid=grid, k=k, grid_range=list(grid_range), seed=seed,
                        save_act=False, symbolic_enabled=False, auto_save=False,
                    )  # fmt: skip
            finally:
                np.random.set_state(np_state)  # noqa: NPY002
                random.setstate(py_state)
            for p in self.symbolic_fun.parameters():
                p.requires_grad_(False)

        def to(self, *args, **kwargs):
            """nn.Module.to in full (pykan's own ``to`` takes a device only, so ``.to(torch.float64)`` broke it)."""
            device = torch._C._nn._parse_to(*args, **kwargs)[0]
            torch.nn.Module.to(self, *args, **kwargs)
            if device is not None:  # pykan reads .device when it builds tensors (grid updates)
                for module in (self, *self.act_fun):
                    module.device = device
            return self

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            lead = x.shape[:-1]
            y = super().forward(x.reshape(-1, x.shape[-1]))
            return y.reshape(*lead, y.shape[-1])

        def param_count(self) -> int:
            # per edge: grid + k spline coefficients, scale_base and scale_sp
            return sum(a * b * (self.grid_size + self.spline_order + 2) for a, b in pairwise(self.widths))

        def flops_per_sample(self) -> int:
            G, k = self.grid_size, self.spline_order
            basis = bspline_basis_flops(G, k)
            total = 0
            for a, b in pairwise(self.widths):
                total += a * (basis + SILU_FLOPS)  # bases and the SiLU base function of each input
                total += a * b * (2 * (G + k) + 5)  # spline sum, scale_base, scale_sp, mask, sum over inputs
                total += 4 * b  # subnode and node affine maps
            return total

    @register_model
    def pykan(
        n_in: int = 4,
        n_out: int = 4,
        width: int | None = None,
        depth: int | None = None,
        hidden: Sequence[int] | None = None,
        layers: Sequence[int] | None = None,
        grid: int = 5,
        k: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
    ) -> PyKAN:
        """pykan's KAN (B-splines of order k on `grid` intervals over grid_range, SiLU base); default 4 -> 8x2 -> 4."""
        widths = resolve_widths(
            "pykan", n_in, n_out, width=width, depth=depth, hidden=hidden, layers=layers, default_width=8,
            default_depth=2,
        )  # fmt: skip
        grid = check_positive_int(grid, "grid", "pykan")
        k = check_positive_int(k, "k (spline order)", "pykan")
        lo, hi = check_range(*grid_range, "grid_range", "pykan")
        return PyKAN(widths, grid, k, (lo, hi), seed=int(torch.randint(0, 2**31 - 1, ()).item()))
