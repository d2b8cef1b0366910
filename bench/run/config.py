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

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

import models
from bench.run.availability import grid_cells, skipped_cells
from bench.run.names import expand_equations, expand_models, expand_names, fnmatch_lister
from bench.run.schema import (
    _SPECS,
    _TABLES,
    DEVICES,
    DTYPES,
    OPTIMIZER_NAMES,
    PROFILES_DIR,
    SCALINGS,
    SCHEDULES,
    Cell,
    Config,
    ConfigError,
    GridConfig,
    RunConfig,
    TrainConfig,
    _train_fields,
    check,
)
from equations.names import suggest

__all__ = [
    "DEVICES", "DTYPES", "OPTIMIZER_NAMES", "PROFILES_DIR", "SCALINGS", "SCHEDULES", "Cell", "Config", "ConfigError",
    "GridConfig", "RunConfig", "TrainConfig", "check", "expand_equations", "expand_models", "expand_names",
    "fnmatch_lister", "grid_cells", "load_config", "parse_overrides", "parse_value", "profile_path", "read_toml",
    "skipped_cells",
    "suggest",
]  # fmt: skip


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
        if key in ("beta", "hess_weight"):
            grid_key = {"beta": "betas", "hess_weight": "hess_weights"}[key]
            raise ConfigError(f"{where}: train.{key} is set per cell from grid.{grid_key}; set grid.{grid_key} instead")
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


def _from_repository_root(layer: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A profile's relative ``data:`` / ``file:`` paths name files of this repository: where such a path does not
    exist from the working directory, it is taken from the repository root (so a profile runs from anywhere)."""
    root = PROFILES_DIR.parents[2]
    grid = layer.get("grid", {})
    for key in ("equations", "hess_equations", "size_equations"):
        if isinstance(grid.get(key), list | tuple):
            grid[key] = tuple(_rooted(e, root) for e in grid[key])
    return layer


def _rooted(name: str, root: Path) -> str:
    for prefix in ("data:", "file:"):
        path = name.removeprefix(prefix)
        if name.startswith(prefix) and not Path(path).is_absolute() and not Path(path).exists():
            if (root / path).exists():
                return prefix + str(root / path)
    return name


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
        layer = _validate(read_toml(profile_path(profile)), f"profile {profile!r}")
        _merge(layers, _from_repository_root(layer))
    if config_file:
        _merge(layers, _validate(read_toml(config_file), str(config_file)))
    _merge(layers, _validate(_nest(overrides), "command line"))
    run = dict(layers.get("run", {}))
    if run.get("plugins"):  # a plugin file, however it was given, is loaded before its models are named
        run["plugins"] = tuple(str(Path(p).resolve()) for p in run["plugins"])
        for path in run["plugins"]:
            models.load_plugin(path)
    run.setdefault("profile", profile or (Path(config_file).stem if config_file else "custom"))
    grid = dict(layers.get("grid", {}))
    grid["model_overrides"] = layers.get("model_overrides", {})
    if expand:
        grid["models"] = expand_models(grid.get("models", GridConfig.models))
        grid["equations"] = expand_equations(grid.get("equations", GridConfig.equations))
        for key in ("hess_equations", "size_equations"):
            if grid.get(key):
                grid[key] = expand_equations(grid[key])
    cfg = Config(
        grid=GridConfig(**grid),
        run=RunConfig(**run),
        train=layers.get("train", {}),
        source={"profile": profile, "config_file": str(config_file) if config_file else None, "overrides": overrides},
    )
    check(cfg)
    return cfg
