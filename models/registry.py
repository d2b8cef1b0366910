"""The model registry: ``@register_model`` factories, looked up by name.

A factory is a small function ``name(n_in=4, n_out=4, **options) -> nn.Module``; its function name is the
public model name and its keyword parameters are the overrides ``create_model`` accepts. Third-party
models register the same way, from a file (``models.plugins.load_plugin``) or from an installed package
through the ``jacbench.models`` entry-point group (loaded lazily on first lookup).
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
from torch import nn

from equations.names import UnknownName, suggest
from models.plugins import load_entry_points

Factory = Callable[..., nn.Module]

_MODELS: dict[str, Factory] = {}
_CONTRACT = ("family", "n_in", "n_out", "input_range", "param_count", "flops_per_sample")


def register_model(fn: Factory | None = None, *, name: str | None = None) -> Any:
    """Register a factory under its function name (or ``name``); use as ``@register_model``.

    Registering a name twice raises ValueError naming the module that registered it first.
    """

    def add(f: Factory) -> Factory:
        key = name or f.__name__
        if key in _MODELS:
            first = _MODELS[key]
            raise ValueError(
                f"model {key!r} is already registered (by {first.__module__}.{first.__qualname__}); "
                f"pick another name for {f.__module__}.{f.__qualname__}"
            )
        _MODELS[key] = f
        return f

    return add(fn) if fn is not None else add


def register_variant(name: str, factory: Factory, doc: str, *, fixed: dict | None = None, **defaults: Any) -> Factory:
    """Register ``factory`` under ``name`` with some defaults changed: variants are data, not code copies.

    ``defaults`` stay overridable (``mlp_tanh`` is ``mlp`` with activation="tanh" by default);
    ``fixed`` options are baked in and disappear from the variant's accepted overrides.
    """
    fixed = dict(fixed or {})
    sig = inspect.signature(factory)
    unknown = (set(defaults) | set(fixed)) - set(sig.parameters)
    if unknown:
        raise ValueError(f"variant {name!r}: {factory.__name__} has no options {sorted(unknown)}")
    params = [
        p.replace(default=defaults.get(p.name, p.default)) for p in sig.parameters.values() if p.name not in fixed
    ]

    def variant(*args: Any, **kwargs: Any) -> nn.Module:
        bound = variant.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        return factory(**bound.arguments, **fixed)

    variant.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    variant.__name__ = variant.__qualname__ = name
    variant.__module__ = factory.__module__
    variant.__doc__ = doc
    return register_model(variant)


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching any of the comma-separated fnmatch patterns, naturally sorted."""
    load_entry_points()
    pats = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    return sorted((n for n in _MODELS if any(fnmatch.fnmatchcase(n, p) for p in pats)), key=_natural_key)


def get_factory(name: str) -> Factory:
    """The factory registered under ``name``; UnknownName (a KeyError) with close names if there is none."""
    load_entry_points()
    if name not in _MODELS:
        hint = suggest(name, list(_MODELS))
        raise UnknownName(f"unknown model {name!r}{hint}; `python -m bench list models` lists them")
    return _MODELS[name]


def accepted_overrides(name: str) -> list[str] | None:
    """The override names a model accepts (None if its factory takes ``**kwargs``: anything goes)."""
    params = inspect.signature(get_factory(name)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name not in ("n_in", "n_out")]


@contextmanager
def _seeded(seed: int | None):
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def create_model(name: str, n_in: int = 4, n_out: int = 4, *, seed: int | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model. Overrides that are None are dropped (the model's default applies).

    With ``seed`` the initialization draws from ``torch.manual_seed(seed)`` without touching the global
    random state; without it, from the global generator.
    """
    factory = get_factory(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    accepted = accepted_overrides(name)
    if accepted is not None:
        bad = [k for k in overrides if k not in accepted]
        if bad:
            hints = "".join(suggest(k, accepted) for k in bad)
            raise ValueError(
                f"model {name!r} does not accept {', '.join(map(repr, bad))}{hints}; "
                f"it accepts: {', '.join(accepted) or '(no overrides)'}"
            )
    with _seeded(seed):
        model = factory(n_in=n_in, n_out=n_out, **overrides)
    missing = [a for a in _CONTRACT if not hasattr(model, a)]
    if missing:
        raise ValueError(
            f"model {name!r} ({factory.__module__}) returned a {type(model).__name__} without {missing}; "
            "zoo models subclass models.base.ZooModule and set n_in, n_out, input_range"
        )
    if (model.n_in, model.n_out) != (n_in, n_out):
        raise ValueError(f"model {name!r} was asked for {n_in}->{n_out} and built {model.n_in}->{model.n_out}")
    model.zoo_name = name  # the registered name (engine "auto" looks its measurements up by it)
    return model


def describe_table(pattern: str = "*", n_in: int = 4, n_out: int = 4):
    """A pandas DataFrame with one row per model at its defaults: name, family, params, flops,
    input_range, description (first line of the factory's docstring)."""
    rows = []
    for name in list_models(pattern):
        model = create_model(name, n_in=n_in, n_out=n_out, seed=0)
        doc = (inspect.getdoc(_MODELS[name]) or "").strip().splitlines()
        rows.append(
            dict(
                name=name,
                family=model.family,
                params=int(model.param_count()),
                flops=int(model.flops_per_sample()),
                input_range=tuple(model.input_range),
                description=doc[0] if doc else "",
            )
        )
    return pd.DataFrame(rows, columns=["name", "family", "params", "flops", "input_range", "description"])
