"""Throughput sweeps: Jacobians per second over models x engines x batch sizes on one device and dtype.

One row per (model, engine, batch size) in the throughput.csv schema (results/README.md). Every row is
recorded: `ok` with the timing, `unsupported` with the engine's reason, `mismatch` when the engine's Jacobian
of the measured model and batch disagrees with the float64 reference (checked before timing, on rows spread
over the batch: such an engine is never timed), `failed` with the error; a failure never stops the sweep.
Besides the Jacobian engines, a sweep times the forward pass (engine `forward`, rate in samples per second:
the yardstick of the Jacobian/forward cost ratio) and JAX's `jit(vmap(jacfwd))` (`jax_jit_vmap_jacfwd`, see
bench/speed/jax_peer.py).

With ``order=2`` the same sweep times the Hessian engines (bench.engines.HESSIAN_ENGINES) instead, rates in
Hessians per second, checked against the float64 reference Hessian, with JAX's `jit(vmap(hessian))`
(`jax_jit_vmap_hessian`) as the peer and forward mode's ideal cost (1 + n_in + n_in (n_in + 1) / 2 forward
passes) as ``flops_per_jac``.

Models are untrained and frozen (eval mode, `requires_grad_(False)`): Jacobians are taken with respect to the
inputs only, as JAX's `jacfwd(f)(x)` does; their cost does not depend on the weights' values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.engines import ENGINES, HESSIAN_ENGINES
from bench.engines.base import UnsupportedEngine, check_engine_name
from bench.engines.coupling import require_batch_independent
from bench.engines.hessians import ideal_passes
from bench.run import envinfo, machine, results
from bench.speed import jax_peer, roofline
from bench.speed.timing import synchronizer, time_interleaved
from bench.speed.verify import Reference
from models import create_model

FORWARD = "forward"  # pseudo-engine: the forward pass alone (rate = samples per second)
LOOP = "loop"  # the forum's per-sample loop: the baseline of the "x loop" ratio
# Engines whose cost grows faster than the batch: timed only up to a batch cap (SweepConfig.max_batch).
SMALL_BATCH_ONLY = {
    LOOP: "the per-sample loop runs a few thousand Jacobians/s whatever the batch (see its rows at smaller batches)",
    "functional_forward": "forward mode over the batch sum pushes B*n_in tangents of the whole batch: memory grows "
    "as B^2 (26.8 GB at B=4096 for the forum MLP)",
}

COLUMNS = results.THROUGHPUT_COLUMNS  # the throughput.csv schema (bench.run.results)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ModelSpec:
    """One model configuration to time: a registered name, its dimensions and factory overrides.

    n_in / n_out None: the factory's defaults (4 -> 4). A row's ``model_config`` is
    ``results.model_config_id`` of the built model's dimensions and these overrides: the key the report
    joins throughput to fidelity on.
    """

    name: str
    n_in: int | None = None
    n_out: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


def as_spec(entry: str | ModelSpec) -> ModelSpec:
    return entry if isinstance(entry, ModelSpec) else ModelSpec(entry)


def create_spec(spec: ModelSpec) -> nn.Module:
    """The default model factory: ``models.create_model`` with the spec's dimensions and overrides."""
    dims = {k: v for k, v in (("n_in", spec.n_in), ("n_out", spec.n_out)) if v is not None}
    return create_model(spec.name, **dims, **dict(spec.overrides))


@dataclass(frozen=True)
class SweepConfig:
    """What one sweep measures; one device and one dtype per sweep (they set TF32 and the peak)."""

    models: tuple[str | ModelSpec, ...] = ("mlp_forum",)  # names (default dimensions) or exact configurations
    engines: tuple[str, ...] = ()  # () = every registered engine
    batch_sizes: tuple[int, ...] = (1, 64, 4096, 65536)
    device: str = "auto"  # cpu | cuda | cuda:1 | auto (cuda if available)
    dtype: str = "float32"
    repeats: int | None = None  # fixed timed repeats; None fits them to budget_s
    budget_s: float = 2.0  # seconds of timed calls per row when repeats is None
    warmup: int = 2  # untimed calls first (torch.compile compiles on the first)
    forward: bool = True  # also time the forward pass (engine "forward")
    jax: bool = True  # also time the JAX peer (unsupported rows where jax is missing)
    allow_tf32: bool = False  # TF32 matmuls on CUDA; off by default, recorded in every row
    measure_peak: bool = True  # time a large matmul for the roofline (about a second); False leaves it NaN
    # largest batch per SMALL_BATCH_ONLY engine (larger: an `unsupported` row saying why)
    max_batch: tuple[tuple[str, int], ...] = ((LOOP, 1024), ("functional_forward", 256))
    seed: int = 0  # inputs and weights
    order: int = 1  # 1: Jacobians (bench.engines.ENGINES); 2: Hessians (HESSIAN_ENGINES, the JAX Hessian peer)

    def __post_init__(self):
        if self.order not in (1, 2):
            raise ValueError(f"order = {self.order}: 1 (Jacobians) or 2 (Hessians)")


def registry(order: int = 1) -> Mapping[str, Any]:
    """The engines a sweep of this derivative order times by default."""
    return ENGINES if order == 1 else HESSIAN_ENGINES


def peer_name(order: int = 1) -> str:
    """The JAX peer's engine name: jit(vmap(jacfwd)) for Jacobians, jit(vmap(hessian)) for Hessians."""
    return jax_peer.ENGINE if order == 1 else jax_peer.HESSIAN_ENGINE


@dataclass(frozen=True)
class Timed:
    """Something a sweep can time: the reason it cannot run, and how to build the call to time."""

    supports: Callable[[nn.Module, torch.device, torch.dtype], str | None]
    prepare: Callable[[nn.Module, torch.Tensor], Callable[[], Any]]  # (model, x) -> call computing the batch


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; a cuda device that is absent is a clear error."""
    dev = torch.device(machine.resolve_device(name))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use cpu or auto")
    return dev


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def model_dims(model: nn.Module) -> tuple[int, int]:
    """(n_in, n_out): the zoo's attributes, else the first and last nn.Linear of a plain module."""
    if hasattr(model, "n_in") and hasattr(model, "n_out"):
        return int(model.n_in), int(model.n_out)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no n_in/n_out attributes and no nn.Linear to read them from")
    return linears[0].in_features, linears[-1].out_features


def model_info(spec: str | ModelSpec, model: nn.Module) -> dict[str, Any]:
    """The model columns of a row: name, family, dimensions, configuration id, params, forward FLOPs of one sample."""
    spec = as_spec(spec)
    count = getattr(model, "param_count", None)
    n_in, n_out = model_dims(model)
    return {
        "model": spec.name,
        "n_in": n_in,
        "n_out": n_out,
        "model_config": results.model_config_id(spec.name, n_in, n_out, spec.overrides),
        "family": getattr(model, "family", type(model).__name__.lower()),
        "params": int(count()) if callable(count) else sum(p.numel() for p in model.parameters()),
        "flops": roofline.forward_flops(model),
    }


def make_inputs(model: nn.Module, batch: int, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """x (batch, n_in) uniform in the model's `input_range` (default [0, 1))."""
    n_in, _ = model_dims(model)
    lo, hi = getattr(model, "input_range", (0.0, 1.0))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n_in, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    return x.to(device=device, dtype=dtype)


def _forward_call(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def call():
        with torch.no_grad():
            return model(x)

    return call


def timed_names(engines: Mapping[str, Any] | None = None, order: int = 1) -> list[str]:
    """Everything a sweep can time: the engines, the forward pass and the JAX peer."""
    return [*(registry(order) if engines is None else engines), FORWARD, peer_name(order)]


def timed_set(names: Sequence[str], cfg: SweepConfig, engines: Mapping[str, Any] | None = None) -> dict[str, Timed]:
    """name -> Timed for the sweep: the chosen engines, then `forward` and the JAX peer if asked for.

    `engines` maps names to objects with `supports(model, device, dtype)` and `fn(model, x)` (default:
    `bench.engines.ENGINES`); unknown names raise UnknownEngine (a KeyError and a ValueError) with close matches.
    """
    if engines is None:
        engines = registry(cfg.order)
    names = list(names) or list(engines)
    for name in names:
        check_engine_name(name, timed_names(engines, cfg.order))
    out: dict[str, Timed] = {}
    for name in names:
        if name in engines:
            eng = engines[name]
            out[name] = Timed(eng.supports, _engine_call(name, eng, cfg.order))
    if FORWARD in names or cfg.forward:
        out[FORWARD] = Timed(lambda m, d, t: None, _forward_call)
    peer = peer_name(cfg.order)
    if peer in names or cfg.jax:
        out[peer] = Timed(jax_peer.supports, jax_peer.prepare if cfg.order == 1 else jax_peer.prepare_hessian)
    return out


def _engine_call(name: str, eng: Any, order: int = 1) -> Callable[[nn.Module, torch.Tensor], Callable[[], Any]]:
    """The call a sweep times: the bare engine, and for batch-sum engines the coupling check that
    ``bench.engines.jacobian`` (``hessian``: of that order) runs before every such call (so a model that mixes
    samples in the measured batch is refused, and the rate is the one users get)."""
    if not getattr(eng, "batch_sum", False):
        return lambda m, x: lambda: eng.fn(m, x)

    def prepare(m: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        def call():
            require_batch_independent(m, x, name, order=order)
            return eng.fn(m, x)

        return call

    return prepare


def _skip_reason(name: str, timed: Timed, model, batch: int, device, dtype, cfg: SweepConfig) -> str | None:
    cap = dict(cfg.max_batch).get(name)
    if cap is not None and batch > cap:
        return f"batch {batch} > max_batch {cap} for {name}: {SMALL_BATCH_ONLY.get(name, 'capped by the sweep')}"
    return timed.supports(model, device, dtype)


def prepare_checked(
    timed: Timed, model: nn.Module, x: torch.Tensor, reference: Reference | None = None
) -> tuple[Callable[[], Any] | None, dict[str, Any] | None]:
    """(the call to time, None), or (None, the row's status columns: `mismatch`, `unsupported` or `failed`).

    With ``reference``, the engine's first call (its warm-up) is checked against it first: an engine whose
    Jacobian disagrees with the float64 reference on the measured model is never timed (status `mismatch`).
    """
    try:
        call = timed.prepare(model, x)
        if reference is not None:
            wrong = reference.mismatch(call())
            if wrong is not None:
                return None, {"status": "mismatch", "error": wrong[:500]}
    except Exception as err:
        return None, _error_row(err, x)
    return call, None


def _error_row(err: Exception, x: torch.Tensor) -> dict[str, Any]:
    if isinstance(err, UnsupportedEngine):  # found out only when run: e.g. torch.compile cannot compile this model
        return {"status": "unsupported", "error": str(err)[:500]}
    if x.device.type == "cuda":  # a failure is a row; the sweep goes on
        torch.cuda.empty_cache()
    return {"status": "failed", "error": f"{type(err).__name__}: {err}".strip()[:500]}


def measure_all(calls: Mapping[str, Callable[[], Any]], x: torch.Tensor, cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """Time the calls of one batch alternately (bench.speed.timing.time_interleaved): name -> timing columns.

    Interleaved, every engine and the JAX peer meet the machine's slow spells alike, so the `x JAX` ratio of
    their medians compares engines, not moments.
    """
    batch = x.shape[0]
    timings = time_interleaved(
        calls, sync=synchronizer(x.device), warmup=cfg.warmup, repeats=cfg.repeats, budget_s=cfg.budget_s
    )
    out = {}
    for name, t in timings.items():
        if isinstance(t, Exception):
            out[name] = _error_row(t, x)
            continue
        med, q25, q75 = t.rate(batch)
        out[name] = {"jac_per_s": med, "jac_per_s_q25": q25, "jac_per_s_q75": q75, "repeats": t.repeats,
                     "status": "ok"}  # fmt: skip
    return out


def measure(
    name: str, timed: Timed, model: nn.Module, x: torch.Tensor, cfg: SweepConfig, reference: Reference | None = None
) -> dict[str, Any]:
    """Time one (engine, model, batch) alone: the timing columns of a row, status `ok`, `mismatch` or `failed`."""
    call, status = prepare_checked(timed, model, x, reference)
    return status if call is None else measure_all({name: call}, x, cfg)[name]


def sweep(
    cfg: SweepConfig,
    *,
    model_factory: Callable[[str], nn.Module] | None = None,
    engines: Mapping[str, Any] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every (model, batch size, engine) of `cfg`; returns rows with every column of COLUMNS.

    Args:
        cfg: what to measure.
        model_factory: ModelSpec -> nn.Module (default `create_spec`: models.create_model).
        engines: name -> engine (default `bench.engines.ENGINES`).
        on_row: called with each row as soon as it is measured (progress output).
    """
    if model_factory is None:
        model_factory = create_spec
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    timed = timed_set(cfg.engines, cfg, engines)
    with roofline.tf32_mode(cfg.allow_tf32):
        common = {
            "device": device.type,
            "device_name": envinfo.device_name(str(device)),
            "dtype": cfg.dtype,
            "tf32": machine.tf32_enabled(str(device)),
            "threads": torch.get_num_threads(),
            "peak_flops": _peak(device, dtype, cfg.allow_tf32) if cfg.measure_peak else math.nan,
            "order": cfg.order,
        }
        rows = []
        for entry in cfg.models:
            for row in _sweep_model(as_spec(entry), model_factory, timed, device, dtype, cfg):
                row = {c: {**common, **row}.get(c, math.nan if c.startswith("jac_per_s") else "") for c in COLUMNS}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def _peak(device: torch.device, dtype: torch.dtype, allow_tf32: bool) -> float:
    try:
        return roofline.peak_flops(device, dtype, allow_tf32=allow_tf32)
    except Exception:  # a missing peak leaves the fraction of the limit undefined, not the sweep
        return math.nan


def _sweep_model(spec: ModelSpec, model_factory, timed: Mapping[str, Timed], device, dtype, cfg: SweepConfig):
    """Rows (without the device columns) of one model configuration: every batch size x every timed thing."""
    model_name = spec.name
    try:
        torch.manual_seed(cfg.seed)
        model = model_factory(spec).to(device=device, dtype=dtype).eval().requires_grad_(False)
        info = model_info(spec, model)
        n_in = model_dims(model)[0]
        if cfg.order == 1:
            info["flops_per_jac"] = roofline.jacobian_flops(model, n_in)
        else:  # forward mode's ideal: the primal, n_in tangents and n_in (n_in + 1) / 2 second-order tangents
            info["flops_per_jac"] = ideal_passes(n_in) * info["flops"]
    except Exception as err:
        for batch in cfg.batch_sizes:
            for name in timed:
                yield {"model": model_name, "engine": name, "batch_size": batch, "status": "failed",
                       "error": f"model: {type(err).__name__}: {err}"}  # fmt: skip
        return
    tolerance = jax_peer.TF32_TOLERANCE if cfg.allow_tf32 and device.type == "cuda" else jax_peer.TOLERANCE[dtype]
    if cfg.order == 2:
        tolerance = max(tolerance, jax_peer.HESSIAN_TOLERANCE[dtype])
    peer = peer_name(cfg.order)
    for batch in cfg.batch_sizes:
        x = make_inputs(model, batch, device, dtype, cfg.seed)
        reference = Reference(model, x, tolerance, cfg.order)
        rows: dict[str, dict[str, Any]] = {}
        calls: dict[str, Callable[[], Any]] = {}
        for name, t in timed.items():
            row = rows[name] = {**info, "engine": name, "batch_size": batch}
            if name == FORWARD:
                row["flops_per_jac"] = info["flops"]  # a forward pass, not a Jacobian
            try:
                reason = _skip_reason(name, t, model, batch, device, dtype, cfg)
            except Exception as err:
                row.update(status="failed", error=f"supports: {type(err).__name__}: {err}")
                continue
            if reason is not None:
                row.update(status="unsupported", error=reason)
                continue
            # the JAX peer checks itself against the same reference while it prepares; the forward pass is no Jacobian
            call, status = prepare_checked(t, model, x, reference if name not in (FORWARD, peer) else None)
            if call is None:
                row.update(status)
            else:
                calls[name] = call
        for name, columns in measure_all(calls, x, cfg).items():
            rows[name].update(columns)
        del calls
        yield from rows.values()
        del x
