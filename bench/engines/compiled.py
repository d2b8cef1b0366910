"""`torch.compile` variants of the batched engines.

Compilation happens on the first call for a model (tens of seconds on CPU) and is cached per model instance.
When compilation fails for a model (torch 2.13 cannot compile `vmap(jacfwd)` through LayerNorm, for example),
the engine raises UnsupportedEngine with torch's reason instead of crashing, and `supports` reports that reason
for that model type, device and dtype from then on. Compiled engines do not keep the graph (create_graph).
"""

from __future__ import annotations

import gc
import re
import threading
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.func import jacfwd, jacrev, vmap

from bench.engines.base import Engine, UnsupportedEngine, model_name, per_sample
from bench.engines.tangents import run_tangents, tangent_reason

# (engine, model type name, device type, dtype) -> why compilation failed
FAILED: dict[tuple[str, str, str, torch.dtype], str] = {}
_COMPILED: dict[str, weakref.WeakKeyDictionary] = {}
# Rows per compiled call on CPU for larger batches (see _blocked): efficient-KAN in one whole-batch call at
# B = 65536 ran at well under half its rate at B = 4096 (its intermediates far outgrow the caches; measured:
# results/measurements/README.md, "Block size and per-core shares on the CPU").
COMPILED_BLOCK_ROWS = 8192


def _short(err: BaseException) -> str:
    """The first line of torch's message plus the error it wraps (dynamo's first line alone is vague)."""
    msg = str(err).strip()
    first = msg.splitlines()[0] if msg else ""
    inner = re.search(r"got (\w+(?:Error|Exception)\(.{0,200})", msg)
    return f"{type(err).__name__}: {first}" + (f": {inner.group(1)}..." if inner else "")


def in_own_thread(
    call: Callable[[], object], reason: Callable[[BaseException], str] | None = None
) -> tuple[object, str | None]:
    """(call(), None) or (None, reason(err)) when the first call of a torch.compile'd function fails, run in a
    thread of its own (the one copy: the compiled engines here and bench.fidelity.train's compiled steps).

    torch 2.13: the frames of a failed dynamo trace through torch.func hold suspended context managers that,
    when garbage-collected, restore dispatch-key sets captured mid-trace, in whichever thread collects them:
    left to the collector, autograd went off in the main thread at an arbitrary later point (a cascade of
    failures in unrelated tests). Here the garbage is collected in the compiling thread, which then ends.
    """
    reason = reason or _short
    out: dict = {}

    def work() -> None:
        try:
            out["value"] = call()
        except Exception as err:  # torch.compile raises many exception types; all mean "not compilable here"
            out["reason"] = reason(err)
            del err
        gc.collect()

    thread = threading.Thread(target=work, name="jacbench-compile")
    thread.start()
    thread.join()
    return out.get("value"), out.get("reason")


def _first_call(compiled: Callable, x: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """(J, None) or (None, why compilation failed), compiling in a thread of its own (`in_own_thread`)."""
    return in_own_thread(lambda: _call(compiled, x))


def _call(compiled: Callable, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # inductor's own deprecation notices
        return compiled(x)


def _blocked():
    """On CPU, a batch larger than COMPILED_BLOCK_ROWS runs as blocks of that one shape, the last one padded.

    One compiled graph then serves every batch size (the last block is padded with copies of its last row, so a
    new batch size never recompiles), and the intermediates stay bounded. The blocks run one after another with
    torch's intra-op threads: per-core shares as in the eager engine (bench.engines.blocks) ran ChebyKAN at well
    under half the rate of one whole-batch call (2 cores; measured: results/measurements/README.md,
    "Block size and per-core shares on the CPU"). Smaller batches, and other devices, compile the whole batch.
    """

    def call(compiled: Callable, model: nn.Module, x: torch.Tensor, first: Callable) -> torch.Tensor:
        rows = COMPILED_BLOCK_ROWS
        if x.device.type != "cpu" or x.shape[0] <= rows:
            return first(x)
        block0 = first(x[:rows])  # compiles (once) in its own thread, or raises UnsupportedEngine
        out = x.new_empty((x.shape[0], *block0.shape[1:]))
        out[:rows] = block0
        for start in range(rows, x.shape[0], rows):
            xb = x[start : start + rows]
            n = xb.shape[0]
            if n < rows:  # pad: the compiled graph has one shape
                xb = torch.cat([xb, xb[-1:].expand(rows - n, -1)])
            out[start : start + n] = _call(compiled, xb)[:n]
        return out

    return call


def _make(
    name: str,
    build: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]],
    precondition: Callable[[nn.Module], str | None] = lambda m: None,
    blocked: Callable | None = None,
) -> Engine:
    cache = _COMPILED.setdefault(name, weakref.WeakKeyDictionary())

    def key(model: nn.Module, device, dtype) -> tuple:
        return (name, type(model).__name__, torch.device(device).type, dtype)

    def supports(model: nn.Module, device, dtype) -> str | None:
        reason = precondition(model)
        if reason is not None:
            return reason
        reason = FAILED.get(key(model, device, dtype))
        return None if reason is None else f"torch.compile failed: {reason}"

    def fn(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        if create_graph:
            raise UnsupportedEngine(f"engine '{name}' cannot keep the graph (create_graph=True)")
        if (reason := precondition(model)) is not None:
            raise UnsupportedEngine(f"engine '{name}' does not support model {model_name(model)}: {reason}")
        compiled, shapes = cache.get(model) or cache.setdefault(model, (torch.compile(build(model)), set()))

        def first(x: torch.Tensor) -> torch.Tensor:
            shape = (tuple(x.shape), x.dtype, x.device)
            if shape in shapes:  # compiled for this input already: no new trace, nothing to fail
                return _call(compiled, x)
            J, reason = _first_call(compiled, x)
            if J is not None:
                shapes.add(shape)
                return J
            FAILED[key(model, x.device, x.dtype)] = reason
            raise UnsupportedEngine(f"engine '{name}' could not compile model {model_name(model)}: {reason}")

        return first(x) if blocked is None else blocked(compiled, model, x, first)

    return Engine(name, fn, batch_sum=False, differentiable=False, supports=supports, compiled=True,
                  doc=f"torch.compile of {name.removeprefix('compiled_')}")  # fmt: skip


ENGINES = [
    _make("compiled_vmap_jacrev", lambda m: vmap(jacrev(per_sample(m)))),
    _make("compiled_vmap_jacfwd", lambda m: vmap(jacfwd(per_sample(m)))),
    # only where every module has a tangent rule (else compiled_vmap_jacfwd is the same thing)
    _make(
        "compiled_forward_tangents",
        lambda m: lambda x: run_tangents(m, x, False),
        precondition=tangent_reason,
        blocked=_blocked(),
    ),
]
