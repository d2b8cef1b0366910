"""User-defined equation sets: a Python file that jacbench loads and uses like a built-in.

The file defines either

- ``EQUATION = EquationSet(...)`` (full control: names, doc, a hand-derived Jacobian), or
- a function ``f(x)`` mapping x: (..., n_in) -> (..., n_out) with torch ops, plus ``DOMAIN = [(lo, hi), ...]``
  (one pair per input), and optionally ``INPUTS`` and ``OUTPUTS`` (names; default x1.., f1..), ``NAME``
  (default ``file:<path>``), ``JACOBIAN`` (a hand-derived x (..., n_in) -> J (..., n_out, n_in)), ``HESSIAN``
  (a hand-derived x (..., n_in) -> H (..., n_out, n_in, n_in)), ``FORMULAS`` (one readable string per output)
  and a module docstring (the set's description).

Use it as ``equations.get("file:path/to/my_eq.py")`` or ``equations.load_file(path)``; see
``equations/examples/my_equations.py``. Loading runs the file (it is your code) and evaluates it once at
the box's centre and corners, so a wrong shape or a NaN is reported at load time, naming the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

import torch

from equations.base import EquationSet

MAX_CORNERS = 1024  # all corners up to 10 inputs, else this many seeded ones


def load_file(path: str | Path) -> EquationSet:
    """Load the equation set defined in the Python file ``path`` (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"equation file {str(path)!r} not found (resolved to {str(path.resolve())!r}); "
            "give the path of a .py file that defines EQUATION, or f(x) and DOMAIN"
        )
    module = _run_file(path)
    if hasattr(module, "EQUATION"):
        eq = module.EQUATION
        if not isinstance(eq, EquationSet):
            raise ValueError(
                f"{path}: EQUATION must be an equations.base.EquationSet, got {type(eq).__name__}; "
                "or define f(x) and DOMAIN instead"
            )
    elif callable(getattr(module, "f", None)) and hasattr(module, "DOMAIN"):
        eq = _from_function(path, module)
    else:
        raise ValueError(
            f"{path} defines neither EQUATION (an EquationSet) nor a function f(x) with DOMAIN = [(lo, hi), ...]; "
            "see equations/examples/my_equations.py"
        )
    check_evaluates(eq, where=str(path))
    return eq


def _run_file(path: Path) -> ModuleType:
    """Execute the file as a fresh module with a unique name (two files with one stem do not collide)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(f"jacbench_user_{path.stem}_{digest}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: cannot be loaded as a Python module; is it a .py file?")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file failed: say which file, keep the original as the cause
        raise ValueError(f"{path}: error while running the file: {type(err).__name__}: {err}") from err
    return module


def _from_function(path: Path, module: ModuleType) -> EquationSet:
    domain = _parse_domain(path, module.DOMAIN)
    n_in = len(domain)
    inputs = tuple(getattr(module, "INPUTS", None) or (f"x{i + 1}" for i in range(n_in)))
    outputs = getattr(module, "OUTPUTS", None)
    if outputs is None:  # infer n_out from one evaluation at the centre
        centre = torch.tensor([[(lo + hi) / 2 for lo, hi in domain]], dtype=torch.float64)
        y = module.f(centre)
        if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != 1:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(
                f"{path}: f(x) must return a tensor of shape (..., n_out); for x of shape (1, {n_in}) it "
                f"returned {shape}. Stack the outputs on the last axis: torch.stack([f1, f2], dim=-1)"
            )
        outputs = tuple(f"f{k + 1}" for k in range(y.shape[-1]))
    doc = (module.__doc__ or "").strip() or f"User-defined equation set from {path}."
    return EquationSet(
        name=getattr(module, "NAME", None) or f"file:{path}",
        fn=module.f,
        lower=tuple(lo for lo, _ in domain),
        upper=tuple(hi for _, hi in domain),
        input_names=tuple(inputs),
        output_names=tuple(outputs),
        doc=doc,
        jacobian_fn=getattr(module, "JACOBIAN", None),
        hessian_fn=getattr(module, "HESSIAN", None),
        formulas=tuple(getattr(module, "FORMULAS", ())),
    )


def _parse_domain(path: Path, domain: object) -> list[tuple[float, float]]:
    try:
        pairs = [(float(lo), float(hi)) for lo, hi in domain]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: DOMAIN must be a list of (lo, hi) pairs, one per input; got {domain!r}") from err
    if not pairs:
        raise ValueError(f"{path}: DOMAIN is empty; give one (lo, hi) pair per input")
    return pairs


def corners(eq: EquationSet, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """The box's corners (all 2^n_in of them, or MAX_CORNERS seeded ones): (k, n_in) float64."""
    if 2**eq.n_in <= MAX_CORNERS:
        t = torch.tensor(list(itertools.product((0.0, 1.0), repeat=eq.n_in)), dtype=torch.float64)
    else:
        t = torch.randint(0, 2, (MAX_CORNERS, eq.n_in), generator=torch.Generator().manual_seed(seed)).double()
    lo, hi = eq.bounds()
    return (lo + (hi - lo) * t).to(device)


def check_evaluates(eq: EquationSet, where: str) -> None:
    """Evaluate ``eq`` at its box's centre and corners (float64); raise ValueError naming ``where`` if the
    result has the wrong shape or is not finite."""
    lo, hi = eq.bounds()
    x = torch.cat([(lo + hi)[None] / 2, corners(eq)])
    try:
        y = eq(x)  # EquationSet.__call__ checks the shape and names the expected one
    except Exception as err:
        raise ValueError(f"{where}: {err}") from err  # the error names the set and the shapes
    bad = ~torch.isfinite(y)
    if bool(bad.any()):
        row, col = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{where}: equation set {eq.name!r} returns {y[row, col].item()} for output {eq.output_names[col]!r} "
            f"at x = {x[row].tolist()} inside its domain; narrow the domain or fix the formula"
        )
