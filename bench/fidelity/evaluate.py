"""Bring your own model: load a trained checkpoint and measure its fit and Jacobians against an equation set.

The forum user's workflow, done once and in physical units::

    python -m bench evaluate --model fastkan --layers 4,30,30,4 --checkpoint trained_model.pth \\
        --equation forum4x4 --scaling minmax:olhs_samples_max_min.csv --data olhs_input.csv --out DIR

``minmax:FILE`` is exactly the forum's mapping x_n = (x - Min) / (Max - Min) for inputs and outputs, with the
model mapping normalized inputs to normalized outputs; ``none`` means the model works in physical units.
Writes DIR/jacobian_results.csv (the forum layout), DIR/predictions.csv and DIR/metrics.csv; the diagnosis
(bench.fidelity.diagnose) says what is off and why.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import models
from bench.engines.base import UnsupportedEngine
from bench.fidelity.cell import NonFiniteModel, predict, second_derivatives
from bench.fidelity.hessian_metrics import hessian_rows
from bench.fidelity.metrics import denorm_check, fidelity_rows, unavailable_jacobian_rows, value_rows
from bench.run import results
from equations.csvio import read_minmax_csv, read_samples_csv
from equations.data import Dataset, make_dataset
from equations.datafile import DataSet
from equations.scaling import PhysicalModel, Scaler


class EvaluateError(ValueError):
    """A checkpoint, scaling file or data file does not fit the model or equation set; the message says how."""


# ---- checkpoint ----

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``torch.save(model.state_dict(), path)`` (also inside a {"state_dict": ...} dict,
    and with DataParallel's ``module.`` prefix removed). Never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EvaluateError(
            f"{path}: cannot be read as a weights-only checkpoint ({type(err).__name__}: {str(err)[:200]}). "
            "If it holds a whole pickled model, re-save it with torch.save(model.state_dict(), path)"
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        got = type(obj).__name__
        raise EvaluateError(f"{path}: expected a state_dict (a dict of parameter name -> tensor), got {got}")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


# (key pattern, (in, out) from the weight's shape, family, the zoo names of that family)
_LAYOUTS = (
    (r"layers\.(\d+)\.base_linear\.weight", lambda s: (s[1], s[0]), "a FastKAN", "fastkan or fastkan_noln"),
    (r"layers\.(\d+)\.base_weight", lambda s: (s[1], s[0]), "an efficient-KAN", "efficient_kan"),
    (r"layers\.(\d+)\.cheby_coeffs", lambda s: (s[0], s[1]), "a ChebyKAN", "chebykan"),
    (
        r"(\d+)\.weight",
        lambda s: (s[1], s[0]),
        "an MLP (nn.Sequential of Linear layers)",
        "mlp_tanh, mlp_sigmoid, mlp_silu, ...",
    ),
)


def guess_architecture(sd: Mapping[str, torch.Tensor]) -> tuple[str, str, list[int]] | None:
    """(family, its zoo names, layer widths) read off a checkpoint's keys and shapes, or None."""
    for pat, in_out, family, names in _LAYOUTS:
        found = sorted((int(m.group(1)), k) for k in sd if (m := re.fullmatch(pat, k)) and sd[k].dim() >= 2)
        if found:
            dims = [in_out(tuple(sd[k].shape)) for _, k in found]
            if all(a[1] == b[0] for a, b in itertools.pairwise(dims)):
                return family, names, [dims[0][0]] + [d[1] for d in dims]
    return None


def guess_layers(sd: Mapping[str, torch.Tensor]) -> list[int] | None:
    """Layer widths read off a checkpoint (FastKAN, efficient-KAN, ChebyKAN or nn.Sequential MLP), or None."""
    guess = guess_architecture(sd)
    return None if guess is None else guess[2]


def check_state_dict(
    model: nn.Module, sd: Mapping[str, torch.Tensor], what: str, path: str | Path, layers: list[int] | None = None
) -> None:
    """Raise EvaluateError naming missing keys, unexpected keys and shape mismatches, with the architecture the
    checkpoint's keys look like (--model) and its widths (--layers, unless those are the ones given)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"checkpoint {path} does not fit {what}:"]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" ... ({len(items)} in all)" if len(items) > 8 else ""
            parts.append(f"  {label}: {', '.join(items[:8])}{more}")
    guess = guess_architecture(sd)
    family = getattr(model, "family", None)
    if guess is not None:
        name, names, widths = guess
        if missing or unexpected:
            own_guess = guess_architecture(own)
            if own_guess is None or own_guess[0] != name:
                parts.append(f"  the checkpoint's keys look like {name} ({names}), not {family or what}: "
                             f"try --model {names.split(',')[0].split(' ')[0]}")  # fmt: skip
        if list(widths) != list(layers or []):
            parts.append(f"  the checkpoint looks like layers {widths}: try --layers {','.join(map(str, widths))}")
    elif unexpected and not missing and not shapes:
        parts.append("  (a different architecture? check --model)")
    raise EvaluateError("\n".join(parts))


def build_model(name: str, eq, layers: list[int] | None, overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """models.create_model for the equation set's sizes; ``layers`` is the full width list [n_in, ..., n_out]."""
    kw = dict(overrides or {})
    if layers:
        if layers[0] != eq.n_in or layers[-1] != eq.n_out:
            raise EvaluateError(
                f"--layers {','.join(map(str, layers))} maps {layers[0]} inputs to {layers[-1]} outputs, but "
                f"{eq.name} has {eq.n_in} inputs {list(eq.input_names)} and {eq.n_out} outputs {list(eq.output_names)}"
            )
        kw["layers"] = list(layers)
    return models.create_model(name, eq.n_in, eq.n_out, **kw)


def load_model(name: str, eq, checkpoint: str | Path, layers=None, overrides=None) -> nn.Module:
    sd = load_state_dict(checkpoint)
    model = build_model(name, eq, layers, overrides)
    what = f"{name}(layers={layers})" if layers else name
    check_state_dict(model, sd, what, checkpoint, layers)
    model.load_state_dict(sd)
    return model.eval()


# ---- scaling and data ----


# The min/max file against the data (evaluate's only independent evidence of the scaling the model was trained
# with): data beyond the claimed range by more than RANGE_OUTSIDE of its width, or a claimed range more than
# RANGE_WIDER times the data's, is flagged.
RANGE_OUTSIDE = 0.05
RANGE_WIDER = 2.0
# The width check needs data that could span the range: n uniform points cover (n - 1) / (n + 1) of it on average
# (n = 3: half), so it is made only from this many points on (then a 2x wider claim is no sampling accident).
RANGE_MIN_POINTS = 20


def minmax_from_spec(spec: str, eq):
    """The MinMax a ``minmax:FILE`` spec claims (None for ``none``)."""
    kind, _, arg = spec.partition(":")
    return read_minmax_csv(arg, eq.input_names, eq.output_names) if kind == "minmax" and arg else None


def range_rows(mm, x: torch.Tensor, y: torch.Tensor, eq) -> list[dict]:
    """For every input and output: how far the data exceed the claimed [Min, Max] (fraction of its width,
    ``minmax_outside``) and the claimed width over the data's (``minmax_width_ratio``)."""
    rows = []
    for kind, data, lo, hi, names in (("input", x, mm.x_min, mm.x_max, eq.input_names),
                                      ("output", y, mm.y_min, mm.y_max, eq.output_names)):  # fmt: skip
        d_lo, d_hi = data.amin(0).double(), data.amax(0).double()
        width = (hi - lo).double()
        outside = torch.clamp(torch.maximum(lo - d_lo, d_hi - hi), min=0) / width
        ratio = width / (d_hi - d_lo)
        few = len(data) < RANGE_MIN_POINTS
        for k, name in enumerate(names):
            where = {"output": name, "input": ""} if kind == "output" else {"output": "", "input": name}
            rows.append({"metric": "minmax_outside", "value": float(outside[k]), "error": "", **where})
            value, why = (float("nan"), f"fewer than {RANGE_MIN_POINTS} points") if few else (float(ratio[k]), "")
            rows.append({"metric": "minmax_width_ratio", "value": value, "error": why, **where})
    return rows


def scaler_from_spec(spec: str, eq):
    """``minmax:FILE`` (the forum's mapping from a Max/Min file) or ``none`` (the model is in physical units)."""
    kind, _, arg = spec.partition(":")
    if kind == "minmax" and arg:
        mm = read_minmax_csv(arg, eq.input_names, eq.output_names)
        return Scaler.from_minmax(mm, input_names=eq.input_names, output_names=eq.output_names)
    if kind == "none" and not arg:
        return Scaler.identity(eq.n_in, eq.n_out)
    raise EvaluateError(
        f"--scaling {spec!r}: use minmax:FILE (x_n = (x - Min) / (Max - Min) for inputs and outputs, from the "
        "Max/Min CSV the model was trained with) or none (the model maps physical inputs to physical outputs)"
    )


def load_data(eq, data: str | Path | None, n: int = 1000, sampler: str = "lhs", seed: int = 0):
    """The points to evaluate on, as ``(Dataset, y_file)``: a CSV (x1..xn[, f1..fm], checked against the
    domain) or n sampled points. The Dataset's y and J are always the equation set's; ``y_file`` holds the
    file's outputs, if it has any, so the diagnosis can say whether they match the equation set."""
    if isinstance(eq, DataSet):  # a data set is its own data: every row, with the file's derivatives
        if data is not None:
            raise EvaluateError(f"--data {data}: {eq.name} brings its own rows (and derivatives); drop --data")
        return make_dataset(eq, eq.n_rows, sampler, seed), None
    if data is None:
        return make_dataset(eq, n, sampler, seed), None
    x, y = read_samples_csv(data, eq.input_names, eq.output_names)
    return Dataset.from_arrays(eq, x, None, what=str(data)), y


# ---- evaluation ----


@dataclass
class Evaluation:
    """Everything the diagnosis and the output files need, in physical units (float64 numpy)."""

    eq: Any  # EquationSet
    model: nn.Module  # the loaded model (normalized units)
    scaler: Any  # equations.scaling.Scaler
    x: np.ndarray  # (B, n_in)
    y_true: np.ndarray  # (B, n_out): the equation set's outputs
    y_pred: np.ndarray
    J_true: np.ndarray  # (B, n_out, n_in)
    J_pred: np.ndarray
    rows: list[dict]  # metrics.csv rows
    y_residual: np.ndarray | None  # max |y_file - eq(x)| per output when the data file has outputs
    H_true: np.ndarray | None = None  # (B, n_out, n_in, n_in): the set's exact Hessians (None for a data set)
    H_pred: np.ndarray | None = None  # the model's, None where no Hessian engine could run (hessian_error says why)
    hessian_error: str = ""


def evaluate(
    model: nn.Module,
    scaler,
    eq,
    ds,
    model_name: str,
    dtype=torch.float32,
    engine: str = "auto",
    y_file=None,
    claimed=None,
) -> Evaluation:
    """Predictions and Jacobians of ``PhysicalModel(model, scaler)`` on the dataset, and the metric rows.

    ``claimed``: the MinMax of a ``minmax:FILE`` scaling, checked against the data's inputs and outputs.
    """
    pm = PhysicalModel(model.to(dtype), scaler).eval()
    try:
        y_pred, J_pred = predict(pm, ds.x.to(dtype), engine, "input rows")
    except NonFiniteModel as err:
        raise EvaluateError(
            f"{err}. Check that --model/--layers match how the checkpoint was trained and that --scaling is the "
            "normalization it was trained with (inputs far outside the training range can overflow)"
        ) from None
    if eq.has_jacobian:
        rows = fidelity_rows(ds.x, ds.y, y_pred, ds.J, J_pred, eq.lower, eq.upper, eq.input_names, eq.output_names)
    else:
        rows = value_rows(ds.y, y_pred, eq.output_names)
        rows += unavailable_jacobian_rows(f"{eq.name} has no derivative columns: Jacobian metrics are unavailable")
    rows.append({"metric": "denorm_check", "value": denorm_check(pm, ds.x[:128]), "error": ""})
    if claimed is not None:
        rows += range_rows(claimed, ds.x, ds.y if y_file is None else y_file, eq)
    base = {"run_id": "evaluate", "cell_id": f"{eq.name}__{model_name}__checkpoint", "equation": eq.name,
            "model": model_name, "family": getattr(model, "family", ""), "params": _params(model),
            "flops": _flops(model), "split": "eval", "status": "ok"}  # fmt: skip
    residual = None if y_file is None else (y_file - ds.y).abs().amax(dim=0).numpy()
    H_true, H_pred, why = second_order(pm, eq, ds.x, dtype)
    if H_pred is not None:
        rows += hessian_rows(ds.x, H_true, H_pred, torch.diagonal(H_pred, dim1=-2, dim2=-1).sum(-1), eq.lower,
                             eq.upper, eq.input_names, eq.output_names)  # fmt: skip
    return Evaluation(
        eq, model, scaler, ds.x.numpy(), ds.y.numpy(), y_pred.double().cpu().numpy(), ds.J.numpy(),
        J_pred.double().cpu().numpy(), [{**base, **r} for r in rows], residual,
        None if H_true is None else H_true.numpy(),
        None if H_pred is None else H_pred.numpy(), why,
    )  # fmt: skip


def second_order(pm: nn.Module, eq, x: torch.Tensor, dtype) -> tuple[torch.Tensor | None, torch.Tensor | None, str]:
    """(exact Hessians, the model's in physical units or None, why none): a model no Hessian engine can
    differentiate twice (or one that returns NaN/inf there) still gets its first-order evaluation, and so does
    a data set (it has no reference Hessians)."""
    if not eq.has_hessian:
        return None, None, f"{eq.name} is data without second derivatives: no Hessian reference to compare with"

    H_true = eq.hessian(x)
    try:
        H_pred, _ = second_derivatives(pm, x.to(dtype), "input rows")
    except (UnsupportedEngine, NonFiniteModel) as err:
        return H_true, None, str(err)
    return H_true, H_pred.double().cpu(), ""


def _params(model: nn.Module) -> int:
    return model.param_count() if hasattr(model, "param_count") else sum(p.numel() for p in model.parameters())


def _flops(model: nn.Module) -> int | str:
    try:
        return model.flops_per_sample()
    except (AttributeError, NotImplementedError):
        return ""


def write_outputs(ev: Evaluation, out: str | Path) -> Path:
    """DIR/jacobian_results.csv (forum layout, every row; the Hessian entries d2f_dxj_dxk after the Jacobian's),
    DIR/predictions.csv and DIR/metrics.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    eq = ev.eq
    jac = results.jacobian_frame(ev.x, ev.J_pred, ev.J_true, eq.input_names, eq.output_names, max_rows=len(ev.x),
                                 H_pred=ev.H_pred, H_true=None if ev.H_pred is None else ev.H_true)  # fmt: skip
    results.atomic_write_csv(out / "jacobian_results.csv", jac)
    pred = {name: ev.x[:, k] for k, name in enumerate(eq.input_names)}
    for k, name in enumerate(eq.output_names):
        pred[f"Predicted_{name}"] = ev.y_pred[:, k]
        pred[f"True_{name}"] = ev.y_true[:, k]
    results.atomic_write_csv(out / "predictions.csv", pd.DataFrame(pred))
    results.atomic_write_csv(out / "metrics.csv", results.rows_frame(ev.rows))
    return out
