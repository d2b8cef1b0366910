"""Generated equation sets ``gen:<family>:<seed>[:<n_in>x<n_out>]``: random formulas, reproducible everywhere.

A small grammar of smooth primitives (inputs, sin/cos with a phase, exp, log1p and sqrt of arguments shifted
to be positive, squares, cubes, sums and products, nested) is sampled with ``random.Random`` seeded by the
name, using integer draws only; every constant is a short decimal, so the printed formula *is* the function.
Each sub-expression carries a conservative interval bound over the box (interval arithmetic), which is how
sqrt and log1p arguments are made positive by construction and how exp and sin arguments are kept in range:
every generated set is finite and smooth on its whole box.

Formulas are written in z_i = (x_i - c_i) / h_i in [-1, 1] (for ``smooth``, z = x on [-1, 1]^n). Families
are a difficulty knob: ``smooth`` (shallow, slow variation), ``mixed`` (deeper, log1p/sqrt, outputs scaled
by 0.1..100, inputs of different widths), ``hard`` (deepest, fast oscillation, sqrt near its kink, outputs
scaled by 1e-3..1e3, input widths 0.02..2000).
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from equations.base import EquationSet
from equations.names import UnknownName, suggest

DEFAULT_DIMS = (4, 4)
MAX_DIM = 32
NAME_RE = re.compile(r"gen:(?P<family>[^:]+):(?P<seed>[^:]+)(?::(?P<dims>[^:]+))?")
SYNTAX = "gen:<family>:<seed>[:<n_in>x<n_out>], e.g. gen:smooth:0 or gen:hard:3:2x5"


@dataclass(frozen=True)
class Family:
    """The difficulty knob: how deep, how oscillatory, how badly scaled a generated set is."""

    description: str
    max_depth: int  # nesting depth of the expression trees
    leaf_percent: int  # chance (in %) that a non-root node is an input z_i
    ops: tuple[tuple[str, int], ...]  # (primitive, weight)
    terms: tuple[int, int]  # number of terms per output, inclusive range
    max_slope: float  # every function argument has |d arg / d z_i| <= this (sin(max_slope * z): about
    # max_slope / pi half-waves across the box); it keeps nested compositions from compounding frequencies
    exp_range: float  # |argument| of exp stays below this
    sqrt_floor: float  # sqrt arguments are >= this on the box (derivative <= 1 / (2 sqrt(floor)))
    log1p_floor: float  # log1p arguments are >= this on the box (> -1)
    half_widths: tuple[float, ...]  # choices of h_i; (1.0,) with centre 0 means z = x on [-1, 1]
    out_exponents: tuple[int, int]  # outputs are multiplied by 10**k, k in this inclusive range


FAMILIES: dict[str, Family] = {
    "smooth": Family(
        "easy: depth 1, slow sin/cos, mild exp, squares and products on [-1, 1]^n",
        max_depth=1,
        leaf_percent=0,
        ops=(("sin", 3), ("cos", 3), ("exp", 2), ("square", 2), ("mul", 2)),
        terms=(2, 2),
        max_slope=1.5,
        exp_range=1.0,
        sqrt_floor=1.0,
        log1p_floor=0.0,
        half_widths=(1.0,),
        out_exponents=(0, 0),
    ),
    "mixed": Family(
        "medium: depth 2, log1p and sqrt, cubes, sums; input widths 1..20, outputs scaled by 0.1..100",
        max_depth=2,
        leaf_percent=30,
        ops=(("sin", 3), ("cos", 3), ("exp", 2), ("log1p", 2), ("sqrt", 2), ("square", 2), ("cube", 1), ("mul", 3)),
        terms=(2, 3),
        max_slope=3.0,
        exp_range=1.5,
        sqrt_floor=0.25,
        log1p_floor=0.0,
        half_widths=(0.5, 1.0, 2.0, 5.0, 10.0),
        out_exponents=(-1, 2),
    ),
    "hard": Family(
        "hard: depth 3, fast oscillation, sqrt/log1p near their kinks, input widths 0.02..2000, "
        "outputs scaled by 1e-3..1e3",
        max_depth=3,
        leaf_percent=20,
        ops=(
            ("sin", 3),
            ("cos", 3),
            ("exp", 2),
            ("log1p", 2),
            ("sqrt", 2),
            ("square", 1),
            ("cube", 1),
            ("mul", 4),
            ("add", 2),
        ),
        terms=(3, 4),
        max_slope=8.0,
        exp_range=2.5,
        sqrt_floor=0.05,
        log1p_floor=-0.8,
        half_widths=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
        out_exponents=(-3, 3),
    ),
}

# Printing precedence: a sub-expression with lower precedence than its context gets parentheses.
SUM, PRODUCT, ATOM = 1, 2, 3


@dataclass(frozen=True)
class Expr:
    """A formula node: its text, its torch evaluation on the z columns, and bounds over the box.

    ``lo``/``hi`` bound the value and ``slope`` bounds every partial derivative |d e / d z_i| (interval
    arithmetic: conservative, never too small).
    """

    text: str
    fn: Callable[[Sequence[Tensor]], Tensor]
    lo: float
    hi: float
    slope: float
    vars: frozenset[int]
    prec: int = ATOM

    def wrapped(self, context: int) -> str:
        return self.text if self.prec >= context else f"({self.text})"

    @property
    def bound(self) -> float:
        return max(abs(self.lo), abs(self.hi))


def _num(c: float) -> str:
    return f"{c:g}"


def _leaf(i: int, names: Sequence[str]) -> Expr:
    return Expr(names[i], lambda z: z[i], -1.0, 1.0, 1.0, frozenset({i}))


def _scaled(e: Expr, a: float) -> Expr:
    """a * e (a > 0), printed as "a*e" unless a == 1."""
    if a == 1:
        return e
    text = f"{_num(a)}*{e.wrapped(PRODUCT)}"
    return Expr(text, lambda z: a * e.fn(z), a * e.lo, a * e.hi, a * e.slope, e.vars, PRODUCT)


def _shifted(e: Expr, s: float) -> Expr:
    """e + s, printed "e + s" (s > 0) or just e (s == 0)."""
    if s == 0:
        return e
    return Expr(f"{e.text} + {_num(s)}", lambda z: e.fn(z) + s, e.lo + s, e.hi + s, e.slope, e.vars, SUM)


def _call(name: str, e: Expr, lo: float, hi: float, max_derivative: float) -> Expr:
    """name(e) for a torch elementwise function ``name`` with range [lo, hi] and |name'| <= max_derivative."""
    f = getattr(torch, name)
    return Expr(f"{name}({e.text})", lambda z: f(e.fn(z)), lo, hi, max_derivative * e.slope, e.vars)


def _fit(rng: random.Random, fam: Family, e: Expr, limit: float) -> float:
    """A factor a > 0 (two significant digits, rounded down) with |a * e| <= limit and slope(a * e) <=
    fam.max_slope on the box; a is at least half the largest such factor."""
    raw = rng.randint(50, 100) / 100 * min(limit / max(e.bound, 1e-12), fam.max_slope / max(e.slope, 1e-12))
    digits = 1 - math.floor(math.log10(raw))
    return math.floor(raw * 10**digits) / 10**digits


def _sin_cos(rng: random.Random, fam: Family, e: Expr, name: str) -> Expr:
    arg = _shifted(_scaled(e, _fit(rng, fam, e, math.inf)), rng.randint(0, 314) / 100)
    return _call(name, arg, -1.0, 1.0, 1.0)


def _exp(rng: random.Random, fam: Family, e: Expr) -> Expr:
    arg = _scaled(e, _fit(rng, fam, e, fam.exp_range))
    if rng.randint(0, 1):
        negated = arg.fn
        arg = Expr(f"-{arg.wrapped(PRODUCT)}", lambda z: -negated(z), -arg.hi, -arg.lo, arg.slope, arg.vars, PRODUCT)
    return _call("exp", arg, math.exp(arg.lo), math.exp(arg.hi), math.exp(arg.hi))


def _positive(rng: random.Random, fam: Family, e: Expr, floor: float) -> Expr:
    """s + a*e with |a*e| <= 1 and s chosen (rounded up to 0.01) so the result is >= floor on the box."""
    arg = _scaled(e, _fit(rng, fam, e, 1.0))
    return _shifted(arg, max(0.0, math.ceil((floor - arg.lo) * 100) / 100))


def _power(base: Expr, k: int) -> Expr:
    """base**k for k = 2 or 3."""
    if k == 2:
        lo, hi = (0.0 if base.lo <= 0 <= base.hi else min(base.lo**2, base.hi**2)), base.bound**2
    else:
        lo, hi = base.lo**3, base.hi**3
    slope = k * base.bound ** (k - 1) * base.slope
    return Expr(f"{base.wrapped(ATOM)}**{k}", lambda z: base.fn(z) ** k, lo, hi, slope, base.vars, PRODUCT)


def _unary(rng: random.Random, fam: Family, op: str, e: Expr) -> Expr:
    if op in ("sin", "cos"):
        return _sin_cos(rng, fam, e, op)
    if op == "exp":
        return _exp(rng, fam, e)
    if op == "sqrt":
        arg = _positive(rng, fam, e, fam.sqrt_floor)
        return _call("sqrt", arg, math.sqrt(arg.lo), math.sqrt(arg.hi), 0.5 / math.sqrt(arg.lo))
    if op == "log1p":
        arg = _positive(rng, fam, e, fam.log1p_floor)
        return _call("log1p", arg, math.log1p(arg.lo), math.log1p(arg.hi), 1 / (1 + arg.lo))
    if op in ("square", "cube"):
        return _power(_scaled(e, _fit(rng, fam, e, 1.5)), 2 if op == "square" else 3)  # powers of order one
    raise AssertionError(op)


def _binary(op: str, a: Expr, b: Expr) -> Expr:
    if op == "mul":
        corners = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        text = f"{a.wrapped(PRODUCT)}*{b.wrapped(PRODUCT)}"
        slope = a.bound * b.slope + b.bound * a.slope
        return Expr(text, lambda z: a.fn(z) * b.fn(z), min(corners), max(corners), slope, a.vars | b.vars, PRODUCT)
    text = f"{a.text} + {b.text}"
    return Expr(text, lambda z: a.fn(z) + b.fn(z), a.lo + b.lo, a.hi + b.hi, a.slope + b.slope, a.vars | b.vars, SUM)


def _choose(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    r = rng.randrange(sum(w for _, w in weighted))
    for name, w in weighted:
        r -= w
        if r < 0:
            return name
    raise AssertionError("unreachable")


def _expr(rng: random.Random, fam: Family, depth: int, names: Sequence[str], root: bool = False) -> Expr:
    """A random expression of at most ``depth`` nested primitives over the variables ``names``."""
    if depth == 0 or (not root and rng.randrange(100) < fam.leaf_percent):
        return _leaf(rng.randrange(len(names)), names)
    op = _choose(rng, fam.ops)
    if op in ("mul", "add"):
        a = _expr(rng, fam, depth - 1, names)
        b = _expr(rng, fam, depth - 1, names)
        if op == "add" and b.text == a.text:  # "z2 + z2" reads like a typo: redraw the second operand once
            b = _expr(rng, fam, depth - 1, names)
        return _binary(op, a, b)
    return _unary(rng, fam, op, _expr(rng, fam, depth - 1, names))


def _signed_sum(coefs: list[float], terms: list[Expr]) -> Expr:
    """sum_k c_k * e_k printed as "c1*e1 - c2*e2 + ..."."""
    text, fns = "", []
    for k, (c, e) in enumerate(zip(coefs, terms, strict=True)):
        body = e.wrapped(PRODUCT) if abs(c) == 1 else f"{_num(abs(c))}*{e.wrapped(PRODUCT)}"
        sign = ("-" if c < 0 else "") if k == 0 else (" - " if c < 0 else " + ")
        text += sign + body
        fns.append((c, e.fn))
    lo = sum(min(c * e.lo, c * e.hi) for c, e in zip(coefs, terms, strict=True))
    hi = sum(max(c * e.lo, c * e.hi) for c, e in zip(coefs, terms, strict=True))
    slope = sum(abs(c) * e.slope for c, e in zip(coefs, terms, strict=True))
    variables = frozenset().union(*(e.vars for e in terms))
    return Expr(text, lambda z: sum(c * f(z) for c, f in fns), lo, hi, slope, variables, SUM)


def _zmap(i: int, c: float, h: float) -> str:
    """'z1 = (x1 - 3)/5', 'z1 = (x1 + 3)/5', 'z1 = x1/5' or 'z1 = x1 + 3'."""
    shifted = f"x{i + 1}" if c == 0 else f"(x{i + 1} {'-' if c > 0 else '+'} {_num(abs(c))})"
    return f"z{i + 1} = {shifted.strip('()')}" if h == 1 else f"z{i + 1} = {shifted}/{_num(h)}"


def parse_name(name: str) -> tuple[str, int, int, int]:
    """'gen:<family>:<seed>[:<n_in>x<n_out>]' -> (family, seed, n_in, n_out); clear errors otherwise."""
    m = NAME_RE.fullmatch(name.strip())
    if m is None:
        raise ValueError(f"malformed generated-set name {name!r}; expected {SYNTAX}")
    family, seed, dims = m["family"], m["seed"], m["dims"]
    if family not in FAMILIES:
        raise UnknownName(
            f"unknown generated family {family!r} in {name!r}{suggest(family, FAMILIES)}; "
            f"families: {', '.join(FAMILIES)}"
        )
    if not seed.isdigit():
        raise ValueError(f"seed {seed!r} in {name!r} must be a non-negative integer; expected {SYNTAX}")
    n_in, n_out = DEFAULT_DIMS
    if dims is not None:
        dm = re.fullmatch(r"(\d+)x(\d+)", dims)
        if dm is None or not (1 <= int(dm[1]) <= MAX_DIM and 1 <= int(dm[2]) <= MAX_DIM):
            raise ValueError(f"dimensions {dims!r} in {name!r} must be <n_in>x<n_out>, each 1..{MAX_DIM}, e.g. 4x4")
        n_in, n_out = int(dm[1]), int(dm[2])
    return family, int(seed), n_in, n_out


def canonical_name(family: str, seed: int, n_in: int, n_out: int) -> str:
    """The name a generated set carries: the dimensions are left out when they are the default 4x4."""
    dims = "" if (n_in, n_out) == DEFAULT_DIMS else f":{n_in}x{n_out}"
    return f"gen:{family}:{seed}{dims}"


def generate(name: str) -> EquationSet:
    """Build (or fetch from the cache) the generated set ``name``; see the module docstring."""
    return _generate(*parse_name(name))


def _box(rng: random.Random, fam: Family, n_in: int) -> tuple[list[float], list[float]]:
    """Centres c_i and half-widths h_i of the input box (z_i = (x_i - c_i) / h_i in [-1, 1])."""
    half = [rng.choice(fam.half_widths) for _ in range(n_in)]
    centre = [0.0 if fam.half_widths == (1.0,) else round(h * rng.randint(-20, 20) / 10, 12) for h in half]
    return centre, half


def _terms(rng: random.Random, fam: Family, names: Sequence[str], n_out: int) -> list[list[Expr]]:
    """Random terms for each output; every input appears somewhere (a slow sine wave is added if not)."""
    terms = [
        [_expr(rng, fam, fam.max_depth, names, root=True) for _ in range(rng.randint(*fam.terms))] for _ in range(n_out)
    ]
    used = frozenset().union(*(e.vars for row in terms for e in row))
    for i in sorted(set(range(len(names))) - used):
        terms[i % n_out].append(_sin_cos(rng, FAMILIES["smooth"], _leaf(i, names), "sin"))
    return terms


@functools.lru_cache(maxsize=256)
def _generate(family: str, seed: int, n_in: int, n_out: int) -> EquationSet:
    fam = FAMILIES[family]
    rng = random.Random(f"jacbench-gen:{family}:{seed}:{n_in}x{n_out}")  # str seeds hash with SHA-512: portable
    centre, half = _box(rng, fam, n_in)
    identity = all(c == 0 and h == 1 for c, h in zip(centre, half, strict=True))
    inputs = tuple(f"x{i + 1}" for i in range(n_in))
    names = inputs if identity else tuple(f"z{i + 1}" for i in range(n_in))

    outputs, formulas = [], []
    for k, row in enumerate(_terms(rng, fam, names, n_out)):
        total = _signed_sum([rng.choice((-1, 1)) * rng.randint(20, 200) / 100 for _ in row], row)
        scale = 10.0 ** rng.randint(*fam.out_exponents)
        outputs.append((scale, total.fn))
        formulas.append(f"f{k + 1} = " + (total.text if scale == 1 else f"{_num(scale)}*({total.text})"))

    def fn(x: Tensor) -> Tensor:  # x: (..., n_in) -> (..., n_out)
        cols = x.unbind(-1)
        z = cols if identity else [(xi - c) / h for xi, c, h in zip(cols, centre, half, strict=True)]
        return torch.stack([s * f(z) for s, f in outputs], dim=-1)

    boxes = list(zip(centre, half, strict=True))
    maps = "used directly (z = x)" if identity else ", ".join(_zmap(i, c, h) for i, (c, h) in enumerate(boxes))
    return EquationSet(
        name=canonical_name(family, seed, n_in, n_out),
        fn=fn,
        lower=tuple(round(c - h, 12) for c, h in boxes),
        upper=tuple(round(c + h, 12) for c, h in boxes),
        input_names=inputs,
        output_names=tuple(f"f{k + 1}" for k in range(n_out)),
        doc=f"Generated {family} set, seed {seed}, {n_in} -> {n_out}. {fam.description.capitalize()}. Inputs: {maps}.",
        formulas=tuple(formulas),
    )
