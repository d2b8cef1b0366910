"""What a model's forward really computes, and which engines can differentiate it correctly.

The rule every engine keeps: for any `nn.Module` it returns the right derivatives (and, with create_graph, the right
parameter gradients of a loss on them), or raises `UnsupportedEngine` with the reason. Two kinds of guard:

- **Hand-written rules** (`forward_tangents`, `forward_hessian`, the fused MLP plans) describe what a module's
  class computes. Hooks, parametrizations (`torch.nn.utils.parametrize`: weight_norm, spectral_norm) and pruning
  (`torch.nn.utils.prune`, a forward pre-hook) change what a module computes without changing its class, so
  `hand_reason` refuses such models and the engines fall back to torch.func, which calls the module.
- **Autograd engines** differentiate whatever the forward records. One forward call on two samples is traced
  (`trace`: the autograd graph's node types and custom `autograd.Function` classes, cached per model) and judged
  on what it contains, not on what its modules are called:
  - torch.func transforms need a custom Function to have `setup_context`, a vmap rule, and `jvp` for forward mode;
  - a Function whose backward is `@once_differentiable` has no second derivative: torch returns 0 for it silently
    (its saved tensors are not tracked), so Hessians and losses on Jacobians refuse it;
  - the two compositions torch gets wrong for some ops (reverse over forward: a loss on forward mode's J; and
    third derivatives: a loss on a Hessian) run only through nodes in `PROVEN`, checked against finite
    differences in tests/test_guards.py. A node in `BROKEN` refuses. Any other node is proven on this model at
    first use (`prove`: the engine's parameter gradient against a float64 central difference) and refused with the
    measured discrepancy if it disagrees.
"""

from __future__ import annotations

import copy
import functools
import weakref
from dataclasses import dataclass

import torch
import torch.nn.modules.module as torch_module
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize

from bench.engines.base import UnsupportedEngine, model_name

# How a guarded engine differentiates: torch.func forward / reverse mode, or plain torch.autograd. (Engines with
# hand-written rules are not guarded here: they check hand_reason and fall back to guarded ones.)
JVP, VJP, AUTOGRAD = "jvp", "vjp", "autograd"

# Autograd nodes whose reverse-over-forward and third derivatives agree with float64 finite differences
# (tests/test_guards.py re-measures every one): what the zoo and common plugin layers record.
PROVEN = frozenset({
    "AccumulateGrad", "AddBackward0", "AddBackward1", "AddmmBackward0", "AmaxBackward0", "AtanBackward0",
    "BmmBackward0", "ClampMinBackward0", "CloneBackward0", "CumsumBackward0", "DivBackward0", "EluBackward0",
    "ErfBackward0", "ExpBackward0", "ExpandBackward0", "GeluBackward0", "IndexBackward0", "LerpBackward1",
    "LinalgVectorNormBackward0", "LogSoftmaxBackward0", "LogsumexpBackward0", "MeanBackward1", "MishBackward0",
    "MmBackward0", "MulBackward0", "NanToNumBackward0", "NativeGroupNormBackward0", "NegBackward0",
    "PermuteBackward0", "PowBackward0", "ProdBackward1", "ReluBackward0", "ReshapeAliasBackward0", "RsqrtBackward0",
    "SelectBackward0", "SigmoidBackward0", "SiluBackward0", "SinBackward0", "SliceBackward0", "SoftmaxBackward0",
    "SoftplusBackward0", "SqrtBackward0", "StackBackward0", "SubBackward0", "SumBackward1", "TBackward0",
    "TanhBackward0", "UnsafeViewBackward0", "UnsqueezeBackward0", "VarBackward0", "ViewBackward0",
})  # fmt: skip
# Nodes torch 2.13 differentiates wrongly at those orders (measured in tests/test_guards.py; pytorch#196700).
BROKEN = {"NativeLayerNormBackward0": "layer_norm (pytorch/pytorch#196700)"}
PROVE_RTOL = 1e-4  # float64 central differences (step 1e-5) agree with a right gradient to ~1e-8


@dataclass(frozen=True)
class Trace:
    """What one forward call recorded: autograd node type names and custom autograd.Function classes."""

    nodes: frozenset[str]
    functions: tuple[type, ...]


_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROOFS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")  # fmt: skip
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hand_reason(model: nn.Module) -> str | None:
    """Why hand-written rules cannot describe `model` even where its classes have rules (None if they can)."""
    for name in _GLOBAL_HOOKS:
        if getattr(torch_module, name, None):
            return f"a global module hook is registered (torch.nn.modules.module.{name.removeprefix('_')})"
    for path, m in model.named_modules():
        where = path or "the model"
        kinds = [h.removeprefix("_").replace("_", " ")[:-1] for h in _MODULE_HOOKS if getattr(m, h, None)]
        if kinds:
            return f"{where} ({type(m).__name__}) has a {kinds[0]}, which the hand-written rules would skip"
        if parametrize.is_parametrized(m):
            return f"{where} ({type(m).__name__}) has parametrized weights (torch.nn.utils.parametrize)"
    return None


def _functions_of(grad_fn) -> tuple[set[str], list[type]]:
    nodes, functions, seen, stack = set(), [], set(), [grad_fn]
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        cls = getattr(n, "_forward_cls", None)
        if cls is not None:
            functions.append(cls)
        else:
            nodes.add(type(n).__name__)
        stack.extend(f for f, _ in n.next_functions)
    return nodes, list(dict.fromkeys(functions))


def _stamp(model: nn.Module, x: torch.Tensor) -> tuple:
    return (x.shape[1], x.dtype, x.device.type, model.training, sum(1 for _ in model.modules()))


def trace(model: nn.Module, x: torch.Tensor) -> Trace:
    """The autograd record of one forward call of `model` at x[:2] (buffers restored after), cached per model."""
    stamp = _stamp(model, x)
    hit = _TRACES.get(model)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    xs = x[:2].detach().requires_grad_(True)
    with torch.enable_grad():
        y = model(xs)
    with torch.no_grad():
        for b, saved in buffers:  # a BatchNorm's running stats, spectral_norm's power iteration: as they were
            b.copy_(saved)
    nodes, functions = _functions_of(y.grad_fn if isinstance(y, torch.Tensor) else None)
    tr = Trace(frozenset(nodes), tuple(functions))
    _TRACES[model] = (stamp, tr)
    return tr


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(torch.autograd.Function, name)


_ONCE_CODE = once_differentiable(lambda ctx, *g: g).__code__


def is_once_differentiable(cls: type) -> bool:
    """Whether a custom Function's backward is wrapped in @once_differentiable (no second derivative)."""
    return getattr(getattr(cls, "backward", None), "__code__", None) is _ONCE_CODE


def _functorch_reason(tr: Trace, via: str) -> str | None:
    for cls in tr.functions:
        fn = f"custom autograd.Function {cls.__name__}"
        if not _overrides(cls, "setup_context"):
            return f"{fn} has no setup_context staticmethod, which torch.func transforms need"
        if not (getattr(cls, "generate_vmap_rule", False) or _overrides(cls, "vmap")):
            return f"{fn} has no vmap rule (set generate_vmap_rule = True or write vmap)"
        if via == JVP and not _overrides(cls, "jvp"):
            return f"{fn} has no jvp staticmethod, which forward mode needs"
    return None


def order_reason(tr: Trace, via: str, order: int, create_graph: bool) -> str | None:
    """Why an engine of kind `via` computing derivatives of `order` (a loss on them if create_graph) would be wrong
    on what `tr` recorded, without running it; "prove" where only a measurement can tell."""
    if via in (JVP, VJP) and (reason := _functorch_reason(tr, via)) is not None:
        return reason
    total = order + bool(create_graph)
    once = [c.__name__ for c in tr.functions if is_once_differentiable(c)]
    if total >= 2 and once:
        return (f"custom autograd.Function {once[0]}'s backward is @once_differentiable: it has no second "
                "derivative, and torch would silently treat it as 0")  # fmt: skip
    # third derivatives, reverse over forward mode, or a second derivative through a user's own backward
    risky = total >= 3 or (create_graph and via == JVP) or (total >= 2 and tr.functions)
    if not risky:
        return None
    broken = sorted(n for n in tr.nodes if n in BROKEN)
    if broken:
        what = "third derivative" if total >= 3 else "reverse-over-forward derivative"
        return f"torch's {what} through {BROKEN[broken[0]]} is wrong, so parameter gradients would be wrong"
    return "prove" if (tr.nodes - PROVEN or tr.functions) else None


def _unverified(tr: Trace) -> str:
    return ", ".join([*sorted(tr.nodes - PROVEN), *(f.__name__ for f in tr.functions)])


def prove(fn, model: nn.Module, x: torch.Tensor, order: int, create_graph: bool) -> str | None:
    """Measure engine `fn` on a float64 copy of `model` at x[:4] against central differences; None if they agree
    to PROVE_RTOL, else the reason. With create_graph: the parameter gradient of a random loss on fn's output,
    along a random direction. Second derivatives (order 2): against differences of autograd's Jacobian."""
    try:
        m = copy.deepcopy(model).double()
    except Exception as err:  # any failure to copy means: cannot prove
        return f"it could not be checked on a float64 copy ({type(err).__name__}: {err})"
    xs = x[:4].detach().double()
    gen = torch.Generator().manual_seed(0)
    try:
        checks = [("second derivatives", _hessian_error(fn, m, xs))] if order >= 2 else []
        if create_graph:
            checks.append(("parameter gradients", _gradient_error(fn, m, xs, gen)))
    except UnsupportedEngine as err:
        return str(err)
    what, err = max(checks, key=lambda c: -1.0 if c[1] is None else c[1])
    if err is None or err <= PROVE_RTOL:
        return None
    return (f"its {what} disagree with finite differences by a relative {err:.2g} on this model "
            f"(unverified: {_unverified(trace(model, x))})")  # fmt: skip


def _gradient_error(fn, m: nn.Module, xs: torch.Tensor, gen: torch.Generator) -> float | None:
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        return None
    with torch.no_grad():
        out = fn(m, xs, create_graph=False)
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device)  # CPU generator: any device
    dirs = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device) for p in params]
    scale = sum(float(d.square().sum()) for d in dirs) ** 0.5
    dirs = [d / scale for d in dirs]

    def loss() -> torch.Tensor:
        return (fn(m, xs, create_graph=True) * weights).sum()

    def shifted(step: float) -> float:  # the parameters moved along dirs, evaluated, and put back
        with torch.no_grad():
            for p, d in zip(params, dirs, strict=True):
                p.add_(step * d)
        try:
            return float(loss().detach())
        finally:
            with torch.no_grad():
                for p, d in zip(params, dirs, strict=True):
                    p.sub_(step * d)

    grads = torch.autograd.grad(loss(), params, allow_unused=True)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs, strict=True) if g is not None)
    eps = 1e-5
    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    return abs(analytic - numeric) / max(abs(numeric), abs(analytic), 1e-12)


def _hessian_error(fn, m: nn.Module, xs: torch.Tensor) -> float:
    def jac(xb: torch.Tensor) -> torch.Tensor:  # autograd's per-sample Jacobians: first order, no double backward
        return torch.stack([torch.autograd.functional.jacobian(lambda v: m(v[None])[0], v) for v in xb])

    eps = 1e-5
    steps = torch.eye(xs.shape[1], dtype=xs.dtype, device=xs.device)
    cols = [(jac(xs + eps * e) - jac(xs - eps * e)) / (2 * eps) for e in steps]
    numeric = torch.stack(cols, dim=-1)  # (B, n_out, n_in, n_in)
    with torch.no_grad():
        H = fn(m, xs, create_graph=False)
    return float((H - numeric).norm() / max(float(numeric.norm()), 1e-12))


def engine_reason(name: str, fn, via: str, order: int, model: nn.Module, x: torch.Tensor, create_graph: bool):
    """Why engine `name` (of kind `via`, derivatives of `order`) cannot be trusted on `model` at x (None if it can)."""
    reason = order_reason(trace(model, x), via, order, create_graph)
    if reason != "prove":
        return reason
    key = (name, create_graph, x.dtype, x.shape[1])
    proofs = _PROOFS.setdefault(model, {})
    if key not in proofs:
        proofs[key] = prove(fn, model, x, order, create_graph)
    return proofs[key]


def guarded(name: str, via: str, order: int):
    """Decorator for an engine function fn(model, x, create_graph): refuse (UnsupportedEngine) what it gets wrong."""

    def deco(fn):
        @functools.wraps(fn)
        def run(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
            reason = engine_reason(name, fn, via, order, model, x, create_graph)
            if reason is not None:
                raise UnsupportedEngine(f"engine '{name}' cannot differentiate model {model_name(model)}: {reason}")
            return fn(model, x, create_graph=create_graph)

        run.raw, run.guard = fn, (name, via, order)
        return run

    return deco


def reason_for(fn, model: nn.Module, x: torch.Tensor, create_graph: bool) -> str | None:
    """Why the guarded engine function `fn` would refuse `model` at x (None if it would run; unguarded: None)."""
    guard = getattr(fn, "guard", None)
    if guard is None:
        return None
    name, via, order = guard
    return engine_reason(name, fn.raw, via, order, model, x, create_graph)


def first_trusted(engines, model: nn.Module, x: torch.Tensor, create_graph: bool):
    """The first Engine in `engines` whose guard accepts `model` at x, or UnsupportedEngine with every reason."""
    reasons = []
    for e in engines:
        reason = reason_for(e.fn, model, x, create_graph)
        if reason is None:
            return e
        reasons.append(f"{e.name}: {reason}")
    raise UnsupportedEngine(f"no engine can differentiate model {model_name(model)} correctly: " + "; ".join(reasons))
