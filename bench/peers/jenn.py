"""JENN (PyPI ``jenn``, "Jacobian-enhanced neural nets", arXiv 2406.09132) as a peer, with its own settings.

JENN is a numpy MLP trained by least squares on values and partials:
    cost = sum (y_pred - y)^2 + gamma * sum (dydx_pred - dydx)^2 (+ lambd * ||W||^2), on standardized data.
Its training settings here are its own recommended ones: the defaults of the ``train`` tool of its MCP server
(``jenn.mcp.server``): tanh hidden layers, a linear output, ``is_normalize=True``, ``alpha=0.05``, ``lambd=0``,
``max_iter=200``, ``gamma=1``, full batch. The architecture is jacbench's choice, not JENN's: JENN's default is
one hidden layer of 12 (``depth=1, width=12`` reproduces it); jacbench uses two hidden layers, the best of depths
1, 2 and 3 for JENN at 8,000 parameters on forum4x4, gen:mixed:0 and gen:hard:0 (lowest median test Jacobian
error on each; measured: results/measurements/README.md, "JENN's depth"), with the width ``grid.match_params``
chooses.

The objectives differ, so the same beta is not the same loss: the zoo minimizes beta * mean(value errors^2) +
(1 - beta) * mean(Jacobian errors^2) on min-max scaled data, JENN sum(value errors^2) + gamma * sum(Jacobian
errors^2) on standardized data, which at gamma = (1 - beta) / beta weighs each Jacobian entry n_in times more
than the zoo does. The mapping is chosen so that beta = 0.5 is JENN's own default, not to equal the zoo's loss.

jacbench's value weight beta maps onto JENN's gamma = (1 - beta) / beta: beta = 1 is JENN without gradient
enhancement (no partials passed), beta = 0.5 is JENN's default gamma = 1. Data go in in physical units (JENN
standardizes them itself); values and Jacobians come out of its own API (``NeuralNet.__call__``), in float64.
JENN uses no validation split and no learning-rate grid: its own optimizer (Adam with a line search) decides.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OPTIONS = {  # option -> default; every one can be set in [model_overrides.jenn]
    "width": 12,  # hidden units per layer (JENN's default)
    "depth": 2,  # hidden layers (JENN's default is 1; see the module docstring)
    "hidden": None,  # explicit widths, e.g. [12, 12] (instead of width x depth)
    "activation": "tanh",  # JENN's hidden activation ("tanh" or "relu")
    "alpha": 0.05,  # JENN's learning rate for its line search
    "lambd": 0.0,  # L2 regularization
    "max_iter": 200,  # optimizer iterations (full batch)
    "is_normalize": True,  # JENN standardizes x, y and the partials itself
}
ACTIVATION_FLOPS = {"tanh": 6, "relu": 1}  # per unit, as models.mlp counts them


@dataclass
class Fitted:
    """A trained JENN network and what its fit did."""

    net: Any  # jenn.NeuralNet
    gamma: float  # the gradient-enhancement weight it trained with (0 = off)
    seconds: float  # wall time of NeuralNet.fit
    steps: int  # optimizer iterations taken
    history: list[dict] = field(default_factory=list)  # {step, lr, loss} per iteration (training cost)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (B, n_in) float64 -> y (B, n_out), J (B, n_out, n_in), both from JENN's own API in one call."""
        y, dydx = self.net(np.ascontiguousarray(np.asarray(x, dtype=np.float64).T))
        return y.T, dydx.transpose(2, 0, 1)

    def predict_values(self, x: np.ndarray) -> np.ndarray:
        return self.net.predict(np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)).T


class Jenn:
    """The ``jenn`` peer: ``options`` / ``widths`` / ``param_count`` / ``match_params`` / ``fit``."""

    name = "jenn"
    family = "jenn"
    variants = ("value", "sobolev")  # beta = 1 and beta < 1; JENN has no Hessian term
    description = "JENN (PyPI jenn): numpy MLP, least squares on values and partials, its own optimizer"

    def options(self, **overrides: Any) -> dict:
        """The defaults with ``overrides`` (None drops an override); ValueError names an unknown option."""
        bad = [k for k in overrides if k not in OPTIONS]
        if bad:
            raise ValueError(f"peer 'jenn' does not accept {bad}; it accepts: {', '.join(OPTIONS)}")
        out = dict(OPTIONS)
        out.update({k: v for k, v in overrides.items() if v is not None})
        if out["activation"] not in ACTIVATION_FLOPS:
            raise ValueError(f"jenn: activation {out['activation']!r} is not one of {list(ACTIVATION_FLOPS)}")
        return out

    def widths(self, n_in: int, n_out: int, **overrides: Any) -> list[int]:
        o = self.options(**overrides)
        hidden = list(o["hidden"]) if o["hidden"] is not None else [int(o["width"])] * int(o["depth"])
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"jenn: hidden layers must be positive widths, got {hidden}")
        return [n_in, *map(int, hidden), n_out]

    def param_count(self, n_in: int, n_out: int, **overrides: Any) -> int:
        w = self.widths(n_in, n_out, **overrides)
        return sum(a * b + b for a, b in itertools.pairwise(w))

    def flops_per_sample(self, n_in: int, n_out: int, **overrides: Any) -> int:
        w, act = self.widths(n_in, n_out, **overrides), ACTIVATION_FLOPS[self.options(**overrides)["activation"]]
        return sum(2 * a * b + b for a, b in itertools.pairwise(w)) + act * sum(w[1:-1])

    def match_params(self, budget: int, n_in: int, n_out: int, **overrides: Any) -> dict:
        """``overrides`` plus the width (at the given or default depth) whose parameter count is closest to budget."""
        if overrides.get("hidden") is not None or overrides.get("width") is not None:
            raise ValueError("match_params chooses the jenn width itself; drop 'width' / 'hidden' (depth may be given)")
        depth = int(self.options(**overrides)["depth"])
        # count(w) = depth-1 hidden-hidden layers + the two ends: a quadratic in w, solved and rounded both ways
        a, b, c = depth - 1, n_in + n_out + depth, n_out - budget
        w = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a) if a else -c / b
        cands = {max(1, math.floor(w)), max(1, math.ceil(w))}
        best = min(cands, key=lambda k: (abs(self.param_count(n_in, n_out, **overrides, width=k) - budget), k))
        return {**overrides, "width": best}

    def gamma(self, beta: float) -> float:
        """jacbench's beta (value weight) as JENN's gamma (partials weight): (1 - beta) / beta."""
        if not 0 < beta <= 1:
            raise ValueError(f"jenn weighs values at 1 and partials at gamma = (1 - beta) / beta: beta must lie in "
                             f"(0, 1], got {beta}")  # fmt: skip
        return (1.0 - beta) / beta

    def fit(
        self, x: np.ndarray, y: np.ndarray, J: np.ndarray | None, beta: float, seed: int, **overrides: Any
    ) -> Fitted:
        """Train on x (B, n_in), y (B, n_out) and, when beta < 1, J (B, n_out, n_in), all physical, float64."""
        try:
            import jenn
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError("the 'jenn' peer needs the jenn package: pip install jenn") from err
        o, gamma = self.options(**overrides), self.gamma(beta)
        if gamma > 0 and J is None:
            raise ValueError("jenn with gradient enhancement (beta < 1) needs training Jacobians; the data have none")
        net = jenn.NeuralNet(self.widths(x.shape[1], y.shape[1], **overrides), o["activation"], "linear")
        t0 = time.perf_counter()
        net.fit(
            np.ascontiguousarray(x.T), np.ascontiguousarray(y.T),
            np.ascontiguousarray(J.transpose(1, 2, 0)) if gamma > 0 else None,
            is_normalize=o["is_normalize"], alpha=o["alpha"], lambd=o["lambd"], gamma=gamma if gamma > 0 else 1.0,
            max_iter=int(o["max_iter"]), random_state=seed,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        costs = [float(np.squeeze(c)) for batch in net.history.values() for hist in batch.values() for c in hist or []]
        history = [{"step": i + 1, "lr": o["alpha"], "loss": c} for i, c in enumerate(costs)]
        return Fitted(net, gamma, seconds, len(costs), history)


PEER = Jenn()
