"""The other way to define your own set: a full EquationSet, here with a hand-derived Jacobian.

python -m bench selfcheck --equations file:equations/examples/my_equation_set.py
"""

import torch

from equations.base import EquationSet


def _fn(x: torch.Tensor) -> torch.Tensor:
    """Polar to Cartesian coordinates: (r, theta) -> (r cos theta, r sin theta); x (..., 2) -> (..., 2)."""
    r, theta = x[..., 0], x[..., 1]
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)


def _jacobian(x: torch.Tensor) -> torch.Tensor:
    """x (..., 2) -> J (..., 2, 2) = [[cos, -r sin], [sin, r cos]]."""
    r, theta = x[..., 0], x[..., 1]
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -r * s], dim=-1), torch.stack([s, r * c], dim=-1)], dim=-2)


EQUATION = EquationSet(
    name="polar_to_cartesian",
    fn=_fn,
    lower=(0.5, 0.0),
    upper=(2.0, 3.14159),
    input_names=("r", "theta"),
    output_names=("x", "y"),
    doc="Polar to Cartesian coordinates on r in [0.5, 2], theta in [0, pi]: an example of EQUATION = EquationSet(...).",
    jacobian_fn=_jacobian,
    formulas=("x = r*cos(theta)", "y = r*sin(theta)"),
)
