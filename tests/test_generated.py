"""Generated equation sets: reproducible from the name alone, finite and smooth on the box, formulas = function."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import equations
from equations import generated
from equations.selfcheck import check, interior_samples
from equations.user import corners

FAMILIES = list(generated.FAMILIES)
# a spread of seeds and shapes per family: default 4x4, more inputs than outputs, fewer, and 1x1
SAMPLE = [f"gen:{fam}:{seed}{dims}" for fam in FAMILIES for seed in range(6) for dims in ("", ":6x2", ":2x5", ":1x1")]


def test_gen_smooth_0_formulas_are_pinned():
    # These strings define what the name means. If a grammar change alters them, every published result
    # for gen:* names changes meaning: change the grammar only deliberately, and update this test then.
    assert equations.get("gen:smooth:0").formulas == (
        "f1 = 1.72*x4*x1 + 1.64*exp(0.75*x1)",
        "f2 = 1.83*exp(0.9*x1) + 0.65*sin(1.4*x3 + 1.34) - 0.87*sin(0.81*x2 + 0.72)",
        "f3 = 1.95*(1.2*x3)**2 - 1.97*exp(-0.78*x1)",
        "f4 = 0.79*cos(1.5*x4 + 1.51) + 1.73*sin(1.4*x1 + 2.11)",
    )


def test_same_name_same_set_without_the_cache():
    first = equations.get("gen:hard:11")
    generated._generate.cache_clear()
    second = equations.get("gen:hard:11")
    assert first is not second
    assert (first.formulas, first.lower, first.upper, first.doc) == (
        second.formulas,
        second.lower,
        second.upper,
        second.doc,
    )
    x = interior_samples(first, 32, seed=0)
    assert torch.equal(first(x), second(x))


def test_same_formulas_in_a_fresh_interpreter_with_another_hash_seed():
    # str hashing is salted per process; the generator must not depend on it (nor on anything else global)
    code = "import equations; print(repr(equations.get('gen:mixed:4:3x2').formulas))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == repr(equations.get("gen:mixed:4:3x2").formulas)


def test_different_seeds_and_families_differ():
    sets = [equations.get(f"gen:{fam}:{seed}") for fam in FAMILIES for seed in range(5)]
    assert len({eq.formulas for eq in sets}) == len(sets)


def test_name_forms_and_dimensions():
    assert equations.get("gen:smooth:3:4x4") is equations.get("gen:smooth:3")  # 4x4 is the default
    assert equations.get("gen:smooth:3").name == "gen:smooth:3"
    eq = equations.get("gen:mixed:2:3x5")
    assert (eq.n_in, eq.n_out, eq.name) == (3, 5, "gen:mixed:2:3x5")
    assert len(eq.formulas) == 5


@pytest.mark.parametrize("name", SAMPLE)
def test_generated_set_passes_the_selfcheck(name):
    # finite on the box's corners, Jacobian vs five-point central differences <= 1e-6 (see
    # equations/selfcheck.py for the step and tolerance), vmap, forward mode, float32
    row = check(equations.get(name), n=32, seed=1)
    assert row["status"] == "ok", row["error"]


@pytest.mark.parametrize("name", SAMPLE[::3])
def test_printed_formulas_are_the_function(name):
    eq = equations.get(name)
    x = torch.cat([interior_samples(eq, 32, seed=2), corners(eq)])
    lo, hi = eq.bounds()
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    namespace = {f: getattr(torch, f) for f in ("sin", "cos", "exp", "log1p", "sqrt")}
    for i in range(eq.n_in):
        namespace[f"x{i + 1}"] = x[:, i]
        namespace[f"z{i + 1}"] = (x[:, i] - centre[i]) / half[i]
    y = eq(x)
    for k, formula in enumerate(eq.formulas):
        lhs, rhs = formula.split(" = ", 1)
        assert lhs == f"f{k + 1}"
        value = eval(rhs, {"__builtins__": {}}, namespace)  # the formula text, evaluated as Python
        torch.testing.assert_close(value + 0 * y[:, k], y[:, k], rtol=1e-12, atol=1e-12 * float(y[:, k].abs().max()))


@pytest.mark.parametrize("name", SAMPLE[::2])
def test_every_input_matters(name):
    eq = equations.get(name)
    J = eq.jacobian(interior_samples(eq, 32, seed=3))
    assert (J.abs().amax(dim=(0, 1)) > 0).all()  # no input column is identically zero


def test_families_get_harder():
    # the difficulty knob: steeper argument slopes, closer kinks, wider spreads of scales
    smooth, mixed, hard = (generated.FAMILIES[f] for f in ("smooth", "mixed", "hard"))
    assert smooth.max_slope < mixed.max_slope < hard.max_slope
    assert smooth.max_depth < mixed.max_depth < hard.max_depth
    assert mixed.sqrt_floor > hard.sqrt_floor and mixed.log1p_floor > hard.log1p_floor
    assert max(smooth.half_widths) / min(smooth.half_widths) < max(hard.half_widths) / min(hard.half_widths)


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("gen:smoth:1", KeyError, "did you mean 'smooth'"),
        ("gen:smooth:one", ValueError, "seed 'one'.*non-negative integer"),
        ("gen:smooth:-1", ValueError, "non-negative integer"),
        ("gen:smooth:1:4by4", ValueError, "must be <n_in>x<n_out>"),
        ("gen:smooth:1:0x4", ValueError, "each 1..32"),
        ("gen:smooth", ValueError, "malformed"),
        ("gen:smooth:1:4x4:extra", ValueError, "malformed"),
    ],
)
def test_bad_generated_names(name, error, match):
    with pytest.raises(error, match=match):
        equations.get(name)
