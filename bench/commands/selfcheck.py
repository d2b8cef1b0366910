"""`python -m bench selfcheck`: check every equation set's exact Jacobian and Hessian (finite differences, hand-derived,
vmap, float32) and print one row per set; exit status 1 if any check failed."""

from __future__ import annotations

import argparse

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "selfcheck"
HELP = "check the equation sets' exact Jacobians and Hessians (finite differences, hand-derived, vmap, float32)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--equations",
        default="*",
        metavar="PATTERN",
        help='equation sets to check: names or fnmatch patterns, comma-separated (default "*"; '
        'e.g. "forum4x4,gen:hard:7,file:my_eq.py")',
    )
    parser.add_argument("--n", type=int, default=64, help="sample points per set (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample points (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device to check on (default cpu)")


def run(args: argparse.Namespace) -> int:
    import equations

    table = equations.selfcheck(args.equations, n=args.n, seed=args.seed, device=args.device)
    shown = table.drop(columns=["error"]) if not table["error"].any() else table
    print(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.1e}"))
    failed = table[table["status"] != "ok"]
    print(f"\n{len(table) - len(failed)} of {len(table)} equation sets ok", end="")
    print(f"; FAILED: {', '.join(failed['name'])}" if len(failed) else "")
    return 1 if len(failed) else 0
