"""`python -m bench fit`: retrain or fine-tune your own model on your data with its derivatives, save it in the
format you loaded, and evaluate it before and after (bench.fidelity.refit)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.evaluate import layers_arg, model_args

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "fit"
HELP = ("retrain or fine-tune your model (values, Sobolev or Hessian loss) on your data, save it as a state_dict "
        "with its Max/Min file, and compare its derivatives before and after")  # fmt: skip


def _lrs(text: str) -> tuple[float, ...]:
    try:
        lrs = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lrs {text!r}: comma-separated learning rates, e.g. 1e-3,3e-3") from None
    if not lrs or min(lrs) <= 0:
        raise argparse.ArgumentTypeError(f"--lrs {text!r}: at least one positive learning rate")
    return lrs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name (a zoo name or a plugin's)")
    p.add_argument("--layers", type=layers_arg, help="all layer widths, e.g. 4,64,64,4")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="another factory option, e.g. --model-arg grid_size=5; repeatable")  # fmt: skip
    p.add_argument("--checkpoint", help="your state_dict: fine-tune from its weights (without it: train a fresh model)")
    p.add_argument("--data", help="CSV of your samples: inputs x1..xn, outputs if you have them (the targets)")
    p.add_argument("--equation", help="equation set to take derivatives from (e.g. forum4x4), or data:FILE.csv for "
                   "a file with its own d<output>_d<input> columns; default data:<--data>")  # fmt: skip
    p.add_argument("--scaling", required=True, help="minmax:FILE (the Max/Min CSV your model uses) or none")
    p.add_argument("--loss", default="sobolev", choices=("value", "sobolev", "hessian"),
                   help="value: values; sobolev: values and Jacobians (default); hessian: and Hessians")  # fmt: skip
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps per learning rate (default 2000)")
    p.add_argument("--lrs", type=_lrs, default=(1e-3, 3e-3, 1e-2),
                   help="candidate learning rates, lowest validation loss wins (default 1e-3,3e-3,1e-2)")  # fmt: skip
    p.add_argument("--val-fraction", type=float, default=0.2, help="rows held out to choose the lr (default 0.2)")
    p.add_argument("--n", type=int, default=1000, help="points to sample without --data (default 1000)")
    p.add_argument("--eval-n", type=int, default=1000,
                   help="fresh points of the equation set to evaluate before and after on (default 1000)")  # fmt: skip
    p.add_argument("--sampler", default="lhs", help="lhs | sobol | uniform (default lhs)")
    p.add_argument("--seed", type=int, default=0, help="split, mini-batch and sampling seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="training dtype")
    p.add_argument("--out", default="fitted", metavar="DIR", help="output folder (default ./fitted)")


def run(args: argparse.Namespace) -> int:
    import torch

    import equations
    from bench.fidelity import diagnose, refit
    from bench.fidelity import evaluate as E
    from equations.csvio import CsvFormatError
    from equations.datafile import DataSet

    if args.equation is None and args.data is None:
        raise refit.FitError("give --data FILE.csv (your samples), --equation SET, or both")
    try:
        eq = equations.get(args.equation or f"data:{args.data}")
    except CsvFormatError as err:
        if args.equation is not None:
            raise
        raise refit.FitError(
            f"{err}\n--data without --equation trains on the file's own d<output>_d<input> columns; without them, "
            "give --equation SET to take the derivatives from an equation set"
        ) from None
    data = None if isinstance(eq, DataSet) else args.data
    overrides = model_args(args.model_arg)
    if args.checkpoint:
        start = E.load_model(args.model, eq, args.checkpoint, args.layers, overrides)
    else:
        start = E.build_model(args.model, eq, args.layers, overrides)
    scaler = E.scaler_from_spec(args.scaling, eq)
    claimed = E.minmax_from_spec(args.scaling, eq)
    dtype = getattr(torch, args.dtype)
    # sampled training points (no --data) use seed + 1: the evaluation uses evaluate's own points (seed)
    ds = refit.training_set(eq, data, args.n, args.sampler, args.seed + 1, args.loss)
    if isinstance(eq, DataSet):
        where = "its held-out validation rows"
    else:
        where = f"{args.eval_n} fresh points of {eq.name}"
    print(f"fit: {args.model} on {len(ds)} rows of {eq.name} ({args.loss} loss, {args.steps} steps per learning "
          f"rate {', '.join(f'{v:g}' for v in args.lrs)}); evaluated on {where}")  # fmt: skip
    result = refit.refit(start, ds, scaler, eq, loss=args.loss, steps=args.steps, lrs=args.lrs,
                         val_fraction=args.val_fraction, seed=args.seed, dtype=dtype)  # fmt: skip
    if isinstance(eq, DataSet):
        test, y_file = refit.rows_of(ds, result.val_rows), None
    else:
        test, y_file = E.load_data(eq, None, args.eval_n, args.sampler, args.seed)  # what evaluate --n uses
    out = Path(args.out)
    path = refit.save(result.model, out, args.scaling)
    before = None
    if args.checkpoint:
        before = E.evaluate(start, scaler, eq, test, args.model, dtype, "auto", y_file, claimed)
    after = E.evaluate(result.model, scaler, eq, test, args.model, dtype, "auto", y_file, claimed)
    E.write_outputs(after, out / "evaluation")
    chosen = ", ".join(f"lr {t.lr:g}: {t.val_loss:.3g}" for t in result.trials)
    notes = "".join(f"; {n}" for n in sorted({t.note for t in result.trials if t.note}))
    print(f"validation loss per learning rate: {chosen}; kept lr {result.result.lr:g} "
          f"({result.result.steps} steps, {result.result.seconds:.1f} s){notes}")  # fmt: skip
    print(*refit.before_after_lines(before, after), sep="\n")
    print("Diagnosis of the new model:")
    for line in diagnose.diagnose(after):
        print(line)
    print(f"wrote {path} (a state_dict with your model's keys) and {out / 'evaluation'}; load it as before: "
          f"model.load_state_dict(torch.load('{path}'))")  # fmt: skip
    return 0
