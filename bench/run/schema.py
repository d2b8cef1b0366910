"""The config schema: what a run measures (GridConfig, Cell), how it trains (TrainConfig) and runs (RunConfig),
the value types every key accepts, and the cross-field checks. Torch-free; ``bench.run.config`` layers TOML
profiles, files and overrides into these, ``bench.run.names`` expands model and equation patterns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equations.names import suggest

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
SCALINGS = ("model", "forum", "standard")  # see GridConfig.scaling
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
EXECUTORS = ("local", "ray")  # bench.run.runner: this machine's process pool, or one Ray task per cell
MIN_TUNING_POINTS = 2  # validation points train.lr_grid needs to choose on (a handful is a noisy choice)


class ConfigError(ValueError):
    """A config file or override is wrong: the message names the key, its source, and close names."""


OPTIMIZER_NAMES = ("adam", "adamw")  # bench.fidelity.train maps them to torch optimizers
SCHEDULES = ("cosine", "exponential", "constant")
COMPILE_STEPS = ("auto", "on", "off")


@dataclass(frozen=True)
class TrainConfig:
    """How to train one model. Defaults: the fidelity probe's full-batch Adam run."""

    optimizer: str = "adam"  # "adam" or "adamw" (decoupled weight decay, as the forum user trained)
    lr: float = 1e-3  # initial learning rate (the only candidate when lr_grid is empty)
    # candidate initial learning rates: each cell trains one fresh model (same init) per candidate and keeps the
    # one with the lowest validation loss, so the choice never sees the test split (empty = lr alone)
    lr_grid: tuple[float, ...] = ()
    # train the lr_grid candidates as one stacked launch (bench.fidelity.stacked) where it applies (full batch, no
    # grid updates, no regularization or Hessian term, a step budget): the same models as one at a time, faster
    stack_candidates: bool = True
    weight_decay: float = 0.0  # L2 (adam) or decoupled (adamw) weight decay
    schedule: str = "cosine"  # "cosine", "exponential" or "constant" decay of lr over the budget
    final_lr_ratio: float = 0.01  # lr at the end of the budget / initial lr (cosine and exponential)
    steps: int | None = 4000  # optimizer steps (not epochs); None = until max_seconds
    batch_size: int | None = None  # None = full batch; else shuffled mini-batches from the seeded generator
    beta: float = 1.0  # weight of the value loss; 1 - beta weighs the Jacobian loss (1.0 = value only)
    hess_weight: float = 0.0  # weight of the Hessian loss, added to the value and Jacobian terms (0 = none)
    lbfgs_steps: int = 0  # L-BFGS iterations after the first-order phase, full batch (0 = no polish)
    patience: int = 0  # stop after this many steps without a better validation loss (0 = never stop early)
    eval_every: int = 10  # steps between validation-loss evaluations (early stopping and history)
    restore_best: bool = True  # with validation data, end on the weights with the best validation loss
    max_seconds: float | None = None  # wall-time budget of the first-order phase (None = steps only)
    grid_update_every: int = 0  # efficient-KAN: model.update_grid(x_train) every this many steps (0 = off)
    reg_weight: float = 0.0  # efficient-KAN: add reg_weight * model.regularization_loss() (0 = off)
    jac_engine: str = "auto"  # bench.engines engine for the Jacobian in the Sobolev loss
    jac_chunk_size: int | None = None  # engine chunking to bound memory (None = one chunk)
    hess_engine: str = "auto"  # bench.engines Hessian engine for the Hessian term (forward_hessian on the zoo)
    # torch.compile the training step's loss, forward and backward (bench.fidelity.train): "auto" where it was
    # measured to pay off (the KAN families), "on" for every model, "off" never; eager with the reason on failure
    compile_step: str = "auto"

    def __post_init__(self) -> None:
        grid = self.lr_grid
        grid = (
            [grid] if isinstance(grid, (int, float)) else grid.strip("[]").split(",") if isinstance(grid, str) else grid
        )
        try:
            if any(isinstance(v, bool) for v in grid):
                raise TypeError("a boolean is not a learning rate")
            object.__setattr__(self, "lr_grid", tuple(float(v) for v in grid))
        except (TypeError, ValueError):
            raise ValueError(f"lr_grid = {self.lr_grid!r} must be a list of positive learning rates") from None
        good = all(math.isfinite(v) and v > 0 for v in self.lr_grid)
        if not good or len(set(self.lr_grid)) != len(self.lr_grid):
            raise ValueError(f"lr_grid = {list(self.lr_grid)} must hold distinct, finite, positive learning rates")
        if self.lr_grid and not self.restore_best:
            raise ValueError("lr_grid compares the candidates' best validation losses, so each must end on its best "
                             "weights: keep restore_best = true")  # fmt: skip
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {sorted(OPTIMIZER_NAMES)}")
        if self.compile_step not in COMPILE_STEPS:
            raise ValueError(f"compile_step {self.compile_step!r} is not one of {list(COMPILE_STEPS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {list(SCHEDULES)}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta = {self.beta} must lie in [0, 1] (1 = value loss only, 0 = Jacobian only)")
        if not (math.isfinite(self.hess_weight) and self.hess_weight >= 0):
            raise ValueError(f"hess_weight = {self.hess_weight} must be a finite weight >= 0 (0 = no Hessian term)")
        if self.steps is None and self.max_seconds is None:
            raise ValueError("give a budget: steps, max_seconds or both")
        if (self.steps or 0) < 0 or (self.max_seconds or 1.0) <= 0:
            raise ValueError(f"steps ({self.steps}) must be >= 0 and max_seconds ({self.max_seconds}) > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size = {self.batch_size} must be >= 1 (or None for full batch)")
        if self.lr <= 0 or self.final_lr_ratio <= 0 or self.eval_every < 1:
            raise ValueError("lr and final_lr_ratio must be > 0 and eval_every >= 1")
        if min(self.lbfgs_steps, self.patience, self.grid_update_every) < 0 or self.reg_weight < 0:
            raise ValueError("lbfgs_steps, patience, grid_update_every and reg_weight must be >= 0")


@dataclass(frozen=True)
class GridConfig:
    """The grid: every combination of these is one cell (equation x model x beta x n_train x seed)."""

    equations: tuple[str, ...] = ("forum4x4",)  # equation-set names, patterns expanded at load time
    models: tuple[str, ...] = ("mlp_tanh",)  # registered model names, patterns expanded at load time
    seeds: tuple[int, ...] = (0,)  # one cell per seed: sampling, split, init and training all use it
    betas: tuple[float, ...] = (1.0,)  # value-loss weight per variant: 1.0 = value only, < 1 = Sobolev
    # Hessian-loss weight per variant (0 = none), crossed with betas; > 0 runs only on hess_equations and with
    # hess_betas (empty: all equations, all betas). Filters: names the grid does not have select nothing, so a
    # profile's Hessian variant follows --equations / --betas overrides (and vanishes where they leave it none)
    hess_weights: tuple[float, ...] = (0.0,)
    hess_equations: tuple[str, ...] = ()
    hess_betas: tuple[float, ...] = ()
    hess_models: tuple[str, ...] = ()  # and with these models only (empty: every model with a Hessian variant)
    n_train: tuple[int, ...] = (512,)  # training-set sizes (the size sweep)
    # the equations that run every n_train; the others run at the first n_train only (empty: all run every size).
    # A map crosses a size axis on a few sets with a dimension axis on others at one size (bench.run.profiles.map)
    size_equations: tuple[str, ...] = ()
    n_test: int = 500  # held-out points per cell: test metrics and jacobians/<cell>.csv
    val_fraction: float = 0.15  # validation points as a fraction of n_train (early stopping)
    sampler: str = "lhs"  # equations.sampling.SAMPLERS key
    # "model": inputs min-max to the model's declared input_range, outputs to [-1, 1];
    # "forum": min-max to [0, 1] for inputs and outputs, as the forum user did; "standard": z-scores
    scaling: str = "model"
    match_params: int | None = None  # size every model to about this many parameters (models.match_params)
    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-model factory kwargs

    def split_sizes(self, n_train: int) -> tuple[int, int]:
        """(validation points, all points a cell of this n_train draws): n_train + n_val + n_test."""
        n_val = round(self.val_fraction * n_train)
        return n_val, n_train + n_val + self.n_test


@dataclass(frozen=True)
class Cell:
    """One grid point: a model trained on one equation set with one loss weight, size and seed."""

    equation: str
    model: str
    beta: float  # value-loss weight; 1.0 = value only
    n_train: int
    seed: int
    hess_weight: float = 0.0  # Hessian-loss weight; > 0 makes the variant "hessian"

    @property
    def variant(self) -> str:
        """``value`` (values only), ``sobolev`` (values and Jacobians) or ``hessian`` (a Hessian term too)."""
        if self.hess_weight > 0:
            return "hessian"
        return "value" if self.beta == 1.0 else "sobolev"

    @property
    def cell_id(self) -> str:
        """Stable id ``<equation>__<model>__<variant>__n<n_train>__s<seed>``; Sobolev variants carry beta, Hessian
        ones beta and the Hessian weight (``sobolev0.5_h0.1``)."""
        variant = "value" if self.beta == 1.0 else f"sobolev{float(self.beta)!r}"
        if self.hess_weight > 0:
            variant += f"_h{float(self.hess_weight)!r}"
        return f"{self.equation}__{self.model}__{variant}__n{self.n_train}__s{self.seed}"


@dataclass(frozen=True)
class RunConfig:
    """How the grid runs; none of this changes a cell's numbers except device and dtype."""

    profile: str = "custom"  # profile name, part of the run id
    out: str = "results"  # results root; the run folder is <out>/<run-id>
    workers: int = 0  # worker processes; 0 = auto (CPU: one per core; CUDA: up to 4)
    threads: int = 0  # torch threads per worker; 0 = max(1, cores // workers)
    device: str = "cpu"  # "auto" picks cuda when present
    dtype: str = "float32"  # training and evaluation dtype (references stay float64)
    engine: str = "auto"  # bench.engines name for the Jacobians of metrics
    jacobian_rows: int = 1000  # most test samples written to jacobians/<cell>.csv
    plugins: tuple[str, ...] = ()  # --plugin files (absolute paths): every worker loads them, resume too
    executor: str = "local"  # "local": a process pool on this machine; "ray": one Ray task per cell
    address: str = ""  # ray: "" starts a Ray instance here; "auto" or HOST:PORT joins a running cluster
    gpus_per_cell: float = 0.25  # ray on cuda: the GPU fraction each cell declares (4 cells share a GPU)


@dataclass(frozen=True)
class Config:
    grid: GridConfig
    run: RunConfig
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig kwargs without beta
    source: Mapping[str, Any] = field(default_factory=dict)  # profile, config file and overrides, for the record

    def to_dict(self) -> dict:
        return {
            "grid": dataclasses.asdict(self.grid),
            "run": dataclasses.asdict(self.run),
            "train": dict(self.train),
            "source": dict(self.source),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Rebuild a resolved config (config.json of a run); names are not re-expanded."""
        g = dict(d["grid"])
        for key in (
            "equations",
            "models",
            "seeds",
            "betas",
            "n_train",
            "hess_weights",
            "hess_equations",
            "hess_betas",
            "hess_models",
            "size_equations",
        ):
            if key in g:  # the Hessian keys are absent from runs written before they existed
                g[key] = tuple(g[key])
        run = dict(d["run"])
        run["plugins"] = tuple(run.get("plugins", ()))
        return cls(GridConfig(**g), RunConfig(**run), dict(d.get("train", {})), dict(d.get("source", {})))


# ---- value coercion: TOML values and command-line strings alike ----


def _split(v: Any) -> list:
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def _names(v: Any) -> tuple[str, ...]:
    out = _split(v)
    if not out or not all(isinstance(s, str) for s in out):
        raise TypeError("expected a non-empty list of names or a comma-separated string")
    return tuple(out)


def _paths(v: Any) -> tuple[str, ...]:
    out = _split(v)
    if not all(isinstance(s, str) for s in out):
        raise TypeError("expected a list of file paths")
    return tuple(out)


def _numbers(kind: type) -> Callable[[Any], tuple]:
    def conv(v: Any) -> tuple:
        items = _split(v)
        if not items or any(isinstance(x, bool) for x in items):
            raise TypeError(f"expected one or more {kind.__name__} values")
        return tuple(kind(x) for x in items)

    return conv


def _scalar(kind: type, choices: tuple[str, ...] | None = None, optional: bool = False) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if optional and v in (None, 0, "", "none", "None"):
            return None
        if isinstance(v, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got a boolean")
        out = kind(v)
        if choices is not None and out not in choices:
            raise ValueError(f"{out!r} is not one of {', '.join(choices)}{suggest(str(out), choices)}")
        return out

    return conv


_SPECS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "grid": {
        "equations": _names, "models": _names, "seeds": _numbers(int), "betas": _numbers(float),
        "hess_weights": _numbers(float), "hess_equations": _names, "hess_betas": _numbers(float),
        "hess_models": _names,
        "n_train": _numbers(int), "size_equations": _names, "n_test": _scalar(int), "val_fraction": _scalar(float),
        "sampler": _scalar(str), "scaling": _scalar(str, SCALINGS), "match_params": _scalar(int, optional=True),
    },
    "run": {
        "profile": _scalar(str), "out": _scalar(str), "workers": _scalar(int), "threads": _scalar(int),
        "device": _scalar(str, DEVICES), "dtype": _scalar(str, DTYPES), "engine": _scalar(str),
        "jacobian_rows": _scalar(int), "plugins": _paths, "executor": _scalar(str, EXECUTORS),
        "address": _scalar(str), "gpus_per_cell": _scalar(float),
    },
}  # fmt: skip
_TABLES = ("grid", "train", "run", "model_overrides")


def _train_fields() -> set[str]:
    """TrainConfig's field names (beta and hess_weight excluded: each cell takes them from the grid)."""
    return {f.name for f in dataclasses.fields(TrainConfig)} - {"beta", "hess_weight"}


def check(cfg: Config) -> None:
    """Cross-field checks that no single key can make."""
    g, r = cfg.grid, cfg.run
    bad = [b for b in g.betas if not 0.0 <= b <= 1.0]
    if bad:
        raise ConfigError(f"grid.betas must lie in [0, 1] (1 = value only, 0 = Jacobian only); got {bad}")
    if min(g.n_train) < 2 or g.n_test < 1:
        raise ConfigError(f"grid.n_train must be >= 2 and grid.n_test >= 1; got n_train={g.n_train}, n_test={g.n_test}")
    if not 0.0 <= g.val_fraction < 1.0:
        raise ConfigError(f"grid.val_fraction must lie in [0, 1); got {g.val_fraction}")
    if r.workers < 0 or r.threads < 0 or r.jacobian_rows < 0:
        raise ConfigError("run.workers, run.threads and run.jacobian_rows must be >= 0 (0 = auto / none)")
    if r.address and r.executor != "ray":
        raise ConfigError(f"run.address = {r.address!r} is a Ray cluster's address: add --executor ray (or drop it)")
    if not 0 < r.gpus_per_cell <= 1:
        raise ConfigError(f"run.gpus_per_cell must lie in (0, 1] (a fraction of one GPU); got {r.gpus_per_cell}")
    bad = [w for w in g.hess_weights if not (math.isfinite(w) and w >= 0)]
    if bad or not g.hess_weights:
        raise ConfigError(f"grid.hess_weights must be finite weights >= 0 (0 = no Hessian term); got {bad or []}")
    bad = [b for b in g.hess_betas if not (math.isfinite(b) and 0 <= b <= 1)]
    if bad:
        raise ConfigError(f"grid.hess_betas must be value-loss weights in [0, 1] like grid.betas; got {bad}")
    if len([w for w in g.hess_weights if w > 0]) > 1:
        raise ConfigError(
            f"grid.hess_weights = {list(g.hess_weights)}: at most one weight > 0 per run (the report names a "
            "Hessian variant by its beta); run other weights as separate runs"
        )
    for key, seq in (("seeds", g.seeds), ("betas", g.betas), ("n_train", g.n_train), ("hess_weights", g.hess_weights)):
        if len(set(seq)) != len(seq):
            raise ConfigError(f"grid.{key} has duplicates: {list(seq)}")
    try:
        train = TrainConfig(**cfg.train)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[train]: {err}") from None
    n_val, _ = g.split_sizes(min(g.n_train))
    if train.lr_grid and n_val < MIN_TUNING_POINTS:
        raise ConfigError(
            f"train.lr_grid = {list(train.lr_grid)} chooses the learning rate on the validation split, but "
            f"grid.val_fraction = {g.val_fraction} leaves {n_val} validation point(s) at n_train = {min(g.n_train)} "
            f"(at least {MIN_TUNING_POINTS} needed); raise grid.val_fraction or n_train, or drop train.lr_grid"
        )
