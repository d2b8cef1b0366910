"""Every Hessian and Laplacian engine agrees with a float64 reference on every model (including exactly at
B-spline knots and outside the KAN grids), keeps a correct graph, chunks exactly, and the batch-sum engine is
guarded by the second-order coupling check."""

from __future__ import annotations

import pytest
import torch
from test_engines import MODELS, custom_inputs, small
from torch import nn

from bench.engines import HESSIAN_ENGINES, LAPLACIAN_ENGINES, UnsupportedEngine, choose_hessian, hessian, laplacian
from bench.engines.coupling import verify_batch_independent
from bench.engines.hessians import ideal_passes
from bench.engines.second_order import rule_reason
from equations.scaling import PhysicalModel, Scaler

# float64: each engine is the same chain rule in another order; 1e-10 relative to max |H| is ~1e5 above the
# rounding seen (up to 6e-15).
TOL64 = 1e-10
# float32 against the float64 reference: one more derivative than the Jacobian's 1e-5 (second-derivative factors
# such as FastKAN's (4u^2 - 2)/den^2 and Sine's w0^2 = 900 amplify rounding): measured below 2e-5 of max |H|.
TOL32 = 1e-4
ENGINES = [e for e in HESSIAN_ENGINES if e != "loop"]


def rel_err(H: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max()
    return float((H.double() - ref).abs().max() / (scale if scale > 0 else 1.0))


def reference(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """float64 reverse over reverse, one sample and one output at a time (torch.autograd.functional.hessian)."""
    return hessian(m, x, engine="loop")


@pytest.fixture(scope="module")
def refs() -> dict:
    out = {}
    for name, make in MODELS.items():
        m = make().double()
        x = custom_inputs(m).float().double()
        out[name] = (m, x, reference(m, x))
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(MODELS))
def test_hessian_engine_agrees_with_the_loop_float64(refs, name, engine):
    m, x, ref = refs[name]
    try:
        H = hessian(m, x, engine=engine)
    except UnsupportedEngine as err:
        assert engine == "vmap_hessian" and "forward over reverse" in str(err)  # silu: torch 2.13 lacks the rule
        return
    assert H.shape == (len(x), ref.shape[1], x.shape[1], x.shape[1]) and H.dtype == torch.float64
    assert rel_err(H, ref) < TOL64
    assert torch.equal(H, H.transpose(-1, -2)) or rel_err(H, H.transpose(-1, -2)) < TOL64


@pytest.mark.parametrize("name", list(MODELS))
def test_laplacian_engines_are_the_trace_of_the_hessian(refs, name):
    m, x, ref = refs[name]
    trace = torch.diagonal(ref, dim1=-2, dim2=-1).sum(-1)
    for engine in LAPLACIAN_ENGINES:
        L = laplacian(m, x, engine=engine)
        assert L.shape == trace.shape and rel_err(L, trace) < TOL64, engine
    assert rel_err(laplacian(m, x), trace) < TOL64


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_hessian_float32_within_documented_tolerance(refs, name):
    _, x, ref = refs[name]
    m = MODELS[name]().float()
    H = hessian(m, x.float(), engine="forward_hessian")
    assert H.dtype == torch.float32 and rel_err(H, ref) < TOL32


def test_the_hand_written_rules_cover_the_zoo_but_pykan():
    import models

    for name in models.list_models():
        m = MODELS[name]()
        if name == "pykan":
            assert rule_reason(m) is not None and choose_hessian(m, torch.zeros(1, 3)).name == "vmap_jacrev_jacrev"
        else:
            assert rule_reason(m) is None, name
            assert choose_hessian(m, torch.zeros(1, 3)).name == "forward_hessian"


def _kan_probe(name: str, x: torch.Tensor) -> torch.Tensor:
    m = small(name).double()
    return rel_err(hessian(m, x, engine="forward_hessian"), reference(m, x))


def test_efficient_kan_exactly_at_its_knots_and_outside_its_grid():
    m = small("efficient_kan").double()
    knots = m.layers[0].grid[0]  # (G + 2k + 1,) uniform knots, the same for every input at init
    inside = knots[(knots > -1) & (knots < 1)]
    x = torch.stack([inside, inside.flip(0), inside.roll(1)], dim=1)  # every row sits on knots in all 3 inputs
    outside = torch.tensor([[-1.7, 2.5, 1.0], [3.0, -3.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    assert _kan_probe("efficient_kan", x) < TOL64
    assert _kan_probe("efficient_kan", outside) < TOL64  # outside the extended grid only the SiLU branch curves


def test_fastkan_and_chebykan_far_outside_their_grids():
    x = torch.tensor([[-6.0, 0.0, 5.0], [9.0, -9.0, 2.5], [-2.0, 2.0, 0.0]], dtype=torch.float64)
    assert _kan_probe("fastkan", x) < TOL64 and _kan_probe("chebykan", x) < TOL64


def _hessian_loss(m: nn.Module, x: torch.Tensor, engine: str, create_graph: bool = False) -> torch.Tensor:
    return (hessian(m, x, engine=engine, create_graph=create_graph) ** 2).sum()


@pytest.mark.parametrize("name", ["mlp_tanh", "mlp_silu", "fastkan", "efficient_kan", "chebykan", "physical_fastkan",
                                  "sequential_layernorm"])  # fmt: skip
def test_a_hessian_in_a_loss_has_the_parameter_gradients_finite_differences_give(name):
    """d loss / d theta along a random direction v of every parameter, against central differences in float64.

    Differences: step 1e-6 along a unit-scale v, truncation ~1e-12 and rounding ~1e-10 relative: 1e-6 is safe.
    """
    m = MODELS[name]().double()
    x = custom_inputs(m)[:6]
    params = [p for p in m.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(5)
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    with torch.no_grad():

        def at(step: float) -> float:
            for p, d in zip(params, v, strict=True):
                p.add_(step * d)
            value = float(_hessian_loss(m, x, "forward_hessian"))
            for p, d in zip(params, v, strict=True):
                p.sub_(step * d)
            return value

        fd = (at(1e-6) - at(-1e-6)) / 2e-6
    m.zero_grad()
    _hessian_loss(m, x, "auto", create_graph=True).backward()
    directional = sum(float((p.grad * d).sum()) for p, d in zip(params, v, strict=True) if p.grad is not None)
    assert directional == pytest.approx(fd, rel=1e-6)
    assert laplacian(m, x, create_graph=True).requires_grad


def test_autograd_hessians_refuse_a_graph_through_layernorm_whose_third_derivative_torch_gets_wrong():
    m = MODELS["sequential_layernorm"]().double()
    x = custom_inputs(m)[:4]
    for engine in ["loop", "vmap_jacrev_jacrev", "batch_sum_hessian", "vmap_hessian"]:
        with pytest.raises(UnsupportedEngine, match="third derivative"):
            hessian(m, x, engine=engine, create_graph=True)
    # the measured defect: torch's own Hessian loss gradient disagrees with the (finite-difference-checked) rules
    m.zero_grad()
    _hessian_loss(m, x, "forward_hessian", create_graph=True).backward()
    ours = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    m.zero_grad()
    with torch.enable_grad():
        from torch.func import jacrev, vmap

        from bench.engines.base import per_sample

        (vmap(jacrev(jacrev(per_sample(m))))(x) ** 2).sum().backward()
    torch_grads = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    assert rel_err(torch_grads, ours) > 1e-3  # if torch fixes it, this fails: lift guards.BROKEN then


@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_chunked_equals_unchunked(chunk):
    m = small("fastkan").double()
    x = custom_inputs(m)
    for engine in ["forward_hessian", "vmap_jacrev_jacrev", "batch_sum_hessian"]:
        whole = hessian(m, x, engine=engine)
        assert torch.equal(hessian(m, x, engine=engine, chunk_size=chunk), whole) or (
            rel_err(hessian(m, x, engine=engine, chunk_size=chunk), whole) < 1e-14
        )


class HiddenCurvatureCoupling(nn.Module):
    """y_b = x_b + x_b * sum_a (x_a - c)^2 at x = c: no first-order cross-sample derivative, a second-order one."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = c

    def forward(self, x):
        return x + x * ((x - self.c) ** 2).sum(0, keepdim=True)


def test_the_second_order_coupling_check_refuses_what_the_first_order_check_passes():
    x = torch.full((6, 3), 0.5, dtype=torch.float64)
    m = HiddenCurvatureCoupling(x.clone())
    assert not verify_batch_independent(m, x).coupled  # every d y_b / d x_a, a != b, is exactly 0 here
    assert verify_batch_independent(m, x, order=2).coupled  # d2 y_b / dx_a^2 = 2 x_b is not
    with pytest.raises(UnsupportedEngine, match="mixes them"):
        hessian(m, x, engine="batch_sum_hessian")
    assert not verify_batch_independent(small("mlp_tanh").double(), custom_inputs(small("mlp_tanh")).double(),
                                        order=2).coupled  # fmt: skip


def test_the_packed_network_of_the_first_forum_post_is_coupled_for_every_batch_sum_engine():
    torch.manual_seed(0)
    packed = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8))  # 8 collocation points in one vector

    class Unpack(nn.Module):  # the post's view: sample b is point b of one packed vector, so the batch is mixed
        def forward(self, x):  # x (8, 1) -> (8, 1)
            return packed(x.T).T

    x = torch.linspace(0, 6.28, 8, dtype=torch.float64)[:, None]
    m = Unpack().double()
    packed.double()
    assert verify_batch_independent(m, x, order=2).coupled
    with pytest.raises(UnsupportedEngine, match="mixes them"):
        hessian(m, x, engine="batch_sum_hessian")


def test_bad_arguments_get_clear_errors():
    m = small("mlp_tanh")
    with pytest.raises(ValueError, match=r"x must be \(B, n_in\)"):
        hessian(m, torch.zeros(3))
    with pytest.raises(ValueError, match="did you mean 'forward_hessian'"):
        hessian(m, torch.zeros(2, 3), engine="forward_hesian")
    with pytest.raises(ValueError, match="did you mean 'forward_laplacian'"):
        laplacian(m, torch.zeros(2, 3), engine="forward_laplace")


def test_every_engine_documents_itself_and_the_ideal_cost_is_counted():
    assert all(e.doc for e in [*HESSIAN_ENGINES.values(), *LAPLACIAN_ENGINES.values()])
    assert ideal_passes(4) == 1 + 4 + 10 and ideal_passes(1) == 3


def test_a_scaled_models_hessian_is_the_chain_rule_of_the_normalized_one():
    """H_phys[i, j, k] = y_scale_i / (x_scale_j x_scale_k) H_norm at the normalized point (Scaler, one place)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)
    y = torch.rand(20, 2, generator=g, dtype=torch.float64) * torch.tensor([100.0, 0.01], dtype=torch.float64)
    sc = Scaler.fit(x, y, "minmax", x_range=(-1, 1), y_range=(0, 1))
    inner = small("efficient_kan").double()
    pm = PhysicalModel(inner, sc)
    H_wrapper = hessian(pm, x, engine="vmap_jacrev_jacrev")  # autograd of the physical wrapper
    H_chain = sc.hessian_to_physical(hessian(inner, sc.transform_x(x), engine="vmap_jacrev_jacrev"))
    assert rel_err(H_chain, H_wrapper) < 1e-12
    assert rel_err(hessian(pm, x, engine="forward_hessian"), H_wrapper) < TOL64
    assert rel_err(sc.hessian_to_normalized(H_chain), hessian(inner, sc.transform_x(x))) < 1e-12
