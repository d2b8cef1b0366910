"""Data-only sets, ``data:path.csv`` (equations.datafile): read, drawn, trained on, scored and reported, with the
file's derivatives as the reference; and the committed real-data example, equations/examples/oscillator.csv.

Known answers: a file holding a formula's exact samples gives the formula's numbers; a file made from a model's
own values and derivatives scores that model's Jacobian as exact; the oscillator's hand-derived derivatives equal
torch.func's and its closed form equals a numerical solution of the ODE.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import equations
import models
from bench.cli import main
from bench.fidelity.cell import run_cell
from bench.run.availability import check_sizes
from bench.run.config import Config, ConfigError, GridConfig, RunConfig, grid_cells, skipped_cells
from equations.csvio import CsvFormatError
from equations.data import make_dataset
from equations.datafile import DataOnly

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "equations" / "examples" / "oscillator.csv"


def write_data(path: Path, x, y, J=None, inputs=("a", "b"), outputs=("f", "g"), sidecar: dict | None = None) -> str:
    cols = {n: x[:, k] for k, n in enumerate(inputs)} | {n: y[:, k] for k, n in enumerate(outputs)}
    if J is not None:
        cols |= {f"d{o}_d{i}": J[:, a, b] for a, o in enumerate(outputs) for b, i in enumerate(inputs)}
    pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}).to_csv(path, index=False)
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return f"data:{path}"


def _plane(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform([0, -1], [2, 1], (n, 2))
    y = np.stack([x[:, 0] * x[:, 1], np.sin(x[:, 0])], axis=1)
    J = np.stack([np.stack([x[:, 1], x[:, 0]], 1), np.stack([np.cos(x[:, 0]), 0 * x[:, 0]], 1)], axis=1)
    return x, y, J


def test_columns_come_from_the_derivative_names_and_the_domain_is_the_bounding_box(tmp_path):
    x, y, J = _plane()
    eq = equations.get(write_data(tmp_path / "s.csv", x, y, J))
    assert eq.input_names == ("a", "b") and eq.output_names == ("f", "g") and eq.n_rows == 60
    assert eq.lower == tuple(x.min(0)) and eq.upper == tuple(x.max(0))
    assert eq.has_jacobian and not eq.has_hessian and eq.reference.startswith("data: the file's derivative columns")
    ds = make_dataset(eq, 60, "lhs", seed=5)  # every row, in file order, the file's own numbers exactly
    assert torch.equal(ds.x, torch.from_numpy(x)) and torch.equal(ds.J, torch.from_numpy(J))
    sub = make_dataset(eq, 20, "lhs", seed=5)
    assert len(sub) == 20 and torch.equal(sub.x, make_dataset(eq, 20, "sobol", seed=5).x)  # seeded rows, no sampler
    assert not torch.equal(sub.x, make_dataset(eq, 20, "lhs", seed=6).x)
    with pytest.raises(DataOnly, match="no formula"):
        eq(torch.zeros(1, 2))
    with pytest.raises(DataOnly, match="no second derivatives"):
        eq.hessian(ds.x)


def test_a_sidecar_names_the_columns_gives_the_domain_and_the_noise(tmp_path):
    x, y, _ = _plane()
    side = {"inputs": ["a", "b"], "outputs": ["f", "g"], "domain": {"a": [0, 2], "b": [-1, 1]},
            "noise": {"values": "0.1% relative"}, "description": "a plane"}  # fmt: skip
    eq = equations.get(write_data(tmp_path / "s.csv", x, y, sidecar=side))
    assert eq.lower == (0.0, -1.0) and eq.upper == (2.0, 1.0) and not eq.has_jacobian
    assert eq.reference == "data without derivatives; noise values 0.1% relative" and eq.doc.startswith("a plane")
    assert torch.isnan(make_dataset(eq, 10, "lhs", 0).J).all()
    side["domain"] = {"a": [0, 1], "b": [-1, 1]}  # row outside the stated domain
    with pytest.raises(equations.DomainError, match="input 'a'"):
        equations.get(write_data(tmp_path / "t.csv", x, y, sidecar=side))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d, s: d.drop(columns=["dg_db"]), r"missing \['dg_db'\]"),
        (lambda d, s: d.drop(columns=[c for c in d if c.startswith("d")]), "cannot tell inputs from outputs.*sidecar"),
        (lambda d, s: d.assign(extra=1.0), r"extra \['extra'\]"),
        (lambda d, s: d.assign(b=0.5), "input 'b' is constant"),
        (lambda d, s: s.update(unknown=1) or d, r"unknown keys \['unknown'\]"),
        (lambda d, s: s.update(inputs=["a"]) or d, "give both 'inputs' and 'outputs'"),
    ],
    ids=["partial-derivatives", "no-derivatives-no-sidecar", "extra-column", "constant-input", "sidecar-key",
         "sidecar-half"],
)  # fmt: skip
def test_malformed_files_say_what_is_wrong(tmp_path, edit, message):
    x, y, J = _plane()
    path = tmp_path / "s.csv"
    write_data(path, x, y, J)
    side: dict = {}
    edit(pd.read_csv(path), side).to_csv(path, index=False)
    if side:
        path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(CsvFormatError, match=message):
        equations.get(f"data:{path}")


def test_a_bad_cell_is_named_by_file_line_and_column_and_bad_json_by_line(tmp_path):
    x, y, J = _plane()
    path = tmp_path / "s.csv"
    write_data(path, x, y, J)
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    lines[3] = ",".join([*fields[:4], "oops", *fields[5:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CsvFormatError, match=r"s.csv, line 4 \(data row 2\), column 'df_da': 'oops' is not a number"):
        equations.get(f"data:{path}")
    write_data(path, x, y, J)
    path.with_suffix(".json").write_text('{"inputs": ["a", "b"],\n "outputs": }')
    with pytest.raises(CsvFormatError, match=r"s.json, line 2, column 13: not valid JSON"):
        equations.get(f"data:{path}")
    with pytest.raises(FileNotFoundError, match="data file"):
        equations.get(f"data:{tmp_path / 'none.csv'}")


def _config(tmp_path, eqs, models_=("mlp_tanh",), **grid) -> Config:
    g = GridConfig(**{"equations": tuple(eqs), "models": tuple(models_), "seeds": (0,), "betas": (1.0, 0.5),
                      "n_train": (40,), "n_test": 30, "val_fraction": 0.25, **grid})  # fmt: skip
    return Config(g, RunConfig(out=str(tmp_path / "runs"), workers=1, threads=1), {"steps": 30})


def test_too_few_rows_for_the_splits_name_both_numbers(tmp_path, capsys):
    x, y, J = _plane()
    name = write_data(tmp_path / "s.csv", x, y, J)
    with pytest.raises(ConfigError, match=r"has 60 rows, but n_train = 40 with 10 validation .* n_test = 30 needs 80"):
        check_sizes(_config(tmp_path, [name]).grid)
    with pytest.raises(ValueError, match="need 80 rows, but the file has 60"):
        make_dataset(equations.get(name), 80, "lhs", 0)
    assert main(["run", "--equations", name, "--models", "mlp_tanh", "--n-train", "40", "--set", "grid.n_test=30",
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    assert "has 60 rows" in capsys.readouterr().err


def test_without_derivatives_sobolev_cells_are_left_out_and_jacobian_metrics_say_why(tmp_path):
    x, y, _ = _plane(n=120)
    name = write_data(tmp_path / "s.csv", x, y, sidecar={"inputs": ["a", "b"], "outputs": ["f", "g"]})
    cfg = _config(tmp_path, [name], models_=("mlp_tanh", "jenn"))
    assert [c.variant for c in grid_cells(cfg.grid)] == ["value", "value"]
    assert {why for _, why in skipped_cells(cfg.grid)} == {f"{name} has no derivative columns (no Sobolev training)"}
    for cell in grid_cells(cfg.grid):
        res = run_cell(cell, cfg, "t")
        by = {(r["split"], r["metric"]): r for r in res.rows if not r.get("output")}
        assert 0.0 < by[("test", "r2_min")]["value"] <= 1.0  # fit metrics still run
        jac = by[("test", "jac_err_rms")]
        assert np.isnan(jac["value"]) and "no derivative columns" in jac["error"]
        assert not any(r["metric"].startswith("hess") for r in res.rows) and res.jacobians is None


@pytest.mark.slow
def test_a_file_of_a_formulas_exact_samples_gives_the_formulas_numbers(tmp_path):
    eq = equations.get("forum4x4")
    n = 40 + 10 + 30
    ds = make_dataset(eq, n, "lhs", seed=0)
    box = {n: [lo, hi] for n, lo, hi in zip(eq.input_names, eq.lower, eq.upper, strict=True)}  # the formula's box
    name = write_data(tmp_path / "forum.csv", ds.x.numpy(), ds.y.numpy(), ds.J.numpy(), eq.input_names,
                      eq.output_names, sidecar={"domain": box})  # fmt: skip
    cfg = _config(tmp_path, ["forum4x4", name], betas=(0.5,))
    got = {}
    for cell in grid_cells(cfg.grid):
        rows = run_cell(cell, cfg, "t").rows
        got[cell.equation] = {(r["split"], r["metric"], r.get("output", ""), r.get("input", ""), str(r.get("bin", "")))
                              : r["value"] for r in rows if not r["metric"].startswith(("hess", "lap"))
                              and "seconds" not in r["metric"]}  # fmt: skip
    formula, data = got["forum4x4"], got[name]
    assert formula.keys() == data.keys()
    # the same rows, split and training: equal to float32 training's run-to-run reproducibility on one machine
    for key, v in formula.items():
        assert data[key] == pytest.approx(v, rel=1e-6, abs=1e-9, nan_ok=True), key


def test_evaluate_scores_a_model_against_a_file_of_its_own_derivatives_as_exact(tmp_path, capsys):
    net = models.create_model("mlp_tanh", 2, 2, seed=0, width=8).double()
    torch.save(net.state_dict(), tmp_path / "net.pth")
    x = torch.from_numpy(_plane()[0])
    with torch.no_grad():
        y = net(x)
    J = torch.func.vmap(torch.func.jacrev(net))(x).detach()
    name = write_data(tmp_path / "own.csv", x.numpy(), y.numpy(), J.numpy(), sidecar={"noise": "none: exact"})
    args = ["evaluate", "--model", "mlp_tanh", "--layers", "2,8,8,8,2", "--checkpoint", str(tmp_path / "net.pth"),
            "--equation", name, "--scaling", "none", "--dtype", "float64", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    m = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert m.loc[m["metric"] == "jac_err_max", "value"].item() < 1e-12  # float64: its own derivatives
    assert "derivatives of data:" in out and "noise none: exact" in out and "no Hessian reference" in out
    assert main([*args[:-2], "--data", str(tmp_path / "own.csv"), "--out", str(tmp_path / "o2")]) != 0


# ---- the committed example: a damped driven oscillator ----


def _generator():
    spec = importlib.util.spec_from_file_location("make_oscillator", EXAMPLE.with_name("make_oscillator.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_oscillators_derivatives_are_right_and_its_closed_form_is_the_odes_steady_state():
    from scipy.integrate import solve_ivp

    gen = _generator()
    x = np.array([[0.5, 1.2, 0.15], [1.3, 1.1, 0.3], [2.5, 0.9, 0.55]])

    def closed(t):  # the same formula in torch, differentiated by torch.func (float64)
        w, wn, z = t[..., 0], t[..., 1], t[..., 2]
        a, b = wn**2 - w**2, 2 * z * wn * w
        return torch.stack([(a**2 + b**2) ** -0.5, torch.atan2(b, a)], -1)

    y, J = gen.steady_state(x)
    J_ref = torch.func.vmap(torch.func.jacrev(closed))(torch.from_numpy(x)).numpy()
    assert np.allclose(J, J_ref, rtol=1e-12, atol=1e-12)
    for (w, wn, z), (A, phi) in zip(x, y, strict=True):  # simulate x'' + 2 z wn x' + wn^2 x = cos(w t) to rest
        t_end = 12 / (z * wn) + 6 * np.pi / w  # transients decay as exp(-z wn t): e^-12 ~ 6e-6 of them remain
        sol = solve_ivp(lambda t, s, w, wn, z: [s[1], np.cos(w * t) - 2 * z * wn * s[1] - wn**2 * s[0]], (0, t_end),
                        [0, 0], args=(w, wn, z), rtol=1e-10, atol=1e-12, dense_output=True)  # fmt: skip
        t = np.linspace(t_end - 4 * np.pi / w, t_end, 400)  # the last two periods: x = c cos(wt) + s sin(wt)
        c, s = np.linalg.lstsq(np.stack([np.cos(w * t), np.sin(w * t)], 1), sol.sol(t)[0], rcond=None)[0]
        assert np.hypot(c, s) == pytest.approx(A, rel=1e-4) and np.arctan2(s, c) == pytest.approx(phi, abs=1e-4)


def test_the_committed_oscillator_file_is_its_generators_and_has_its_stated_noise(tmp_path, monkeypatch):
    gen = _generator()
    monkeypatch.setattr(gen, "HERE", tmp_path)
    gen.main()
    assert (tmp_path / "oscillator.csv").read_text() == EXAMPLE.read_text()
    assert json.loads((tmp_path / "oscillator.json").read_text()) == json.loads(
        EXAMPLE.with_suffix(".json").read_text()
    )
    eq = equations.get(f"data:{EXAMPLE}")
    x, y, J = (t.numpy() for t in eq.samples)
    y0, J0 = gen.steady_state(x)
    # the noise the sidecar states, measured: std of (file - exact) over each column's std, 1000 rows (+-10%)
    assert np.allclose((y - y0).std(0) / y0.std(0), gen.VALUE_NOISE, rtol=0.1)
    assert np.allclose((J - J0).std(0) / J0.std(0), gen.DERIV_NOISE, rtol=0.1)
    assert "0.2%" in eq.reference and "1%" in eq.reference


@pytest.mark.slow
def test_the_oscillator_example_end_to_end_train_report_leaderboard(tmp_path):
    out = tmp_path / "runs"
    args = ["run", "--profile", "oscillator", "--models", "mlp_tanh,jenn", "--seeds", "0,1", "--steps", "60",
            "--out", str(out), "--no-progress", "--set", "grid.n_test=200", "--set", "train.lr_grid=[]"]  # fmt: skip
    assert main(args) == 0
    run = max(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    board = md.split("## Leaderboard")[1].split("\n## ")[0]
    assert "data:equations/examples/oscillator.csv: the reference is data: the file's derivative columns" in board
    assert "noise values Gaussian, std 0.2%" in board and "| jenn | jenn |" in board and "| mlp_tanh | mlp |" in board
    peers = md.split("## Peers: JENN and SMT kriging")[1].split("\n## ")[0]
    assert "beats jenn's best Jacobian error on" in peers and "| zoo best |" in peers
    m = pd.read_csv(run / "metrics.csv")
    jac = m[(m["metric"] == "jac_err_rms") & (m["split"] == "test")]
    assert len(jac) == 8 and np.isfinite(jac["value"]).all()  # 2 models x 2 trainings x 2 seeds, all scored


def test_selfcheck_list_and_describe_take_a_data_set_by_name(capsys):
    name = "data:equations/examples/oscillator.csv"
    row = equations.selfcheck(name).iloc[0]
    assert row["status"] == "ok" and "no formula to check" in row["error"] and row["dims"] == "3x2"
    described = equations.describe(name)
    assert "reference: data: the file's derivative columns (measured or finite differences" in described
    assert "part of the comparison); noise values Gaussian" in described
    assert main(["list", "equations", name]) == 0
    assert "[0.2, 3] x [0.8, 1.6] x [0.1, 0.6]" in capsys.readouterr().out


def test_repeated_inputs_and_bad_sidecar_domains_are_refused(tmp_path):
    x, y, J = _plane()
    doubled = write_data(tmp_path / "d.csv", np.vstack([x, x[:3]]), np.vstack([y, y[:3]]), np.vstack([J, J[:3]]))
    with pytest.raises(CsvFormatError, match=r"line 2 \(data row 0\) and line 62 \(data row 60\) have the same inputs"):
        equations.get(doubled)  # a doubled file would put the same sample in a training and a test split
    for pair, message in (([1.0, 0.0], "is empty; write it as"), ([False, True], "must be \\[lower, upper\\]")):
        side = {"domain": {"a": pair}}
        with pytest.raises(CsvFormatError, match=message):
            equations.get(write_data(tmp_path / f"s{pair[0]}.csv", x, y, J, sidecar=side))


def test_an_edited_file_is_read_again_and_the_run_records_its_hash(tmp_path):
    from bench.fidelity.cell import cached_dataset
    from bench.run.runner import _record

    x, y, J = _plane()
    name = write_data(tmp_path / "s.csv", x, y, J)
    first = cached_dataset(name, 60, "lhs", 0)
    write_data(tmp_path / "s.csv", x, 2 * y, J)
    assert torch.equal(cached_dataset(name, 60, "lhs", 0).y, 2 * first.y)
    rec = _record(_config(tmp_path, [name]))
    import hashlib

    assert rec["data_sha256"] == {name: hashlib.sha256((tmp_path / "s.csv").read_bytes()).hexdigest()}
    assert rec["references"][name].startswith("data: the file's derivative columns")
