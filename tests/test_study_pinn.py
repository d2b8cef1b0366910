"""`python -m bench study pinn`: the first forum post's packed collocation points, against the batch axis."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.studies import pinn

SMALL = pinn.StudyConfig(betas=(1.0, 1e-7), seeds=(0,), points=32, steps=150)


@pytest.fixture(scope="module")
def result() -> pinn.StudyResult:
    return pinn.run_study(SMALL)


def test_the_coupling_check_flags_the_packed_network_and_only_it(result):
    coupled = result.rows[result.rows["metric"] == "coupled"].set_index(["setup", "beta"])["value"]
    assert (coupled.loc["packed"] == 1.0).all() and (coupled.loc["batch"] == 0.0).all()


def test_batch_axis_derivative_is_the_derivative_of_its_u_and_the_packed_one_is_not(result):
    t = result.table().set_index(["setup", "beta"])
    for beta in SMALL.betas:
        b, p = t.loc[("batch", beta)], t.loc[("packed", beta)]
        for sfx in ("", "_test"):
            # autograd du/dx against np.gradient of u: the central differences' own error, h^2/3 max|u'''| at the
            # grid points (x2: the max between grid points can exceed the max at them)
            assert b[f"gap_rmse{sfx}"] <= 2 * b[f"fd_bound{sfx}"], (beta, sfx)
            # the packed network's diag(J) differentiates one output along one input of an 8-point function:
            # its outputs across neighbouring points differ by whole neurons, O(1) against a bound of 0.03
            assert p[f"gap_rmse{sfx}"] > 10 * p[f"fd_bound{sfx}"], (beta, sfx)


def test_the_packed_derivative_is_the_diagonal_of_each_rows_jacobian():
    torch.manual_seed(0)
    model = pinn.PerPoint(pinn.tanh_net(pinn.PACK, 8, pinn.PACK).double(), packed=True)
    x, _ = pinn.grids(32)
    full = torch.autograd.functional.jacobian(lambda v: model(v[:, None]).reshape(-1), x.reshape(-1))  # (32, 32)
    blocks = torch.block_diag(*[full[i : i + 8, i : i + 8] for i in range(0, 32, 8)])
    assert torch.equal(full, blocks)  # rows do not see each other; the points within one do
    assert torch.allclose(pinn.derivative(model, x, create_graph=False), torch.diagonal(full), rtol=0, atol=1e-14)


def test_the_cli_writes_the_table_the_figures_and_the_numbers(tmp_path, capsys):
    out = tmp_path / "pinn"
    argv = ["study", "pinn", "--betas", "1,1e-7", "--seeds", "0", "--points", "16", "--steps", "20", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Coupling check" in printed and "in 2 of 2 trained networks; the batch-axis network in 0 of 2" in printed
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| packed | 1e-07 |" in md and "| batch | 1 |" in md and "figures/pinn_curves.png" in md
    assert {p.name for p in (out / "figures").iterdir()} == {"pinn_curves.png", "pinn_beta.png"}
    rows = pd.read_csv(out / "pinn.csv")
    assert len(rows.drop_duplicates(["setup", "beta", "seed"])) == 4
    curves = pd.read_csv(out / "pinn_curves.csv")
    assert set(curves["grid"]) == {"collocation", "test"} and len(curves) == 4 * 2 * 16


def test_bad_settings_are_clear_errors(capsys):
    with pytest.raises(ValueError, match="multiple of 8"):
        pinn.StudyConfig(points=30)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        pinn.StudyConfig(betas=(2.0,))
    assert main(["study", "pinn", "--betas", "1,x"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err


def test_the_slid_derivative_is_the_derivative_of_u_when_the_layout_moves():
    torch.manual_seed(1)
    x, _ = pinn.grids(32)
    for packed in (True, False):
        net = pinn.tanh_net(pinn.PACK, 8, pinn.PACK) if packed else pinn.tanh_net(1, 8, 1)
        model = pinn.PerPoint(net.double(), packed)
        d = 1e-6
        with torch.no_grad():  # every point moved by the same d: central difference, error O(d^2) ~ 1e-12
            fd = (model(x + d) - model(x - d)).reshape(-1) / (2 * d)
        torch.testing.assert_close(pinn.slide_derivative(model, x), fd, rtol=0, atol=1e-8)
        if not packed:  # one point per sample: sliding the layout is moving the point
            torch.testing.assert_close(pinn.slide_derivative(model, x), pinn.derivative(model, x, False))
