"""`python -m bench map`: the map (which surrogate for which data size and dimension), resumable, with its report.

Runs the ``map`` profile, then ``map_converged`` (the Sobolev networks at a converged budget), each into its own run
folder under ``--out`` (default results/map), then writes the map report (bench.report.map) into ``--out``. A run
folder of the same profile already there is resumed, not restarted: run the command again after an interruption
and only the missing cells train. ``--report-only`` rebuilds the report from what is there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "map"
HELP = "the map: kriging beside the zoo across data size and dimension (resumable), then its report"
PROFILES = ("map", "map_converged")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/map", metavar="DIR", help="where the runs and the report go")
    p.add_argument("--profiles", default=",".join(PROFILES),
                   help=f"profiles to run, in order (default {','.join(PROFILES)})")  # fmt: skip
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="config overrides for a new run (not for a resumed one), e.g. grid.seeds=[0]")  # fmt: skip
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the runs in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def existing_run(out: Path, profile: str) -> Path | None:
    """The newest run folder under ``out`` started with ``profile`` (config.json's run.profile), if any."""
    found = []
    for cfg in sorted(out.glob("*/config.json")):
        if cfg.parent.is_symlink():
            continue
        try:
            if json.loads(cfg.read_text())["run"]["profile"] == profile:
                found.append(cfg.parent)
        except (KeyError, json.JSONDecodeError):
            continue
    return found[-1] if found else None


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    rc = 0
    if not args.report_only:
        from bench.commands import run as run_cmd

        for profile in profiles:
            previous = existing_run(out, profile)
            argv = ["--resume", str(previous)] if previous else ["--profile", profile, "--out", str(out)]
            if not previous:
                argv += [f"--set={s}" for s in args.set]
            if args.workers is not None:
                argv += ["--workers", str(args.workers)]
            argv += ["--no-progress"] if args.no_progress else []
            parser = argparse.ArgumentParser()
            run_cmd.add_arguments(parser)
            ns = parser.parse_args(argv)
            ns.plugin = getattr(args, "plugin", [])
            print(f"map: {'resuming ' + str(previous) if previous else 'starting profile ' + profile}", flush=True)
            rc = rc or run_cmd.run(ns)
    from bench.report.map import build_map_report

    print(build_map_report(out), flush=True)
    return rc
