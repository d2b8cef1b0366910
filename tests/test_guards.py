"""Every engine, on any nn.Module, returns the right derivatives and parameter gradients or refuses with the reason
(bench.engines.guards): hooks, parametrizations, pruning, functional normalization, custom autograd Functions and
once-differentiable backward passes. References are float64: per-sample torch.autograd.functional (first and second
order) and central differences of a loss (parameter gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.parametrizations as parametrizations
import torch.nn.utils.prune as prune
from torch import nn
from torch.autograd.function import once_differentiable

import models
from bench.engines import ENGINES, HESSIAN_ENGINES, UnsupportedEngine, choose, choose_hessian, guards, hessian, jacobian

TOL = 1e-10  # float64 engines against float64 autograd: rounding only
FD_TOL = 1e-6  # float64 central differences (step 1e-5) of a smooth loss: truncation ~1e-10, rounding ~1e-9
N_IN, N_OUT = 3, 2


def seq() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_IN, 8), nn.Tanh(), nn.Linear(8, N_OUT)).double()


def inputs(n: int = 5) -> torch.Tensor:
    return torch.rand(n, N_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def ref_jacobian(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.autograd.functional.jacobian(lambda v: m(v[None])[0], v) for v in x])


def ref_hessian(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    def one(v, i):
        return torch.autograd.functional.hessian(lambda u: m(u[None])[0, i], v)

    return torch.stack([torch.stack([one(v, i) for i in range(N_OUT)]) for v in x])


def fd_directional(m: nn.Module, loss) -> tuple[float, float]:
    """(autograd, central difference) of d loss / d theta along one random unit direction."""
    params = [p for p in m.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(2)
    dirs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    norm = sum(float(d.square().sum()) for d in dirs) ** 0.5
    dirs = [d / norm for d in dirs]
    grads = torch.autograd.grad(loss(), params, allow_unused=True)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs, strict=True) if g is not None)

    def shifted(step):
        with torch.no_grad():
            for p, d in zip(params, dirs, strict=True):
                p.add_(step * d)
        value = float(loss().detach())
        with torch.no_grad():
            for p, d in zip(params, dirs, strict=True):
                p.sub_(step * d)
        return value

    return analytic, (shifted(1e-5) - shifted(-1e-5)) / 2e-5


def sobolev_loss(m, x, engine="auto"):
    w = torch.linspace(-1, 1, x.shape[0] * N_OUT * N_IN, dtype=x.dtype).reshape(x.shape[0], N_OUT, N_IN)
    return lambda: (jacobian(m, x, engine=engine, create_graph=True) * w).sum()


def hessian_loss(m, x, engine="auto"):
    w = torch.linspace(-1, 1, x.shape[0] * N_OUT * N_IN * N_IN, dtype=x.dtype).reshape(x.shape[0], N_OUT, N_IN, N_IN)
    return lambda: (hessian(m, x, engine=engine, create_graph=True) * w).sum()


def hooked_output() -> nn.Module:
    m = seq()
    m.register_forward_hook(lambda mod, args, out: out * 2)
    return m


def hooked_input() -> nn.Module:
    m = seq()
    m[0].register_forward_pre_hook(lambda mod, args: (args[0] * 3,))
    return m


def pruned() -> nn.Module:
    m = seq()
    prune.l1_unstructured(m[0], "weight", amount=0.3)
    return m


def weight_normed() -> nn.Module:
    m = seq()
    parametrizations.weight_norm(m[0])
    return m


def spectral_normed() -> nn.Module:
    m = seq()
    parametrizations.spectral_norm(m[2])
    return m.eval()  # eval: one fixed function (training mode runs a power iteration per call)


CHANGED = {"output hook": hooked_output, "pre-hook": hooked_input, "prune": pruned, "weight_norm": weight_normed,
           "spectral_norm": spectral_normed}  # fmt: skip


@pytest.mark.parametrize("case", list(CHANGED))
def test_hand_written_rules_refuse_what_hooks_and_parametrizations_change(case):
    m = CHANGED[case]()
    assert guards.hand_reason(m) is not None
    assert guards.hand_reason(seq()) is None


@pytest.mark.parametrize("case", list(CHANGED))
@pytest.mark.parametrize("engine", ["auto", "forward_tangents", "vmap_jacrev", "vmap_jacfwd", "loop"])
def test_jacobians_of_changed_modules_are_right(case, engine):
    m, x = CHANGED[case](), inputs()
    assert (jacobian(m, x, engine=engine) - ref_jacobian(m, x)).abs().max() < TOL


@pytest.mark.parametrize("case", list(CHANGED))
@pytest.mark.parametrize("engine", ["auto", "forward_hessian", "vmap_hessian", "vmap_jacrev_jacrev", "loop"])
def test_hessians_of_changed_modules_are_right(case, engine):
    m, x = CHANGED[case](), inputs()
    assert (hessian(m, x, engine=engine) - ref_hessian(m, x)).abs().max() < TOL


@pytest.mark.parametrize("case", list(CHANGED))
def test_parameter_gradients_of_changed_modules_are_right(case):
    m, x = CHANGED[case](), inputs()
    for loss in (sobolev_loss(m, x), hessian_loss(m, x)):
        analytic, numeric = fd_directional(m, loss)
        assert analytic == pytest.approx(numeric, rel=FD_TOL)


def test_an_output_hook_no_longer_halves_the_jacobian_of_auto():
    """The reported case: Sequential(Linear, Tanh, Linear) with a hook doubling its output."""
    m, x = hooked_output(), inputs()
    assert torch.allclose(jacobian(m, x), 2 * jacobian(seq(), x), rtol=1e-12, atol=0)


class OpModel(nn.Module):
    """A plugin: Linear -> op(h, g) with a parameter g of its own -> Linear, the same weights for every op."""

    def __init__(self, op):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.op = nn.Linear(N_IN, 8), nn.Linear(8, N_OUT), op
        self.g = nn.Parameter(torch.rand(8) + 0.5)

    def forward(self, x):
        return self.b(self.op(self.a(x), self.g))


def functional_norm() -> OpModel:
    """A plugin that normalizes with F.layer_norm in its own forward (no nn.LayerNorm module anywhere)."""
    return OpModel(lambda h, g: torch.tanh(F.layer_norm(h, (8,), g, None)))


def test_functional_layer_norm_sobolev_gradients_are_right_with_auto():
    m, x = functional_norm().double(), inputs()
    analytic, numeric = fd_directional(m, sobolev_loss(m, x))
    assert analytic == pytest.approx(numeric, rel=FD_TOL)
    with pytest.raises(UnsupportedEngine, match="layer_norm"):
        jacobian(m, x, engine="vmap_jacfwd", create_graph=True)
    assert (jacobian(m, x, engine="vmap_jacfwd") - ref_jacobian(m, x)).abs().max() < TOL  # first order is right


def test_torch_itself_gets_functional_layer_norm_wrong_where_the_guard_refuses():
    """Why the guard exists: torch's own results, bypassing it. If this fails, torch fixed pytorch#196700."""
    m, x = functional_norm().double(), inputs()
    raw_jacfwd, raw_rr = ENGINES["vmap_jacfwd"].fn.raw, HESSIAN_ENGINES["vmap_jacrev_jacrev"].fn.raw
    w = torch.linspace(-1, 1, 5 * N_OUT * N_IN * N_IN, dtype=x.dtype).reshape(5, N_OUT, N_IN, N_IN)
    for loss in (lambda: raw_jacfwd(m, x, True).square().sum(), lambda: (raw_rr(m, x, True) * w).sum()):
        analytic, numeric = fd_directional(m, loss)
        assert abs(analytic - numeric) > 1e-3 * abs(numeric)


def test_functional_layer_norm_hessian_training_refuses_with_the_reason():
    m, x = functional_norm().double(), inputs()
    for engine in ["auto", "vmap_hessian", "vmap_jacrev_jacrev", "loop", "batch_sum_hessian"]:
        with pytest.raises(UnsupportedEngine, match="layer_norm"):
            hessian(m, x, engine=engine, create_graph=True)
    assert (hessian(m, x) - ref_hessian(m, x)).abs().max() < TOL  # the Hessian itself is right


class Square(torch.autograd.Function):
    """Old-style custom Function (no setup_context): torch.func cannot transform it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class SquareOnce(Square):
    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class SquareFunc(torch.autograd.Function):
    """torch.func-style custom Function with a vmap rule but no jvp."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class WithFunction(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.net, self.fn = seq(), fn

    def forward(self, x):
        return self.net(x) + 0.3 * self.fn.apply(x[:, :N_OUT])


@pytest.mark.parametrize("fn", [Square, SquareFunc])
def test_custom_functions_are_differentiated_right_or_refused(fn):
    m, x = WithFunction(fn).double(), inputs()
    assert (jacobian(m, x) - ref_jacobian(m, x)).abs().max() < TOL
    assert (hessian(m, x) - ref_hessian(m, x)).abs().max() < TOL
    for engine in ["vmap_jacrev", "vmap_jacfwd", "forward_tangents", "loop"]:
        try:
            J = jacobian(m, x, engine=engine)
        except UnsupportedEngine as err:
            assert "Function" in str(err) and fn.__name__ in str(err)
            continue
        assert (J - ref_jacobian(m, x)).abs().max() < TOL, engine
    with pytest.raises(UnsupportedEngine, match="jvp" if fn is SquareFunc else "setup_context"):
        jacobian(m, x, engine="vmap_jacfwd")
    analytic, numeric = fd_directional(m, sobolev_loss(m, x))
    assert analytic == pytest.approx(numeric, rel=FD_TOL)


def test_once_differentiable_refuses_second_derivatives_instead_of_zeros():
    m, x = WithFunction(SquareOnce).double(), inputs()
    assert (jacobian(m, x) - ref_jacobian(m, x)).abs().max() < TOL  # first order is fine
    for engine in ["auto", "loop", "batch_sum_hessian"]:
        with pytest.raises(UnsupportedEngine, match="once_differentiable"):
            hessian(m, x, engine=engine)
    with pytest.raises(UnsupportedEngine, match="setup_context"):  # an old-style Function: torch.func refuses first
        hessian(m, x, engine="vmap_jacrev_jacrev")
    with pytest.raises(UnsupportedEngine, match="once_differentiable"):
        jacobian(m, x, create_graph=True)
    # what torch gives without the guard: the function's second derivative (2 * 0.3 on the diagonal) is lost
    H = HESSIAN_ENGINES["loop"].fn.raw(m, x, False)
    assert (H - ref_hessian(WithFunction(Square).double(), x)).abs().max() > 0.5


def cosine() -> OpModel:
    """A plugin op outside guards.PROVEN (CosBackward0): proven at first use, then trusted."""
    return OpModel(lambda h, g: torch.cos(h))


def test_an_unlisted_op_is_proven_by_measurement_then_used():
    m, x = cosine().double(), inputs()
    assert "CosBackward0" not in guards.PROVEN
    analytic, numeric = fd_directional(m, hessian_loss(m, x, engine="vmap_jacrev_jacrev"))
    assert analytic == pytest.approx(numeric, rel=FD_TOL)


class DetachedBackward(torch.autograd.Function):
    """A custom Function whose backward detaches x: its first derivative is right, its second is silently 0."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x.detach() ** 2 * g


def test_a_custom_backward_without_second_derivative_is_caught_by_measurement():
    m, x = WithFunction(DetachedBackward).double(), inputs()
    assert (jacobian(m, x) - ref_jacobian(m, x)).abs().max() < TOL
    with pytest.raises(UnsupportedEngine, match="second derivatives disagree"):
        hessian(m, x)


def recorded_nodes(m: nn.Module, n_in: int) -> frozenset:
    return guards.trace(m, torch.rand(2, n_in, dtype=next(m.parameters()).dtype)).nodes


def test_every_proven_node_is_recorded_by_the_zoo_or_the_checked_ops():
    """PROVEN holds no node that no measured model records (test_proven_ops measures the plugin ops)."""
    seen = set()
    for name in models.list_models():
        seen |= recorded_nodes(models.create_model(name, 4, 4, seed=0).double(), 4)
    for op in OPS.values():
        seen |= recorded_nodes(OpModel(op).double(), N_IN)
    assert guards.PROVEN <= seen, sorted(guards.PROVEN - seen)
    zoo_unproven = seen - guards.PROVEN - set(guards.BROKEN)
    assert not zoo_unproven


OPS = {
    "group_norm": lambda h, g: F.group_norm(h, 2, g, None),
    "normalize": lambda h, g: F.normalize(h, dim=-1) * g,
    "softmax": lambda h, g: torch.softmax(h * g, -1),
    "log_softmax": lambda h, g: torch.log_softmax(h * g, -1),
    "logsumexp": lambda h, g: torch.logsumexp(h * g, -1, keepdim=True) + h,
    "elu": lambda h, g: F.elu(h) * g,
    "mish": lambda h, g: F.mish(h) * g,
    "var": lambda h, g: h * torch.var(h * g, dim=-1, keepdim=True),
    "erf": lambda h, g: torch.erf(h * g),
    "atan": lambda h, g: torch.atan(h * g),
    "cumsum": lambda h, g: torch.tanh(torch.cumsum(h * g, -1)),
    "prod": lambda h, g: h * torch.prod(torch.tanh(h * g), -1, keepdim=True),
    "amax": lambda h, g: torch.amax(torch.tanh(h) * g, -1, keepdim=True) + h,
    "sqrt": lambda h, g: torch.sqrt(h * h * g + 1),
    "rsqrt": lambda h, g: torch.rsqrt(h * h * g + 1),
    "lerp": lambda h, g: torch.lerp(h, torch.tanh(h), g),
    "mean": lambda h, g: torch.tanh(h - (h * g).mean(-1, keepdim=True)),
    "clamp_min": lambda h, g: torch.tanh(torch.clamp_min(h * g, -0.5) + h),
    "rms_norm": lambda h, g: torch.tanh(F.rms_norm(h, (h.shape[-1],), g)),
}


@pytest.mark.parametrize("op", list(OPS))
def test_proven_ops(op):
    """torch's own reverse-over-forward and third derivatives (guards bypassed) through each op agree with central
    differences: the measurement behind guards.PROVEN."""
    m, x = OpModel(OPS[op]).double(), inputs()
    raw_jacfwd, raw_rr = ENGINES["vmap_jacfwd"].fn.raw, HESSIAN_ENGINES["vmap_jacrev_jacrev"].fn.raw
    w = torch.linspace(-1, 1, 5 * N_OUT * N_IN * N_IN, dtype=x.dtype).reshape(5, N_OUT, N_IN, N_IN)
    for loss in (lambda: raw_jacfwd(m, x, True).square().sum(), lambda: (raw_rr(m, x, True) * w).sum()):
        analytic, numeric = fd_directional(m, loss)
        assert analytic == pytest.approx(numeric, rel=FD_TOL, abs=1e-9)


def test_auto_still_picks_the_fast_engines_for_plain_models():
    m, x = seq(), inputs()
    assert choose(m, x).name == "forward_tangents" and choose_hessian(m, x).name == "forward_hessian"
    assert choose(hooked_output(), x).name == "forward_tangents"  # which then falls back to torch.func inside
    assert choose_hessian(hooked_output(), x).name == "vmap_jacrev_jacrev"


def test_the_trace_leaves_buffers_as_they_were():
    m = nn.Sequential(nn.Linear(N_IN, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, N_OUT)).double().train()
    before = m[1].running_mean.clone()
    guards.trace(m, inputs())
    assert torch.equal(m[1].running_mean, before)
