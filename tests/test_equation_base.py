"""The EquationSet contract: shape checks, domain checks, and the torch.func Jacobian."""

import pytest
import torch

from equations.base import DomainError, EquationSet


def _affine() -> EquationSet:
    # y = A x + c with a known Jacobian A
    A = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.5, 0.0]], dtype=torch.float64)
    return EquationSet(
        name="affine",
        fn=lambda x: x @ A.to(x).T + 1.0,
        lower=(0.0, -1.0),
        upper=(1.0, 1.0),
        input_names=("x1", "x2"),
        output_names=("f1", "f2", "f3"),
    ), A


def test_jacobian_of_affine_map_is_its_matrix():
    eq, A = _affine()
    x = torch.rand(5, 2, dtype=torch.float64)
    J = eq.jacobian(x)
    assert J.shape == (5, 3, 2)
    torch.testing.assert_close(J, A.expand(5, 3, 2), rtol=0, atol=0)  # exact: linear map


def test_wrong_input_width_names_the_inputs():
    eq, _ = _affine()
    with pytest.raises(ValueError, match=r"takes 2 inputs"):
        eq(torch.zeros(4, 3))


def test_wrong_output_shape_is_reported():
    eq = EquationSet("bad", lambda x: x.sum(-1), (0.0,), (1.0,), ("x1",), ("f1",))
    with pytest.raises(ValueError, match=r"returned shape"):
        eq(torch.zeros(4, 1))


def test_domain_check_names_row_and_input():
    eq, _ = _affine()
    x = torch.tensor([[0.5, 0.0], [0.2, -3.0]], dtype=torch.float64)
    with pytest.raises(DomainError, match=r"row 1, input 'x2' = -3 lies outside its domain \[-1, 1\]"):
        eq.check_domain(x)
    with pytest.raises(DomainError, match=r"row 0, input 'x1' is nan"):
        eq.check_domain(torch.tensor([[float("nan"), 0.0]]))


def test_empty_domain_is_rejected():
    with pytest.raises(ValueError, match="empty domain"):
        EquationSet("e", lambda x: x, (1.0,), (1.0,), ("x1",), ("f1",))
