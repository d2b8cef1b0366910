"""Model and equation-set names as users write them: fnmatch patterns and plain names, expanded through the
registries (a pattern that matches nothing, or an unknown name, is a ConfigError with close names)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

import equations
import models
from bench import peers
from bench.run.schema import ConfigError, _names

_WILDCARD = set("*?[")


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
    """Zoo models and peers (``jenn``): a wildcard matches the zoo only, so a peer is named on purpose."""

    def check(name: str) -> None:
        if not peers.is_peer(name):
            models.get_factory(name)

    return expand_names(_names(patterns), models.list_models, check, "model")


def expand_equations(patterns: Iterable[str] | str) -> tuple[str, ...]:
    return expand_names(_names(patterns), equations.list, equations.get, "equation")


def fnmatch_lister(names: Iterable[str]) -> Callable[[str], list[str]]:
    """A lister over a fixed list of names (tests, plugins)."""
    names = list(names)
    return lambda pat: [n for n in names if fnmatch.fnmatchcase(n, pat)]
