"""The user's own model, checked and fixed: the diagnosis (headline first, spurious derivatives, grid remarks only
for grid families, wrong family, R² < 0), `python -m bench fit`, and the command-line fixes of issue 27."""

import argparse
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

import equations
from bench import cli
from bench.cli import main
from bench.commands import run as run_cmd
from equations import datafile
from equations.csvio import CsvFormatError
from equations.sampling import sample_inputs
from models import plugins, registry

EXAMPLE_PLUGIN = Path(__file__).parent / "data" / "example_plugin.py"


def user_files(tmp_path: Path, width: int = 16, train_steps: int = 0) -> Path:
    """The forum user's files: a plain nn.Sequential tanh MLP's state_dict (optionally trained on values, as the
    user did), its Max/Min CSV and a samples CSV with inputs and outputs."""
    eq = equations.get("forum4x4")
    x = sample_inputs(eq, 160, "lhs", seed=3)
    y = eq(x)
    lo_x, hi_x, lo_y, hi_y = x.amin(0), x.amax(0), y.amin(0), y.amax(0)
    rows = [*zip(hi_x.tolist(), lo_x.tolist(), strict=True), *zip(hi_y.tolist(), lo_y.tolist(), strict=True)]
    pd.DataFrame(rows, columns=["Max", "Min"]).to_csv(tmp_path / "max_min.csv", index=False)
    cols = [*eq.input_names, *eq.output_names]
    pd.DataFrame(torch.cat([x, y], 1).numpy(), columns=cols).to_csv(tmp_path / "samples.csv", index=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 4))
    xn, yn = ((x - lo_x) / (hi_x - lo_x)).float(), ((y - lo_y) / (hi_y - lo_y)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(train_steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(xn), yn).backward()
        opt.step()
    torch.save(model.state_dict(), tmp_path / "model.pth")
    return tmp_path


def evaluate(tmp: Path, model="mlp_tanh", layers="4,16,4", checkpoint="model.pth", scaling="max_min.csv"):
    return ["evaluate", "--model", model, "--layers", layers, "--checkpoint", str(tmp / checkpoint),
            "--equation", "forum4x4", "--scaling", f"minmax:{tmp / scaling}", "--n", "300",
            "--out", str(tmp / "eval")]  # fmt: skip


def test_the_headline_leads_and_spurious_derivatives_are_printed(tmp_path, capsys):
    tmp = user_files(tmp_path)
    assert main(evaluate(tmp)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Jacobian error ") and "90th percentile" in lines[0] and "max" in lines[0]
    assert lines[1].startswith("  Per output: f1 ")
    spurious = next(line for line in lines if line.startswith("Spurious derivatives"))
    assert "df4/dx3" in spurious  # forum4x4's structural zero (f4 does not depend on x3); an untrained MLP's is not 0
    assert "Fit on 300 points" in lines[2] or "Fit on 300 points" in lines[3]
    assert "python -m bench fit --model mlp_tanh --layers 4,16,4" in "\n".join(lines)  # the remedy, their arguments


def test_grid_remarks_only_for_grid_families(tmp_path, capsys):
    tmp = user_files(tmp_path)
    assert main(evaluate(tmp)) == 0
    out = capsys.readouterr().out
    assert "input range is" not in out and "spline/RBF" not in out  # an MLP has no grid
    import models

    torch.save(models.create_model("fastkan", layers=[4, 8, 4], seed=0).state_dict(), tmp / "kan.pth")
    assert main(evaluate(tmp, model="fastkan", layers="4,8,4", checkpoint="kan.pth")) == 0
    assert "the model's input range is" in capsys.readouterr().out


def test_a_wrong_family_names_the_family_the_keys_look_like(tmp_path, capsys):
    tmp = user_files(tmp_path)
    assert main(evaluate(tmp, model="efficient_kan")) == 2
    err = capsys.readouterr().err
    assert "look like an MLP" in err and "--model mlp_tanh" in err
    assert "try --layers" not in err  # the user's --layers were right: do not suggest them back


def test_a_fit_worse_than_a_constant_says_to_check_the_model(tmp_path, capsys):
    tmp = user_files(tmp_path, train_steps=400)
    assert main(evaluate(tmp)) == 0
    assert "worse than a constant" not in capsys.readouterr().out
    assert main(evaluate(tmp, model="mlp_sigmoid")) == 0  # tanh weights in a sigmoid network: loads silently
    out = capsys.readouterr().out
    assert "worse than a constant" in out and "activation" in out


def fit_args(tmp: Path, *extra: str) -> list[str]:
    return ["fit", "--model", "mlp_tanh", "--layers", "4,16,4", "--checkpoint", str(tmp / "model.pth"),
            "--data", str(tmp / "samples.csv"), "--equation", "forum4x4", "--scaling", f"minmax:{tmp / 'max_min.csv'}",
            "--steps", "300", "--lrs", "3e-3,1e-2", "--eval-n", "300", "--out", str(tmp / "fixed"), *extra]  # fmt: skip


def _after_before(out: str, key: str) -> tuple[float, float]:
    line = next(line for line in out.splitlines() if line.startswith(key))
    before, after = line[len(key) :].split()
    return float(before.rstrip("%")), float(after.rstrip("%"))


def test_fit_fine_tunes_the_users_model_and_saves_it_as_they_load_it(tmp_path, capsys):
    tmp = user_files(tmp_path, train_steps=400)
    assert main(fit_args(tmp)) == 0
    out = capsys.readouterr().out
    before, after = _after_before(out, "Jacobian error")
    assert after < before / 2  # Sobolev fine-tuning on the same rows: derivatives at fresh points get much better
    # the user's own code loads the result: the same keys into the same nn.Sequential, the same Max/Min file beside
    plain = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))
    plain.load_state_dict(torch.load(tmp / "fixed" / "trained_model.pth", weights_only=True))
    assert (tmp / "fixed" / "max_min.csv").read_text() == (tmp / "max_min.csv").read_text()
    # evaluate -> fit -> evaluate: the saved model evaluates to the "after" column
    assert main(evaluate(tmp, checkpoint="fixed/trained_model.pth", scaling="fixed/max_min.csv")) == 0
    again = capsys.readouterr().out.splitlines()[0]
    assert again.startswith(f"Jacobian error {after:.3g}%")  # same model, same 300 points (evaluate's seed 0)


def test_fit_needs_derivatives_for_a_sobolev_loss(tmp_path, capsys):
    tmp = user_files(tmp_path)
    args = [a for a in fit_args(tmp) if a not in ("--equation", "forum4x4")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "d<output>_d<input>" in err and "give --equation SET" in err


def test_plugin_after_the_subcommand(monkeypatch, capsys):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(plugins, "_loaded_files", {})
    assert main(["list", "models", "--plugin", str(EXAMPLE_PLUGIN)]) == 0
    assert "example_restanh" in capsys.readouterr().out


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    parser, modules = cli.build_parser()
    monkeypatch.setattr(modules["evaluate"], "run", interrupted)
    monkeypatch.setattr(cli, "build_parser", lambda: (parser, modules))
    assert main(["evaluate", "--model", "m", "--checkpoint", "c", "--equation", "e", "--scaling", "none"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted: python -m bench evaluate stopped"]


def test_a_changed_grid_is_not_named_after_its_profile():
    cfg = SimpleNamespace(run=SimpleNamespace(profile="quick"))
    plain = argparse.Namespace(**dict.fromkeys(run_cmd._GRID_FLAGS), config=None)
    assert run_cmd._run_name(cfg, plain, {}) == "quick"
    assert run_cmd._run_name(cfg, plain, {"run.workers": 2}) == "quick"
    assert run_cmd._run_name(cfg, plain, {"grid.models": ["mlp_tanh"]}) == "quick-custom"
    models = argparse.Namespace(**{**vars(plain), "models": "mlp_tanh"})
    assert run_cmd._run_name(cfg, models, {}) == "quick-custom"


def test_betas_say_which_hessian_cells_they_keep(capsys):
    cfg = SimpleNamespace(grid=SimpleNamespace(hess_betas=(0.5,), hess_weights=(0.0, 0.1)))
    cells = [SimpleNamespace(variant="hessian", beta=0.5)] * 3 + [SimpleNamespace(variant="value", beta=1.0)]
    run_cmd._note_hessian_betas(cfg, cells, argparse.Namespace(betas="1,0.1"))
    err = capsys.readouterr().err
    assert "3 Hessian-supervised cells at beta 0.5" in err and "grid.hess_weights=[0]" in err


def test_data_wildcards_and_slashed_derivative_names_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="wildcards are not expanded"):
        datafile.load(tmp_path / "*.csv")
    (tmp_path / "s.csv").write_text("Sw,W,dW/dSw\n0.1,1.0,2.0\n0.2,1.1,2.1\n0.3,1.3,2.2\n")
    with pytest.raises(CsvFormatError, match="rename 'dW/dSw' to 'dW_dSw'"):
        datafile.load(tmp_path / "s.csv")
    (tmp_path / "s.csv").write_text("Sw,W,dW_dSw\n0.1,1.0,2.0\n0.2,1.1,2.1\n0.3,1.3,2.2\n")
    assert datafile.load(tmp_path / "s.csv").input_names == ("Sw",)  # the suggested name works


def test_a_data_sets_reference_says_exact_only_when_its_sidecar_does(tmp_path):
    (tmp_path / "s.csv").write_text("x,f,df_dx\n0.1,1.0,2.0\n0.2,1.1,2.1\n0.3,1.3,2.2\n")
    assert "measured or finite differences" in datafile.load(tmp_path / "s.csv").reference
    (tmp_path / "s.json").write_text('{"derivatives": "exact"}')
    assert "exact, per its sidecar" in datafile.load(tmp_path / "s.csv").reference
    (tmp_path / "s.json").write_text('{"derivatives": "yes"}')
    with pytest.raises(CsvFormatError, match="'derivatives' must be one of"):
        datafile.load(tmp_path / "s.csv")
