"""`python -m bench throughput`: Jacobians per second of every engine (and JAX) on one device, as a table."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Lazy imports: what this command runs is imported inside its functions. `python -m bench` builds every
# command's parser on each call, and `report` must run without torch (bench/cli.py).

NAME = "throughput"
HELP = "measure Jacobians/s per model, engine and batch size (with the forum loop and JAX) -> throughput.csv"

CPU_BATCHES = "1,64,4096,65536"
CUDA_BATCHES = "1,64,4096,65536,1048576"


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(float(s)) for s in _names(text))  # 1e6 and 2**20 written out both work
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-sizes {text!r}: comma-separated integers, e.g. 1,64,4096") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--batch-sizes {text!r}: every size must be >= 1")
    return sizes


def _caps(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return tuple((k.strip(), int(v)) for k, v in (item.split("=") for item in _names(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-batch {text!r}: engine=batch pairs, e.g. loop=1024") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models", type=_names, default=None,
        help="comma-separated model names or patterns (mlp_*), at their default 4 -> 4 configuration (default "
        "mlp_forum); with --from-run, keeps only the run's configurations of these models",
    )  # fmt: skip
    p.add_argument(
        "--from-run", metavar="RUN_DIR",
        help="measure exactly the model configurations a run trained (dimensions of each equation set, "
        "--match-params sizes, model overrides), so its report can show their speed; --out defaults to "
        "RUN_DIR/throughput.csv",
    )  # fmt: skip
    p.add_argument(
        "--engines",
        type=_names,
        default=(),
        help="comma-separated engine names or patterns, e.g. 'vmap*' (default: all)",
    )
    p.add_argument(
        "--batch-sizes", type=_sizes, default=None, help=f"default {CPU_BATCHES} on cpu, {CUDA_BATCHES} on cuda"
    )
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (cuda if available)")
    p.add_argument(
        "--dtype", default=None, choices=("float32", "float64"), help="default float32; with --from-run, the run's"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (default: fit --budget-s)")
    p.add_argument("--budget-s", type=float, default=2.0, help="seconds of timed calls per row (default 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--jax", action=argparse.BooleanOptionalAction, default=True, help="time the JAX peer")
    p.add_argument("--forward", action=argparse.BooleanOptionalAction, default=True, help="time the forward pass")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (off by default; recorded)")
    p.add_argument(
        "--max-batch",
        type=_caps,
        default=None,
        help="largest batch of the engines whose cost grows faster than the batch "
        "(default: bench.speed.sweep.SweepConfig.max_batch, loop and functional_forward capped)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=None,
        help="CSV path (default results/<time>-throughput/throughput.csv with env.json; with --from-run, the run's "
        "throughput.csv)",
    )  # fmt: skip
    p.add_argument("--append", action="store_true", help="add the rows to an existing --out file")
    p.add_argument(
        "--auto-table",
        default=None,
        metavar="PATH",
        help="the engine table `auto` reads, refreshed with this sweep's rates (default $JACBENCH_AUTO_TABLE or "
        "~/.cache/jacbench/auto_table.csv; the shipped defaults are bench/engines/auto_table.csv)",
    )
    p.add_argument("--no-auto-table", action="store_true", help="leave the engine table of `auto` as it is")
    p.add_argument(
        "--order", type=int, choices=(1, 2), default=1,
        help="1: Jacobians/s (default); 2: Hessians/s of the Hessian engines, with JAX jit(vmap(hessian)) as the "
        "peer, written to hessian_throughput.csv",
    )  # fmt: skip


def expand_models(names: tuple[str, ...]) -> tuple[str, ...]:
    """Model names and fnmatch patterns (`mlp_*`), expanded as `run` does: a pattern that matches nothing or
    an unknown name is a ConfigError with close names."""
    from bench.run.config import expand_models as expand

    return expand(names)


def expand_engines(names: tuple[str, ...], order: int = 1) -> tuple[str, ...]:
    """Engine names and fnmatch patterns (`vmap*`, `compiled_*`) over the engines of that derivative order,
    `forward` and the JAX peer; () stays () (every engine). A pattern that matches nothing or an unknown name is
    a ConfigError."""
    from bench.engines.base import check_engine_name
    from bench.run.config import expand_names, fnmatch_lister
    from bench.speed.sweep import timed_names

    known = timed_names(order=order)
    return expand_names(names, fnmatch_lister(known), lambda n: check_engine_name(n, known), "engine") if names else ()


def run_specs(run_dir: str, names: tuple[str, ...] | None):
    """The model configurations a run trained (its config.json), optionally only those of ``names``, and the
    run's config."""

    from bench.fidelity.cell import trained_configurations
    from bench.run import results, runner
    from bench.run.config import Config, ConfigError
    from bench.speed import sweep as throughput

    folder = results.resolve_run_dir(run_dir)
    cfg = Config.from_dict(json.loads((folder / "config.json").read_text()))
    runner.load_plugins(cfg.run.plugins)
    specs = [throughput.ModelSpec(m, n_in, n_out, kw) for m, n_in, n_out, kw in trained_configurations(cfg)]
    if names is not None:
        keep = set(expand_models(names))
        specs = [s for s in specs if s.name in keep]
        if not specs:
            raise ConfigError(
                f"--models {','.join(names)}: {folder} trained none of them ({', '.join(cfg.grid.models)})"
            )
    return tuple(specs), cfg


def config_from_args(args: argparse.Namespace):
    """The sweep's SweepConfig from the parsed arguments (imports torch: only when the command runs)."""
    from bench.speed import sweep as throughput

    device = throughput.resolve_device(args.device)
    sizes = args.batch_sizes or _sizes(CUDA_BATCHES if device.type == "cuda" else CPU_BATCHES)
    dtype = args.dtype or "float32"
    if getattr(args, "from_run", None):
        models, run_cfg = run_specs(args.from_run, args.models)
        if args.dtype is None:  # the networks as the run trained and evaluated them
            dtype = run_cfg.run.dtype
    else:
        models = expand_models(args.models or ("mlp_forum",))
    return throughput.SweepConfig(
        models=models,
        engines=expand_engines(args.engines, getattr(args, "order", 1)),
        batch_sizes=sizes,
        device=str(device),
        dtype=dtype,
        repeats=args.repeats,
        budget_s=args.budget_s,
        warmup=args.warmup,
        forward=args.forward,
        jax=args.jax,
        allow_tf32=args.tf32,
        max_batch=args.max_batch or throughput.SweepConfig.max_batch,
        seed=args.seed,
        order=getattr(args, "order", 1),
    )


def _progress(row: dict) -> None:
    value = f"{row['jac_per_s']:.3g}/s" if row["status"] == "ok" else f"{row['status']}: {row['error'][:90]}"
    print(
        f"  {row['model_config'] or row['model']} B={row['batch_size']} {row['engine']}: {value}",
        file=sys.stderr,
        flush=True,
    )


def _fmt(v: float, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(rows: list[dict], order: int = 1) -> str:
    """The sweep as text: one block per (model, batch size), engines fastest first."""
    from bench.speed import sweep as throughput
    from bench.speed import table

    peer = throughput.peer_name(order)
    unit, what = ("jac/s", "Jacobians") if order == 1 else ("hess/s", "Hessians")
    df = table.summary(rows, peer)
    lines = []
    for (model, batch), block in df.groupby(["model_config", "batch_size"], sort=False):
        lines.append(f"\n{model}  batch {batch}")
        lines.append(
            f"  {'engine':<28}{unit:>11}{'[q25, q75]':>22}{'x loop':>9}{'x JAX':>8}{'roofline':>9}{'cost/fwd':>9}"
        )
        for _, r in block.sort_values("jac_per_s", ascending=False, na_position="last").iterrows():
            if r.status != "ok":
                lines.append(f"  {r.engine:<28}{r.status}: {r.error[:100]}")
                continue
            spread = f"[{r.jac_per_s_q25:.3g}, {r.jac_per_s_q75:.3g}]"
            lines.append(
                f"  {r.engine:<28}{r.jac_per_s:>11.3g}{spread:>22}{_fmt(r.x_loop, '>9.3g'):>9}"
                f"{_fmt(r.x_jax, '>8.2f'):>8}{_fmt(r.roofline, '>9.1%'):>9}{_fmt(r.jac_over_fwd, '>9.2f'):>9}"
            )
        ours = block[(block.status == "ok") & ~block.engine.isin([throughput.FORWARD, peer])]
        if len(ours):
            b = ours.loc[ours.jac_per_s.idxmax()]
            lines.append(
                f"  best jacbench engine: {b.engine}: {_fmt(b.x_loop, '.3g') or '-'} x loop, "
                f"{_fmt(b.x_jax, '.2f') or '-'} x JAX, "
                f"{what} cost {_fmt(b.jac_over_fwd, '.2f') or '-'} forward passes"
                + (f" (forward mode's ideal: {_fmt(b.ideal_over_fwd, '.0f')})" if order == 2 else "")
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch  # here, not at the top: `python -m bench report` builds this parser and must stay torch-free

    from bench.run import envinfo, results
    from bench.speed import jax_peer, table
    from bench.speed import sweep as throughput

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    name = "throughput.csv" if cfg.order == 1 else "hessian_throughput.csv"
    default = Path("results") / results.new_run_id("throughput") / name
    if args.from_run:
        default = results.resolve_run_dir(args.from_run) / name
    out = Path(args.out or default)
    print(f"throughput sweep on {cfg.device}, {cfg.dtype}, {torch.get_num_threads()} torch threads, "
          f"{jax_peer.version()}; writing {out}", file=sys.stderr)  # fmt: skip
    rows = throughput.sweep(cfg, on_row=_progress)
    table.write_csv(rows, out, append=args.append)
    if not args.no_auto_table and cfg.order == 1 and (args.auto_table or not args.from_run):
        # a run's networks are resized (--match-params, overrides): not the zoo's configurations auto looks up
        from bench.engines import auto

        n = auto.refresh(rows, args.auto_table)
        print(f"engine 'auto' now follows {n} measured rates ({args.auto_table or auto.user_table()})", file=sys.stderr)
    env = out.parent / "env.json"
    if not env.exists():  # inside a run folder, the run's own env.json stays
        results.write_json(env, envinfo.collect_env(cfg.device, cfg.dtype, torch.get_num_threads()))
    first = rows[0] if rows else {}
    print(
        f"device {first.get('device_name', cfg.device)}, {cfg.dtype}, TF32 {'on' if first.get('tf32') else 'off'}, "
        f"{first.get('threads')} threads, peak {first.get('peak_flops', math.nan):.3g} FLOP/s (matmul); "
        f"rates are {'Jacobians' if cfg.order == 1 else 'Hessians'}/s (forward: samples/s), median over repeats"
    )
    print(format_table(rows, cfg.order))
    print(f"\nwrote {len(rows)} rows to {out}")
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        print(f"failed: {r['model']} {r['engine']} B={r['batch_size']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
