"""`python -m bench evaluate`: your trained checkpoint against an equation set's exact Jacobian, with a diagnosis."""

from __future__ import annotations

import argparse

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "evaluate"
HELP = "load your trained model (state_dict) and measure its fit and Jacobians in physical units, with a diagnosis"


def layers_arg(text: str) -> list[int]:
    try:
        widths = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r}: comma-separated widths, e.g. 4,30,30,4") from None
    if len(widths) < 2 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"--layers {text!r}: at least input and output width, all >= 1")
    return widths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name: fastkan, efficient_kan, mlp_sigmoid, ...")
    p.add_argument("--layers", type=layers_arg, help="all layer widths, e.g. 4,30,30,4 (FastKAN([4, 30, 30, 4]))")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="another factory option, e.g. --model-arg grid_size=5; repeatable")  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="the state_dict file (torch.save(model.state_dict(), path))")
    p.add_argument("--equation", required=True, help="equation set the model approximates, e.g. forum4x4")
    p.add_argument(
        "--scaling",
        required=True,
        help="minmax:FILE = x_n = (x - Min) / (Max - Min) for inputs and outputs from the Max/Min CSV the model was "
        "trained with (the model maps normalized inputs to normalized outputs); none = physical units",
    )
    p.add_argument("--data", help="CSV of inputs x1..xn (outputs optional); default: --n sampled points")
    p.add_argument("--n", type=int, default=1000, help="points to sample without --data (default 1000)")
    p.add_argument("--sampler", default="lhs", help="lhs | sobol | uniform (default lhs)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="evaluation dtype")
    p.add_argument("--engine", default="auto", help="Jacobian engine (default: the fastest that supports the model)")
    p.add_argument("--out", default="evaluation", metavar="DIR", help="output folder (default ./evaluation)")


def model_args(pairs: list[str]) -> dict:
    from bench.run.config import parse_value

    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-arg {pair!r}: expected KEY=VALUE, e.g. grid_size=5")
        out[key.strip()] = parse_value(text)
    return out


def fit_command(args: argparse.Namespace) -> str:
    """The `python -m bench fit` command that fine-tunes this model on its derivatives, with the user's arguments."""
    parts = ["python -m bench fit", f"--model {args.model}"]
    if args.layers:
        parts.append(f"--layers {','.join(map(str, args.layers))}")
    parts += [f"--model-arg {a}" for a in args.model_arg]
    parts += [f"--checkpoint {args.checkpoint}", f"--equation {args.equation}", f"--scaling {args.scaling}"]
    if args.data:
        parts.append(f"--data {args.data}")
    return " ".join([*parts, "--loss sobolev", "--out fitted"])


def run(args: argparse.Namespace) -> int:
    import torch

    import equations
    from bench.fidelity import diagnose
    from bench.fidelity import evaluate as E

    eq = equations.get(args.equation)
    model = E.load_model(args.model, eq, args.checkpoint, args.layers, model_args(args.model_arg))
    scaler = E.scaler_from_spec(args.scaling, eq)
    ds, y_file = E.load_data(eq, args.data, args.n, args.sampler, args.seed)
    claimed = E.minmax_from_spec(args.scaling, eq)
    ev = E.evaluate(model, scaler, eq, ds, args.model, getattr(torch, args.dtype), args.engine, y_file, claimed)
    out = E.write_outputs(ev, args.out)
    for line in diagnose.diagnose(ev, remedy=fit_command(args)):
        print(line)
    print(f"wrote {out / 'jacobian_results.csv'}, {out / 'predictions.csv'} and {out / 'metrics.csv'}")
    return 0
