"""Training a surrogate in normalized units, on values alone or on values and Jacobians (Sobolev).

``fit(model, train, val, cfg, seed)`` runs Adam/AdamW with a learning-rate schedule (full batch or
seeded mini-batches), optionally polishes with L-BFGS, stops early on the validation loss and restores
the best weights. The loss is

    beta * mean((y_model - y)²) + (1 - beta) * mean((J_model - J)²) + hess_weight * mean((H_model - H)²)

over samples and outputs (and inputs for J and H), all in normalized units: J and H are the exact derivatives
of the equation set mapped by the scaler (``Scaler.jacobian_to_normalized`` / ``hessian_to_normalized``); the
model's Hessian comes from ``bench.engines.hessian`` with ``create_graph=True`` (``forward_hessian`` on the zoo).
The model's Jacobian comes from the batched engines with ``create_graph=True`` so the optimizer
differentiates through it; beta == 1 never computes it (nor hess_weight == 0 the Hessian). efficient-KAN
grid updates and regularization are opt-in and used only if the model has ``update_grid(x)`` /
``regularization_loss()``.

``fit_selecting_lr(make_model, train, val, cfg, seed)`` is the tuning protocol: with ``cfg.lr_grid`` it trains one
fresh model (the same initialization) per candidate learning rate under the same budget and keeps the one with the
lowest validation loss (the cell's own objective on its validation split, never the test split).

Determinism: on CPU, the same model initialization, data, config and seed give bitwise-identical weights
(the seed drives a private ``torch.Generator`` for mini-batch order; the global RNG is not touched). The
model's initialization is the caller's (seed it before ``create_model``). A ``max_seconds`` budget makes
the number of steps, and so the result, depend on the machine's speed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from bench import engines
from bench.engines.compiled import in_own_thread
from bench.engines.tangents import tangent_reason, value_and_jacobian
from bench.run.config import OPTIMIZER_NAMES, TrainConfig

# (x_n (B, n_in), y_n (B, n_out), J_n (B, n_out, n_in) or None[, H_n (B, n_out, n_in, n_in) or None])
Data = tuple

# TrainConfig (bench.run.config, torch-free) validates the names; here they become torch optimizers
OPTIMIZERS = dict(zip(OPTIMIZER_NAMES, (torch.optim.Adam, torch.optim.AdamW), strict=True))


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the runner records the cell as failed and goes on."""


from bench.run.results import CONVERGENCE_WINDOW  # noqa: E402  (the metric's definition)


def convergence(history: list[dict], window: float = CONVERGENCE_WINDOW) -> tuple[float, str]:
    """(relative drop of the best loss over the last ``window`` of the steps, which loss) from a fit's history.

    drop = (best before the window - best overall) / best before the window; NaN with fewer than two evaluations
    or none before the window. Validation loss where the history has it, else training loss.
    """
    key = "val_loss" if history and all("val_loss" in h for h in history) else "loss"
    if len(history) < 2:
        return math.nan, key
    last = history[-1]["step"]
    start = last * (1 - window)
    before = [h[key] for h in history if h["step"] <= start]
    if not before:
        return math.nan, key
    best_before, best = min(before), min(h[key] for h in history)
    return (best_before - best) / best_before if best_before > 0 else 0.0, key


@dataclass
class FitResult:
    """What ``fit`` did. The trained weights are in the model itself."""

    steps: int  # first-order optimizer steps taken
    seconds: float  # wall time of the whole fit, polish included
    best_val_loss: float  # lowest validation loss seen (NaN without validation data)
    best_step: int  # step of the best validation loss (-1 without validation data)
    stopped_early: bool  # patience ran out before the budget
    lbfgs_steps: int = 0  # L-BFGS iterations run
    lr: float = math.nan  # the initial learning rate it trained with (the chosen one under lr_grid)
    history: list[dict] = field(default_factory=list)  # {step, seconds, lr, loss, val_loss} every eval_every
    notes: list[str] = field(default_factory=list)  # opt-in features skipped, polish rejected, ...


def _engine_jacobian(model: nn.Module, x: Tensor, cfg: TrainConfig, create_graph: bool) -> Tensor:
    """x (B, n_in) -> J (B, n_out, n_in) from the batched engines (one call, never a per-sample loop)."""
    return engines.jacobian(model, x, cfg.jac_engine, cfg.jac_chunk_size, create_graph=create_graph)


def _hessian_term(model: nn.Module, x: Tensor, H: Tensor, cfg: TrainConfig, create_graph: bool) -> Tensor:
    H_model = engines.hessian(model, x, cfg.hess_engine, cfg.jac_chunk_size, create_graph=create_graph)
    return cfg.hess_weight * torch.mean((H_model - H) ** 2)


def _one_pass(model: nn.Module, cfg: TrainConfig) -> bool:
    """The Jacobian engine is the hand-written forward mode (what "auto" picks with a graph where every module
    has a tangent rule), unchunked: its pass yields the values too, and the separate forward is saved
    (efficient-KAN Sobolev step at 1000 points: see the README, "Compiled training steps")."""
    return (
        cfg.jac_engine in ("auto", "forward_tangents") and cfg.jac_chunk_size is None and tangent_reason(model) is None
    )


def sobolev_loss(
    model: nn.Module, x: Tensor, y: Tensor, J: Tensor | None, cfg: TrainConfig, H: Tensor | None = None
) -> Tensor:
    """beta * value MSE + (1 - beta) * Jacobian MSE + hess_weight * Hessian MSE (+ the opt-in regularization)."""
    loss = x.new_zeros(())
    if 0 < cfg.beta < 1 and _one_pass(model, cfg):  # values and Jacobians from one tangent pass
        y_model, J_model = value_and_jacobian(model, x, True)
        loss = cfg.beta * torch.mean((y_model - y) ** 2) + (1 - cfg.beta) * torch.mean((J_model - J) ** 2)
    else:
        if cfg.beta > 0:
            loss = loss + cfg.beta * torch.mean((model(x) - y) ** 2)
        if cfg.beta < 1:  # beta == 1: the Jacobian is never computed
            loss = loss + (1 - cfg.beta) * torch.mean((_engine_jacobian(model, x, cfg, True) - J) ** 2)
    if cfg.hess_weight > 0:
        loss = loss + _hessian_term(model, x, H, cfg, True)
    if cfg.reg_weight > 0 and hasattr(model, "regularization_loss"):
        loss = loss + cfg.reg_weight * model.regularization_loss()
    return loss


# compile_step = "auto" compiles the step of these families: measured faster than eager on the 2-core CPU
# (README, "Compiled training steps"); the MLPs' step is a few large GEMMs that compilation does not speed up.
COMPILE_FAMILIES = frozenset({"fastkan", "efficient_kan", "chebykan"})
# Break-even of compile_step = auto: a compilation costs 4-15 s (a cold inductor cache more) and saves 4-19 ms
# per Sobolev step at 1000 rows (1-thread CPU; README, "Compiled training steps"): ~1e6 row-steps repay it.
COMPILE_MIN_WORK = 1_000_000
COMPILE_MIN_SECONDS = 60.0
_COMPILED_LOSS: list = []  # [torch.compile(sobolev_loss)], built on first use (one per process: dynamo caches it)
# one compiled graph per (architecture, beta, ...): a grid worker meets several, more than dynamo's default 8
RECOMPILE_LIMIT = 64


def _compiled_loss() -> Callable:
    if not _COMPILED_LOSS:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT)
        _COMPILED_LOSS.append(torch.compile(sobolev_loss))
    return _COMPILED_LOSS[0]


def compile_reason(model: nn.Module, cfg: TrainConfig, rows: int | None = None) -> str | None:
    """None if this model's training step is compiled under ``cfg`` on ``rows`` training points, else why it runs
    eagerly. "auto" compiles a KAN family's step when the budget repays the compilation: steps x rows at least
    COMPILE_MIN_WORK (or a max_seconds budget of at least COMPILE_MIN_SECONDS). Deterministic: the choice depends
    on the config alone, never on a timing, so a cell's result does not depend on the machine's speed."""
    if cfg.compile_step == "off":
        return "compile_step = off"
    family = getattr(model, "family", None)
    if cfg.compile_step == "auto":
        if family not in COMPILE_FAMILIES:
            return f"compile_step = auto compiles {', '.join(sorted(COMPILE_FAMILIES))} only (family {family})"
        if cfg.batch_size is not None and rows is not None and cfg.batch_size < rows:
            return "compile_step = auto compiles full-batch training only (a last mini-batch compiles again)"
        work = math.inf if cfg.steps is None else cfg.steps * (rows or 0)
        if (cfg.steps is None and (cfg.max_seconds or 0) < COMPILE_MIN_SECONDS) or work < COMPILE_MIN_WORK:
            return (f"compile_step = auto: a budget of {cfg.steps} steps x {rows} rows does not repay the "
                    f"compilation (it pays from {COMPILE_MIN_WORK:.0e} row-steps)")  # fmt: skip
    if cfg.hess_weight > 0:
        return "the Hessian term is not compiled"
    if cfg.beta < 1 and cfg.jac_engine != "auto" and engines.ENGINES.get(cfg.jac_engine, None) is not None:
        if engines.ENGINES[cfg.jac_engine].batch_sum:  # its coupling check runs data-dependent Python
            return f"jac_engine {cfg.jac_engine} is a batch-sum engine"
    return None


class _Loss:
    """The training loss of one fit: compiled where `compile_reason` allows, eager otherwise or once compiling
    failed (the reason goes into the fit's notes). Results equal eager's to float rounding (tested)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, notes: list[str], rows: int):
        self.cfg, self.notes = cfg, notes
        reason = compile_reason(model, cfg, rows)
        self.compiled = _compiled_loss() if reason is None else None
        self.seen: set[tuple] = set()  # input shapes compiled already

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, J: Tensor | None, H: Tensor | None) -> Tensor:
        if self.compiled is None:
            return sobolev_loss(model, x, y, J, self.cfg, H)
        shape = (tuple(x.shape), None if J is None else tuple(J.shape), torch.is_grad_enabled())
        if shape in self.seen:
            return self.compiled(model, x, y, J, self.cfg, H)
        # a new shape may compile again (a last mini-batch, L-BFGS's full batch): guarded like the first call
        self.seen.add(shape)
        loss, reason = _first_compiled_call(self.compiled, model, x, y, J, self.cfg, H)
        if loss is not None:
            return loss
        self.notes.append(f"compiled training step failed ({reason}): trained eagerly")
        self.compiled = None
        return sobolev_loss(model, x, y, J, self.cfg, H)


def _first_compiled_call(compiled: Callable, *args) -> tuple[Tensor | None, str | None]:
    """(loss, None) or (None, why compiling failed), compiling in a thread of its own: the garbage of a failed
    dynamo trace must be collected there, not in the training thread (bench.engines.compiled.in_own_thread)."""

    def reason(err: BaseException) -> str:
        first = (str(err).strip().splitlines() or [""])[0]
        return f"{type(err).__name__}: {first[:200]}"

    return in_own_thread(lambda: compiled(*args), reason)


def _val_loss(model: nn.Module, val: Data, cfg: TrainConfig) -> float:
    """The training objective on the validation split, without the regularization term."""
    x, y, J, H = _four(val)
    model.eval()
    with torch.no_grad():
        loss = cfg.beta * torch.mean((model(x) - y) ** 2) if cfg.beta > 0 else x.new_zeros(())
    if cfg.beta < 1 and J is not None:  # outside no_grad: some engines need autograd
        loss = loss + (1 - cfg.beta) * torch.mean((_engine_jacobian(model, x, cfg, False).detach() - J) ** 2)
    if cfg.hess_weight > 0 and H is not None:
        loss = loss + _hessian_term(model, x, H, cfg, False).detach()
    model.train()
    return float(loss)


def _lr(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at progress in [0, 1] through the budget."""
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        lo = cfg.lr * cfg.final_lr_ratio
        return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * p))
    if cfg.schedule == "exponential":
        return cfg.lr * cfg.final_lr_ratio**p
    return cfg.lr


def _batches(n: int, batch_size: int | None, gen: torch.Generator):
    """Endless index batches: everything (full batch) or shuffled epochs of mini-batches."""
    while True:
        if batch_size is None or batch_size >= n:
            yield None
            continue
        yield from torch.randperm(n, generator=gen).split(batch_size)


def _check_finite(value: float, where: str, step: int, cfg: TrainConfig) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"{where} loss is {value} at step {step} (lr {cfg.lr:g}, beta {cfg.beta:g}); "
            "lower the learning rate or check the data for NaN/inf"
        )


def _four(data: Data) -> tuple:
    """(x, y, J, H) of a 3- or 4-tuple (H None when absent)."""
    return (*data, None) if len(data) == 3 else tuple(data)


def _prepare(data: Data | None, cfg: TrainConfig, like: Tensor, what: str) -> Data | None:
    """Move data to the model's device and dtype, checking shapes and that J (and H) are there when needed."""
    if data is None:
        return None
    x, y, J, H = _four(data)
    if H is None and cfg.hess_weight > 0 and what == "train":
        raise ValueError(f"hess_weight = {cfg.hess_weight} > 0 trains on Hessians: the training data needs H_n")
    if H is not None and tuple(H.shape) != (len(x), y.shape[1], x.shape[1], x.shape[1]):
        raise ValueError(f"{what}: H {tuple(H.shape)} must be (B, n_out, n_in, n_in)")
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"{what}: x {tuple(x.shape)} and y {tuple(y.shape)} must be (B, n_in) and (B, n_out)")
    if J is None and cfg.beta < 1 and what == "train":
        raise ValueError(f"beta = {cfg.beta} < 1 trains on Jacobians: the training data needs J_n")
    if J is not None and tuple(J.shape) != (len(x), y.shape[1], x.shape[1]):
        raise ValueError(f"{what}: J {tuple(J.shape)} must be (B, n_out, n_in) = {(len(x), y.shape[1], x.shape[1])}")
    kw = {"device": like.device, "dtype": like.dtype}
    return x.to(**kw), y.to(**kw), None if J is None else J.to(**kw), None if H is None else H.to(**kw)


def _polish(model: nn.Module, train: Data, cfg: TrainConfig, loss_fn: Callable | None = None) -> None:
    """Full-batch L-BFGS with a strong-Wolfe line search, cfg.lbfgs_steps iterations at most."""
    opt = torch.optim.LBFGS(
        [p for p in model.parameters() if p.requires_grad],
        lr=1.0,
        max_iter=cfg.lbfgs_steps,
        history_size=50,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    loss_fn = loss_fn or (lambda m, x, y, J, H: sobolev_loss(m, x, y, J, cfg, H))

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn(model, *train[:3], train[3])
        loss.backward()
        return loss

    opt.step(closure)


def fit(model: nn.Module, train: Data, val: Data | None, cfg: TrainConfig, seed: int = 0) -> FitResult:
    """Train ``model`` in place on normalized (x_n, y_n, J_n) tensors; J_n may be None when beta == 1.

    Raises:
        TrainingDiverged: the training or validation loss became NaN/inf.
    """
    start = time.perf_counter()
    like = next(model.parameters())
    train = _prepare(train, cfg, like, "train")
    val = _prepare(val, cfg, like, "val")
    x, y, J, H = train
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    batches = _batches(len(x), cfg.batch_size, gen)
    res = FitResult(steps=0, seconds=0.0, best_val_loss=math.nan, best_step=-1, stopped_early=False, lr=cfg.lr)
    do_grid = cfg.grid_update_every > 0 and hasattr(model, "update_grid")
    if cfg.grid_update_every > 0 and not do_grid:
        res.notes.append("grid_update_every ignored: the model has no update_grid(x)")
    if cfg.reg_weight > 0 and not hasattr(model, "regularization_loss"):
        res.notes.append("reg_weight ignored: the model has no regularization_loss()")
    best_state, best = None, math.inf
    model.train()
    loss_fn = _Loss(model, cfg, res.notes, len(x))
    step = 0
    while cfg.steps is None or step < cfg.steps:
        elapsed = time.perf_counter() - start
        if cfg.max_seconds is not None and elapsed >= cfg.max_seconds:
            break
        progress = step / cfg.steps if cfg.steps else elapsed / cfg.max_seconds
        lr = _lr(cfg, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        if do_grid and step > 0 and step % cfg.grid_update_every == 0:
            with torch.no_grad():
                model.update_grid(x)
        idx = next(batches)
        batch = train if idx is None else (x[idx], y[idx], *(None if t is None else t[idx] for t in (J, H)))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, *batch[:3], batch[3])
        loss_value = float(loss.detach())  # one host sync per step; also catches NaN at once
        _check_finite(loss_value, "training", step, cfg)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            entry = {"step": step, "seconds": time.perf_counter() - start, "lr": lr, "loss": loss_value}
            res.history.append(entry)
            if val is None:
                continue
            entry["val_loss"] = v = _val_loss(model, val, cfg)
            _check_finite(v, "validation", step, cfg)
            if v < best:
                best, res.best_step = v, step
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            elif cfg.patience and step - res.best_step >= cfg.patience:
                res.stopped_early = True
                break
    res.steps = step
    if val is not None and best_state is None:  # budget ended before the first evaluation
        best, res.best_step = _val_loss(model, val, cfg), step
        best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
    if best_state is not None and cfg.restore_best:
        model.load_state_dict(best_state)
    if cfg.lbfgs_steps > 0:
        best = _polish_and_keep_better(model, train, val, cfg, best, res, loss_fn)
    res.best_val_loss = best if val is not None else math.nan
    res.seconds = time.perf_counter() - start
    model.eval()
    return res


def _polish_and_keep_better(
    model: nn.Module,
    train: Data,
    val: Data | None,
    cfg: TrainConfig,
    best: float,
    res: FitResult,
    loss_fn: Callable | None = None,
) -> float:
    """Run the L-BFGS polish; undo it if it diverges or (with validation data) does not help."""
    before = {k: t.detach().clone() for k, t in model.state_dict().items()}
    _polish(model, train, cfg, loss_fn)
    res.lbfgs_steps = cfg.lbfgs_steps
    with torch.no_grad():
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    after = _val_loss(model, val, cfg) if finite and val is not None else math.nan
    if not finite or (val is not None and not math.isfinite(after)):
        model.load_state_dict(before)
        res.notes.append("L-BFGS polish diverged (NaN/inf): kept the weights from before it")
        return best
    if val is None:
        return best
    if after >= best:
        model.load_state_dict(before)
        res.notes.append(f"L-BFGS polish did not lower the validation loss ({after:.3g} >= {best:.3g}): undone")
        return best
    return after


@dataclass(frozen=True)
class Trial:
    """One candidate of a learning-rate selection."""

    lr: float
    val_loss: float  # best validation loss of the candidate (NaN when it diverged)
    seconds: float  # its training wall time
    note: str = ""  # why it was not scored (divergence), else empty


def fit_selecting_lr(
    make_model: Callable[[], nn.Module], train: Data, val: Data | None, cfg: TrainConfig, seed: int = 0
) -> tuple[nn.Module, FitResult, list[Trial]]:
    """Train ``make_model()`` once per learning rate of ``cfg.lr_grid`` and keep the lowest validation loss.

    Every candidate starts from a fresh ``make_model()`` (the caller seeds it, so all share one initialization),
    the same data, budget, schedule and mini-batch order; only the initial learning rate differs. Ties go to the
    earlier candidate. A candidate that diverges is recorded in its Trial and skipped; if all diverge the last
    error is raised. Without ``lr_grid`` this is ``fit`` with ``cfg.lr`` and no trials.
    """
    if not cfg.lr_grid:
        model = make_model()
        return model, fit(model, train, val, cfg, seed), []
    if val is None:
        raise ValueError("train.lr_grid chooses the learning rate on the validation split: give validation data")
    cfgs = [dataclasses.replace(cfg, lr=lr, lr_grid=()) for lr in cfg.lr_grid]
    stacked = _fit_candidates_stacked(make_model, train, val, cfgs, seed) if cfg.stack_candidates else None
    if stacked is not None:
        return stacked
    best: tuple[nn.Module, FitResult] | None = None
    trials: list[Trial] = []
    last_error: TrainingDiverged | None = None
    for lr in cfg.lr_grid:
        model = make_model()
        started = time.perf_counter()
        try:
            res = fit(model, train, val, dataclasses.replace(cfg, lr=lr, lr_grid=()), seed)
        except TrainingDiverged as err:
            trials.append(Trial(lr, math.nan, time.perf_counter() - started, f"diverged: {err}"))
            last_error = err
            continue
        trials.append(Trial(lr, res.best_val_loss, res.seconds))
        if best is None or res.best_val_loss < best[1].best_val_loss:
            best = (model, res)
    if best is None:
        raise TrainingDiverged(f"every learning rate of train.lr_grid {list(cfg.lr_grid)} diverged") from last_error
    return best[0], best[1], trials


def _fit_candidates_stacked(
    make_model: Callable[[], nn.Module], train: Data, val: Data, cfgs: list[TrainConfig], seed: int
) -> tuple[nn.Module, FitResult, list[Trial]] | None:
    """The candidates of ``fit_selecting_lr`` as one stacked launch; None where stacking does not apply (the caller
    trains them one at a time) or a candidate diverged (the caller retrains them one at a time, so each candidate's
    divergence is recorded on its own). Each Trial's seconds is its share of the launch's wall time."""
    from bench.fidelity import stacked  # stacked builds on this module: imported here, not at the top

    members = [make_model() for _ in cfgs]
    if stacked.stack_reason(members, [train] * len(cfgs), cfgs) is not None:
        return None
    try:
        results = stacked.fit_stacked(members, [train] * len(cfgs), [val] * len(cfgs), cfgs, [seed] * len(cfgs))
    except TrainingDiverged:
        return None
    share = max(r.seconds for r in results) / len(results)
    note = f"trained stacked with {len(results)} candidates (bench.fidelity.stacked)"
    trials = [Trial(c.lr, r.best_val_loss, share, note) for c, r in zip(cfgs, results, strict=True)]
    best = min(range(len(results)), key=lambda i: (results[i].best_val_loss, i))
    results[best].seconds = share
    results[best].notes.append(note)
    return members[best], results[best], trials
