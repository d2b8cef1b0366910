"""`python -m bench study pinn`: a question from the field, reproduced end to end with its own report."""

from __future__ import annotations

import argparse

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "study"
HELP = "reproduce a question from the field: pinn = the first forum post (u' = cos x, packed collocation points)"
STUDIES = ("pinn",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.studies.pinn_config import BETAS, StudyConfig

    d = StudyConfig()
    p.add_argument("name", choices=STUDIES, help="pinn: u' = cos x from the derivative loss, packed vs batch axis")
    betas = ",".join(f"{b:g}" for b in BETAS)
    p.add_argument("--betas", default=betas, help=f"value-loss weights, 1 = values only (default {betas})")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help=f"seeds (default {d.seeds})")
    p.add_argument("--points", type=int, default=d.points, help=f"collocation points, a multiple of 8 ({d.points})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"Adam steps per network (default {d.steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    p.add_argument("--out", default="results/study-pinn", metavar="DIR", help="output folder (results/study-pinn)")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from bench.studies import pinn
    from bench.studies.pinn_config import StudyConfig, parse_betas

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: comma-separated integers, e.g. 0,1,2") from None
    cfg = StudyConfig(parse_betas(args.betas), seeds, args.points, args.steps, args.lr)
    # networks of a hundred parameters: one thread is fastest (results/measurements/README.md, "Threads for small
    # networks")
    torch.set_num_threads(1)
    result = pinn.run_study(cfg, progress=lambda cells: tqdm(cells, desc="pinn study", unit="net"))
    paths = pinn.write(result, args.out)
    for line in pinn.summary(result):
        print(line)
    print(f"wrote {paths['report']} and {paths['rows']}")
    return 0
