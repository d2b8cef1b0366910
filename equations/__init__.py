"""jacbench's equation sets: named maps R^n_in -> R^n_out on a box, with exact Jacobians.

    import equations
    eq = equations.get("forum4x4")              # built-in; also "gen:smooth:3", "file:my_eq.py"
    equations.list("gen:*,forum*")               # fnmatch patterns, comma-separated
    print(equations.describe_table())            # name, n_in, n_out, domain, description
    print(equations.describe("gen:hard:0"))      # doc and formulas
    equations.selfcheck()                        # every set's Jacobian vs finite differences, vmap, float32

Sampling, datasets, CSV files and scaling live in the submodules ``equations.sampling``, ``equations.data``,
``equations.csvio`` and ``equations.scaling``.
"""

from equations.base import DomainError, EquationSet
from equations.registry import describe, describe_table, get, register, unregister
from equations.registry import list_names as list  # the public name the contract promises
from equations.selfcheck import selfcheck
from equations.user import load_file

__all__ = [
    "DomainError",
    "EquationSet",
    "describe",
    "describe_table",
    "get",
    "list",
    "load_file",
    "register",
    "selfcheck",
    "unregister",
]
