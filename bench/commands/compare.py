"""`python -m bench compare RUN_A RUN_B`: fidelity metrics that moved beyond seed noise, throughput beyond a ratio."""

from __future__ import annotations

import argparse

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "compare"
HELP = (
    "compare two runs: fidelity metrics by Welch's t-test on the seeds with a false-discovery-rate correction, "
    "throughput by ratio"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", metavar="RUN_A", help="the baseline run folder")
    p.add_argument("run_b", metavar="RUN_B", help="the run to check against it (e.g. results/latest)")
    p.add_argument(
        "--out", metavar="DIR",
        help="where compare.csv, compare_throughput.csv and compare.md go (default: <RUN_B's parent>/"
        "compare-<A>-vs-<B>/; neither run folder is written)",
    )  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.05, help="false-discovery rate of the flags (default 0.05)")
    p.add_argument(
        "--speed-tol", type=float, default=0.10, help="flag a throughput ratio B/A beyond 1 ± this (default 0.10)"
    )
    p.add_argument("--limit", type=int, default=40, help="rows printed (all are in compare.csv/.md; default 40)")


def run(args: argparse.Namespace) -> int:
    from bench.report.compare import compare_table, rule_text, speed_table, write_compare
    from bench.report.render import table_text

    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha {args.alpha}: a false-discovery rate in (0, 1), e.g. 0.05")
    df, speed, out = write_compare(args.run_a, args.run_b, args.out, alpha=args.alpha, speed_tol=args.speed_tol)
    warning = df.attrs["version_warning"]
    if warning:
        print(warning)
    fid = df[df["kind"] == "fidelity"]
    flagged = fid[fid["flagged"]]
    untestable = int((fid["rule"].str.startswith("untestable")).sum())
    print(f"{len(fid)} fidelity metrics in both runs; {len(flagged)} flagged; {untestable} untestable (< 2 seeds)")
    print(f"rule: {rule_text(args.alpha)}")
    if len(flagged):
        print(table_text(compare_table(flagged, args.limit)))
        if len(flagged) > args.limit:
            print(f"... {len(flagged) - args.limit} more in {out / 'compare.md'}")
    moved = speed[speed["flagged"]]
    if len(speed):
        print(f"throughput: {len(speed)} rows in both runs; {len(moved)} moved beyond 1 ± {args.speed_tol:g}")
        if len(moved):
            print(table_text(speed_table(moved, args.limit)))
    print(out / "compare.md")
    return 0
