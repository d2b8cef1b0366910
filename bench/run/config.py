"""What a run measures (GridConfig) and how it runs (RunConfig), from a TOML profile plus overrides.

A config is built in layers, each validated on its own so an error names where the bad key came from:
the profile (``bench/run/profiles/<name>.toml``), an optional ``--config FILE`` merged on top (only the keys it
sets), then command-line overrides (``{"grid.models": "fastkan*", "train.steps": 200}``). Model and
equation lists are comma-separated patterns expanded through ``models.list_models`` / ``equations.list``.

TOML layout::

    [grid]   equations, models, seeds, betas, n_train, n_test, val_fraction, sampler, scaling, match_params
    [train]  TrainConfig fields (all but beta, which each cell takes from grid.betas)
    [run]    out, workers, threads, device, dtype, engine, jacobian_rows
    [model_overrides.<model>]  keyword arguments for models.create_model(<model>, ...)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equations.names import suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
SCALINGS = ("model", "forum", "standard")  # see GridConfig.scaling
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
_WILDCARD = set("*?[")


class ConfigError(ValueError):
    """A config file or override is wrong: the message names the key, its source, and close names."""


OPTIMIZER_NAMES = ("adam", "adamw")  # bench.fidelity.train maps them to torch optimizers
SCHEDULES = ("cosine", "exponential", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How to train one model. Defaults: the fidelity probe's full-batch Adam run."""

    optimizer: str = "adam"  # "adam" or "adamw" (decoupled weight decay, as the forum user trained)
    lr: float = 1e-3  # initial learning rate
    weight_decay: float = 0.0  # L2 (adam) or decoupled (adamw) weight decay
    schedule: str = "cosine"  # "cosine", "exponential" or "constant" decay of lr over the budget
    final_lr_ratio: float = 0.01  # lr at the end of the budget / initial lr (cosine and exponential)
    steps: int | None = 4000  # optimizer steps (not epochs); None = until max_seconds
    batch_size: int | None = None  # None = full batch; else shuffled mini-batches from the seeded generator
    beta: float = 1.0  # weight of the value loss; 1 - beta weighs the Jacobian loss (1.0 = value only)
    lbfgs_steps: int = 0  # L-BFGS iterations after the first-order phase, full batch (0 = no polish)
    patience: int = 0  # stop after this many steps without a better validation loss (0 = never stop early)
    eval_every: int = 10  # steps between validation-loss evaluations (early stopping and history)
    restore_best: bool = True  # with validation data, end on the weights with the best validation loss
    max_seconds: float | None = None  # wall-time budget of the first-order phase (None = steps only)
    grid_update_every: int = 0  # efficient-KAN: model.update_grid(x_train) every this many steps (0 = off)
    reg_weight: float = 0.0  # efficient-KAN: add reg_weight * model.regularization_loss() (0 = off)
    jac_engine: str = "auto"  # bench.engines engine for the Jacobian in the Sobolev loss
    jac_chunk_size: int | None = None  # engine chunking to bound memory (None = one chunk)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {sorted(OPTIMIZER_NAMES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {list(SCHEDULES)}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta = {self.beta} must lie in [0, 1] (1 = value loss only, 0 = Jacobian only)")
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
    n_train: tuple[int, ...] = (512,)  # training-set sizes (the size sweep)
    n_test: int = 500  # held-out points per cell: test metrics and jacobians/<cell>.csv
    val_fraction: float = 0.15  # validation points as a fraction of n_train (early stopping)
    sampler: str = "lhs"  # equations.sampling.SAMPLERS key
    # "model": inputs min-max to the model's declared input_range, outputs to [-1, 1];
    # "forum": min-max to [0, 1] for inputs and outputs, as the forum user did; "standard": z-scores
    scaling: str = "model"
    match_params: int | None = None  # size every model to about this many parameters (models.match_params)
    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-model factory kwargs


@dataclass(frozen=True)
class Cell:
    """One grid point: a model trained on one equation set with one loss weight, size and seed."""

    equation: str
    model: str
    beta: float  # value-loss weight; 1.0 = value only
    n_train: int
    seed: int

    @property
    def variant(self) -> str:
        return "value" if self.beta == 1.0 else "sobolev"

    @property
    def cell_id(self) -> str:
        """Stable id ``<equation>__<model>__<variant>__n<n_train>__s<seed>``; Sobolev variants carry beta."""
        variant = "value" if self.beta == 1.0 else f"sobolev{float(self.beta)!r}"
        return f"{self.equation}__{self.model}__{variant}__n{self.n_train}__s{self.seed}"


def grid_cells(grid: GridConfig) -> list[Cell]:
    """The grid in a stable order: equation, model, beta, n_train, seed (seeds innermost)."""
    return [
        Cell(eq, model, float(beta), int(n), int(seed))
        for eq in grid.equations
        for model in grid.models
        for beta in grid.betas
        for n in grid.n_train
        for seed in grid.seeds
    ]


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
        for key in ("equations", "models", "seeds", "betas", "n_train"):
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
        "n_train": _numbers(int), "n_test": _scalar(int), "val_fraction": _scalar(float),
        "sampler": _scalar(str), "scaling": _scalar(str, SCALINGS), "match_params": _scalar(int, optional=True),
    },
    "run": {
        "profile": _scalar(str), "out": _scalar(str), "workers": _scalar(int), "threads": _scalar(int),
        "device": _scalar(str, DEVICES), "dtype": _scalar(str, DTYPES), "engine": _scalar(str),
        "jacobian_rows": _scalar(int), "plugins": _paths,
    },
}  # fmt: skip
_TABLES = ("grid", "train", "run", "model_overrides")


def _train_fields() -> set[str]:
    """TrainConfig's field names (beta excluded: each cell takes it from grid.betas)."""
    return {f.name for f in dataclasses.fields(TrainConfig)} - {"beta"}


def _validate(raw: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Check tables and keys of one config layer and coerce its values; errors name ``where``."""
    out: dict[str, dict[str, Any]] = {}
    for table, body in raw.items():
        if table not in _TABLES:
            hint = suggest(table, _TABLES)
            raise ConfigError(f"{where}: unknown table [{table}]{hint}; tables: {', '.join(_TABLES)}")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: [{table}] must be a table of key = value pairs")
        out[table] = {}
        for key, value in body.items():
            out[table][key] = _coerce(table, key, value, where)
    return out


def _coerce(table: str, key: str, value: Any, where: str) -> Any:
    if table == "model_overrides":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: model_overrides.{key} must be a table of keyword arguments")
        return dict(value)
    if table == "train":
        known = _train_fields()
        if key == "beta":
            raise ConfigError(f"{where}: train.beta is set per cell from grid.betas; set grid.betas instead")
        if key not in known:
            hint = suggest(key, known)
            raise ConfigError(f"{where}: unknown key train.{key}{hint}; keys: {', '.join(sorted(known))}")
        return value
    spec = _SPECS[table]
    if key not in spec:
        raise ConfigError(f"{where}: unknown key {table}.{key}{suggest(key, spec)}; keys: {', '.join(spec)}")
    try:
        return spec[key](value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: bad value for {table}.{key} = {value!r}: {err}") from None


def _merge(base: dict[str, dict[str, Any]], layer: Mapping[str, Mapping[str, Any]]) -> None:
    for table, body in layer.items():
        base.setdefault(table, {}).update(body)


def parse_value(text: str) -> Any:
    """A command-line value as TOML (``200``, ``[1, 0.5]``, ``true``), else the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["train.steps=200", "grid.betas=[1, 0.5]"]`` -> dotted-key dict; values parsed as TOML, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {pair!r}: expected TABLE.KEY=VALUE, e.g. train.steps=200")
        out[key.strip()] = parse_value(text)
    return out


def _nest(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        table, _, key = dotted.partition(".")
        if table == "model_overrides":  # model_overrides.fastkan.num_grids = 12
            name, _, arg = key.partition(".")
            nested.setdefault(table, {}).setdefault(name, {})[arg] = value
        else:
            nested.setdefault(table, {})[key] = value
    return nested


def profile_path(profile: str) -> Path:
    path = PROFILES_DIR / f"{profile}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))
        raise ConfigError(f"unknown profile {profile!r}{suggest(profile, known)}; profiles: {', '.join(known)}")
    return path


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def load_config(
    profile: str | None = "quick",
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    expand: bool = True,
) -> Config:
    """Profile, then config file, then dotted overrides; names expanded unless ``expand=False``."""
    overrides = dict(overrides or {})
    layers: dict[str, dict[str, Any]] = {}
    if profile:
        _merge(layers, _validate(read_toml(profile_path(profile)), f"profile {profile!r}"))
    if config_file:
        _merge(layers, _validate(read_toml(config_file), str(config_file)))
    _merge(layers, _validate(_nest(overrides), "command line"))
    run = dict(layers.get("run", {}))
    if run.get("plugins"):  # a plugin file, however it was given, is loaded before its models are named
        run["plugins"] = tuple(str(Path(p).resolve()) for p in run["plugins"])
        import models

        for path in run["plugins"]:
            models.load_plugin(path)
    run.setdefault("profile", profile or (Path(config_file).stem if config_file else "custom"))
    grid = dict(layers.get("grid", {}))
    grid["model_overrides"] = layers.get("model_overrides", {})
    if expand:
        grid["models"] = expand_models(grid.get("models", GridConfig.models))
        grid["equations"] = expand_equations(grid.get("equations", GridConfig.equations))
    cfg = Config(
        grid=GridConfig(**grid),
        run=RunConfig(**run),
        train=layers.get("train", {}),
        source={"profile": profile, "config_file": str(config_file) if config_file else None, "overrides": overrides},
    )
    check(cfg)
    return cfg


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
    for key, seq in (("seeds", g.seeds), ("betas", g.betas), ("n_train", g.n_train)):
        if len(set(seq)) != len(seq):
            raise ConfigError(f"grid.{key} has duplicates: {list(seq)}")


def expand_names(
    patterns: Iterable[str], lister: Callable[[str], list[str]], checker: Callable[[str], Any], kind: str
) -> tuple[str, ...]:
    """Expand wildcard patterns with ``lister(pattern)``; plain names must pass ``checker(name)``.

    Keeps the order given and drops duplicates. A pattern that matches nothing, or a name the checker
    rejects (KeyError/ValueError with its own suggestions), is a ConfigError.
    """
    out: list[str] = []
    for pat in patterns:
        if _WILDCARD & set(pat):
            hits = list(lister(pat))
            if not hits:
                raise ConfigError(f"{kind} pattern {pat!r} matches nothing; available: {', '.join(lister('*'))}")
        else:
            try:
                checker(pat)
            except (KeyError, ValueError) as err:
                raise ConfigError(err.args[0] if err.args else f"unknown {kind} {pat!r}") from None
            hits = [pat]
        out.extend(h for h in hits if h not in out)
    return tuple(out)


def expand_models(patterns: Iterable[str] | str) -> tuple[str, ...]:
    import models

    return expand_names(_names(patterns), models.list_models, models.get_factory, "model")


def expand_equations(patterns: Iterable[str] | str) -> tuple[str, ...]:
    import equations

    return expand_names(_names(patterns), equations.list, equations.get, "equation")


def fnmatch_lister(names: Iterable[str]) -> Callable[[str], list[str]]:
    """A lister over a fixed list of names (tests, plugins)."""
    names = list(names)
    return lambda pat: [n for n in names if fnmatch.fnmatchcase(n, pat)]
