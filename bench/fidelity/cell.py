"""One grid cell: sample, split, scale, train one model, and measure its fit and Jacobians in physical units.

    make_dataset(eq, n_train + n_val + n_test, seed) -> split -> Scaler.fit(train) -> create_model(seed)
      -> fit(normalized train/val, TrainConfig(beta)) -> PhysicalModel(model, scaler)
      -> y and J on train and test (bench.engines.jacobian) -> bench.fidelity.metrics.fidelity_rows -> rows
      -> H and the Laplacian on test (bench.engines.hessian / laplacian) -> bench.fidelity.hessian_metrics -> rows

Every metric sees the raw-in/raw-out wrapper only, so de-normalization happens in exactly one place
(``equations.scaling``) and is checked on every cell (``denorm_check``).
"""

from __future__ import annotations

import functools

import pandas as pd
import torch
from torch import Tensor, nn

from bench.run import results
from bench.run.config import Cell, Config, GridConfig
from bench.run.results import CellResult


class NonFiniteModel(RuntimeError):
    """The model returned NaN/inf values or Jacobians: the cell stops and is recorded as failed."""


@functools.lru_cache(maxsize=32)
def cached_dataset(equation: str, n: int, sampler: str, seed: int):
    """make_dataset, memoized per worker process: the cells of a grid share few datasets (one per equation,
    size and seed), and an optimized LHS of ~1000 points takes seconds. Datasets are never modified."""
    import equations
    from equations.data import make_dataset

    return make_dataset(equations.get(equation), n, sampler, seed)


def make_scaler(train, scaling: str, input_range: tuple[float, float]):
    """Fit the scaler on the training split only (see GridConfig.scaling for the methods)."""
    from equations.scaling import Scaler

    names = {"input_names": train.input_names, "output_names": train.output_names}
    if scaling == "model":
        return Scaler.fit(train.x, train.y, "minmax", x_range=tuple(input_range), y_range=(-1.0, 1.0), **names)
    if scaling == "forum":
        return Scaler.fit(train.x, train.y, "minmax", x_range=(0.0, 1.0), y_range=(0.0, 1.0), **names)
    return Scaler.fit(train.x, train.y, scaling, **names)


def model_overrides(model: str, grid: GridConfig, n_in: int, n_out: int) -> dict:
    """Factory keyword arguments for one model: the config's overrides, sized to match_params if set."""
    import models

    kw = dict(grid.model_overrides.get(model, {}))
    if grid.match_params:
        kw = models.match_params(model, grid.match_params, n_in, n_out, **kw)
    return kw


def trained_configurations(config: Config) -> list[tuple[str, int, int, dict]]:
    """Every distinct model configuration a grid trains: (model, n_in, n_out, factory overrides).

    The same overrides ``run_cell`` builds its model with (``model_overrides``), so a throughput sweep of these
    measures exactly the networks whose fidelity the run reports (``results.model_config_id`` joins them).
    """
    import equations

    out: dict[str, tuple[str, int, int, dict]] = {}
    for eq_name in config.grid.equations:
        eq = equations.get(eq_name)
        for model in config.grid.models:
            kw = model_overrides(model, config.grid, eq.n_in, eq.n_out)
            out.setdefault(results.model_config_id(model, eq.n_in, eq.n_out, kw), (model, eq.n_in, eq.n_out, kw))
    return list(out.values())


def jacobian(model: nn.Module, x: Tensor, engine: str = "auto") -> Tensor:
    """x (B, n_in) -> J (B, n_out, n_in) through bench.engines."""
    from bench.engines import jacobian as engine_jacobian

    return engine_jacobian(model, x, engine=engine)


def predict(model: nn.Module, x: Tensor, engine: str = "auto", what: str = "samples") -> tuple[Tensor, Tensor]:
    """Values (B, n_out) and Jacobians (B, n_out, n_in) of ``model`` at x; NonFiniteModel on NaN/inf."""
    with torch.no_grad():
        y = model(x)
    J = jacobian(model, x, engine).detach()
    for name, t in (("values", y), ("Jacobians", J)):
        bad = ~torch.isfinite(t.reshape(len(t), -1)).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise NonFiniteModel(
                f"the model returned NaN/inf {name} for {int(bad.sum())} of {len(t)} {what} "
                f"(first at row {row}, x = {x[row].tolist()})"
            )
    return y, J


def second_derivatives(model: nn.Module, x: Tensor, what: str = "samples") -> tuple[Tensor, Tensor]:
    """Hessians (B, n_out, n_in, n_in) and Laplacians (B, n_out) of ``model`` at x; NonFiniteModel on NaN/inf.

    The Laplacian is the trace of the Hessian just computed (a second pass of the Laplacian engine would give
    the same numbers up to rounding; tests/test_hessian_engines.py checks that it does).
    """
    from bench.engines import hessian

    H = hessian(model, x).detach()
    L = torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)
    bad = ~torch.isfinite(H.reshape(len(H), -1)).all(dim=1)
    if bool(bad.any()):
        raise NonFiniteModel(f"the model returned NaN/inf Hessians for {int(bad.sum())} of {len(H)} {what}")
    return H, L


def run_cell(cell: Cell, config: Config, run_id: str) -> CellResult:
    """Train and measure one cell; raises on failure (the runner records the error and goes on)."""
    import equations
    import models
    from bench.fidelity.hessian_metrics import hessian_rows
    from bench.fidelity.metrics import denorm_check, fidelity_rows
    from bench.fidelity.train import TrainConfig, convergence, fit_selecting_lr
    from bench.run.results import CONVERGENCE_DROP
    from equations.data import split
    from equations.scaling import PhysicalModel

    g, run = config.grid, config.run
    if run.threads:
        torch.set_num_threads(run.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fidelity numbers in true float32/float64
    torch.backends.cudnn.allow_tf32 = False
    device, dtype = torch.device(run.device), getattr(torch, run.dtype)

    eq = equations.get(cell.equation)
    n_val = round(g.val_fraction * cell.n_train)
    n_total = cell.n_train + n_val + g.n_test
    ds = cached_dataset(cell.equation, n_total, g.sampler, cell.seed)
    data = split(ds, n_val / n_total, g.n_test / n_total, cell.seed)

    kw = model_overrides(cell.model, g, eq.n_in, eq.n_out)

    def make_model() -> nn.Module:  # the same initialization for every learning-rate candidate
        return models.create_model(cell.model, eq.n_in, eq.n_out, seed=cell.seed, **kw).to(device, dtype)

    scaler = make_scaler(data.train, g.scaling, make_model().input_range)
    train_cfg = TrainConfig(**config.train, beta=cell.beta, hess_weight=cell.hess_weight)

    def normalized(part):  # (x_n, y_n, J_n[, H_n]): exact training Hessians from the set only when a term uses them
        if cell.hess_weight == 0:
            return scaler.transform_dataset(part)
        return (*scaler.transform_dataset(part), scaler.hessian_to_normalized(eq.hessian(part.x)))

    val = normalized(data.val) if len(data.val) else None
    model, res, trials = fit_selecting_lr(make_model, normalized(data.train), val, train_cfg, cell.seed)

    pm = PhysicalModel(model, scaler).eval()
    base = {**results.cell_row(cell, run_id), "family": model.family, "params": model.param_count(),
            "flops": model.flops_per_sample(), "status": "ok", "n_in": eq.n_in, "n_out": eq.n_out,
            "model_config": results.model_config_id(cell.model, eq.n_in, eq.n_out, kw)}  # fmt: skip
    rows = []
    for split_name, ds in (("train", data.train), ("test", data.test)):
        y_pred, J_pred = predict(pm, ds.x.to(device, dtype), run.engine, f"{split_name} samples")
        metric_rows = fidelity_rows(
            ds.x, ds.y, y_pred, ds.J, J_pred, eq.lower, eq.upper, eq.input_names, eq.output_names
        )
        rows += [{**base, "split": split_name, **r} for r in metric_rows]
        if split_name == "test":  # second derivatives on the test split: the exact ones from the set, in float64
            H_true = eq.hessian(ds.x)
            H_pred, L_pred = second_derivatives(pm, ds.x.to(device, dtype), "test samples")
            H_pred = H_pred.cpu().double()
            rows += [{**base, "split": split_name, **r} for r in hessian_rows(
                ds.x, H_true, H_pred, L_pred.cpu().double(), eq.lower, eq.upper, eq.input_names, eq.output_names,
            )]  # fmt: skip
            jac = results.jacobian_frame(
                ds.x.numpy(), J_pred.cpu().double().numpy(), ds.J.numpy(), eq.input_names, eq.output_names,
                run.jacobian_rows, H_pred.numpy(), H_true.numpy(),
            )  # fmt: skip
    x_check = data.test.x[: min(len(data.test), 128)].to(device)
    rows.append({**base, "split": "test", "metric": "denorm_check", "value": denorm_check(pm, x_check), "error": ""})
    rows.append({**base, "split": "", "metric": "train_seconds", "value": res.seconds, "error": ""})
    rows.append({**base, "split": "", "metric": "train_steps", "value": float(res.steps), "error": ""})
    rows.append({**base, "split": "", "metric": "lr", "value": res.lr, "error": ""})  # initial lr (chosen one)
    for t in trials:  # the selection on the validation split: every candidate's best validation loss
        rows.append({**base, "split": "val", "metric": "lr_trial_val_loss", "bin": repr(t.lr), "value": t.val_loss,
                     "error": t.note})  # fmt: skip
    if trials:
        rows.append({**base, "split": "", "metric": "tune_seconds", "value": sum(t.seconds for t in trials),
                     "error": ""})  # fmt: skip
    drop, _ = convergence(res.history)
    note = "" if drop == drop else "too few evaluations to tell"
    rows.append({**base, "split": "", "metric": "loss_drop_last10", "value": drop, "error": note})
    improving = float("nan") if drop != drop else float(drop > CONVERGENCE_DROP)
    rows.append({**base, "split": "", "metric": "still_improving", "value": improving, "error": note})
    history = pd.DataFrame(res.history).reindex(columns=list(results.HISTORY_COLUMNS))
    return CellResult(rows, jac, history)
