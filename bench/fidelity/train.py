"""Training a surrogate in normalized units, on values alone or on values and Jacobians (Sobolev).

``fit(model, train, val, cfg, seed)`` runs Adam/AdamW with a learning-rate schedule (full batch or
seeded mini-batches), optionally polishes with L-BFGS, stops early on the validation loss and restores
the best weights. Its loop, ``train_members``, is the one ``bench.fidelity.stacked`` runs over many models
at once; ``fit`` is that loop with one member. The data are a ``TrainData`` (x, y and, where a loss needs them,
J and H). The loss is

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
from typing import Protocol

import torch
from torch import Tensor, nn

from bench import engines
from bench.engines.compiled import in_own_thread
from bench.engines.tangents import tangent_reason, value_and_jacobian
from bench.fidelity import stacked  # a module import: stacked builds on this module's loss and schedule
from bench.run.config import OPTIMIZER_NAMES, TrainConfig
from bench.run.results import CONVERGENCE_WINDOW


@dataclass(frozen=True, eq=False)
class TrainData:
    """One split in the model's normalized units: x (B, n_in) and y (B, n_out), with the derivatives a loss may
    train on, J (B, n_out, n_in) and H (B, n_out, n_in, n_in), None where the data have none."""

    x: Tensor
    y: Tensor
    J: Tensor | None = None
    H: Tensor | None = None

    def __post_init__(self):
        x, y, J, H = self.x, self.y, self.J, self.H
        if not all(isinstance(t, Tensor) for t in (x, y)) or x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(f"TrainData: x {_shape(x)} and y {_shape(y)} must be tensors (B, n_in) and (B, n_out)")
        B, n_out, n_in = len(x), y.shape[1], x.shape[1]
        for name, t in (("J", J), ("H", H)):
            if t is not None and not isinstance(t, Tensor):
                raise ValueError(f"TrainData: {name} must be a tensor or None, got {type(t).__name__}")
        if J is not None and tuple(J.shape) != (B, n_out, n_in):
            raise ValueError(f"TrainData: J {tuple(J.shape)} must be (B, n_out, n_in) = {(B, n_out, n_in)}")
        if H is not None and tuple(H.shape) != (B, n_out, n_in, n_in):
            raise ValueError(f"TrainData: H {tuple(H.shape)} must be (B, n_out, n_in, n_in) = {(B, n_out, n_in, n_in)}")

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, idx: Tensor | None) -> TrainData:
        """The rows ``idx`` (all of them for None: the full batch)."""
        if idx is None:
            return self
        return TrainData(self.x[idx], self.y[idx], *(None if t is None else t[idx] for t in (self.J, self.H)))

    def to(self, like: Tensor) -> TrainData:
        """On ``like``'s device and dtype."""
        kw = {"device": like.device, "dtype": like.dtype}
        return TrainData(*(None if t is None else t.to(**kw) for t in (self.x, self.y, self.J, self.H)))

    def shapes(self) -> tuple:
        return tuple(None if t is None else tuple(t.shape) for t in (self.x, self.y, self.J, self.H))


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


# TrainConfig (bench.run.config, torch-free) validates the names; here they become torch optimizers
OPTIMIZERS = dict(zip(OPTIMIZER_NAMES, (torch.optim.Adam, torch.optim.AdamW), strict=True))


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the runner records the cell as failed and goes on."""


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
    (efficient-KAN Sobolev step at 1000 points: results/measurements/README.md, "Training steps: eager and
    compiled")."""
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
# (results/measurements/README.md, "Training steps: eager and compiled"); the MLPs' step is a few large GEMMs that
# compilation does not speed up.
COMPILE_FAMILIES = frozenset({"fastkan", "efficient_kan", "chebykan"})
# Break-even of compile_step = auto: a compilation costs seconds (a cold inductor cache more) and saves milliseconds
# per Sobolev step at 1000 rows (1-thread CPU; measured: the same section): ~1e6 row-steps repay it.
COMPILE_MIN_WORK = 1_000_000
COMPILE_MIN_SECONDS = 60.0
_COMPILED_LOSS: list = []  # [torch.compile(sobolev_loss)], built on first use (one per process: dynamo caches it)
# one compiled graph per (architecture, beta, ...): a grid worker meets several, more than dynamo's default 8
RECOMPILE_LIMIT = 64


def _compiled_loss() -> Callable:
    if not _COMPILED_LOSS:
        import torch._dynamo  # the compiler: loaded only when a step is compiled

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


def _val_loss(model: nn.Module, val: TrainData, cfg: TrainConfig) -> float:
    """The training objective on the validation split, without the regularization term."""
    x, y, J, H = val.x, val.y, val.J, val.H
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


def _prepare(data: TrainData | None, cfg: TrainConfig, like: Tensor, what: str) -> TrainData | None:
    """``data`` on the model's device and dtype, checked for what the loss needs (J, H)."""
    if data is None:
        return None
    if not isinstance(data, TrainData):
        raise TypeError(f"{what}: expected bench.fidelity.train.TrainData(x, y, J, H), got {type(data).__name__}; "
                        "wrap the tensors: TrainData(x, y, J)")  # fmt: skip
    if data.H is None and cfg.hess_weight > 0 and what == "train":
        raise ValueError(f"hess_weight = {cfg.hess_weight} > 0 trains on Hessians: the training data needs H_n")
    if data.J is None and cfg.beta < 1 and what == "train":
        raise ValueError(f"beta = {cfg.beta} < 1 trains on Jacobians: the training data needs J_n")
    return data.to(like)


def _polish(model: nn.Module, train: TrainData, cfg: TrainConfig, loss_fn: Callable | None = None) -> None:
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
        loss = loss_fn(model, train.x, train.y, train.J, train.H)
        loss.backward()
        return loss

    opt.step(closure)


class Members(Protocol):
    """What the training loop steps: M models trained side by side, each with its own config (``fit``: one model
    and a torch optimizer; ``bench.fidelity.stacked``: M models on stacked parameters, one vmapped step)."""

    models: list[nn.Module]
    loss_fn: Callable | None  # the training loss the L-BFGS polish uses (None: sobolev_loss)
    notes: list[list[str]]  # per member: what it skipped or changed, before and during the loop (FitResult.notes)

    def step(self, step: int, lrs: list[float], active: list[bool]) -> list[float]:
        """One optimizer step of the active members at these learning rates; their training losses before it.
        Raises TrainingDiverged on a non-finite loss."""

    def load(self, i: int) -> None:
        """Put member i's current weights into ``models[i]``."""

    def snapshot(self, i: int) -> dict[str, Tensor]:
        """A copy of member i's current weights."""

    def restore(self, i: int, weights: dict[str, Tensor]) -> None:
        """Put a snapshot back into ``models[i]``."""


def train_members(
    members: Members, trains: list[TrainData], vals: list[TrainData | None], cfgs: list[TrainConfig], start: float
) -> list[FitResult]:
    """The training loop, for one model or many: a learning-rate schedule over the budget; every ``eval_every``
    steps the history, the validation loss, the best weights and early stopping, per member; then restore-best and
    the L-BFGS polish per member. The budget (``steps``, ``max_seconds``) and ``eval_every`` are ``cfgs[0]``'s."""
    cfg, M = cfgs[0], len(cfgs)
    results = [FitResult(steps=0, seconds=0.0, best_val_loss=math.nan, best_step=-1, stopped_early=False, lr=c.lr,
                         notes=notes) for c, notes in zip(cfgs, members.notes, strict=True)]  # fmt: skip
    best, snaps, active = [math.inf] * M, [None] * M, [True] * M
    step = 0
    while (cfg.steps is None or step < cfg.steps) and any(active):
        elapsed = time.perf_counter() - start
        if cfg.max_seconds is not None and elapsed >= cfg.max_seconds:
            break
        progress = step / cfg.steps if cfg.steps else elapsed / cfg.max_seconds
        lrs = [_lr(c, progress) for c in cfgs]
        losses = members.step(step, lrs, active)
        step += 1
        if step % cfg.eval_every and step != cfg.steps:
            continue
        for i in (i for i in range(M) if active[i]):
            r = results[i]
            r.steps = step
            entry = {"step": step, "seconds": time.perf_counter() - start, "lr": lrs[i], "loss": losses[i]}
            r.history.append(entry)
            if vals[i] is None:
                continue
            members.load(i)
            entry["val_loss"] = v = _val_loss(members.models[i], vals[i], cfgs[i])
            _check_finite(v, "validation", step, cfgs[i])
            if v < best[i]:
                best[i], r.best_step = v, step
                snaps[i] = members.snapshot(i)
            elif cfgs[i].patience and step - r.best_step >= cfgs[i].patience:
                r.stopped_early, active[i] = True, False
    for i, (model, c, r) in enumerate(zip(members.models, cfgs, results, strict=True)):
        if active[i]:
            r.steps = step
        members.load(i)
        if vals[i] is not None and snaps[i] is None:  # budget ended before the first evaluation
            best[i], r.best_step = _val_loss(model, vals[i], c), r.steps
            snaps[i] = members.snapshot(i)
        if snaps[i] is not None and c.restore_best:
            members.restore(i, snaps[i])
        if c.lbfgs_steps > 0:
            best[i] = _polish_and_keep_better(model, trains[i], vals[i], c, best[i], r, members.loss_fn)
        r.best_val_loss = best[i] if vals[i] is not None else math.nan
        r.seconds = time.perf_counter() - start
        model.eval()
    return results


class _OneModel:
    """``fit``'s member: one model, a torch optimizer, seeded mini-batches, grid updates, a compiled loss."""

    def __init__(self, model: nn.Module, train: TrainData, cfg: TrainConfig, seed: int):
        self.models, self.train, self.cfg = [model], train, cfg
        self.notes: list[list[str]] = [[]]
        notes = self.notes[0]
        self.opt = OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.batches = _batches(len(train), cfg.batch_size, torch.Generator().manual_seed(seed))
        self.do_grid = cfg.grid_update_every > 0 and hasattr(model, "update_grid")
        if cfg.grid_update_every > 0 and not self.do_grid:
            notes.append("grid_update_every ignored: the model has no update_grid(x)")
        if cfg.reg_weight > 0 and not hasattr(model, "regularization_loss"):
            notes.append("reg_weight ignored: the model has no regularization_loss()")
        self.loss_fn = _Loss(model, cfg, notes, len(train))

    def step(self, step: int, lrs: list[float], active: list[bool]) -> list[float]:
        model, cfg = self.models[0], self.cfg
        for group in self.opt.param_groups:
            group["lr"] = lrs[0]
        if self.do_grid and step > 0 and step % cfg.grid_update_every == 0:
            with torch.no_grad():
                model.update_grid(self.train.x)
        batch = self.train.rows(next(self.batches))
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(model, batch.x, batch.y, batch.J, batch.H)
        value = float(loss.detach())  # one host sync per step; also catches NaN at once
        _check_finite(value, "training", step, cfg)
        loss.backward()
        self.opt.step()
        return [value]

    def load(self, i: int) -> None:
        pass  # the optimizer updates the model itself

    def snapshot(self, i: int) -> dict[str, Tensor]:
        return {k: t.detach().clone() for k, t in self.models[0].state_dict().items()}

    def restore(self, i: int, weights: dict[str, Tensor]) -> None:
        self.models[0].load_state_dict(weights)


def fit(model: nn.Module, train: TrainData, val: TrainData | None, cfg: TrainConfig, seed: int = 0) -> FitResult:
    """Train ``model`` in place on normalized data; ``train.J`` may be None when beta == 1.

    Raises:
        TrainingDiverged: the training or validation loss became NaN/inf.
    """
    start = time.perf_counter()
    like = next(model.parameters())
    train = _prepare(train, cfg, like, "train")
    val = _prepare(val, cfg, like, "val")
    model.train()
    return train_members(_OneModel(model, train, cfg, seed), [train], [val], [cfg], start)[0]


def _polish_and_keep_better(
    model: nn.Module,
    train: TrainData,
    val: TrainData | None,
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
    make_model: Callable[[], nn.Module], train: TrainData, val: TrainData | None, cfg: TrainConfig, seed: int = 0
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
    make_model: Callable[[], nn.Module], train: TrainData, val: TrainData, cfgs: list[TrainConfig], seed: int
) -> tuple[nn.Module, FitResult, list[Trial]] | None:
    """The candidates of ``fit_selecting_lr`` as one stacked launch; None where stacking does not apply (the caller
    trains them one at a time) or a candidate diverged (the caller retrains them one at a time, so each candidate's
    divergence is recorded on its own). Each Trial's seconds is its share of the launch's wall time."""
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
