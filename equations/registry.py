"""Equation sets by name: built-ins, ``gen:<family>:<seed>[:<n_in>x<n_out>]``, ``file:path.py``, ``data:path.csv``
(samples with measured derivatives, ``equations.datafile``), registered.

``list_names`` takes fnmatch patterns, comma-separated ("forum4x4,gen:*"). Generated names are infinite, so
wildcards see the built-ins, registered sets and a few example generated names; a literal ``gen:...``,
``file:...`` or ``data:...`` name is accepted as it is.
"""

from __future__ import annotations

import fnmatch
import textwrap

import pandas as pd

from equations import datafile, generated, user
from equations.base import EquationSet
from equations.names import UnknownName, suggest
from equations.sets import BUILTINS

EXAMPLE_GENERATED = ("gen:smooth:0", "gen:mixed:0", "gen:hard:0")
RESERVED_PREFIXES = ("gen:", "file:", "data:")
HINT = (
    "generated sets are gen:<family>:<seed> (families: {families}); your own file is file:path/to/file.py; "
    "samples with measured derivatives are data:path/to/samples.csv"
)

_REGISTRY: dict[str, EquationSet] = {eq.name: eq for eq in BUILTINS}


def register(eq: EquationSet) -> EquationSet:
    """Add ``eq`` under ``eq.name`` (returns it). The name must be new and not start with gen: or file:."""
    if not isinstance(eq, EquationSet):
        raise TypeError(f"register() takes an EquationSet, got {type(eq).__name__}")
    if eq.name.startswith(RESERVED_PREFIXES):
        raise ValueError(f"cannot register {eq.name!r}: names starting with gen:, file: or data: are reserved")
    if eq.name in _REGISTRY:
        raise ValueError(f"an equation set named {eq.name!r} is already registered; choose another name")
    user.check_evaluates(eq, where=f"register({eq.name!r})")
    _REGISTRY[eq.name] = eq
    return eq


def unregister(name: str) -> None:
    """Remove a set added with ``register`` (built-ins stay)."""
    if name in {eq.name for eq in BUILTINS}:
        raise ValueError(f"{name!r} is a built-in equation set and cannot be unregistered")
    if name not in _REGISTRY:
        raise UnknownName(
            f"no registered equation set {name!r}{suggest(name, _REGISTRY)}; registered: {', '.join(_REGISTRY)}"
        )
    del _REGISTRY[name]


def get(name: str) -> EquationSet:
    """The equation set called ``name``; KeyError with close names if there is none."""
    if not isinstance(name, str):
        raise TypeError(f"equation-set names are strings, got {type(name).__name__}")
    key = name.strip()
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key.startswith("gen:"):
        return generated.generate(key)
    if key.startswith("file:"):
        path = key.removeprefix("file:")
        return user.load_file(_FILE_COPIES.get(path, path))
    if key.startswith(datafile.PREFIX):
        path = key.removeprefix(datafile.PREFIX)
        side = str(datafile.sidecar_path(path))
        return datafile.load(_FILE_COPIES.get(path, path), _FILE_COPIES.get(side, side), name=key)
    hint = HINT.format(families=", ".join(generated.FAMILIES))
    raise UnknownName(f"unknown equation set {name!r}{suggest(key, catalog())}; known: {', '.join(catalog())} ({hint})")


_FILE_COPIES: dict[str, str] = {}  # file: path as named -> a local copy of it (see use_file_copy)


def use_file_copy(path: str, local: str) -> None:
    """Resolve ``file:<path>`` to ``local``, a copy of that file on this machine: a cluster worker whose node lacks
    the driver's files runs the set from the copy it was sent, under the name the grid gave it."""
    _FILE_COPIES[path] = local


def catalog() -> list[str]:
    """What wildcards match: built-ins, registered sets, then a few example generated names."""
    return [*_REGISTRY, *EXAMPLE_GENERATED]


def list_names(pattern: str = "*") -> list[str]:
    """Names matching ``pattern`` (fnmatch wildcards, comma-separated alternatives), in catalog order.

    A part without wildcards must name a set (KeyError with suggestions otherwise); ``gen:`` parts come back
    in canonical form, ``file:`` and ``data:`` parts as given. KeyError if nothing matches at all.
    """
    names: list[str] = []
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            matches = [n for n in catalog() if fnmatch.fnmatchcase(n, part)]
        elif part.startswith(("file:", datafile.PREFIX)):
            matches = [part]
        else:
            matches = [get(part).name]
        names.extend(m for m in matches if m not in names)
    if not names:
        raise UnknownName(f"no equation set matches {pattern!r}; known: {', '.join(catalog())}")
    return names


def domain_str(eq: EquationSet) -> str:
    """'[0.1, 3]^4' for a cube, else '[lo1, hi1] x [lo2, hi2] x ...'."""
    pairs = list(zip(eq.lower, eq.upper, strict=True))
    if eq.n_in > 1 and len(set(pairs)) == 1:
        return f"[{pairs[0][0]:g}, {pairs[0][1]:g}]^{eq.n_in}"
    return " x ".join(f"[{lo:g}, {hi:g}]" for lo, hi in pairs)


def summary(eq: EquationSet) -> str:
    """The first sentence of the set's doc."""
    first = eq.doc.strip().split(". ")[0].strip()
    return first.removesuffix(".")


def describe_table(pattern: str = "*") -> pd.DataFrame:
    """One row per matching set: name, n_in, n_out, domain, description (the doc's first sentence)."""
    rows = []
    for name in list_names(pattern):
        eq = get(name)
        rows.append(
            {"name": name, "n_in": eq.n_in, "n_out": eq.n_out, "domain": domain_str(eq), "description": summary(eq)}
        )
    return pd.DataFrame(rows, columns=["name", "n_in", "n_out", "domain", "description"])


def describe(name: str) -> str:
    """A readable page on one set: dimensions, inputs, outputs, domain, doc and formulas."""
    eq = get(name)
    lines = [
        f"{eq.name}: {eq.n_in} -> {eq.n_out}",
        f"inputs:  {', '.join(eq.input_names)}",
        f"outputs: {', '.join(eq.output_names)}",
        f"domain:  {domain_str(eq)}",
        f"hand-derived Jacobian: {'yes' if eq.jacobian_fn is not None else 'no (torch.func only)'}"
        if eq.reference.startswith("exact")
        else f"reference: {eq.reference}",
        "",
        _wrap(eq.doc),
    ]
    if eq.formulas:
        lines += ["", "formulas:", *(f"  {f}" for f in eq.formulas)]
    return "\n".join(lines)


def _wrap(doc: str, width: int = 100) -> str:
    """Fill each paragraph of ``doc`` to ``width``; paragraphs with indented lines (code) stay as they are."""
    paragraphs = textwrap.dedent(doc).strip().split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else textwrap.fill(p, width) for p in paragraphs
    )
