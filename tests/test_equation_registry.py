"""The registry (get, list, register, describe) and the self-check, through the API and the CLI."""

import math

import pytest
import torch

import equations
from bench.cli import main
from equations.sets import BUILTINS

BUILTIN_NAMES = [eq.name for eq in BUILTINS]


def _toy(name="toy_square", jacobian_fn=None, hessian_fn=None):
    return equations.EquationSet(
        name,
        lambda x: x**2,
        (0.0, 1.0),
        (1.0, 2.0),
        ("a", "b"),
        ("a2", "b2"),
        doc="Squares. Toy.",
        jacobian_fn=jacobian_fn,
        hessian_fn=hessian_fn,
    )


@pytest.fixture
def registered():
    """Register sets for one test and always remove them afterwards (the registry is process-wide)."""
    names = []

    def add(eq):
        equations.register(eq)
        names.append(eq.name)
        return eq

    yield add
    for name in names:
        equations.unregister(name)


def test_builtins_are_listed_first_then_example_generated_names():
    names = equations.list()
    assert names[: len(BUILTIN_NAMES)] == BUILTIN_NAMES
    assert {"forum4x4", "sine1d", "styblinski_tang_grad", "rosenbrock_grad", "lorenz96", "surrogate_stack"} <= set(
        names
    )
    assert names[len(BUILTIN_NAMES) :] == ["gen:smooth:0", "gen:mixed:0", "gen:hard:0"]


def test_list_patterns():
    assert equations.list("forum4x4,gen:*") == ["forum4x4", "gen:smooth:0", "gen:mixed:0", "gen:hard:0"]
    assert equations.list("*grad") == ["styblinski_tang_grad", "rosenbrock_grad"]
    assert equations.list("lorenz96*, sine1d") == ["lorenz96", "lorenz96_8", "sine1d"]
    assert equations.list("gen:hard:7") == ["gen:hard:7"]  # any generated name, not only the examples
    assert equations.list("gen:mixed:7:4x4,forum*,forum4x4") == ["gen:mixed:7", "forum4x4"]  # canonical, deduplicated


def test_list_errors():
    with pytest.raises(KeyError, match=r"no equation set matches 'nothing\*'"):
        equations.list("nothing*")
    with pytest.raises(KeyError, match=r"unknown equation set 'rosenbrock' \(did you mean 'rosenbrock_grad'\?\)"):
        equations.list("forum4x4,rosenbrock")


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError, match=r"unknown equation set 'forum4' \(did you mean 'forum4x4'\?\)") as info:
        equations.get("forum4")
    assert "gen:<family>:<seed>" in info.value.args[0] and "file:" in info.value.args[0]
    with pytest.raises(KeyError, match=r"did you mean 'lorenz96'"):
        equations.get("lorenz69")


def test_get_returns_the_builtin_objects():
    for eq in BUILTINS:
        assert equations.get(eq.name) is eq
        assert equations.get(f"  {eq.name} ") is eq


def test_register_get_list_unregister(registered):
    eq = registered(_toy())
    assert equations.get("toy_square") is eq
    assert "toy_square" in equations.list("toy_*")
    equations.unregister("toy_square")
    with pytest.raises(KeyError):
        equations.get("toy_square")
    equations.register(eq)  # the fixture removes it again


def test_duplicate_registration_fails(registered):
    registered(_toy())
    with pytest.raises(ValueError, match=r"'toy_square' is already registered"):
        equations.register(_toy())
    with pytest.raises(ValueError, match=r"'forum4x4' is already registered"):
        equations.register(_toy(name="forum4x4"))


def test_register_rejects_reserved_names_bad_objects_and_broken_sets():
    with pytest.raises(ValueError, match="reserved"):
        equations.register(_toy(name="gen:mine"))
    with pytest.raises(TypeError, match="takes an EquationSet"):
        equations.register("forum4x4")
    broken = equations.EquationSet("broken", lambda x: x.sum(-1), (0.0,), (1.0,), ("x",), ("f",))
    with pytest.raises(ValueError, match=r"register\('broken'\): equation set 'broken' returned shape"):
        equations.register(broken)
    assert "broken" not in equations.list()
    with pytest.raises(ValueError, match="built-in"):
        equations.unregister("forum4x4")


def test_describe_table():
    table = equations.describe_table("forum4x4,sine1d,surrogate_stack,gen:smooth:0")
    assert list(table.columns) == ["name", "n_in", "n_out", "domain", "description"]
    rows = table.set_index("name")
    assert rows.loc["forum4x4", "domain"] == "[0.1, 3]^4"
    assert rows.loc["sine1d", "domain"] == "[0, 6.28319]"
    assert rows.loc["surrogate_stack", "domain"] == "[1, 100] x [125.664, 1759.29] x [0, 1] x [1, 11]"
    assert (rows.loc["sine1d", "n_in"], rows.loc["sine1d", "n_out"]) == (1, 1)
    assert rows.loc["forum4x4", "description"] == "The forum post's 4-in/4-out equations, verbatim, on [0.1, 3]^4"


def test_describe_shows_doc_and_formulas():
    text = equations.describe("gen:smooth:0")
    assert text.startswith("gen:smooth:0: 4 -> 4")
    for formula in equations.get("gen:smooth:0").formulas:
        assert formula in text
    assert "f4 = 200*x1**2 + 6*exp(x2) + x1**3 + 4*exp(x4)" in equations.describe("forum4x4")


def test_selfcheck_reports_ok_for_every_builtin():
    table = equations.selfcheck(",".join(BUILTIN_NAMES))
    assert list(table["name"]) == BUILTIN_NAMES
    assert (table["status"] == "ok").all(), table[table["status"] != "ok"][["name", "error"]].to_string()
    assert (table["fd_rel_err"] <= 1e-6).all() and (table["hand_rel_err"] <= 1e-10).all()
    assert table["vmap"].all() and table["float32"].all()
    assert (table["hess_fd_rel_err"] <= 1e-6).all()  # exact Hessians vs differences of the exact Jacobians
    rows = table.set_index("name")
    hand = ["forum4x4", "rosenbrock_grad", "lorenz96", "lorenz96_8", "sine1d", "styblinski_tang_grad"]
    assert (rows.loc[hand, "hess_hand_rel_err"] <= 1e-10).all()  # two exact float64 computations: rounding only


def test_exact_hessians_are_second_derivatives_with_known_values():
    x = torch.tensor([[1.0, 2.0, 0.5, 4.0]], dtype=torch.float64)
    H = equations.get("forum4x4").hessian(x)[0]
    assert H.shape == (4, 4, 4) and H.dtype == torch.float64
    assert float(H[3, 0, 0]) == pytest.approx(400 + 6 * 1.0, rel=1e-14)  # f4 = 200 x1^2 + x1^3 + ...
    assert float(H[1, 0, 1]) == pytest.approx(-math.cos(1.0) * math.sin(2.0), rel=1e-14)  # sin x1 cos x2
    assert float(H[0, 3, 3]) == pytest.approx(0.225 / 2.0, rel=1e-14)  # 0.3 x4^1.5 -> 0.225 x4^-0.5
    assert float(H[3, 2, 2]) == 0.0  # f4 does not depend on x3
    L = equations.get("sine1d").laplacian(torch.tensor([[0.7]], dtype=torch.float64))
    assert float(L[0, 0]) == pytest.approx(-math.sin(0.7), rel=1e-14)
    lorenz = equations.get("lorenz96").hessian(torch.randn(3, 4, dtype=torch.float64))
    assert torch.equal(lorenz[0], lorenz[2]) and float(lorenz[0, 0, 1, 3]) == 1.0  # bilinear: d2 f1/dx2 dx4 = 1


def test_selfcheck_catches_a_wrong_hand_hessian(registered):
    registered(_toy("toy_plain", jacobian_fn=lambda x: torch.diag_embed(2 * x)))
    right = equations.selfcheck("toy_plain").iloc[0]
    assert right["status"] == "ok" and math.isnan(right["hess_hand_rel_err"])
    wrong = torch.diag_embed(torch.diag_embed(torch.ones(2, dtype=torch.float64)))  # d2(x^2)/dx^2 is 2, not 1
    registered(_toy(hessian_fn=lambda x: wrong.expand(*x.shape[:-1], 2, 2, 2)))
    row = equations.selfcheck("toy_square").iloc[0]
    assert row["status"] == "FAIL" and "Hessian vs hand-derived" in row["error"]
    assert row["hess_hand_rel_err"] == pytest.approx(0.5)


def test_selfcheck_catches_a_hessian_that_is_not_the_second_derivative(registered):
    # values and first derivatives right (2x), but autograd's second derivative is 2 + 2 = 4: a term that is
    # zero in value, (x - x.detach())^2, has a nonzero second derivative. Differences of the Jacobian say 2.
    registered(equations.EquationSet("toy_curved", lambda x: x * x + (x - x.detach()) ** 2, (0.0,), (1.0,),
                                     ("x",), ("f",)))  # fmt: skip
    row = equations.selfcheck("toy_curved").iloc[0]
    assert row["fd_rel_err"] < 1e-9
    assert row["status"] == "FAIL" and row["hess_fd_rel_err"] == pytest.approx(0.5, rel=1e-6)  # |2 - 4| / 4


def test_selfcheck_catches_a_wrong_hand_jacobian(registered):
    def wrong(x):  # d(x^2)/dx is 2x, not x
        return torch.diag_embed(x)

    registered(_toy(jacobian_fn=wrong))
    row = equations.selfcheck("toy_square").iloc[0]
    assert row["status"] == "FAIL"
    assert row["hand_rel_err"] == pytest.approx(0.5)
    assert "hand-derived" in row["error"]
    assert row["fd_rel_err"] < 1e-9  # the torch.func Jacobian itself is right


def test_selfcheck_catches_a_jacobian_that_is_not_the_derivative(registered):
    # a function whose autograd derivative is wrong (detach hides a term): finite differences expose it
    registered(equations.EquationSet("toy_detached", lambda x: x * x.detach(), (0.0,), (1.0,), ("x",), ("f",)))
    row = equations.selfcheck("toy_detached").iloc[0]
    assert row["status"] == "FAIL" and row["fd_rel_err"] == pytest.approx(1.0, rel=1e-6)  # |2x - x| / max|x|


def test_cli_list_equations(capsys):
    assert main(["list", "equations"]) == 0
    out = capsys.readouterr().out
    for name in [*BUILTIN_NAMES, "gen:hard:0"]:
        assert name in out
    assert "[0.1, 3]^4" in out
    assert equations.get("gen:mixed:0").formulas[0] in out  # generated sets show their formulas


def test_cli_list_one_equation_in_full(capsys):
    assert main(["list", "equations", "rosenbrock_grad"]) == 0
    assert "g4 = 200*(x4 - x3**2)" in capsys.readouterr().out


def test_cli_list_unknown_equation(capsys):
    assert main(["list", "equations", "forum"]) == 2
    assert "did you mean 'forum4x4'" in capsys.readouterr().err


def test_cli_selfcheck(capsys, registered):
    assert main(["selfcheck", "--equations", "forum4x4,sine1d", "--n", "16"]) == 0
    out = capsys.readouterr().out
    assert "forum4x4" in out and "2 of 2 equation sets ok" in out
    registered(_toy(jacobian_fn=lambda x: torch.diag_embed(x)))
    assert main(["selfcheck", "--equations", "toy_square"]) == 1
    assert "FAILED: toy_square" in capsys.readouterr().out
