"""The zoo contract, checked for every registered model: a new model gets these tests for free.

Tolerances: Jacobian engines are compared in float64 to 1e-10 relative to the largest entry (they
compute the same derivative by different operation orders, so they agree to a few ulps).
"""

import io
import warnings
from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.func import jacfwd, jacrev, vmap
from zoo_fixtures import shape_variants

import models
from models.chebykan import chebyshev_basis
from models.mlp import SIREN_W0, Sine

NAMES = models.list_models()


def build(name, n_in=4, n_out=4, dtype=torch.float64, seed=0, **overrides):
    with warnings.catch_warnings():  # fastkan warns about LayerNorm on 1-D input; that is tested below
        warnings.simplefilter("ignore")
        return models.create_model(name, n_in=n_in, n_out=n_out, seed=seed, **overrides).to(dtype)


def inputs(model, n, dtype=torch.float64, seed=1):
    lo, hi = model.input_range
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(n, model.n_in, generator=g, dtype=torch.float64)).to(dtype)


def loop_jacobian(model, x):
    return torch.stack([torch.autograd.functional.jacobian(model, xi) for xi in x])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_dtypes_and_single_sample(name, dtype):
    model = build(name, n_in=3, n_out=2, dtype=dtype)
    x = inputs(model, 7, dtype)
    y = model(x)
    assert y.shape == (7, 2) and y.dtype == dtype
    assert torch.isfinite(y).all()
    assert model(x[0]).shape == (2,)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vmap(model)(x), y, **tol)  # per sample == batched: no cross-sample ops


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_parameter(name):
    model = build(name)
    x = inputs(model, 64)
    model(x).square().sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().max() > 0, pname
        else:
            assert p.grad is None, pname  # fastkan's frozen RBF grid


@pytest.mark.parametrize("name", NAMES)
def test_vmap_jacrev_and_jacfwd_match_per_sample_autograd(name):
    model = build(name)
    x = inputs(model, 5)
    ref = loop_jacobian(model, x)
    assert ref.shape == (5, 4, 4)
    scale = ref.abs().max()
    for engine in (jacrev, jacfwd):
        J = vmap(engine(model))(x)
        assert (J - ref).abs().max() <= 1e-10 * scale, engine.__name__


@pytest.mark.parametrize("name", NAMES)
def test_one_input(name):
    model = build(name, n_in=1, n_out=2)
    x = inputs(model, 6)
    assert model(x).shape == (6, 2)
    J = vmap(jacrev(model))(x)
    assert J.shape == (6, 2, 1)
    torch.testing.assert_close(J, loop_jacobian(model, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_param_count_is_closed_form(name):
    for overrides in shape_variants(name):  # the shapes this factory accepts (a plugin's own options aside)
        model = build(name, n_in=3, n_out=2, **overrides)
        counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert model.param_count() == counted, overrides
        assert isinstance(model.flops_per_sample(), int) and model.flops_per_sample() > 0


@pytest.mark.parametrize("budget", [1000, 5000, 20000])
@pytest.mark.parametrize("name", NAMES)
def test_match_params_lands_within_ten_percent(name, budget):
    overrides = models.match_params(name, budget, n_in=4, n_out=4)
    count = build(name, **overrides).param_count()
    assert abs(count - budget) <= 0.1 * budget, (overrides, count)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    model = build(name, seed=0)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = build(name, seed=1)
    other.load_state_dict(torch.load(buf), strict=True)
    x = inputs(model, 9)
    assert torch.equal(other(x), model(x))


def test_known_parameter_counts():
    assert build("mlp_forum").param_count() == 4 * 100 + 100 + 3 * (100 * 100 + 100) + 100 * 4 + 4  # 31204
    layers = [4, 30, 30, 4]
    pairs = list(pairwise(layers))
    assert build("fastkan", layers=layers).param_count() == sum(2 * a + a * 8 * b + a * b + b for a, b in pairs)
    assert build("fastkan_noln", layers=layers).param_count() == sum(a * 8 * b + a * b + b for a, b in pairs)
    assert build("efficient_kan", layers=layers).param_count() == sum(a * b * (5 + 3 + 2) for a, b in pairs)
    assert build("chebykan", layers=layers).param_count() == sum(a * b * 5 for a, b in pairs)


def test_mlp_flops_by_hand():
    # 2 -> 3 -> 1 tanh: Linear 2*2*3 + 3, tanh 3, Linear 2*3*1 + 1
    assert build("mlp_tanh", n_in=2, n_out=1, hidden=[3]).flops_per_sample() == 12 + 3 + 3 + 6 + 1


def test_mlp_forum_is_the_forum_sequential():
    model = build("mlp_forum", dtype=torch.float32)
    assert isinstance(model, nn.Sequential)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.Sigmoid] * 4 + [nn.Linear]
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [
        (4, 100), (100, 100), (100, 100), (100, 100), (100, 4)
    ]  # fmt: skip
    assert list(model.state_dict()) == [f"{i}.{k}" for i in range(0, 9, 2) for k in ("weight", "bias")]
    assert type(model[:2]) is nn.Sequential  # slices stay usable


def test_siren_init_and_sine():
    model = build("mlp_sine", n_in=3, hidden=[64, 64])
    first, second = model[0].weight, model[2].weight
    assert first.abs().max() <= 1 / 3
    assert second.abs().max() <= (6 / 64) ** 0.5 / SIREN_W0
    assert isinstance(model[1], Sine) and model[1].w0 == SIREN_W0
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    torch.testing.assert_close(Sine()(x), torch.sin(30 * x))


def test_layernorm_on_one_input_maps_every_x_to_the_same_value():
    """The upstream FastKAN pitfall: with one input LayerNorm returns its bias, so the spline branch is constant."""
    with pytest.warns(UserWarning, match="LayerNorm over a single feature"):
        model = models.create_model("fastkan", n_in=1, n_out=2, seed=0).double()
    layer = model.layers[0]
    x = torch.linspace(-2, 2, 11, dtype=torch.float64)[:, None]
    z = layer.layernorm(x)
    assert torch.equal(z, layer.layernorm.bias.expand_as(z).detach())
    spline = layer(x) - layer.base_linear(torch.nn.functional.silu(x))
    torch.testing.assert_close(spline, spline[:1].expand_as(spline), rtol=0, atol=1e-14)
    # without LayerNorm the spline branch sees x
    noln = build("fastkan_noln", n_in=1, n_out=2).layers[0]
    spline = noln(x) - noln.base_linear(torch.nn.functional.silu(x))
    assert (spline - spline[:1]).abs().max() > 1e-3


def test_chebyshev_recurrence_matches_cosine_form_and_has_finite_gradients_at_the_ends():
    t = torch.linspace(-0.99, 0.99, 41, dtype=torch.float64)
    n = torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(chebyshev_basis(t, 5), torch.cos(n * torch.acos(t)[:, None]))
    model = build("chebykan")
    x = torch.full((2, 4), 40.0, dtype=torch.float64)  # tanh(40) rounds to exactly 1
    x[1] *= -1
    assert torch.tanh(x).abs().eq(1).all()
    J = vmap(jacrev(model))(x.requires_grad_())
    assert torch.isfinite(J).all()
    model(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("mlp_tanh", {"width": 0}, "width must be an integer >= 1"),
        ("mlp_relu", {"hidden": [8, -3]}, "hidden width must be an integer >= 1"),
        ("mlp_tanh", {"depth": -1}, "depth must be an integer >= 0"),
        ("mlp_tanh", {"activation": "sigmoidd"}, "unknown activation 'sigmoidd'.*did you mean 'sigmoid'"),
        ("fastkan", {"width": 0}, "width must be"),
        ("fastkan", {"num_grids": 1}, "num_grids must be an integer >= 2"),
        ("fastkan_noln", {"grid_min": 1.0, "grid_max": -1.0}, "lower < upper"),
        ("efficient_kan", {"spline_order": 0}, "spline_order must be an integer >= 1"),
        ("efficient_kan", {"grid_size": 0}, "grid_size must be an integer >= 1"),
        ("efficient_kan", {"grid_range": (1.0, 1.0)}, "grid_range must have lower < upper"),
        ("chebykan", {"degree": 0}, "degree must be an integer >= 1"),
        ("chebykan", {"width": 2.5}, "width must be an integer"),
        ("fastkan", {"layers": [3, 30, 4]}, r"layers=\[3, 30, 4\] starts with 3.*n_in=4"),
        ("efficient_kan", {"width": 8, "hidden": [8]}, "give the shape one way only"),
    ],
)
def test_bad_configs_give_clear_errors(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        models.create_model(name, **overrides)


@pytest.mark.parametrize("name", ["fastkan", "efficient_kan", "chebykan", "mlp_tanh"])
def test_layers_spelling_like_upstream(name):
    model = build(name, layers=[4, 30, 30, 4])
    assert model.widths == [4, 30, 30, 4]


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_forward_jacobian_and_grid_update(name):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cpu = build(name)
    gpu = build(name).cuda()
    x = inputs(cpu, 16)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-10, atol=1e-12)
    J = vmap(jacrev(gpu))(x.cuda()).cpu()
    torch.testing.assert_close(J, vmap(jacrev(cpu))(x), rtol=1e-9, atol=1e-11)
    if hasattr(gpu, "update_grid"):
        gpu.update_grid(x.cuda())
        assert gpu.layers[0].grid.is_cuda and torch.isfinite(gpu(x.cuda())).all()
