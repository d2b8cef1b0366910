"""User-defined equation sets: the examples load and pass the self-check; bad files get clear errors."""

from pathlib import Path

import pytest
import torch

import equations
from equations.selfcheck import interior_samples

EXAMPLES = Path(__file__).resolve().parents[1] / "equations" / "examples"


def _write(tmp_path: Path, body: str, name: str = "my_eq.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_function_example_loads_like_a_builtin():
    eq = equations.get(f"file:{EXAMPLES / 'my_equations.py'}")
    assert (eq.name, eq.input_names, eq.output_names) == ("damped_oscillator", ("t", "omega"), ("u", "v"))
    assert (eq.lower, eq.upper) == ((0.0, 0.5), (5.0, 2.0))
    assert eq.doc.startswith("A damped oscillator")
    # v is du/dt by construction: the Jacobian's (u, t) entry must equal the v output
    x = interior_samples(eq, 64, seed=0)
    torch.testing.assert_close(eq.jacobian(x)[:, 0, 0], eq(x)[:, 1], rtol=1e-12, atol=1e-12)


def test_equation_set_example_loads_with_its_hand_jacobian():
    eq = equations.load_file(EXAMPLES / "my_equation_set.py")
    assert eq.name == "polar_to_cartesian" and eq.jacobian_fn is not None


def test_examples_pass_the_selfcheck():
    pattern = ",".join(f"file:{EXAMPLES / f}" for f in ("my_equations.py", "my_equation_set.py"))
    table = equations.selfcheck(pattern, n=32)
    assert list(table["status"]) == ["ok", "ok"], table["error"].tolist()
    assert list(table["name"]) == pattern.split(",")  # listed under the name get() accepts


def test_minimal_file_gets_default_names(tmp_path):
    path = _write(tmp_path, "import torch\nDOMAIN = [(0, 1), (1, 2)]\ndef f(x):\n    return x * x\n")
    eq = equations.get(f"file:{path}")
    assert (eq.name, eq.input_names, eq.output_names) == (f"file:{path}", ("x1", "x2"), ("f1", "f2"))
    assert equations.list(f"file:{path}") == [f"file:{path}"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"equation file .*nope\.py.* not found"):
        equations.get(f"file:{tmp_path / 'nope.py'}")


def test_file_defining_neither_form(tmp_path):
    path = _write(tmp_path, "import torch\n\ndef g(x):\n    return x\n")
    with pytest.raises(ValueError, match=r"my_eq\.py defines neither EQUATION .* nor a function f\(x\) with DOMAIN"):
        equations.load_file(path)


def test_function_returning_wrong_shape(tmp_path):
    path = _write(tmp_path, "DOMAIN = [(0, 1), (0, 1)]\ndef f(x):\n    return x.sum(-1)\n")
    with pytest.raises(ValueError, match=r"my_eq\.py: f\(x\) must return a tensor of shape \(\.\.\., n_out\)"):
        equations.load_file(path)


def test_function_returning_fewer_outputs_than_named(tmp_path):
    body = "import torch\nDOMAIN = [(0, 1)]\nOUTPUTS = ('a', 'b')\ndef f(x):\n    return torch.sin(x)\n"
    with pytest.raises(ValueError, match=r"my_eq\.py: equation set .* returned shape \(\d+, 1\) .*expected \(\d+, 2\)"):
        equations.load_file(_write(tmp_path, body))


def test_function_with_nan_inside_its_domain(tmp_path):
    path = _write(tmp_path, "import torch\nDOMAIN = [(-1, 1)]\ndef f(x):\n    return torch.sqrt(x)\n")
    with pytest.raises(ValueError, match=r"my_eq\.py: .*returns nan for output 'f1' at x = \[-1\.0\]"):
        equations.load_file(path)


def test_equation_that_is_not_an_equation_set(tmp_path):
    with pytest.raises(ValueError, match=r"EQUATION must be an equations.base.EquationSet, got dict"):
        equations.load_file(_write(tmp_path, "EQUATION = {'name': 'x'}\n"))


def test_bad_domain(tmp_path):
    path = _write(tmp_path, "DOMAIN = [0, 1]\ndef f(x):\n    return x\n")
    with pytest.raises(ValueError, match=r"DOMAIN must be a list of \(lo, hi\) pairs"):
        equations.load_file(path)
    path = _write(tmp_path, "DOMAIN = [(1, 0)]\ndef f(x):\n    return x\n")
    with pytest.raises(ValueError, match=r"empty domain"):
        equations.load_file(path)


def test_error_inside_the_file_names_the_file(tmp_path):
    path = _write(tmp_path, "import torch\nDOMAIN = [(0, 1)]\nraise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match=r"my_eq\.py: error while running the file: RuntimeError: boom"):
        equations.load_file(path)


def test_two_files_with_one_stem_do_not_collide(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _write(tmp_path / "a", "DOMAIN = [(0, 1)]\ndef f(x):\n    return x\n")
    two = _write(tmp_path / "b", "DOMAIN = [(0, 1)]\ndef f(x):\n    return 2 * x\n")
    x = torch.full((1, 1), 0.5, dtype=torch.float64)
    assert equations.load_file(one)(x).item() == 0.5
    assert equations.load_file(two)(x).item() == 1.0
