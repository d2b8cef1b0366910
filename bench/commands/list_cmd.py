"""`python -m bench list equations|models|engines|profiles [PATTERN]`: what can be benchmarked, and how, as a table."""

from __future__ import annotations

import argparse

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "list"
HELP = "list equation sets, models, Jacobian engines or run profiles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["equations", "models", "engines", "profiles"], help="what to list")
    parser.add_argument(
        "pattern",
        nargs="?",
        default="*",
        help='names or fnmatch patterns, comma-separated (default "*"; e.g. "gen:*" or "forum4x4,gen:hard:3")',
    )


def run(args: argparse.Namespace) -> int:
    listers = {"equations": _list_equations, "models": _list_models, "engines": _list_engines,
               "profiles": _list_profiles}  # fmt: skip
    return listers[args.what](args.pattern)


def _list_equations(pattern: str) -> int:
    import equations

    table = equations.describe_table(pattern)
    if len(table) == 1:  # one set: show it in full (doc, formulas)
        print(equations.describe(table["name"].iloc[0]))
        return 0
    print(table.to_string(index=False))
    for name in table["name"]:
        if name.startswith("gen:"):  # a generated set is its formulas: show them
            print(f"\n{equations.describe(name)}")
    print("\nMore sets: gen:<family>:<seed>[:<n_in>x<n_out>] (families smooth, mixed, hard) and file:path/to/my_eq.py.")
    print("`python -m bench list equations NAME` shows one set in full.")
    return 0


def _list_models(pattern: str) -> int:
    """The zoo's models, then the peers matching the pattern (trained by their own code: bench.peers)."""
    import models
    from bench import peers

    table = models.describe_table(pattern)
    if len(table):
        print(table.to_string(index=False))
    names = peers.list_peers(pattern)
    if names:
        print("\npeers (name them in grid.models; wildcards match the zoo only):")
        for n in names:
            p = peers.get(n)
            print(f"  {n}: family {p.family}, {p.param_count(4, 4)} params at 4 -> 4 by default; {p.description}")
    return 0


def _matching(names: list[str], pattern: str, kind: str) -> list[str]:
    """Names matching comma-separated patterns or plain names, as `run` expands them (bench.run.names)."""
    from bench.run.names import expand_names, fnmatch_lister
    from equations.names import UnknownName, suggest

    def check(name: str) -> None:
        if name not in names:
            raise UnknownName(f"unknown {kind} {name!r}{suggest(name, names)}; {kind}s: {', '.join(names)}")

    parts = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    return list(expand_names(parts, fnmatch_lister(names), check, kind))


def _list_engines(pattern: str) -> int:
    """Each engine's one-line doc and what it supports (batch-sum engines need samples that do not interact)."""
    import pandas as pd
    import torch

    import models
    from bench.engines import ENGINES

    zoo = {m: models.create_model(m, seed=0) for m in models.list_models()}
    cpu = torch.device("cpu")
    rows = []
    for name in _matching(list(ENGINES), pattern, "engine"):
        e = ENGINES[name]
        off = [m for m, net in zoo.items() if e.supports(net, cpu, torch.float32) is not None]
        supported = "every model" if not off else f"all but {', '.join(off)}"
        needs = ["samples must not interact (checked on every batch)"] if e.batch_sum else []
        needs += ["torch.compile (first call compiles)"] if e.compiled else []
        rows.append({
            "engine": name, "auto": "no" if e.batch_sum else ("compiled=True" if e.compiled else "yes"),
            "create_graph": "yes" if e.differentiable else "no",
            "supports (cpu, float32)": supported, "needs": "; ".join(needs) or "-", "doc": e.doc,
        })  # fmt: skip
    print(pd.DataFrame(rows).to_string(index=False))
    print("\nauto: candidates of engine 'auto' (ranked by the measured table, bench/engines/auto.py); "
          "create_graph: differentiable (Sobolev training). "
          "`python -m bench throughput` records why an engine skips a model as an `unsupported` row.")  # fmt: skip
    return 0


def _list_profiles(pattern: str) -> int:
    """Each shipped profile: its cells and the first line of its header comment."""
    import pandas as pd

    from bench.run import config as C

    names = sorted(p.stem for p in C.PROFILES_DIR.glob("*.toml"))
    rows = []
    for name in _matching(names, pattern, "profile"):
        cfg = C.load_config(name)
        lines = C.profile_path(name).read_text(encoding="utf-8").splitlines()
        doc = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("#") and ln.strip("# ")), "")
        rows.append({"profile": name, "cells": len(C.grid_cells(cfg.grid)), "description": doc})
    print(pd.DataFrame(rows).to_string(index=False))
    return 0
