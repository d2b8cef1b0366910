"""`python -m bench list equations|models [PATTERN]`: what can be benchmarked, as a table."""

from __future__ import annotations

import argparse

NAME = "list"
HELP = "list equation sets or models (name, dimensions, domain / family, parameters)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["equations", "models"], help="what to list")
    parser.add_argument(
        "pattern",
        nargs="?",
        default="*",
        help='names or fnmatch patterns, comma-separated (default "*"; e.g. "gen:*" or "forum4x4,gen:hard:3")',
    )


def run(args: argparse.Namespace) -> int:
    if args.what == "equations":
        return _list_equations(args.pattern)
    return _list_models(args.pattern)


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
    import models

    describe_table = getattr(models, "describe_table", None)
    if describe_table is None:
        print("models.describe_table is not available yet: the model zoo has not landed in this checkout.")
        return 1
    print(describe_table(pattern).to_string(index=False))
    return 0
