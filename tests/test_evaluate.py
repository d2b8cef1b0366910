"""`python -m bench evaluate` on the forum user's files: an upstream-style FastKAN state_dict, a Max/Min CSV and
an inputs CSV, end to end, and every bad input with its message."""

import numpy as np
import pandas as pd
import pytest
import torch

import equations
import models
from bench.cli import main
from bench.fidelity import evaluate as E
from equations.sampling import sample_inputs

N_ROWS = 40


def forum_files(tmp_path, layers=(4, 30, 30, 4), name="fastkan", n_rows=N_ROWS):
    """trained_model.pth (untrained weights, the upstream key layout), olhs_samples_max_min.csv, olhs_input.csv."""
    eq = equations.get("forum4x4")
    model = models.create_model(name, layers=list(layers), seed=0)
    torch.save(model.state_dict(), tmp_path / "trained_model.pth")
    x = sample_inputs(eq, 200, "lhs", seed=1)
    y = eq(x)
    lines = ["Max,Min"]  # the forum's file: pandas wrote an unnamed index column; here just Max, Min in order
    lines += [f"{hi!r},{lo!r}" for hi, lo in zip(x.amax(0).tolist(), x.amin(0).tolist(), strict=True)]
    lines += [f"{hi!r},{lo!r}" for hi, lo in zip(y.amax(0).tolist(), y.amin(0).tolist(), strict=True)]
    (tmp_path / "olhs_samples_max_min.csv").write_text("\n".join(lines) + "\n")
    pd.DataFrame(x[:n_rows].numpy(), columns=list(eq.input_names)).to_csv(tmp_path / "olhs_input.csv", index=False)
    return eq, model, x, y


def evaluate_args(tmp_path, *extra, layers="4,30,30,4", model="fastkan"):
    return [
        "evaluate", "--model", model, "--layers", layers, "--checkpoint", str(tmp_path / "trained_model.pth"),
        "--equation", "forum4x4", "--scaling", f"minmax:{tmp_path / 'olhs_samples_max_min.csv'}",
        "--data", str(tmp_path / "olhs_input.csv"), "--out", str(tmp_path / "out"), *extra,
    ]  # fmt: skip


def test_forum_workflow_end_to_end(tmp_path, capsys):
    eq, model, x, y = forum_files(tmp_path)
    assert main(evaluate_args(tmp_path)) == 0
    out = capsys.readouterr().out
    jac = pd.read_csv(tmp_path / "out" / "jacobian_results.csv")
    pairs = [f"df{i}_dx{j}{t}" for i in range(1, 5) for j in range(1, 5) for t in ("", "_true")]
    hess = [f"d2f{i}_dx{j}_dx{k}{t}" for i in range(1, 5) for j in range(1, 5) for k in range(j, 5)
            for t in ("", "_true")]  # fmt: skip
    assert list(jac.columns) == ["x1", "x2", "x3", "x4", *pairs, "jac_norm_true", "jac_norm_err", *hess,
                                 "hess_norm_true", "hess_norm_err"]  # fmt: skip
    assert len(jac) == N_ROWS
    xs = torch.tensor(jac[["x1", "x2", "x3", "x4"]].to_numpy())
    torch.testing.assert_close(xs, x[:N_ROWS], rtol=0, atol=0)
    J_true = eq.jacobian(xs).numpy()
    true_cols = jac[[f"df{i}_dx{j}_true" for i in range(1, 5) for j in range(1, 5)]].to_numpy()
    # 1e-14: the same float64 reference, but vectorized sin/exp may round the last bit differently per batch shape
    np.testing.assert_allclose(true_cols, J_true.reshape(N_ROWS, 16), rtol=1e-14, atol=0)
    # the per-sample norms, so any relative-error definition can be recomputed from the table (float64 round-off)
    pred_cols = jac[[f"df{i}_dx{j}" for i in range(1, 5) for j in range(1, 5)]].to_numpy()
    np.testing.assert_allclose(jac["jac_norm_true"], np.linalg.norm(true_cols, axis=1), rtol=1e-12)
    np.testing.assert_allclose(jac["jac_norm_err"], np.linalg.norm(pred_cols - true_cols, axis=1), rtol=1e-9)

    # the model columns are the forum user's de-normalization done right: J_n[m, n] / range_x[n] * range_y[m]
    rx, ry = x.amax(0) - x.amin(0), y.amax(0) - y.amin(0)
    x_n = ((xs - x.amin(0)) / rx).float()
    J_n = torch.func.vmap(torch.func.jacrev(model.eval()))(x_n).detach().double()
    expected = J_n / rx[None, None, :] * ry[None, :, None]
    got = jac[[f"df{i}_dx{j}" for i in range(1, 5) for j in range(1, 5)]].to_numpy().reshape(N_ROWS, 4, 4)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))  # float32
    # and the Hessians: H_n[m, n, o] * range_y[m] / (range_x[n] range_x[o]), against the set's exact ones
    H_n = torch.func.vmap(torch.func.jacfwd(torch.func.jacrev(model.double())))(x_n.double()).detach()
    expected = H_n * ry[None, :, None, None] / (rx[None, None, :, None] * rx[None, None, None, :])
    for i, j, k in [(1, 1, 1), (2, 1, 3), (4, 2, 4)]:
        got = jac[f"d2f{i}_dx{j}_dx{k}"].to_numpy()
        scale = float(expected[:, i - 1].abs().max())
        np.testing.assert_allclose(got, expected[:, i - 1, j - 1, k - 1].numpy(), rtol=1e-3, atol=1e-4 * scale)  # f32
        np.testing.assert_allclose(jac[f"d2f{i}_dx{j}_dx{k}_true"], eq.hessian(xs)[:, i - 1, j - 1, k - 1], rtol=1e-13)

    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert {"r2", "jac_err_rms", "jac_entry_nrmse", "denorm_check"} <= set(metrics["metric"])
    assert {"hess_err_rms", "hess_entry_nrmse", "lap_nrmse"} <= set(metrics["metric"])
    assert set(metrics["split"]) == {"eval"} and set(metrics["status"]) == {"ok"}
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(pred.columns[:6]) == ["x1", "x2", "x3", "x4", "Predicted_f1", "True_f1"]
    for phrase in ("R² min", "Jacobian entries are off", "Edges:", "Samples are independent", "rank 3-3 of 4",
                   "De-normalization", "jacobian_results.csv", "Min/max file vs the data",
                   "Second derivatives vs forum4x4's exact Hessian", "Laplacian normalized RMSE f1"):  # fmt: skip
        assert phrase in out, phrase
    assert "not a scaling mistake" not in out  # the chain-rule check cannot tell whether the file is right
    assert "cannot tell whether the scaler is the one the model was trained with" in out


@pytest.mark.parametrize(
    "edit, expected",
    [("stale", "f2: the data exceed the claimed [Min, Max]"), ("wide", "x3: the claimed range is 4.")],
)
def test_a_wrong_min_max_file_is_flagged(tmp_path, capsys, edit, expected):
    # A stale file (f2's Max from another data set, half the real one) or a much wider range: the wrapper and
    # the chain rule still agree (same scaler), so only a check against the data can see it.
    forum_files(tmp_path)
    path = tmp_path / "olhs_samples_max_min.csv"
    lines = path.read_text().splitlines()
    row = {"stale": 6, "wide": 3}[edit]  # header, x1..x4 (rows 1-4), f1..f4 (rows 5-8)
    hi, lo = map(float, lines[row].split(","))
    new_hi = lo + (hi - lo) * (0.5 if edit == "stale" else 4.0)
    lines[row] = f"{new_hi!r},{lo!r}"
    path.write_text("\n".join(lines) + "\n")
    assert main(evaluate_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "Min/max file MISMATCH with the data" in out and expected in out
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv", keep_default_na=False)
    m = metrics[metrics["metric"] == "minmax_width_ratio"]
    assert len(m) == 8  # every input and output


def test_sampled_points_without_data(tmp_path, capsys):
    forum_files(tmp_path)
    args = [a for a in evaluate_args(tmp_path, "--n", "64") if "olhs_input" not in a and a != "--data"]
    assert main(args) == 0
    assert len(pd.read_csv(tmp_path / "out" / "jacobian_results.csv")) == 64
    assert "Edges:" in capsys.readouterr().out


def test_mlp_checkpoint_has_no_layernorm_section(tmp_path, capsys):
    forum_files(tmp_path, layers=(4, 16, 16, 4), name="mlp_sigmoid")
    assert main(evaluate_args(tmp_path, model="mlp_sigmoid", layers="4,16,16,4")) == 0
    out = capsys.readouterr().out
    assert "LayerNorm" not in out and "R² min" in out


# ---- bad input ----


def test_wrong_layers_names_the_shapes_and_suggests_the_right_ones(tmp_path, capsys):
    forum_files(tmp_path, layers=(4, 5, 4))  # the forum's "five neurons in a hidden layer" checkpoint
    assert main(evaluate_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "layers.0.base_linear.weight: checkpoint (5, 4) vs model (30, 4)" in err
    assert "unexpected keys: layers.2." not in err  # [4,5,4] has fewer layers: model keys are missing instead
    assert "missing keys: layers.2.layernorm.weight" in err
    assert "try --layers 4,5,4" in err


def test_missing_and_unexpected_keys_are_named(tmp_path):
    eq, model, *_ = forum_files(tmp_path)
    sd = model.state_dict()
    sd.pop("layers.1.layernorm.bias")
    sd["layers.0.extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "trained_model.pth")
    with pytest.raises(E.EvaluateError) as info:
        E.load_model("fastkan", eq, tmp_path / "trained_model.pth", [4, 30, 30, 4])
    msg = str(info.value)
    assert "missing keys: layers.1.layernorm.bias" in msg and "unexpected keys: layers.0.extra.weight" in msg


def test_wrapped_and_dataparallel_checkpoints_load(tmp_path):
    eq, model, *_ = forum_files(tmp_path)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 30}, tmp_path / "ckpt.pth")
    loaded = E.load_model("fastkan", eq, tmp_path / "ckpt.pth", [4, 30, 30, 4])
    x = torch.rand(5, 4)
    torch.testing.assert_close(loaded(x), model(x))


def test_a_pickled_whole_model_gets_a_clear_message(tmp_path):
    _, model, *_ = forum_files(tmp_path)
    torch.save(model, tmp_path / "whole.pth")
    with pytest.raises(E.EvaluateError, match=r"torch\.save\(model\.state_dict\(\), path\)"):
        E.load_state_dict(tmp_path / "whole.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.load_state_dict(tmp_path / "nope.pth")


def test_layers_must_match_the_equation_set(tmp_path, capsys):
    forum_files(tmp_path)
    assert main(evaluate_args(tmp_path, layers="4,30,30,3")) == 2
    assert "maps 4 inputs to 3 outputs, but forum4x4 has 4 inputs" in capsys.readouterr().err


def test_minmax_file_that_does_not_match_the_equation_set(tmp_path, capsys):
    forum_files(tmp_path)
    path = tmp_path / "olhs_samples_max_min.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-2]) + "\n")  # 6 rows for 8 variables
    assert main(evaluate_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "6 rows, expected 8" in err and "olhs_samples_max_min.csv" in err
    path.write_text("variable,Max,Min\n" + "".join(f"v{i},1,0\n" for i in range(8)))
    assert main(evaluate_args(tmp_path)) == 2
    assert "olhs_samples_max_min.csv" in capsys.readouterr().err


def test_data_outside_the_domain_names_row_and_input(tmp_path, capsys):
    forum_files(tmp_path)
    df = pd.read_csv(tmp_path / "olhs_input.csv")
    df.loc[7, "x3"] = 5.0
    df.to_csv(tmp_path / "olhs_input.csv", index=False)
    assert main(evaluate_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "row 7" in err and "'x3'" in err and "outside its domain [0.1, 3]" in err


def test_a_model_that_returns_nan_stops_with_a_clear_message(tmp_path, capsys):
    _, model, *_ = forum_files(tmp_path)
    sd = model.state_dict()
    sd["layers.2.base_linear.bias"][1] = float("nan")
    torch.save(sd, tmp_path / "trained_model.pth")
    assert main(evaluate_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "returned NaN/inf values for 40 of 40 input rows" in err and "--scaling" in err


def test_unknown_names_suggest_close_ones(tmp_path, capsys):
    forum_files(tmp_path)
    assert main(evaluate_args(tmp_path, model="fastkam")) == 2
    assert "did you mean 'fastkan'" in capsys.readouterr().err
    args = evaluate_args(tmp_path)
    args[args.index("forum4x4")] = "forum4X4"
    assert main(args) == 2
    assert "did you mean 'forum4x4'" in capsys.readouterr().err


def test_bad_scaling_spec(tmp_path, capsys):
    forum_files(tmp_path)
    args = evaluate_args(tmp_path)
    args[args.index("--scaling") + 1] = "zscore"
    assert main(args) == 2
    assert "use minmax:FILE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, layers",
    [("fastkan", [4, 5, 7, 4]), ("efficient_kan", [4, 6, 4]), ("chebykan", [4, 8, 3]), ("mlp_tanh", [4, 9, 9, 2])],
)
def test_guess_layers_reads_widths_off_a_checkpoint(name, layers):
    sd = models.create_model(name, layers[0], layers[-1], layers=layers).state_dict()
    assert E.guess_layers(sd) == layers


def test_a_few_points_cannot_fail_the_width_check(tmp_path, capsys):
    forum_files(tmp_path, n_rows=3)  # the right min/max file, and 3 points that cannot span its range
    assert main(evaluate_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out and "too few points" in out
