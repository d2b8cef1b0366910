"""`python -m bench compare RUN_A RUN_B`: metrics that moved beyond their seed-to-seed spread between two runs."""

from __future__ import annotations

import argparse

NAME = "compare"
HELP = "compare two runs: metrics whose mean over seeds moved by more than the seed-to-seed spread"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", metavar="RUN_A", help="the baseline run folder")
    p.add_argument("run_b", metavar="RUN_B", help="the run to check against it (e.g. results/latest)")
    p.add_argument("--out", metavar="DIR", help="where compare.csv and compare.md go (default: RUN_B)")
    p.add_argument("--k", type=float, default=2.0, help="flag |Δmean| > K x pooled seed std (default 2)")
    p.add_argument("--rtol", type=float, default=0.05, help="single-seed runs: flag a relative change > RTOL")
    p.add_argument("--limit", type=int, default=40, help="rows printed (all are in compare.csv/.md; default 40)")


def run(args: argparse.Namespace) -> int:
    from bench.report.compare import compare_table, write_compare
    from bench.report.render import table_text

    df, out = write_compare(args.run_a, args.run_b, args.out, k=args.k, rtol=args.rtol)
    flagged = df[df["flagged"]]
    print(f"{len(df)} metrics in both runs; {len(flagged)} moved beyond their seed-to-seed spread")
    print(f"rule: {df.attrs['rule']}")
    if len(flagged):
        print(table_text(compare_table(flagged, args.limit)))
        if len(flagged) > args.limit:
            print(f"... {len(flagged) - args.limit} more in {out / 'compare.md'}")
    print(out / "compare.md")
    return 0
