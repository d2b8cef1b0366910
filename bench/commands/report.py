"""`python -m bench report [RUN_DIR ...]`: the HTML + Markdown comparison report of a run, from its tables only."""

from __future__ import annotations

import argparse

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "report"
HELP = "write report.html and report.md (figures, leaderboard, failures) into a run folder, from its tables only"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dirs", nargs="*", default=["results/latest"], metavar="RUN_DIR",
        help="run folder(s) (default results/latest); one report per folder, written into it",
    )  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="write the report here instead of into the run folder (one run only)")


def run(args: argparse.Namespace) -> int:
    from bench.report import build_report  # pandas/seaborn only: never torch

    if args.out and len(args.run_dirs) > 1:
        raise ValueError("--out takes a single RUN_DIR (each report is written into its own run folder otherwise)")
    for run_dir in args.run_dirs:
        print(build_report(run_dir, args.out), flush=True)
    return 0
