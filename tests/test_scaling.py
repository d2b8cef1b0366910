"""Normalization and exact Jacobian de-normalization.

Tolerance for "exact": the compared float64 computations differ only in the order of a handful of correctly
rounded operations (each off by at most 2^-53 ~ 1.1e-16 relative), so they agree to ~1e-15; we allow 1e-12
relative (1000x headroom), while any wrong factor (a range instead of its inverse, rows and columns swapped,
a forgotten output range) is off by O(1) or, for the forum set's output ranges, by orders of magnitude.
"""

import json

import pytest
import torch
from torch import nn

from equations.data import make_dataset, split
from equations.scaling import MinMax, PhysicalModel, Scaler

EXACT = {"rtol": 1e-12, "atol": 0.0}  # see the module docstring
F64 = torch.float64


def _data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g, dtype=F64) * torch.tensor([2.9, 1000.0, 1e-3], dtype=F64) + 0.1
    y = torch.stack([x[:, 0] * 1e4, x[:, 1] - x[:, 2]], dim=1)
    return x, y


def _jac(f, x):
    return torch.func.vmap(torch.func.jacrev(f))(x)


# --- fitting ----------------------------------------------------------------------------------------


def _cancellation_tol(a, scale):
    # x - shift cancels: its rounding error is a few ulps of |x|, i.e. ~eps |x| / scale in normalized units
    return 4 * torch.finfo(F64).eps * a.abs().amax(0) / scale


def test_minmax_maps_training_range_onto_target():
    x, y = _data()
    s = Scaler.fit(x, y)  # (0, 1): shift = min and scale = max - min exactly, so the ends are exact
    assert torch.equal(s.transform_x(x).amin(0), torch.zeros(3, dtype=F64))
    assert torch.equal(s.transform_x(x).amax(0), torch.ones(3, dtype=F64))
    assert torch.equal(s.transform_y(y).amax(0), torch.ones(2, dtype=F64))
    for target in [(-1.0, 1.0), (-2.0, 2.0)]:
        s = Scaler.fit(x, y, "minmax", x_range=target, y_range=target)
        for a, t, scale in ((x, s.transform_x(x), s.x_scale), (y, s.transform_y(y), s.y_scale)):
            tol = _cancellation_tol(a, scale)
            assert bool(((t.amin(0) - target[0]).abs() <= tol).all())
            assert bool(((t.amax(0) - target[1]).abs() <= tol).all())


def test_standard_gives_zero_mean_unit_std():
    x, y = _data()
    s = Scaler.fit(x, y, "standard")
    xn = s.transform_x(x)
    assert bool((xn.mean(0).abs() <= _cancellation_tol(x, s.x_scale)).all())
    torch.testing.assert_close(xn.std(0, correction=0), torch.ones(3, dtype=F64), rtol=0, atol=1e-12)


def test_none_is_the_identity():
    x, y = _data()
    s = Scaler.fit(x, y, "none")
    assert torch.equal(s.transform_x(x), x) and torch.equal(s.inverse_y(y), y)
    J = torch.randn(5, 2, 3, dtype=F64)
    assert torch.equal(s.jacobian_to_physical(J), J)


@pytest.mark.parametrize("method", ["minmax", "standard", "none"])
def test_transform_inverse_round_trip(method):
    x, y = _data(1)
    s = Scaler.fit(x, y, method, x_range=(-1, 1))
    # a few ulps of each column's magnitude: (x - s) / c * c + s rounds at most ~3 times
    torch.testing.assert_close(s.inverse_x(s.transform_x(x)), x, rtol=4e-16, atol=4e-16 * float(x.abs().max()))
    torch.testing.assert_close(s.inverse_y(s.transform_y(y)), y, rtol=4e-16, atol=4e-16 * float(y.abs().max()))


def test_fit_is_on_the_data_it_is_given_only(forum_eq):
    # fitted on the training split, validation data may fall outside [0, 1]: that is expected, not clipped
    ds = make_dataset(forum_eq, 60, "uniform", seed=0)
    parts = split(ds, seed=0)
    s = Scaler.fit(parts.train.x, parts.train.y)
    assert torch.equal(s.x_shift, parts.train.x.amin(0))
    assert torch.equal(s.x_scale, parts.train.x.amax(0) - parts.train.x.amin(0))


@pytest.mark.parametrize("method", ["minmax", "standard"])
def test_constant_column_names_it(method):
    x, y = _data()
    x[:, 1] = 0.1  # constant input
    with pytest.raises(ValueError, match=r"constant or empty-range input column\(s\) 'x2' \(min 0.1"):
        Scaler.fit(x, y, method, input_names=("x1", "x2", "x3"))
    x, y = _data()
    y[:, 0] = 5.0
    with pytest.raises(ValueError, match=r"output column\(s\) 'f1'"):
        Scaler.fit(x, y, method)
    Scaler.fit(x, y, "none")  # no division, no error


def test_bad_method_range_and_data():
    x, y = _data()
    with pytest.raises(
        ValueError, match=r"unknown scaling method 'robust'; choose one of \['minmax', 'standard', 'none'\]"
    ):
        Scaler.fit(x, y, "robust")
    with pytest.raises(ValueError, match="low < high"):
        Scaler.fit(x, y, x_range=(1, -1))
    x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="x row 3, column 2 is nan"):
        Scaler.fit(x, y)
    s = Scaler.fit(*_data())
    with pytest.raises(ValueError, match=r"expected x with last dimension 3, got shape \(5, 2\)"):
        s.transform_x(torch.zeros(5, 2, dtype=F64))


def test_to_dict_from_dict_is_exact():
    s = Scaler.fit(*_data(), "standard")
    back = Scaler.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.method == "standard"
    for name in ("x_shift", "x_scale", "y_shift", "y_scale"):
        assert torch.equal(getattr(back, name), getattr(s, name))
    with pytest.raises(ValueError, match=r"missing keys \['y_scale'\]"):
        Scaler.from_dict({k: v for k, v in s.to_dict().items() if k != "y_scale"})


# --- the forum user's mapping -------------------------------------------------------------------------


def test_from_minmax_rejects_empty_range():
    mm = MinMax(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0]), torch.tensor([2.0]))
    with pytest.raises(ValueError, match=r"input column\(s\) 'x2' \(min 1, max 1\)"):
        Scaler.from_minmax(mm)


# --- the chain rule and the wrapper -----------------------------------------------------------------


def _scaler(method="minmax", x_range=(0, 1)):
    return Scaler.fit(*_data(2), method, x_range=x_range, y_range=x_range)


@pytest.mark.parametrize(("method", "rng"), [("minmax", (0, 1)), ("minmax", (-1, 1)), ("standard", (0, 1))])
def test_jacobian_conversion_is_the_chain_rule_and_invertible(method, rng):
    s = _scaler(method, rng)
    J = torch.randn(7, 2, 3, dtype=F64)
    expected = torch.diag(s.y_scale) @ J @ torch.diag(1 / s.x_scale)
    torch.testing.assert_close(s.jacobian_to_physical(J), expected, **EXACT)
    torch.testing.assert_close(s.jacobian_to_normalized(s.jacobian_to_physical(J)), J, **EXACT)
    with pytest.raises(ValueError, match=r"does not end in \(n_out, n_in\) = \(2, 3\)"):
        s.jacobian_to_physical(torch.zeros(7, 3, 2))


@pytest.mark.parametrize(("method", "rng"), [("minmax", (0, 1)), ("minmax", (-1, 1)), ("standard", (0, 1))])
def test_physical_jacobian_of_a_linear_model_is_closed_form(method, rng):
    s = _scaler(method, rng)
    lin = nn.Linear(3, 2).double()
    W = torch.tensor([[1.5, -2.0, 0.25], [0.0, 3.0, -1.0]], dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(W)
    pm = PhysicalModel(lin, s)
    x = _data(3, 5)[0]
    J = _jac(pm, x)
    torch.testing.assert_close(J, (torch.diag(s.y_scale) @ W @ torch.diag(1 / s.x_scale)).expand(5, 2, 3), **EXACT)
    torch.testing.assert_close(J, s.jacobian_to_physical(W.expand(5, 2, 3)), **EXACT)


def test_physical_jacobian_of_tanh_of_linear_is_chain_rule():
    s = _scaler("minmax", (-1, 1))
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    model = nn.Sequential(lin, nn.Tanh())
    x = _data(4, 9)[0]
    # closed form in normalized units: J_norm = diag(1 - tanh(W x_n + b)^2) W
    t = torch.tanh(s.transform_x(x) @ lin.weight.T + lin.bias).detach()
    J_norm = (1 - t**2)[:, :, None] * lin.weight.detach()
    J_phys = _jac(PhysicalModel(model, s), x)
    torch.testing.assert_close(J_phys, s.jacobian_to_physical(J_norm), **EXACT)
    torch.testing.assert_close(J_phys, torch.diag(s.y_scale) @ J_norm @ torch.diag(1 / s.x_scale), **EXACT)


def test_wrapping_a_perfect_normalized_model_recovers_the_true_jacobian(forum_eq):
    # the forum's question end to end: a model that is exact in normalized units has, de-normalized,
    # exactly the equations' Jacobian, even though the normalized Jacobian differs by orders of magnitude
    eq = forum_eq
    ds = make_dataset(eq, 32, "lhs", seed=0)
    s = Scaler.fit(ds.x, ds.y)

    def perfect(x_n):
        return s.transform_y(eq(s.inverse_x(x_n)))

    J_phys = _jac(PhysicalModel(perfect_module(perfect), s), ds.x)
    torch.testing.assert_close(J_phys, ds.J, **EXACT)
    _, _, J_n = s.transform_dataset(ds)
    torch.testing.assert_close(s.jacobian_to_physical(J_n), ds.J, **EXACT)
    assert float((J_n - ds.J).abs().max() / ds.J.abs().max()) > 0.5  # normalized != physical here


def perfect_module(f):
    class Perfect(nn.Module):
        def forward(self, x):
            return f(x)

    return Perfect()


def test_physical_model_keeps_dtype_and_is_vmap_safe():
    s = _scaler()
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))  # float32 weights
    pm = PhysicalModel(model, s)
    x = _data(5, 6)[0].float()
    y = pm(x)
    assert y.dtype == torch.float32 and s.x_scale.dtype == F64  # the scaler's constants were cast, not x
    torch.testing.assert_close(torch.func.vmap(pm)(x), y, rtol=0, atol=0)
    assert _jac(pm, x).dtype == torch.float32
    assert pm.n_in == 3 and pm.n_out == 2
    # float64 model and input give float64 throughout
    pm64 = PhysicalModel(model.double(), s)
    assert pm64(x.double()).dtype == F64


def test_physical_model_jacobian_after_inference_mode_prediction():
    # cached constants made inside inference_mode must still be usable by autograd afterwards
    s = _scaler()
    pm = PhysicalModel(nn.Linear(3, 2).double(), s)
    x = _data(6, 4)[0]
    with torch.inference_mode():
        pm(x)
    assert _jac(pm, x).shape == (4, 2, 3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_physical_model_on_cuda_casts_the_scaler(dtype):
    # the scaler stays float64 on the CPU; its constants follow x to the GPU and to x's dtype
    s = _scaler("minmax", (-1, 1))
    lin = nn.Linear(3, 2).to("cuda", dtype)
    pm = PhysicalModel(lin, s)
    x = _data(7, 5)[0].to("cuda", dtype)
    J = _jac(pm, x)
    assert J.device.type == "cuda" and J.dtype == dtype and s.x_scale.device.type == "cpu"
    expected = s.jacobian_to_physical(lin.weight.detach().double().cpu().expand(5, 2, 3))
    tol = {"rtol": 1e-5, "atol": 0.0} if dtype == torch.float32 else EXACT  # float32: a few ulps of 1.2e-7
    torch.testing.assert_close(J.double().cpu(), expected, **tol)
