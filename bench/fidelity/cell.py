"""One grid cell: sample, split, scale, train one model, and measure its fit and Jacobians in physical units.

    make_dataset(eq, n_train + n_val + n_test, seed) -> split
      -> train_zoo: Scaler.fit(train) -> create_model(seed) -> fit(normalized train/val, TrainConfig(beta))
                    -> PhysicalModel(model, scaler)
         train_peer: the peer's own fit on the physical training split (bench.peers) -> its own y and J
      -> y and J on train and test -> bench.fidelity.metrics.fidelity_rows -> rows
      -> H and the Laplacian on test -> bench.fidelity.hessian_metrics -> rows

Every metric sees physical units only: a zoo model through its raw-in/raw-out wrapper, so de-normalization
happens in exactly one place (``equations.scaling``) and is checked on every cell (``denorm_check``); a peer
through its own API, whose Jacobian is checked against central differences of its values (``jac_fd_check``).
A data set (``data:path.csv``) is measured against its file's derivatives; without them, fit metrics only.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

import equations
import models
from bench import peers
from bench.engines import hessian
from bench.engines import jacobian as engine_jacobian
from bench.fidelity import finite_diff as fd
from bench.fidelity.hessian_metrics import hessian_rows
from bench.fidelity.metrics import denorm_check, fidelity_rows, unavailable_jacobian_rows, value_rows
from bench.fidelity.train import TrainConfig, TrainData, convergence, fit_selecting_lr
from bench.run import results
from bench.run.config import Cell, Config, GridConfig
from bench.run.results import CONVERGENCE_DROP, CellResult
from equations.data import make_dataset, split
from equations.datafile import file_stamp
from equations.scaling import PhysicalModel, Scaler

# jac_fd_check's error text starts with this where a peer's API Jacobian disagreed with its values beyond the
# tolerance and the peer keeps such cells (bench.peers.smt: fd_check_fails_cell = False); the reports count them
FD_DISAGREES = "API Jacobian disagrees with its values beyond the tolerance"


class NonFiniteModel(RuntimeError):
    """The model returned NaN/inf values or Jacobians: the cell stops and is recorded as failed."""


def cached_dataset(equation: str, n: int, sampler: str, seed: int):
    """make_dataset, memoized per worker process: the cells of a grid share few datasets (one per equation,
    size and seed), and an optimized LHS of ~1000 points takes seconds. Datasets are never modified; a data set's
    entry is keyed by its file's modification time and size too, so an edited file is read again."""
    return _cached_dataset(equation, n, sampler, seed, file_stamp(equation))


@functools.lru_cache(maxsize=32)
def _cached_dataset(equation: str, n: int, sampler: str, seed: int, _stamp: tuple):
    return make_dataset(equations.get(equation), n, sampler, seed)


def make_scaler(train, scaling: str, input_range: tuple[float, float]):
    """Fit the scaler on the training split only (see GridConfig.scaling for the methods)."""
    names = {"input_names": train.input_names, "output_names": train.output_names}
    if scaling == "model":
        return Scaler.fit(train.x, train.y, "minmax", x_range=tuple(input_range), y_range=(-1.0, 1.0), **names)
    if scaling == "forum":
        return Scaler.fit(train.x, train.y, "minmax", x_range=(0.0, 1.0), y_range=(0.0, 1.0), **names)
    return Scaler.fit(train.x, train.y, scaling, **names)


def model_overrides(model: str, grid: GridConfig, n_in: int, n_out: int) -> dict:
    """Factory (or peer) keyword arguments for one model: the config's overrides, sized to match_params if set."""
    kw = dict(grid.model_overrides.get(model, {}))
    if grid.match_params:
        sizer = peers.get(model).match_params if peers.is_peer(model) else functools.partial(models.match_params, model)
        kw = sizer(grid.match_params, n_in, n_out, **kw)
    return kw


def trained_configurations(config: Config) -> list[tuple[str, int, int, dict]]:
    """Every distinct model configuration a grid trains: (model, n_in, n_out, factory overrides).

    The same overrides ``run_cell`` builds its model with (``model_overrides``), so a throughput sweep of these
    measures exactly the networks whose fidelity the run reports (``results.model_config_id`` joins them).
    Peers are left out: they are not torch modules, so no engine of the sweep runs on them.
    """
    out: dict[str, tuple[str, int, int, dict]] = {}
    for eq_name in config.grid.equations:
        eq = equations.get(eq_name)
        for model in (m for m in config.grid.models if not peers.is_peer(m)):
            kw = model_overrides(model, config.grid, eq.n_in, eq.n_out)
            out.setdefault(results.model_config_id(model, eq.n_in, eq.n_out, kw), (model, eq.n_in, eq.n_out, kw))
    return list(out.values())


def jacobian(model: nn.Module, x: Tensor, engine: str = "auto") -> Tensor:
    """x (B, n_in) -> J (B, n_out, n_in) through bench.engines."""
    return engine_jacobian(model, x, engine=engine)


def check_finite(named: dict[str, Tensor], x: Tensor, what: str) -> None:
    """NonFiniteModel naming the first sample whose values, Jacobians or Hessians hold NaN/inf."""
    for name, t in named.items():
        bad = ~torch.isfinite(t.reshape(len(t), -1)).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise NonFiniteModel(
                f"the model returned NaN/inf {name} for {int(bad.sum())} of {len(t)} {what} "
                f"(first at row {row}, x = {x[row].tolist()})"
            )


def predict(model: nn.Module, x: Tensor, engine: str = "auto", what: str = "samples") -> tuple[Tensor, Tensor]:
    """Values (B, n_out) and Jacobians (B, n_out, n_in) of ``model`` at x; NonFiniteModel on NaN/inf."""
    with torch.no_grad():
        y = model(x)
    J = jacobian(model, x, engine).detach()
    check_finite({"values": y, "Jacobians": J}, x, what)
    return y, J


def second_derivatives(model: nn.Module, x: Tensor, what: str = "samples") -> tuple[Tensor, Tensor]:
    """Hessians (B, n_out, n_in, n_in) and Laplacians (B, n_out) of ``model`` at x; NonFiniteModel on NaN/inf.

    The Laplacian is the trace of the Hessian just computed (a second pass of the Laplacian engine would give
    the same numbers up to rounding; tests/test_hessian_engines.py checks that it does).
    """
    return with_laplacian(hessian(model, x).detach(), x, what)


def with_laplacian(H: Tensor, x: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """(H, its trace per output) after checking H is finite: H (B, n_out, n_in, n_in) -> L (B, n_out)."""
    check_finite({"Hessians": H}, x, what)
    return H, torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)


@dataclass
class Trained:
    """A fitted surrogate behind one face, zoo model or peer: physical x (B, n_in) float64 in, float64 CPU out.

    predict(x, what) -> y (B, n_out), J (B, n_out, n_in); second(x, what) -> H (B, n_out, n_in, n_in), L (B, n_out).
    """

    info: dict  # family, params, flops, model_config: the metric rows' model columns
    predict: Callable[[Tensor, str], tuple[Tensor, Tensor]]
    second: Callable[[Tensor, str], tuple[Tensor, Tensor]]
    checks: list[dict]  # self-check rows (denorm_check, or a peer's jac_fd_check), split "test"
    fit: Any  # FitResult-like: seconds, steps, lr, history
    trials: list = field(default_factory=list)  # learning-rate candidates on the validation split


def train_zoo(cell: Cell, config: Config, eq, data) -> Trained:
    """Scale on the training split, build the registered model, fit it with bench.fidelity.train, wrap it once."""
    g, run = config.grid, config.run
    device, dtype = torch.device(run.device), getattr(torch, run.dtype)
    kw = model_overrides(cell.model, g, eq.n_in, eq.n_out)

    def make_model() -> nn.Module:  # the same initialization for every learning-rate candidate
        return models.create_model(cell.model, eq.n_in, eq.n_out, seed=cell.seed, **kw).to(device, dtype)

    scaler = make_scaler(data.train, g.scaling, make_model().input_range)
    train_cfg = TrainConfig(**config.train, beta=cell.beta, hess_weight=cell.hess_weight)

    def normalized(part) -> TrainData:  # exact training Hessians from the set only when a term uses them
        if cell.hess_weight == 0:
            return TrainData(*scaler.transform_dataset(part))
        return TrainData(*scaler.transform_dataset(part), scaler.hessian_to_normalized(eq.hessian(part.x)))

    val = normalized(data.val) if len(data.val) else None
    model, res, trials = fit_selecting_lr(make_model, normalized(data.train), val, train_cfg, cell.seed)
    pm = PhysicalModel(model, scaler).eval()

    def pred(x: Tensor, what: str) -> tuple[Tensor, Tensor]:
        return tuple(t.cpu().double() for t in predict(pm, x.to(device, dtype), run.engine, what))

    def second(x: Tensor, what: str) -> tuple[Tensor, Tensor]:
        return tuple(t.cpu().double() for t in second_derivatives(pm, x.to(device, dtype), what))

    x_check = data.test.x[: min(len(data.test), 128)].to(device)
    info = {"family": model.family, "params": model.param_count(), "flops": model.flops_per_sample(),
            "model_config": results.model_config_id(cell.model, eq.n_in, eq.n_out, kw)}  # fmt: skip
    checks = [{"metric": "denorm_check", "value": denorm_check(pm, x_check), "error": ""}]
    return Trained(info, pred, second, checks, res, trials)


def train_peer(cell: Cell, config: Config, eq, data) -> Trained:
    """Hand a peer the physical training split, take its own values and Jacobians back (bench.peers).

    Its API Jacobian is checked against central differences of its values (``jac_fd_check``); a peer without a
    Hessian API gets central differences of its API Jacobians as its Hessians (float64, bench.fidelity.finite_diff).
    """
    peer = peers.get(cell.model)
    kw = model_overrides(cell.model, config.grid, eq.n_in, eq.n_out)
    tr = data.train
    J_train = tr.J.numpy() if eq.has_jacobian and cell.beta < 1 else None
    fitted = peer.fit(tr.x.numpy(), tr.y.numpy(), J_train, cell.beta, cell.seed, **kw)
    width = torch.tensor(eq.upper, dtype=torch.float64) - torch.tensor(eq.lower, dtype=torch.float64)

    def pred(x: Tensor, what: str) -> tuple[Tensor, Tensor]:
        y, J = (torch.from_numpy(np.ascontiguousarray(a)) for a in fitted.predict(x.numpy()))
        check_finite({"values": y, "Jacobians": J}, x, what)
        return y, J

    def second(x: Tensor, what: str) -> tuple[Tensor, Tensor]:
        H = fd.central_hessian(lambda z: fitted.predict(z)[1], x.numpy(), fd.HESS_STEP * width.numpy())
        return with_laplacian(torch.from_numpy(H), x, what)

    x_check = data.test.x[: min(len(data.test), 128)].numpy()
    fd_tol = getattr(peer, "fd_check_tol", fd.FD_CHECK_TOL)  # a peer with noisier values says so (bench.peers.smt)
    fd_err, tol, step = fd.fd_check_steps(fitted.predict_values, fitted.predict(x_check)[1], x_check, width.numpy(),
                                          fd_tol)  # fmt: skip
    disagrees = not fd_err <= tol
    if disagrees and getattr(peer, "fd_check_fails_cell", True):
        raise RuntimeError(
            f"peer {cell.model!r}: its API Jacobian differs from central differences of its own values by {fd_err:.3g} "
            f"(relative; tolerance {tol:.3g}): its derivatives cannot be trusted as it reports them"
        )
    note = f"central differences, h = {step:g} of each input's range (best of {fd.CHECK_STEPS}), float64, " \
           f"tolerance {tol:.3g}"  # fmt: skip
    if disagrees:  # a peer whose values are numerically noisy: scored against the truth, the disagreement on record
        note = f"{FD_DISAGREES}: {note}"
    hess_note = f"Hessians: central differences of its API Jacobians, h = {fd.HESS_STEP:g} of each input's range"
    checks = [{"metric": "jac_fd_check", "value": fd_err, "error": f"{note}; {hess_note}"}]
    # a peer whose size depends on its training data (kriging keeps its training points) says so on its fit
    params = getattr(fitted, "params", None) or peer.param_count(eq.n_in, eq.n_out, **kw)
    info = {"family": peer.family, "params": params,
            "flops": getattr(fitted, "flops", None) or peer.flops_per_sample(eq.n_in, eq.n_out, **kw),
            "model_config": results.model_config_id(cell.model, eq.n_in, eq.n_out, kw)}  # fmt: skip
    res = SimpleNamespace(seconds=fitted.seconds, steps=fitted.steps, lr=math.nan, history=fitted.history)
    return Trained(info, pred, second, checks, res)


def run_cell(cell: Cell, config: Config, run_id: str) -> CellResult:
    """Train and measure one cell; raises on failure (the runner records the error and goes on)."""
    g, run = config.grid, config.run
    if run.threads:
        torch.set_num_threads(run.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fidelity numbers in true float32/float64
    torch.backends.cudnn.allow_tf32 = False

    eq = equations.get(cell.equation)
    n_val, n_total = g.split_sizes(cell.n_train)
    ds = cached_dataset(cell.equation, n_total, g.sampler, cell.seed)
    data = split(ds, n_val / n_total, g.n_test / n_total, cell.seed)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    trained = (train_peer if peers.is_peer(cell.model) else train_zoo)(cell, config, eq, data)
    cost = {results.FIT_WALL: time.perf_counter() - wall0, results.FIT_CPU: time.process_time() - cpu0}
    base = {**results.cell_row(cell, run_id), **trained.info, "status": "ok", "n_in": eq.n_in, "n_out": eq.n_out}
    no_jac = f"{eq.name} has no derivative columns: Jacobian metrics are unavailable (fit metrics still run)"
    rows, jac = [], None
    for split_name, part in (("train", data.train), ("test", data.test)):
        started = time.perf_counter()
        y_pred, J_pred = trained.predict(part.x, f"{split_name} samples")
        if split_name == "test":  # values and Jacobians of the whole split in one call, as a user would ask
            cost[results.PREDICT_PER_1K] = (time.perf_counter() - started) * 1000 / max(len(part.x), 1)
        if eq.has_jacobian:
            metric_rows = fidelity_rows(part.x, part.y, y_pred, part.J, J_pred, eq.lower, eq.upper,
                                        eq.input_names, eq.output_names)  # fmt: skip
        else:
            metric_rows = value_rows(part.y, y_pred, eq.output_names) + unavailable_jacobian_rows(no_jac)
        rows += [{**base, "split": split_name, **r} for r in metric_rows]
        if split_name != "test" or not eq.has_jacobian:
            continue
        H_pred = H_true = None
        if eq.has_hessian:  # second derivatives on the test split: the exact ones from the set, in float64
            H_true = eq.hessian(part.x)
            H_pred, L_pred = trained.second(part.x, "test samples")
            rows += [{**base, "split": split_name, **r} for r in hessian_rows(
                part.x, H_true, H_pred, L_pred, eq.lower, eq.upper, eq.input_names, eq.output_names,
            )]  # fmt: skip
            H_pred, H_true = H_pred.numpy(), H_true.numpy()
        jac = results.jacobian_frame(part.x.numpy(), J_pred.numpy(), part.J.numpy(), eq.input_names, eq.output_names,
                                     run.jacobian_rows, H_pred, H_true)  # fmt: skip
    res, trials = trained.fit, trained.trials
    rows += [{**base, "split": "test", **c} for c in trained.checks]
    rows.append({**base, "split": "", "metric": "train_seconds", "value": res.seconds, "error": ""})
    rows += [{**base, "split": "", "metric": k, "value": v, "error": results.COST_NOTES[k]} for k, v in cost.items()]
    rows.append({**base, "split": "", "metric": "train_steps", "value": float(res.steps), "error": ""})
    rows.append({**base, "split": "", "metric": "lr", "value": res.lr, "error": ""})  # initial lr (chosen one)
    for t in trials:  # the selection on the validation split: every candidate's best validation loss
        rows.append({**base, "split": "val", "metric": "lr_trial_val_loss", "bin": repr(t.lr), "value": t.val_loss,
                     "error": t.note})  # fmt: skip
    if trials:
        rows.append({**base, "split": "", "metric": "tune_seconds", "value": sum(t.seconds for t in trials),
                     "error": ""})  # fmt: skip
    drop, _ = convergence(res.history)
    note = "too few evaluations to tell" if math.isnan(drop) else ""
    rows.append({**base, "split": "", "metric": "loss_drop_last10", "value": drop, "error": note})
    improving = float("nan") if math.isnan(drop) else float(drop > CONVERGENCE_DROP)
    rows.append({**base, "split": "", "metric": "still_improving", "value": improving, "error": note})
    history = pd.DataFrame(res.history).reindex(columns=list(results.HISTORY_COLUMNS))
    return CellResult(rows, jac, history)
