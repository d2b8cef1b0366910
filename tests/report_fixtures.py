"""A small synthetic results folder with known numbers, written exactly in the results/README.md layout.

No training and no torch: every metric is a closed-form function of (equation, model, variant, beta,
n_train, seed), so tests know the means the report must show. Seeds 0, 1, 2 scale each error by 0.9, 1.0,
1.1, so the mean over the three seeds is exactly the base value (``expected_*`` below).

    python tests/report_fixtures.py /tmp/synthetic-run   # write one to look at
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.run.results import cell_filename, model_config_id

EQUATIONS = {  # name -> (input names, output names, lower, upper)
    "forum4x4": (("x1", "x2", "x3", "x4"), ("f1", "f2", "f3", "f4"), (0.5, 1.0, 0.0, 2.0), (1.5, 3.0, 1.0, 4.0)),
    "gen:smooth:3": (("x1", "x2", "x3"), ("f1", "f2"), (-1.0, -1.0, 0.0), (1.0, 1.0, 2.0)),
}
MODELS = {  # name -> (family, params on forum4x4, value-training 1 - r2_min, value-training Jacobian rel. error)
    "mlp_tanh": ("mlp", 31204, 1e-4, 0.02),
    "mlp_sigmoid": ("mlp", 31204, 2e-4, 0.05),
    "fastkan": ("fastkan", 10342, 5e-5, 0.30),  # the best fit and the worst derivatives
    "efficient_kan": ("efficient_kan", 10200, 1e-4, 0.15),
    "chebykan": ("chebykan", 9960, 3e-4, 0.08),
    "jenn": ("jenn", 10112, 2e-4, 0.12),  # the peer: no Hessian variant, no throughput (not a torch module)
}
SEEDS = (0, 1, 2)
SEED_FACTOR = {0: 0.9, 1: 1.0, 2: 1.1}  # mean over the seeds is exactly 1
N_TRAIN = (256, 1024)  # value training at both sizes; Sobolev at the largest only
SOBOLEV = {0.5: (1.2, 0.5), 1e-3: (2.0, 0.2), 1e-7: (5.0, 0.15)}  # beta -> (value-error, Jacobian-error) factor
HESS_BASE = {"mlp_tanh": 0.1, "mlp_sigmoid": 0.2, "fastkan": 0.8, "efficient_kan": 0.6, "chebykan": 0.3, "jenn": 0.4}
HESSIAN = (0.5, 0.1, "forum4x4")  # the Hessian variant: beta, Hessian weight, its one equation set
HESSIAN_FACTOR = {"value": 1.0, "sobolev": 0.7, "hessian": 0.25}  # Hessian error relative to value training
HESSIAN_JAC_FACTOR = 0.4  # the Hessian variant's Jacobian error relative to value training (Sobolev 0.5: 0.5)
EDGE_BINS = (0.1, 0.2, 0.3, 0.4, 0.5)
EDGE_FACTOR = (3.0, 1.8, 1.2, 1.0, 0.9)  # worse near the boundary
FAILED = ("gen:smooth:3", "efficient_kan", "sobolev", 1e-7, 1024, 2)
FAILED_ERROR = "RuntimeError: loss is NaN at step 412 (Jacobian loss overflow)"
OUTPUT_WEIGHTS = (1.0, 0.5, 0.3, 0.2)  # 1 - r2 per output, relative to 1 - r2_min
ENGINES = ("loop", "vmap_jacrev", "vmap_jacfwd", "forward_tangents", "jax_jit_vmap_jacfwd", "forward")
ENGINE_EFFICIENCY = {"loop": None, "vmap_jacrev": 0.15, "vmap_jacfwd": 0.10, "forward_tangents": 0.30}
ENGINE_EFFICIENCY["forward"] = 0.5 * (1 + 4)  # the forward pass alone, in samples/s: faster than any Jacobian
JAX_EFFICIENCY = 0.45
BATCH_SIZES = (1, 16, 256, 4096, 65536)
DEVICES = {  # device -> (device_name, peak FLOP/s, half-saturation batch size)
    "cpu": ("AMD EPYC 7R13 (synthetic)", 1.6e11, 64),
    "cuda": ("NVIDIA H100 80GB HBM3", 5.16e13, 8192),
}


def cell_id(equation: str, model: str, variant: str, beta: float, n_train: int, seed: int) -> str:
    """The runner's cell id (bench.run.config.Cell.cell_id): the Sobolev beta is part of the variant."""
    tag = variant if variant == "value" else f"sobolev{float(beta)!r}"
    tag += f"_h{HESSIAN[1]!r}" if variant == "hessian" else ""
    return f"{equation}__{model}__{tag}__n{n_train}__s{seed}"


def grid() -> list[tuple[str, str, str, float, int, int]]:
    """(equation, model, variant, beta, n_train, seed) of every cell, the failed one included."""
    cells = []
    for eq in EQUATIONS:
        for model in MODELS:
            for seed in SEEDS:
                cells += [(eq, model, "value", 1.0, n, seed) for n in N_TRAIN]
                cells += [(eq, model, "sobolev", b, max(N_TRAIN), seed) for b in SOBOLEV]
                hess = eq == HESSIAN[2] and MODELS[model][0] != "jenn"  # the peer trains no Hessian variant
                cells += [(eq, model, "hessian", HESSIAN[0], max(N_TRAIN), seed)] if hess else []
    return cells


def expected_value_error(model: str, variant: str = "value", beta: float = 1.0, n_train: int = 1024) -> float:
    """Mean over seeds of 1 - r2_min (test) for a cell configuration (any equation)."""
    base = MODELS[model][2] * (1024 / n_train)
    return base * (SOBOLEV[beta][0] if variant != "value" else 1.0)


def expected_jac_error(model: str, variant: str = "value", beta: float = 1.0, n_train: int = 1024) -> float:
    """Mean over seeds of jac_err_rms (test) for a cell configuration (any equation)."""
    base = MODELS[model][3] * (1024 / n_train) ** 0.5
    return base * {"value": 1.0, "sobolev": SOBOLEV.get(beta, (0, 0))[1], "hessian": HESSIAN_JAC_FACTOR}[variant]


def expected_hess_error(model: str, variant: str = "value", beta: float = 1.0, n_train: int = 1024) -> float:
    """Mean over seeds of hess_err_rms (test) for a cell configuration (any equation)."""
    return HESS_BASE[model] * (1024 / n_train) ** 0.3 * HESSIAN_FACTOR[variant]


def entry_pattern(model: str, n_out: int, n_in: int) -> np.ndarray:
    """Relative per-entry error pattern (n_out, n_in): one clearly worst entry per model."""
    k = sorted(MODELS).index(model)
    pattern = 0.4 + 0.1 * ((np.arange(n_out)[:, None] * 3 + np.arange(n_in)[None, :] * 5 + k) % 7)
    pattern[(k + 1) % n_out, (2 * k) % n_in] = 3.0
    return pattern


def params_of(model: str, equation: str) -> int:
    n_in, n_out = len(EQUATIONS[equation][0]), len(EQUATIONS[equation][1])
    return MODELS[model][1] + 10 * (n_in + n_out - 8)


def _cell_rows(eq: str, model: str, variant: str, beta: float, n_train: int, seed: int) -> list[dict]:
    inputs, outputs, _, _ = EQUATIONS[eq]
    f = SEED_FACTOR[seed]
    value_err = expected_value_error(model, variant, beta, n_train) * f
    jac = expected_jac_error(model, variant, beta, n_train) * f
    rows: list[dict] = []

    def add(split: str, metric: str, value: float, output: str = "", input: str = "", bin: float = np.nan) -> None:
        rows.append(dict(split=split, metric=metric, output=output, input=input, bin=bin, value=value))

    for split, s in (("train", 0.8), ("test", 1.0)):
        for o, w in zip(outputs, OUTPUT_WEIGHTS, strict=False):
            add(split, "r2", 1.0 - value_err * s * w, output=o)
            add(split, "rmse", float(np.sqrt(value_err * s * w)), output=o)
        add(split, "r2_min", 1.0 - value_err * s)
        for metric, m in (("rms", 1.0), ("median", 0.8), ("p90", 2.5), ("max", 8.0)):
            add(split, f"jac_err_{metric}", jac * s * m)
        add(split, "jac_sign_agree", 1.0 - min(jac * s, 1.0) / 2)
    pattern = entry_pattern(model, len(outputs), len(inputs))
    for i, o in enumerate(outputs):
        for j, x in enumerate(inputs):
            add("test", "jac_entry_nrmse", jac * pattern[i, j], output=o, input=x)
    if eq == "forum4x4":  # its one structural zero, df4/dx3: the KANs invent a derivative there more often
        share = 0.4 if MODELS[model][0] != "mlp" else 0.1
        add("test", "jac_entry_spurious", share, output="f4", input="x3")
        add("test", "jac_spurious", share)
        add("test", "jac_spurious_max", 10 * share)
    hess = expected_hess_error(model, variant, beta, n_train) * f
    for metric, m in (("rms", 1.0), ("median", 0.7), ("p90", 3.0), ("max", 10.0)):
        add("test", f"hess_err_{metric}", hess * m)
    for i, o in enumerate(outputs):
        for j, a in enumerate(inputs):
            for k in range(j, len(inputs)):
                add(
                    "test",
                    "hess_entry_nrmse",
                    hess * (0.5 + ((i + j + 2 * k) % 5) / 2),
                    output=o,
                    input=f"{a},{inputs[k]}",
                )
        add("test", "lap_nrmse", hess * (0.8 + 0.1 * i), output=o)
    edge_scale = 2.0 if MODELS[model][0] == "fastkan" else 1.0  # the RBF KAN degrades most near the boundary
    for b, e in zip(EDGE_BINS, EDGE_FACTOR, strict=True):
        add("test", "jac_err_by_edge", jac * (1 + (e - 1) * edge_scale), bin=b)
        add("test", "hess_err_by_edge", hess * (1 + (e - 1) * edge_scale), bin=b)
    add("", "denorm_check", 1e-13)
    add("", "train_seconds", 10.0 + params_of(model, eq) / 1000 * f)
    add("", "train_steps", 3000.0)
    improving = MODELS[model][0] == "fastkan" and variant == "value" and seed < 2  # FastKAN had not finished
    add("", "loss_drop_last10", 0.2 if improving else 0.01)
    add("", "still_improving", 1.0 if improving else 0.0)
    return rows


def metrics_table(run_id: str) -> pd.DataFrame:
    """The metrics.csv of the synthetic run (one failed cell included)."""
    frames = []
    for eq, model, variant, beta, n_train, seed in grid():
        meta = dict(
            run_id=run_id,
            cell_id=cell_id(eq, model, variant, beta, n_train, seed),
            equation=eq,
            model=model,
            family=MODELS[model][0],
            n_in=len(EQUATIONS[eq][0]),
            n_out=len(EQUATIONS[eq][1]),
            model_config=model_config_id(model, len(EQUATIONS[eq][0]), len(EQUATIONS[eq][1])),
            params=params_of(model, eq),
            flops=2 * params_of(model, eq),
            seed=seed,
            variant=variant,
            beta=beta,
            n_train=n_train,
            hess_weight=HESSIAN[1] if variant == "hessian" else 0.0,
        )
        if (eq, model, variant, beta, n_train, seed) == FAILED:
            rows = [dict(split="", metric="failed", output="", input="", bin=np.nan, value=np.nan)]
            status, error = "failed", FAILED_ERROR
        else:
            rows, status, error = _cell_rows(eq, model, variant, beta, n_train, seed), "ok", ""
        frame = pd.DataFrame([{**meta, **r, "status": status, "error": error} for r in rows])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def jacobian_table(eq: str, model: str, n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per-sample test Jacobians in the forum layout: x1..xn, then df{i}_dx{j}, df{i}_dx{j}_true, their norms,
    then the Hessian entries d2f{i}_dx{j}_dx{k} (j <= k) with their _true twins and norms."""
    inputs, outputs, lower, upper = EQUATIONS[eq]
    rng = np.random.default_rng(sorted(MODELS).index(model) + 10 * seed)
    lo, hi = np.array(lower), np.array(upper)
    u = rng.random((n, len(inputs)))
    x = lo + (hi - lo) * u
    edge = np.minimum(u, 1 - u).min(axis=1)  # normalized distance to the boundary
    pattern = entry_pattern(model, len(outputs), len(inputs))
    jac = expected_jac_error(model) * SEED_FACTOR[seed]
    table = {name: x[:, j] for j, name in enumerate(inputs)}
    for i in range(len(outputs)):
        for j in range(len(inputs)):
            true = (j + 1) * np.cos((i + 1) * x[:, j]) + 0.5 * (i - j)
            scale = np.std(true) + 1e-12
            noise = rng.normal(size=n) * jac * pattern[i, j] * scale * (1 + 2 * (edge < 0.1))
            table[f"df{i + 1}_dx{j + 1}"] = true + noise
            table[f"df{i + 1}_dx{j + 1}_true"] = true
    table["jac_norm_true"] = np.ones(n)  # (not used by the report: any positive numbers)
    table["jac_norm_err"] = np.full(n, jac)
    hess = expected_hess_error(model) * SEED_FACTOR[seed]
    for i in range(len(outputs)):
        for j in range(len(inputs)):
            for k in range(j, len(inputs)):
                true = -(i + 1) * (j + 1) * np.sin((i + 1) * x[:, j]) * (j == k) + 0.1 * (i + j - k)
                noise = rng.normal(size=n) * hess * (0.5 + ((i + j + 2 * k) % 5) / 2) * (np.std(true) + 0.1)
                table[f"d2f{i + 1}_dx{j + 1}_dx{k + 1}"] = true + noise
                table[f"d2f{i + 1}_dx{j + 1}_dx{k + 1}_true"] = true
    table["hess_norm_true"] = np.ones(n)
    table["hess_norm_err"] = np.full(n, hess)
    return pd.DataFrame(table)


def history_table(model: str, seed: int, steps: int = 3000, every: int = 100) -> pd.DataFrame:
    """history/<cell>.csv: losses decaying to a floor; FastKAN's still falling at the end of the budget."""
    step = np.arange(every, steps + 1, every)
    rate = 0.3 if MODELS[model][0] == "fastkan" else 3.0  # e-foldings over the budget
    val = 1e-3 * SEED_FACTOR[seed] * (1 + 50 * np.exp(-rate * step / steps))
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
    return pd.DataFrame({"step": step, "seconds": step * 0.01, "lr": lr, "loss": 0.9 * val, "val_loss": val})


def throughput_table() -> pd.DataFrame:
    """throughput.csv: cpu and cuda rows, every engine, the JAX peer for the MLPs only, and forward-pass rows.

    Only the forum4x4 configurations (4 -> 4) are measured: gen:smooth:3's 3 -> 2 networks have no speed.
    """
    rows = []
    n_in = len(EQUATIONS["forum4x4"][0])
    n_out = len(EQUATIONS["forum4x4"][1])
    for model, (family, _, _, _) in MODELS.items():
        if family == "jenn":  # a peer is not a torch module: no engine measures it (trained_configurations)
            continue
        params = params_of(model, "forum4x4")
        flops = 2 * params
        flops_per_jac = (1 + n_in) * flops
        for device, (device_name, peak, half) in DEVICES.items():
            limit = peak / flops_per_jac
            for engine in ENGINES:
                base = dict(model=model, family=family, params=params, flops=flops, engine=engine, device=device)
                base.update(n_in=n_in, n_out=n_out, model_config=model_config_id(model, n_in, n_out))
                base.update(device_name=device_name, dtype="float32", tf32=False, repeats=5)
                base.update(flops_per_jac=flops if engine == "forward" else flops_per_jac, peak_flops=peak)
                if engine.startswith("jax") and family != "mlp":
                    rows.append({**base, "batch_size": np.nan, "jac_per_s": np.nan, "jac_per_s_q25": np.nan})
                    rows[-1].update(jac_per_s_q75=np.nan, status="unsupported", error=f"no JAX port of {family}")
                    continue
                if engine == "forward_tangents" and family == "efficient_kan":
                    rows.append({**base, "batch_size": np.nan, "jac_per_s": np.nan, "jac_per_s_q25": np.nan})
                    rows[-1].update(jac_per_s_q75=np.nan, status="unsupported", error="B-spline basis is 2-D only")
                    continue
                eff = JAX_EFFICIENCY if engine.startswith("jax") else ENGINE_EFFICIENCY[engine]
                for bs in BATCH_SIZES:
                    if engine == "loop":
                        if bs > 4096:
                            continue
                        rate = 700.0 if device == "cpu" else 300.0
                    else:
                        rate = eff * limit * bs / (bs + half)
                    rows.append({**base, "batch_size": bs, "jac_per_s": rate, "jac_per_s_q25": 0.95 * rate})
                    rows[-1].update(jac_per_s_q75=1.05 * rate, status="ok", error="")
    return pd.DataFrame(rows)


def make_run(root: Path, run_id: str = "synthetic", throughput: bool = True, jacobians: bool = True) -> Path:
    """Write the synthetic run folder ``root/run_id`` and return its path."""
    run = Path(root) / run_id
    (run / "cells").mkdir(parents=True, exist_ok=True)
    metrics = metrics_table(run_id)
    metrics.to_csv(run / "metrics.csv", index=False)
    for cid, cell in metrics.groupby("cell_id", sort=False):
        cell.to_csv(run / "cells" / f"{cell_filename(cid)}.csv", index=False)
    if jacobians:
        (run / "jacobians").mkdir(exist_ok=True)
        for eq in EQUATIONS:
            for model in MODELS:
                cid = cell_id(eq, model, "value", 1.0, max(N_TRAIN), 0)
                jacobian_table(eq, model).to_csv(run / "jacobians" / f"{cell_filename(cid)}.csv", index=False)
    (run / "history").mkdir(exist_ok=True)
    for model in MODELS:  # training histories of forum4x4's reference cells: FastKAN still falling at the end
        for seed in SEEDS:
            cid = cell_id("forum4x4", model, "value", 1.0, max(N_TRAIN), seed)
            history_table(model, seed).to_csv(run / "history" / f"{cell_filename(cid)}.csv", index=False)
    if throughput:
        throughput_table().to_csv(run / "throughput.csv", index=False)
    env = dict(
        jacbench_commit="0123abc",
        torch="2.13.0",
        python="3.11.7",
        platform="Linux-6.8-x86_64",
        device="cuda",
        device_name="NVIDIA H100 80GB HBM3",
        dtype="float32",
        tf32=False,
        torch_threads=16,
        cpu_count=16,
        start_time="2025-01-01T00:00:00Z",
    )
    (run / "env.json").write_text(json.dumps(env, indent=2))
    config = dict(
        profile="synthetic",
        grid=dict(equations=list(EQUATIONS), models=list(MODELS), seeds=list(SEEDS), n_train=list(N_TRAIN)),
        sobolev_betas=list(SOBOLEV),
        hess_weights=[0.0, HESSIAN[1]],
        train=dict(optimizer="adamw", lr=1e-3, steps=3000, batch_size=None),
    )
    (run / "config.json").write_text(json.dumps(config, indent=2))
    return run


_BUILT: dict[str, Path] = {}


def built_run(tmp_path_factory) -> Path:
    """The synthetic run with its report rendered, built once per test session (rendering takes seconds)."""
    if "run" not in _BUILT:
        from bench.report import build_report

        run = make_run(tmp_path_factory.mktemp("report"))
        build_report(run)
        _BUILT["run"] = run
    return _BUILT["run"]


if __name__ == "__main__":
    print(make_run(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/jacbench-synthetic")))
