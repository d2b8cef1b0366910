"""Fix your own model: retrain or fine-tune it on your data with its derivatives, and save it as you loaded it.

The forum user's second step, after `python -m bench evaluate` found the Jacobians off::

    python -m bench fit --model mlp_tanh --layers 4,64,64,4 --checkpoint trained_model.pth \\
        --data samples.csv --equation forum4x4 --scaling minmax:max_min.csv --loss sobolev --out fixed

The training data are the user's rows (inputs, and outputs if the file has them) with derivatives from an equation
set (``--equation``) or from the file's own ``d<output>_d<input>`` columns (``--equation data:FILE``). Training
runs in the model's normalized units, exactly as the grid trains (`bench.fidelity.train.fit_selecting_lr`): one
candidate per learning rate from the same starting weights, the lowest loss on a held-out validation split wins.
The result is a state_dict with the same keys beside a copy of the Max/Min file, so the user's own code loads it.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.fidelity import diagnose, metrics
from bench.fidelity import evaluate as E
from bench.fidelity.train import FitResult, TrainData, Trial, fit_selecting_lr
from bench.run.config import TrainConfig
from equations.data import Dataset

# loss -> (beta: weight of the values, hess_weight): the grid's recipes (1 - beta weighs the Jacobian term)
LOSSES = {"value": (1.0, 0.0), "sobolev": (0.5, 0.0), "hessian": (0.5, 0.1)}


class FitError(E.EvaluateError):
    """The data, equation set or loss cannot train this model; the message says what to change."""


@dataclass
class Refit:
    model: nn.Module  # the chosen candidate, trained (normalized units)
    result: FitResult
    trials: list[Trial]
    train_rows: torch.Tensor  # indices into the training set
    val_rows: torch.Tensor  # held out: the learning rate is chosen on them


def training_set(eq, data: str | None, n: int, sampler: str, seed: int, loss: str) -> Dataset:
    """The rows to train on: the CSV's inputs (its outputs as targets when it has them) with the equation set's
    derivatives, a data set's own rows, or n sampled points of the equation set."""
    ds, y_file = E.load_data(eq, data, n, sampler, seed)
    if y_file is not None:
        ds = dataclasses.replace(ds, y=torch.as_tensor(y_file, dtype=torch.float64))
    if loss != "value" and not torch.isfinite(ds.J).all():
        raise FitError(
            f"--loss {loss} trains on derivatives, but {eq.name} has none for every row (no d<output>_d<input> "
            "columns): add them to the file, or give --equation SET to take them from an equation set, or use "
            "--loss value"
        )
    if loss == "hessian" and not eq.has_hessian:
        raise FitError(f"--loss hessian needs exact second derivatives, which {eq.name} does not have")
    return ds


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < val_fraction < 1.0:
        raise FitError(f"--val-fraction {val_fraction}: must lie strictly between 0 and 1 (0.2 holds out a fifth)")
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 2:
        raise FitError(f"{n} rows are too few to hold out a validation split and still train: give more data")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def normalized(ds: Dataset, scaler, rows: torch.Tensor, eq, loss: str, dtype: torch.dtype) -> TrainData:
    """The rows in the model's units and dtype (J None for the value loss, H None unless the loss needs it)."""
    x, y, J = ds.x[rows], ds.y[rows], ds.J[rows]
    H = scaler.hessian_to_normalized(eq.hessian(x)).to(dtype) if loss == "hessian" else None
    Jn = scaler.jacobian_to_normalized(J).to(dtype) if loss != "value" else None
    return TrainData(scaler.transform_x(x).to(dtype), scaler.transform_y(y).to(dtype), Jn, H)


def refit(
    start: nn.Module,
    ds: Dataset,
    scaler,
    eq,
    *,
    loss: str = "sobolev",
    steps: int = 2000,
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2),
    val_fraction: float = 0.2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Refit:
    """Train copies of ``start`` (its weights: fine-tuning; a fresh model: retraining) with the loss, one per
    learning rate, and keep the one with the lowest validation loss."""
    if loss not in LOSSES:
        raise FitError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    beta, hess_weight = LOSSES[loss]
    train_rows, val_rows = _split(len(ds), val_fraction, seed)
    train = normalized(ds, scaler, train_rows, eq, loss, dtype)
    val = normalized(ds, scaler, val_rows, eq, loss, dtype)
    cfg = TrainConfig(lr_grid=tuple(lrs), steps=steps, beta=beta, hess_weight=hess_weight, eval_every=10)
    start = start.to(dtype)

    def make_model() -> nn.Module:
        return copy.deepcopy(start)

    model, result, trials = fit_selecting_lr(make_model, train, val, cfg, seed)
    return Refit(model.eval(), result, trials, train_rows, val_rows)


def save(model: nn.Module, out: Path, scaling: str) -> Path:
    """The checkpoint as the user saved theirs (``torch.save(model.state_dict(), path)``), with the Max/Min file
    beside it (the scaling is unchanged: the same normalization maps the new model's inputs and outputs)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trained_model.pth"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    kind, _, arg = scaling.partition(":")
    if kind == "minmax":
        src = Path(arg)
        dst = out / src.name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
    return path


def summary(ev) -> dict[str, float]:
    """The numbers of a before/after table: headline (RMS, p90, max), per output, min R², spurious share."""
    r2, _ = metrics.r2_per_output(ev.y_true, ev.y_pred)
    out = {"R² min": float(np.nanmin(r2))}
    if ev.eq.has_jacobian:
        head = diagnose.headline(ev, 1)
        stats = head.summary()
        out |= {"Jacobian error": stats["rms"], "  90th percentile": stats["p90"], "  max": stats["max"]}
        out |= {f"  {n}": v for n, v in zip(ev.eq.output_names, head.output_rms(), strict=True)}
        frac, _, _, note = metrics.jac_spurious(ev.J_true, ev.J_pred)
        if not note:
            out["spurious on structural zeros"] = frac
    if ev.H_pred is not None:
        out["Hessian error"] = diagnose.headline(ev, 2).summary()["rms"]
    return out


def before_after_lines(before, after) -> list[str]:
    """A table of the summary numbers before and after (percentages for errors)."""
    new = summary(after)
    old = summary(before) if before is not None else {}

    def fmt(key: str, v: float | None) -> str:
        if v is None or not np.isfinite(v):
            return "–"
        return f"{v:.6f}" if key.startswith("R²") else f"{100 * v:.3g}%"

    width = max(len(k) for k in new)
    lines = [f"{'':<{width}}  {'before':>10}  {'after':>10}"]
    lines += [f"{k:<{width}}  {fmt(k, old.get(k)):>10}  {fmt(k, v):>10}" for k, v in new.items()]
    return lines


def rows_of(ds: Dataset, rows: torch.Tensor) -> Dataset:
    """The Dataset of some rows (a data set's held-out rows, to evaluate on)."""
    return dataclasses.replace(ds, x=ds.x[rows], y=ds.y[rows], J=ds.J[rows])
