"""The built-in equation sets, in the order the zoo lists them."""

from __future__ import annotations

from equations.base import EquationSet
from equations.sets.forum import FORUM4X4, SINE1D
from equations.sets.surrogates import SURROGATE_STACK
from equations.sets.testfunctions import LORENZ96, LORENZ96_8, ROSENBROCK_GRAD, STYBLINSKI_TANG_GRAD

BUILTINS: tuple[EquationSet, ...] = (
    FORUM4X4,
    SINE1D,
    STYBLINSKI_TANG_GRAD,
    ROSENBROCK_GRAD,
    LORENZ96,
    LORENZ96_8,
    SURROGATE_STACK,
)
