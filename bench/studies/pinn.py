"""The first forum post, reproduced: u' = cos x on [0, 2 pi] learned from the derivative loss.

The post trained a tanh network with ``mean(beta (u - sin x)^2 + (1 - beta) (du/dx - cos x)^2)`` and packed 8
collocation points into one 8-wide input vector, taking du/dx as the diagonal of each packed row's Jacobian.
Two setups, the same loss, the same optimizer and budget, for each beta from 1 (values only) to 1e-7 (the post
found 1e-7 enough):

- ``packed``: the post's network (8 -> 8 tanh -> 8 tanh -> 8) on rows of 8 consecutive points; the loss sees
  diag(J) of each row, computed with torch.func (vmap of jacrev over rows: the post's per-row
  torch.autograd.functional.jacobian, batched).
- ``batch``: the same depth and width with one point per sample (1 -> 8 tanh -> 8 tanh -> 1), points on the
  batch axis; du/dx as the gradient of the sum of u over the points (exact for independent points, checked).

What it measures, per (setup, beta, seed), on the collocation grid where the loss acted (and, suffix ``_test``,
on the grid halfway between its points, packed the same way): ``u_rmse`` (u against sin x), ``loss_dudx_rmse``
(the derivative the loss sees against cos x), ``slide_dudx_rmse`` (the exact derivative of u when the whole
layout slides along x, against cos x: for a packed network the row sums of its Jacobian, on the batch axis
du/dx), ``dudx_rmse`` (central differences of u over the grid against cos x, np.gradient, second order: for a
packed network they difference different output units, so this number grows as the spacing shrinks), ``gap_rmse`` (the
derivative the loss sees against that derivative of the learned solution: zero up to the difference error for
a network whose samples are independent), ``fd_bound`` (that error's bound h^2/3 max|u'''|, from the batch-axis
network's exact third derivative), and ``coupled`` (bench.engines.coupling on the per-point view of each
network: the packed one mixes points, so its diag(J) is a partial derivative of an 8-point function, not du/dx).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from bench.engines.coupling import verify_batch_independent
from bench.report import style
from bench.report.render import Note, Section, Table, plot, to_html, to_markdown
from bench.run.results import atomic_write_csv
from bench.studies.pinn_config import LOWER, PACK, UPPER, StudyConfig

SETUPS = ("packed", "batch")
METRICS = ("u_rmse", "loss_dudx_rmse", "slide_dudx_rmse", "dudx_rmse")  # on the collocation grid; + "_test": held out
TQ = "'" * 3  # the three primes of u''' in messages
CLIP = 4.0  # the derivative panel's y-range, where a packed network's du/dx of u runs wild


def tanh_net(n_in: int, width: int, n_out: int) -> nn.Sequential:
    """The post's NetworkClass shape: Linear, tanh, Linear, tanh, Linear."""
    return nn.Sequential(nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, n_out))


class PerPoint(nn.Module):
    """A network seen point by point, (N, 1) -> (N, 1): the packed one reads consecutive groups of PACK points as
    one input vector (N a multiple of PACK), the batch one reads each point alone."""

    def __init__(self, net: nn.Module, packed: bool):
        super().__init__()
        self.net, self.packed = net, packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return self.net(x)
        return self.net(x.reshape(-1, PACK)).reshape(-1, 1)


def grids(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(collocation points, test points), float64 (N, 1): N evenly spaced on [0, 2 pi] with its ends, and N more
    halfway between (the test grid, spacing h, one half-step beyond each end trimmed: N - 1 midpoints plus the
    mirror of the last, so that it packs into rows of PACK too)."""
    x = torch.linspace(LOWER, UPPER, points, dtype=torch.float64)
    h = float(x[1] - x[0])
    mid = torch.cat([x[:-1] + h / 2, x[-1:] + h / 2])  # the last midpoint lies h/2 beyond 2 pi: still smooth data
    return x[:, None], mid[:, None]


def row_jacobians(model: PerPoint, x: torch.Tensor) -> torch.Tensor:
    """(rows, PACK, PACK): the Jacobian of each packed row of a packed network, by torch.func (the post's per-row
    torch.autograd.functional.jacobian, batched)."""
    return torch.func.vmap(torch.func.jacrev(model.net))(x.reshape(-1, PACK))


def derivative(model: PerPoint, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """The du/dx each setup's loss uses, (N,): diag(J) of each packed row, or, on the batch axis, the gradient of
    the sum of u over the points: each point's du/dx exactly when points do not interact (measure checks that
    with bench.engines.coupling; the gradient of a sum is what PINN codes take, one backward pass)."""
    if model.packed:
        return torch.diagonal(row_jacobians(model, x), dim1=-2, dim2=-1).reshape(-1)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xg).sum(), xg, create_graph=create_graph)
    return g.reshape(-1)


def slide_derivative(model: PerPoint, x: torch.Tensor) -> torch.Tensor:
    """The exact derivative of each point's u when the whole layout slides along x (every point moves by the same
    dx), (N,): the row sums of each packed row's Jacobian; on the batch axis, du/dx itself. Unlike central
    differences across points (different output units of a packed network), it does not depend on the spacing."""
    if not model.packed:
        return derivative(model, x, create_graph=False).detach()
    return row_jacobians(model, x).sum(-1).reshape(-1).detach()


def train(setup: str, beta: float, seed: int, cfg: StudyConfig) -> PerPoint:
    """One network trained on the post's loss; float64 throughout (a reference study, not a speed one)."""
    torch.manual_seed(seed)
    packed = setup == "packed"
    net = tanh_net(PACK, cfg.width, PACK) if packed else tanh_net(1, cfg.width, 1)
    model = PerPoint(net.to(torch.float64), packed)
    x, _ = grids(cfg.points)
    u_true, du_true = torch.sin(x).reshape(-1), torch.cos(x).reshape(-1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        u = model(x).reshape(-1)
        du = derivative(model, x, create_graph=True)
        loss = torch.mean(beta * (u - u_true) ** 2 + (1.0 - beta) * (du - du_true) ** 2)
        loss.backward()
        opt.step()
    return model.eval()


def third_derivative_max(model: PerPoint, x: torch.Tensor) -> float:
    """max |u'''| over x of a batch-axis network (exact, nested autograd), which bounds np.gradient's error:
    h^2 / 6 max|u'''| inside, h^2 / 3 at its second-order one-sided ends. A packed network has no u(x) of one
    point to differentiate thrice: there, sin's (1) stands in, which is what its u should be."""
    if model.packed:
        return 1.0
    x = x.detach().clone().requires_grad_(True)
    d = model(x).sum()
    for _ in range(3):  # samples are independent (checked in measure), so the sum's gradient is per sample
        (g,) = torch.autograd.grad(d, x, create_graph=True)
        d = g.sum()
    return float(g.detach().abs().max())


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def measure(model: PerPoint, cfg: StudyConfig) -> tuple[dict[str, float], pd.DataFrame]:
    """The study's numbers for one trained network, on the collocation grid (where the loss acted; no suffix)
    and on the test grid halfway between (``_test``), and its curves on both (column ``grid``)."""
    out, curves = {}, []
    points = grids(cfg.points)
    for grid, x in zip(("collocation", "test"), points, strict=True):
        sfx = "" if grid == "collocation" else "_test"
        with torch.no_grad():
            u = model(x).reshape(-1).numpy()
        loss_du = derivative(model, x, create_graph=False).detach().numpy()
        xs = x.reshape(-1).numpy()
        du_fd = np.gradient(u, xs, edge_order=2)  # the learned solution's derivative along x
        h = float(xs[1] - xs[0])
        out[f"u_rmse{sfx}"] = _rmse(u, np.sin(xs))
        out[f"loss_dudx_rmse{sfx}"] = _rmse(loss_du, np.cos(xs))
        out[f"dudx_rmse{sfx}"] = _rmse(du_fd, np.cos(xs))
        out[f"gap_rmse{sfx}"] = _rmse(loss_du, du_fd)
        slide = slide_derivative(model, x).numpy()
        out[f"slide_dudx_rmse{sfx}"] = _rmse(slide, np.cos(xs))
        out[f"fd_bound{sfx}"] = h * h / 3.0 * third_derivative_max(model, x)
        curves.append(pd.DataFrame({"grid": grid, "x": xs, "u": u, "u_true": np.sin(xs), "loss_dudx": loss_du,
                                    "dudx_fd": du_fd, "dudx_slide": slide, "dudx_true": np.cos(xs)}))  # fmt: skip
    rep = verify_batch_independent(model, points[1])
    out["coupled"], out["cross_relative"] = float(rep.coupled), rep.relative
    return out, pd.concat(curves, ignore_index=True)


@dataclass
class StudyResult:
    config: StudyConfig
    rows: pd.DataFrame  # setup, beta, seed, metric, value
    curves: pd.DataFrame  # setup, beta, seed, grid, x, u, u_true, loss_dudx, dudx_fd, dudx_slide, dudx_true

    def table(self) -> pd.DataFrame:
        """Per (setup, beta), wide: the median over seeds of each number, ``coupled`` as the share of seeds."""
        g = self.rows.groupby(["setup", "beta", "metric"])["value"]
        wide = g.median().unstack("metric")
        wide["coupled"] = g.mean().unstack("metric")["coupled"]
        return wide.reset_index().sort_values(["setup", "beta"], ascending=[True, False]).reset_index(drop=True)


def run_study(cfg: StudyConfig, progress=None) -> StudyResult:
    """Train and measure every (setup, beta, seed)."""
    rows, curves = [], []
    cells = [(s, b, seed) for s in SETUPS for b in cfg.betas for seed in cfg.seeds]
    for setup, beta, seed in cells if progress is None else progress(cells):
        model = train(setup, beta, seed, cfg)
        numbers, c = measure(model, cfg)
        rows += [dict(setup=setup, beta=beta, seed=seed, metric=k, value=v) for k, v in numbers.items()]
        curves.append(c.assign(setup=setup, beta=beta, seed=seed))
    return StudyResult(cfg, pd.DataFrame(rows), pd.concat(curves, ignore_index=True))


def figures(result: StudyResult):
    """(curves at the smallest beta, errors against beta) as matplotlib Figures (first seed)."""
    import seaborn as sns

    beta = min(result.config.betas)
    seed = min(result.config.seeds)
    c = result.curves[(result.curves["beta"] == beta) & (result.curves["seed"] == seed)]
    c = c[c["grid"] == "collocation"]  # where the loss acted: the post's own view
    packed, batch = c[c["setup"] == "packed"], c[c["setup"] == "batch"]
    with style.theme():
        fig1, axes = style.new_figure(2, 1, width=4.6, height=3.4, margin=2.6)
        ax = axes[0, 0]
        ax.plot(batch["x"], batch["dudx_true"], color="0.1", lw=2.2, label="true du/dx = cos x")
        ax.plot(batch["x"], batch["loss_dudx"], color=style.FAMILY_COLORS["mlp"], lw=1.2, ls="--",
                label="batch axis: du/dx (autograd)")  # fmt: skip
        ax.plot(packed["x"], packed["loss_dudx"], color=style.FAMILY_COLORS["fastkan"], lw=0, marker="o", ms=3,
                label="packed: diag(J) (what its loss sees)")  # fmt: skip
        ax.plot(packed["x"], packed["dudx_fd"], color=style.FAMILY_COLORS["efficient_kan"], lw=0.8, alpha=0.6,
                label="packed: central differences of its u")  # fmt: skip
        ax.plot(packed["x"], packed["dudx_slide"], color=style.FAMILY_COLORS["chebykan"], lw=1.6,
                label="packed: du/dx of its u, layout slid along x")  # fmt: skip
        ax.set(xlabel="x", ylabel="du/dx", title=f"derivatives at the collocation points, β = {beta:g}")
        if packed["dudx_fd"].abs().max() > CLIP:
            ax.set_ylim(-CLIP, CLIP)
            ax.set_title(f"derivatives at the collocation points, β = {beta:g}\n(axis cut at ±{CLIP:g})")
        ax = axes[0, 1]
        ax.plot(batch["x"], batch["u_true"], color="0.1", lw=2.2, label="true u = sin x")
        ax.plot(batch["x"], batch["u"], color=style.FAMILY_COLORS["mlp"], lw=1.2, ls="--", label="batch axis: u")
        ax.plot(packed["x"], packed["u"], color=style.FAMILY_COLORS["efficient_kan"], lw=1.2, label="packed: u")
        ax.set(xlabel="x", ylabel="u", title=f"solutions at the collocation points, β = {beta:g}")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        h2, l2 = axes[0, 1].get_legend_handles_labels()
        fig1.legend(handles + h2[1:], labels + l2[1:], loc="outside right upper", fontsize="small")

        rows = result.rows[result.rows["metric"].isin(METRICS)]
        titles = {"u_rmse": "u vs sin x", "loss_dudx_rmse": "derivative the loss sees vs cos x",
                  "slide_dudx_rmse": "du/dx of u (layout slid) vs cos x",
                  "dudx_rmse": "central differences of u vs cos x"}  # fmt: skip
        fig2, axes2 = style.new_figure(4, 1, width=3.0, height=2.8, margin=1.6)
        palette = {"packed": style.FAMILY_COLORS["fastkan"], "batch": style.FAMILY_COLORS["mlp"]}
        for ax, metric in zip(axes2.flat, METRICS, strict=True):
            d = rows[rows["metric"] == metric]
            sns.lineplot(d, x="beta", y="value", hue="setup", palette=palette, marker="o", estimator="median",
                         errorbar=("pi", 100), ax=ax, legend=ax is axes2.flat[-1])  # fmt: skip
            ax.set(xscale="log", yscale="log", xlabel="β (value-loss weight)", ylabel="RMSE", title=titles[metric])
            style.log_ticks_at(ax, result.config.betas[::2] if len(result.config.betas) > 4 else result.config.betas)
        leg = axes2.flat[-1].get_legend()
        if leg is not None:
            handles, labels = leg.legend_handles, [t.get_text() for t in leg.get_texts()]
            leg.remove()
            fig2.legend(handles, labels, loc="outside right upper", title="setup", fontsize="small")
        for ax in axes2.flat:
            style.tidy_log(ax)
    return fig1, fig2


def summary(result: StudyResult) -> list[str]:
    """Plain sentences: what the coupling check says and what the numbers show."""
    t = result.table().set_index(["setup", "beta"])
    small = min(result.config.betas)
    p, b = t.loc[("packed", small)], t.loc[("batch", small)]
    coupled = result.rows[result.rows["metric"] == "coupled"].groupby("setup")["value"]
    n_packed, n_batch, n = int(coupled.sum()["packed"]), int(coupled.sum()["batch"]), int(coupled.count()["packed"])
    lines = [
        f"Coupling check (bench.engines.coupling, every pair of points): the packed network mixes points "
        f"(cross-point derivatives up to {p['cross_relative']:.3g} x a point's own) in {n_packed} of {n} trained "
        f"networks; the batch-axis network in {n_batch} of {n}.",
        f"At β = {small:g}: the packed network's loss derivative diag(J) matches cos x to {p['loss_dudx_rmse']:.3g} "
        f"RMSE at its collocation points, but the u it returns is not a function with that derivative: sliding its "
        f"layout along x, du/dx is off by {p['slide_dudx_rmse']:.3g} (its central differences across points, which "
        f"come from different output units, by {p['dudx_rmse']:.3g}: that number grows as the spacing shrinks). The "
        f"batch-axis network: {b['loss_dudx_rmse']:.3g} and {b['slide_dudx_rmse']:.3g}, its autograd du/dx equal to "
        f"central differences of its u up to {b['gap_rmse']:.3g} (their error bound h²/3 max|u{TQ}| is "
        f"{b['fd_bound']:.2g}).",
        f"u against sin x at β = {small:g}: packed {p['u_rmse']:.3g}, batch axis {b['u_rmse']:.3g} RMSE.",
    ]
    if b["u_rmse"] < 10 * b["loss_dudx_rmse"]:
        lines[-1] += (" On the batch axis a value weight this small is enough: it only has to pin the constant that "
                      "u' = cos x leaves free.")  # fmt: skip
    return lines


def write(result: StudyResult, out) -> dict[str, str]:
    """DIR/pinn.csv (every number), DIR/pinn_curves.csv, DIR/figures/*.png, DIR/report.md and report.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "pinn.csv", result.rows)
    atomic_write_csv(out / "pinn_curves.csv", result.curves)
    fig1, fig2 = figures(result)
    t = result.table()
    cols = ["setup", "β", "u vs sin x", "loss du/dx vs cos x", "du/dx of u (slid) vs cos x",
            "central differences of u vs cos x", "loss du/dx vs central differences", "u vs sin x (test)",
            "du/dx of u (slid) vs cos x (test)", "coupled (share of seeds)"]  # fmt: skip
    shown = [*METRICS, "gap_rmse", "u_rmse_test", "slide_dudx_rmse_test"]
    rows = [[r.setup, f"{r.beta:g}", *(f"{getattr(r, m):.3g}" for m in shown), f"{r.coupled:.0%}"]
            for r in t.itertuples()]  # fmt: skip
    cfg = result.config
    caption = (f"RMSE, median over seeds {list(cfg.seeds)}; {cfg.points} collocation points, {cfg.steps} Adam "
               f"steps (lr {cfg.lr:g}), hidden width {cfg.width}; at the collocation points (where the loss acted) "
               "unless marked test: the grid halfway between them")  # fmt: skip
    sec = Section(
        "u' = cos x from the derivative loss: packed points vs the batch axis",
        "The post's loss mean(β (u - sin x)² + (1 - β)(du/dx - cos x)²), trained once with 8 points packed into one "
        "input vector (du/dx = diag of each row's Jacobian, as in the post) and once with points on the batch axis. "
        "The packed network can satisfy its loss with a diag(J) that is not the derivative of the u it returns: "
        "compare the loss's du/dx with the du/dx of u (exact, with the layout slid along x).",
    )
    for line in summary(result):
        sec.add(Note(line))
    sec.add(plot("pinn_curves", fig1, "du/dx and u of both setups at the smallest beta"))
    sec.add(plot("pinn_beta", fig2, "errors against beta"))
    sec.add(Table(cols, rows, caption=caption))
    title = "jacbench study: the first forum post (packed collocation points)"
    intro = __doc__.split("\n\n")[0].replace("\n", " ")
    (out / "report.md").write_text(to_markdown(title, intro, [sec], out), encoding="utf-8")
    (out / "report.html").write_text(to_html(title, intro, [sec]), encoding="utf-8")
    return {"report": str(out / "report.html"), "rows": str(out / "pinn.csv")}
