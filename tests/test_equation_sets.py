"""The built-in equation sets: exact Jacobians, batching, vmap, float32, known values and known structure."""

import math

import numpy as np
import pytest
import torch

import equations
from equations.selfcheck import FD_TOL, HAND_TOL, central_differences, interior_samples, jacobian_rel_error
from equations.sets import BUILTINS
from equations.sets.surrogates import LOWER as STACK_LOWER
from equations.sets.surrogates import UPPER as STACK_UPPER

NAMES = [eq.name for eq in BUILTINS]


def _widths(eq):
    lo, hi = eq.bounds()
    return hi - lo


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_central_differences(name):
    eq = equations.get(name)
    x = interior_samples(eq, 128, seed=1)
    # Five-point central differences with a step of 1e-4 of each input's width (equations/selfcheck.py):
    # truncation ~h^4 f^(5)/30 and rounding ~eps|f|/h both stay below ~1e-11 relative on these sets, so 1e-6
    # (relative to each output's largest width-scaled entry) separates rounding from a wrong derivative.
    assert jacobian_rel_error(central_differences(eq, x), eq.jacobian(x), _widths(eq)) <= FD_TOL


def test_central_differences_are_exact_for_quartics():
    # the five-point stencil is exact for polynomials of degree <= 4: a check of the checker
    eq = equations.EquationSet("quartic", lambda x: x**4 - 3 * x**2, (-2.0,), (2.0,), ("x",), ("f",))
    x = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)[:, None]
    torch.testing.assert_close(
        central_differences(eq, x)[:, 0, 0], 4 * x[:, 0] ** 3 - 6 * x[:, 0], rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("name", NAMES)
def test_hand_derived_jacobian_matches_torch_func(name):
    eq = equations.get(name)
    assert eq.jacobian_fn is not None, "every built-in has a hand-derived Jacobian"
    x = interior_samples(eq, 128, seed=2)
    J, J_hand = eq.jacobian(x), eq.jacobian_fn(x)
    assert J_hand.shape == J.shape == (128, eq.n_out, eq.n_in)
    # both are exact float64 computations: they differ by rounding only
    assert jacobian_rel_error(J_hand, J, _widths(eq)) <= HAND_TOL


@pytest.mark.parametrize("name", NAMES)
def test_vmap_batch_shapes_and_float32(name):
    eq = equations.get(name)
    x = interior_samples(eq, 16, seed=3)
    y = eq(x)
    torch.testing.assert_close(torch.func.vmap(eq)(x), y, rtol=1e-14, atol=0)
    torch.testing.assert_close(eq(x.reshape(4, 4, eq.n_in)), y.reshape(4, 4, eq.n_out), rtol=0, atol=0)
    torch.testing.assert_close(eq(x[0]), y[0], rtol=1e-14, atol=0)  # a single sample, no batch axis
    J_fwd = torch.func.vmap(torch.func.jacfwd(eq))(x)
    torch.testing.assert_close(J_fwd, eq.jacobian(x), rtol=1e-12, atol=1e-12)
    y32 = eq(x.float())
    assert y32.dtype == torch.float32
    # float32 carries ~7 digits; 1e-5 of each output's largest value leaves ~100x headroom on these sets
    scale = y.abs().amax(dim=0)
    assert ((y32.double() - y).abs().amax(dim=0) <= 1e-5 * scale).all()


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_agrees_with_cpu(name):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    eq = equations.get(name)
    x = interior_samples(eq, 64, seed=4)
    y = eq(x)
    torch.testing.assert_close(eq(x.cuda()).cpu(), y, rtol=1e-12, atol=1e-12)
    y32 = eq(x.float().cuda())
    assert y32.dtype == torch.float32 and y32.device.type == "cuda"
    J_cuda = eq.jacobian(x.cuda())
    assert J_cuda.device.type == "cuda"
    torch.testing.assert_close(J_cuda.cpu(), eq.jacobian(x), rtol=1e-10, atol=1e-10)


def test_forum4x4_at_hand_computed_points():
    eq = equations.get("forum4x4")
    y = eq(torch.ones(1, 4, dtype=torch.float64))[0]
    e = math.e
    # x = (1, 1, 1, 1): every power is 1
    expected = [
        0.4 + 0.2 + 0.1 + 0.3,
        18 + math.sin(1) * math.cos(1),
        math.sin(1) + math.cos(1) + 0.15 * e,
        201 + 10 * e,
    ]
    torch.testing.assert_close(y, torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0)
    # x3 = 2.25 = 1.5^2 and x4 = 1.44 = 1.2^2 make the fractional powers exact: x3^3.5 = 1.5^7, x4^1.5 = 1.2^3
    x = torch.tensor([[0.5, 1.5, 2.25, 1.44]], dtype=torch.float64)
    f1 = 0.4 * 0.25 + 0.2 * 2.25 + 0.1 * 1.5**7 + 0.3 * 1.2**3
    assert eq(x)[0, 0].item() == pytest.approx(f1, rel=1e-15)
    J = eq.jacobian(x)[0]
    assert J[0, 2].item() == pytest.approx(0.35 * 1.5**5, rel=1e-14)  # d f1 / d x3 = 0.35 x3^2.5
    assert J[0, 3].item() == pytest.approx(0.45 * 1.2, rel=1e-14)  # d f1 / d x4 = 0.45 x4^0.5
    assert J[3, 2].item() == 0.0  # f4 does not depend on x3


def test_forum4x4_domain_is_positive_and_outputs_differ_in_scale():
    eq = equations.get("forum4x4")
    assert eq.lower == (0.1,) * 4 and eq.upper == (3.0,) * 4
    x = interior_samples(eq, 2000, seed=0)
    y = eq(x)
    ranges = y.amax(0) - y.amin(0)
    assert ranges.max() / ranges.min() > 100  # f4 spans ~2000, f3 ~5: de-normalization matters


def test_sine1d_is_sin_with_cos_derivative():
    eq = equations.get("sine1d")
    assert (eq.lower, eq.upper) == ((0.0,), (2 * math.pi,))
    x = torch.linspace(0, 2 * math.pi, 33, dtype=torch.float64)[:, None]
    torch.testing.assert_close(eq(x), torch.sin(x), rtol=0, atol=0)
    torch.testing.assert_close(eq.jacobian(x)[:, 0, 0], torch.cos(x[:, 0]), rtol=0, atol=1e-15)


def test_styblinski_tang_jacobian_is_exactly_diagonal():
    eq = equations.get("styblinski_tang_grad")
    x = interior_samples(eq, 64, seed=5)
    J = eq.jacobian(x)
    off = ~torch.eye(4, dtype=torch.bool)
    assert (J[:, off] == 0).all()
    torch.testing.assert_close(torch.diagonal(J, dim1=-2, dim2=-1), 6 * x**2 - 16, rtol=1e-14, atol=1e-12)


def test_rosenbrock_jacobian_is_symmetric_tridiagonal():
    eq = equations.get("rosenbrock_grad")
    x = interior_samples(eq, 64, seed=6)
    J = eq.jacobian(x)
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    assert (J[:, (i - j).abs() > 1] == 0).all()
    torch.testing.assert_close(J, J.transpose(-1, -2), rtol=1e-14, atol=1e-12)
    # the gradient vanishes at the minimum (1, 1, 1, 1)
    assert eq(torch.ones(4, dtype=torch.float64)).abs().max().item() == 0.0


def lorenz96_sparsity(n: int) -> torch.Tensor:
    """Boolean (n, n) pattern of the Lorenz-96 Jacobian's structural nonzeros (columns i-2, i-1, i, i+1)."""
    pattern = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for d in (-2, -1, 0, 1):
            pattern[i, (i + d) % n] = True
    return pattern


@pytest.mark.parametrize("name", ["lorenz96", "lorenz96_8"])
def test_lorenz96_jacobian_structure(name):
    eq = equations.get(name)
    n = eq.n_in
    x = interior_samples(eq, 64, seed=7)
    J = eq.jacobian(x)
    pattern = lorenz96_sparsity(n)
    assert (J[:, ~pattern] == 0).all()  # zero outside the stencil i-2, i-1, i, i+1
    for i in range(n):
        assert (J[:, i, i] == -1).all()
        torch.testing.assert_close(J[:, i, (i + 1) % n], x[:, (i - 1) % n], rtol=0, atol=0)
        torch.testing.assert_close(J[:, i, (i - 2) % n], -x[:, (i - 1) % n], rtol=0, atol=0)
    # N = 4: the stencil covers every column (dense); N = 8: half the entries are structural zeros
    assert int(pattern.sum()) == (16 if n == 4 else 32)
    # the F = 8 fixed point x_i = 8 has zero time derivative
    assert eq(torch.full((n,), 8.0, dtype=torch.float64)).abs().max().item() == 0.0


def test_surrogate_stack_at_hand_computed_point_and_hartmann_minimum():
    eq = equations.get("surrogate_stack")
    # x = (100, 40 pi, 0, 1) is u = (1, 0, 0, 0): Park91a at p = (1, 0, 0, 0) is e; Park91b at u is 2e/3
    x = torch.tensor([[100.0, 40 * math.pi, 0.0, 1.0]], dtype=torch.float64)
    y = eq(x)[0]
    assert y[0].item() == pytest.approx(math.e, rel=1e-15)
    assert y[1].item() == pytest.approx(2 * math.e / 3, rel=1e-15)
    assert y[3].item() == pytest.approx(math.sqrt(100**2 + (1 / (40 * math.pi)) ** 2), rel=1e-15)
    # Hartmann-4's known minimum -3.134494... at u* (Surjanovic & Bingham; DIRECTGOLib)
    u_star = torch.tensor(
        [0.18739527207721953794, 0.19415153036300392131, 0.55791778262575753011, 0.26477962366563889685]
    )
    lo, hi = torch.tensor(STACK_LOWER), torch.tensor(STACK_UPPER)
    x_star = (lo + (hi - lo) * u_star.double())[None]
    assert eq(x_star)[0, 2].item() == pytest.approx(-3.13449414122240010983, abs=1e-12)


def test_surrogate_stack_friedman2_matches_sklearn_formula():
    rng = np.random.default_rng(0)
    u = rng.uniform(size=(50, 4))
    x = np.array(STACK_LOWER) + u * (np.array(STACK_UPPER) - np.array(STACK_LOWER))
    expected = (x[:, 0] ** 2 + (x[:, 1] * x[:, 2] - 1 / (x[:, 1] * x[:, 3])) ** 2) ** 0.5  # make_friedman2's
    got = equations.get("surrogate_stack")(torch.from_numpy(x))[:, 3].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_builtins_are_documented():
    for eq in BUILTINS:
        assert len(eq.doc) > 80, eq.name
        assert len(eq.formulas) == eq.n_out, eq.name


def test_the_shipped_forum_set_is_the_forum_posts_equations(forum_eq):
    """equations.sets.forum against the copy typed independently in tests/conftest.py (float64, bit for bit)."""
    import equations

    shipped = equations.get("forum4x4")
    x = 0.1 + 2.9 * torch.rand(300, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert shipped.input_names == forum_eq.input_names and shipped.output_names == forum_eq.output_names
    torch.testing.assert_close(shipped(x), forum_eq(x), rtol=0, atol=0)
