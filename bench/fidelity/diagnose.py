"""The diagnosis `python -m bench evaluate` prints: which Jacobian entries are off, and the usual reasons why.

Each check returns plain sentences. The checks: fit and Jacobian error in physical units, the worst entries,
errors at the domain edges, second derivatives against the exact Hessians, sample mixing
(bench.engines.coupling), the rank collapse of FastKAN's first LayerNorm,
how much of the model's input range the normalized data use, and the de-normalization itself.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from bench.engines.coupling import verify_batch_independent
from bench.fidelity import hessian_metrics as hm
from bench.fidelity import metrics
from bench.fidelity.evaluate import RANGE_MIN_POINTS, RANGE_OUTSIDE, RANGE_WIDER

OFF_ENTRY = 0.1  # an entry whose normalized RMSE exceeds this is "off"
EDGE = 0.1  # samples within this normalized distance of the box boundary are "at the edge"
EDGE_RATIO = 2.0  # edge median error / interior median error above this: errors concentrate at the edges
FAITHFUL = 0.02  # a headline Jacobian error (RMS over points) this small is a faithful Jacobian
HEADLINE_MEANING = (
    "(Error = RMS over points of the range-scaled derivative error, each output relative to its typical "
    "range-scaled gradient: 100% is as wrong as predicting zero derivatives; units do not change it.)"
)


def _pct(v: float) -> str:
    return f"{100 * v:.3g}%"


def fit_lines(ev, remedy: str | None = None) -> list[str]:
    """The headline (the unit-invariant Jacobian error, its spread and each output's), then the fit, then what
    follows from the two together."""
    r2, _ = metrics.r2_per_output(ev.y_true, ev.y_pred)
    per = ", ".join(f"{n} {v:.6f}" for n, v in zip(ev.eq.output_names, r2, strict=True))
    fit = [f"Fit on {len(ev.x)} points (physical units): R² min {np.nanmin(r2):.6f} ({per})."]
    if hasattr(ev.eq, "draw"):  # a data set: evaluated on every row of its file (--n and --sampler do not apply)
        fit.append(f"These are all {len(ev.x)} rows of {ev.eq.name} (--n and --sampler do not apply to a data set); "
                   "if the model was trained on this file, they include its training rows.")  # fmt: skip
    if np.nanmin(r2) < 0:
        worst = ev.eq.output_names[int(np.nanargmin(r2))]
        fit.append(
            f"The fit is worse than a constant ({worst}: R² {np.nanmin(r2):.3g} < 0): the weights loaded, but the "
            "model is probably not the one they were trained in. Check --model (the activation: mlp_sigmoid loads "
            "tanh weights without complaint), --layers and --scaling."
        )
    if not ev.eq.has_jacobian:
        why = f"{ev.eq.name} has no derivative columns: the Jacobian cannot be checked against it"
        return [*fit, f"{why} (its reference: {ev.eq.reference})."]
    head = headline(ev, 1)
    stats = head.summary()
    sign, _ = metrics.jac_sign_agreement(ev.J_true, ev.J_pred)
    ref = f"{ev.eq.name}'s exact Jacobian" if ev.eq.reference.startswith("exact") else (
        f"the derivatives of {ev.eq.name} ({ev.eq.reference})")  # fmt: skip
    lines = [
        f"Jacobian error {_pct(stats['rms'])} vs {ref} (RMS over points; median {_pct(stats['median'])}, "
        f"90th percentile {_pct(stats['p90'])}, max {_pct(stats['max'])}).",
        "  Per output: " + _per_output(head, ev.eq.output_names) + ". " + HEADLINE_MEANING,
    ]
    if head.note:
        lines.append(f"  Left out of the headline: {head.note}.")
    lines += fit
    lines.append(f"Signs of the Jacobian entries agree on {_pct(sign)} of entries (true entries near 0 skipped).")
    if stats["rms"] > FAITHFUL:
        how = remedy or "python -m bench fit --loss sobolev ... (your model, your data)"
        why = ("The values fit well but the derivatives do not: a good R² does not constrain the Jacobian. "
               if np.nanmin(r2) > 0.99 else "")  # fmt: skip
        lines.append(f"{why}To train this model on its derivatives too (Sobolev) and compare before/after: `{how}`.")
    if ev.y_residual is not None and float(np.max(ev.y_residual)) > 1e-6 * float(np.abs(ev.y_true).max()):
        k = int(np.argmax(ev.y_residual))
        lines.append(
            f"Your data file's outputs differ from {ev.eq.name}'s by up to {ev.y_residual[k]:.3g} "
            f"({ev.eq.output_names[k]}): is it the same equation set? Metrics use {ev.eq.name}'s values."
        )
    return lines


def spurious_lines(ev) -> list[str]:
    """Derivatives the model invents where the equations have none (entries exactly 0 at every point)."""
    t = np.asarray(ev.J_true)
    structural = [(a, b) for a in range(t.shape[1]) for b in range(t.shape[2]) if not t[:, a, b].any()]
    if not structural:
        return []
    _, worst, per_entry, note = metrics.jac_spurious(ev.J_true, ev.J_pred)
    if note:
        return [f"Structural zeros: {len(structural)} entries are 0 everywhere; not checked ({note})."]
    out, inp = ev.eq.output_names, ev.eq.input_names
    rows = sorted(((per_entry[a, b], f"d{out[a]}/d{inp[b]}") for a, b in structural), reverse=True)
    bad = [(f, n) for f, n in rows if f > 0]
    tol = f"{metrics.SPURIOUS_REL_TOL:g} of the output's typical derivative"
    if not bad:
        return [f"Structural zeros: the {len(structural)} entries that are 0 everywhere in {ev.eq.name} stay below "
                f"{tol} on every point."]  # fmt: skip
    shown = ", ".join(f"{n} on {_pct(f)} of points" for f, n in bad[:6]) + (" ..." if len(bad) > 6 else "")
    return [
        f"Spurious derivatives: {len(bad)} of the {len(structural)} Jacobian entries that are exactly 0 in "
        f"{ev.eq.name} are non-zero in the model (above {tol}): {shown}; the largest is {worst:.3g} of its "
        "output's typical derivative. The model invents sensitivities the equations do not have."
    ]


def headline(ev, order: int) -> metrics.DerivativeError:
    """The headline error of the evaluation's Jacobians (order 1) or Hessians (order 2) over its input box."""
    ranges = np.asarray(ev.eq.upper, dtype=float) - np.asarray(ev.eq.lower, dtype=float)
    true, pred = (ev.J_true, ev.J_pred) if order == 1 else (ev.H_true, ev.H_pred)
    return metrics.derivative_error(true, pred, ranges, order)


def _per_output(head: metrics.DerivativeError, names) -> str:
    out = head.output_rms()
    return ", ".join(f"{n} {_pct(v)}" if np.isfinite(v) else f"{n} – ({why})"
                     for n, v, why in zip(names, out, head.output_notes, strict=True))  # fmt: skip


def entry_lines(ev) -> list[str]:
    nrmse, _ = metrics.jac_entry_nrmse(ev.J_true, ev.J_pred)
    names = [
        (f"d{o}/d{i}", nrmse[a, b]) for a, o in enumerate(ev.eq.output_names) for b, i in enumerate(ev.eq.input_names)
    ]
    worst, off, shown = _off_entries(names)
    if not off:
        return [
            f"Every Jacobian entry is within {OFF_ENTRY:g} normalized RMSE (worst {worst[0][0]} {worst[0][1]:.3g})."
        ]
    return [
        f"{len(off)} of {len(names)} Jacobian entries are off (RMSE / RMS of the true entry > {OFF_ENTRY:g}): {shown}"
        "; per-sample values beside the true ones are in jacobian_results.csv."
    ]


def _off_entries(entries: list[tuple[str, float]], shown: int = 6) -> tuple[list, list, str]:
    """(entries worst first, NaN last; those above OFF_ENTRY; the first ``shown`` of those as text)."""
    worst = sorted(entries, key=lambda t: -t[1] if np.isfinite(t[1]) else -np.inf)
    off = [(n, v) for n, v in worst if v > OFF_ENTRY]
    return worst, off, ", ".join(f"{n} {v:.3g}" for n, v in off[:shown]) + (" ..." if len(off) > shown else "")


def edge_lines(ev) -> list[str]:
    err = headline(ev, 1).per_sample
    d = metrics.edge_distance(ev.x, ev.eq.lower, ev.eq.upper)
    edge, inner = err[d < EDGE], err[d >= EDGE]
    if len(edge) < 5 or len(inner) < 5:
        return [f"Edges: too few points on one side of the {EDGE:g} distance to the boundary to compare."]
    a, b = float(np.median(edge)), float(np.median(inner))
    ratio = a / b if b > 0 else np.inf
    head = (
        f"Edges: median error {_pct(a)} on the {len(edge)} points within {EDGE:g} of the boundary (box scaled to "
        f"[0, 1]) vs {_pct(b)} on the {len(inner)} inside ({ratio:.3g}x)"
    )
    if ratio > EDGE_RATIO:
        why = (
            ", and spline/RBF bases that fade out at the ends of their grid"
            if _family(ev.model) in GRID_FAMILIES
            else ""
        )
        return [head + f": the error concentrates at the domain edges (fewer samples around them{why})."]
    return [head + ": no concentration at the edges."]


def hessian_lines(ev) -> list[str]:
    """Second derivatives against the set's exact Hessians: overall, per output's Laplacian, the worst entries,
    and what a faithful Jacobian with an unfaithful Hessian means."""
    if ev.H_pred is None:
        return [f"Second derivatives: not measured ({ev.hessian_error})."]
    head = headline(ev, 2)
    stats = head.summary()
    lap, lap_notes = hm.lap_nrmse(ev.H_true, np.trace(ev.H_pred, axis1=-2, axis2=-1))
    nrmse, _ = hm.hess_entry_nrmse(ev.H_true, ev.H_pred)
    entries = [(f"d2{o}/d{pair.replace(',', 'd')}", nrmse[i, j, k]) for i, o in enumerate(ev.eq.output_names)
               for j, k, pair in hm.pair_names(ev.eq.input_names)]  # fmt: skip
    worst, off, shown = _off_entries(entries)
    absolute = {i for i, note in enumerate(lap_notes) if "absolute" in note}  # an output without curvature
    laps = ", ".join(f"{o} {v:.3g}" + (" (no curvature: absolute RMSE)" if i in absolute else "")
                     for i, (o, v) in enumerate(zip(ev.eq.output_names, lap, strict=True)))  # fmt: skip
    lines = [
        f"Second derivatives vs {ev.eq.name}'s exact Hessian: error {_pct(stats['rms'])} (RMS over points; median "
        f"{_pct(stats['median'])}, 90th percentile {_pct(stats['p90'])}, max {_pct(stats['max'])}); per output "
        f"{_per_output(head, ev.eq.output_names)}; Laplacian normalized RMSE {laps}; "
        + (f"{len(off)} of {len(entries)} distinct entries off (> {OFF_ENTRY:g}): {shown}" if off else
           f"every distinct entry within {OFF_ENTRY:g} (worst {worst[0][0]} {worst[0][1]:.3g})") + "."
    ]  # fmt: skip
    jac = headline(ev, 1).summary()
    if jac["rms"] <= FAITHFUL and stats["rms"] > OFF_ENTRY:
        lines.append(
            "The Jacobian is faithful but the curvature is not: value and Jacobian losses never train second "
            "derivatives. A PINN residual or a Newton step would use these; a Hessian term in the loss "
            "(`python -m bench run --set grid.hess_weights=0,0.1 --set grid.hess_betas=0.5`) measures how much "
            "it helps."
        )
    if getattr(ev.model, "family", "") == "efficient_kan":
        lines.append(
            "  Cubic B-spline KAN: its second derivatives are piecewise linear between the grid's knots (C², not "
            "smoother) and, outside the grid, only the SiLU base branch curves."
        )
    return lines


def coupling_lines(model: nn.Module, x_n: torch.Tensor) -> list[str]:
    rep = verify_batch_independent(model, x_n)
    if rep.coupled:
        return [
            f"Samples interact: a sample's gradient receives {rep.max_cross:.3g} from other samples' outputs "
            f"({rep.relative:.3g} x its own). Per-sample Jacobians of such a model are not the derivatives of one "
            "sample's function (several points packed in one input vector, or BatchNorm in train mode)."
        ]
    return [
        f"Samples are independent on these {rep.batch} points: every pair checked, cross-sample derivatives exactly 0 "
        "(bench.engines.coupling says what that does and does not guarantee)."
    ]


def input_layernorm(model: nn.Module) -> nn.LayerNorm | None:
    """FastKAN's first-layer LayerNorm (``layers.0.layernorm``) if the model has one over its inputs."""
    try:
        ln = model.get_submodule("layers.0.layernorm")
    except AttributeError:
        return None
    n_in = getattr(model, "n_in", None)
    return ln if isinstance(ln, nn.LayerNorm) and ln.normalized_shape == (n_in,) else None


def layernorm_lines(model: nn.Module, x_n: torch.Tensor) -> list[str]:
    """Rank of the first LayerNorm's Jacobian at the normalized inputs: n_in - 1 at best (the mean direction)."""
    ln = input_layernorm(model)
    if ln is None:
        return []
    ln64 = copy.deepcopy(ln).to(torch.float64)
    x64 = x_n.detach().to(torch.float64)
    with torch.no_grad():  # torch.func ignores an outer no_grad; this keeps the results detached
        J = torch.func.vmap(torch.func.jacrev(ln64))(x64)  # (B, n_in, n_in)
        s = torch.linalg.svdvals(J)  # descending
    n = x64.shape[1]
    rank = (s > s[:, :1] * 1e-9).sum(1)
    eff = (s > s[:, :1] * 1e-3).sum(1)
    std = x64.std(dim=1, unbiased=False)
    gain = s[:, 0]
    return [
        f"FastKAN LayerNorm: the first layer's LayerNorm Jacobian at your normalized inputs has rank "
        f"{int(rank.min())}-{int(rank.max())} of {n} (effective rank {int(eff.min())}-{int(eff.max())} at 1e-3); "
        f"its gain is median {float(gain.median()):.3g}, max {float(gain.max()):.3g}.",
        f"  Meaning: before the RBF basis every sample's {n} inputs lose their common mean (exactly) and their spread "
        f"(up to eps = {ln.eps:g}), so the spline branch cannot see all inputs moving together, and barely sees them "
        f"spreading; only the base branch silu(x) @ W carries those directions. The gain grows like 1/std of a "
        f"sample's own inputs: {_pct(float((std < 0.1).float().mean()))} of your points have std < 0.1 there. "
        "The collapse mixes inputs that have nothing in common (different physical quantities); compare fastkan_noln "
        "(no LayerNorm) or an MLP: `python -m bench run --models 'fastkan*,mlp_tanh' --equations <set>`.",
    ]


GRID_FAMILIES = ("fastkan", "efficient_kan", "pykan")  # bases on a grid of centres / knots over input_range


def _family(model: nn.Module) -> str | None:
    return getattr(getattr(model, "model", model), "family", None)


def grid_lines(model: nn.Module, x_n: torch.Tensor) -> list[str]:
    rng = getattr(model, "input_range", None)
    if rng is None or _family(model) not in GRID_FAMILIES:
        return []
    lo, hi = float(x_n.min()), float(x_n.max())
    used = max(0.0, min(hi, rng[1]) - max(lo, rng[0])) / (rng[1] - rng[0])
    line = f"Normalized inputs span [{lo:.3g}, {hi:.3g}]; the model's input range is ({rng[0]:g}, {rng[1]:g})"
    if used < 0.5 or lo < rng[0] - 1e-9 or hi > rng[1] + 1e-9:
        return [line + f": the data use {_pct(used)} of it (grid-based bases put most of their resolution elsewhere)."]
    return [line + "."]


def minmax_lines(ev) -> list[str]:
    """The min/max file against the data's inputs and outputs (the only evidence of the training scaling here)."""
    rows = [r for r in ev.rows if r["metric"] in ("minmax_outside", "minmax_width_ratio")]
    if not rows:
        return ["Scaling: no min/max file was given, so nothing checks that the scaling is the one the model was "
                "trained with."]  # fmt: skip
    bad = []
    for r in rows:
        name = r["output"] or r["input"]
        if r["metric"] == "minmax_outside" and r["value"] > RANGE_OUTSIDE:
            bad.append(f"{name}: the data exceed the claimed [Min, Max] by {_pct(r['value'])} of its width")
        if r["metric"] == "minmax_width_ratio" and r["value"] > RANGE_WIDER:
            bad.append(f"{name}: the claimed range is {r['value']:.3g}x as wide as the data's")
    if bad:
        return [
            "Min/max file MISMATCH with the data (" + "; ".join(bad) + "). A wrong or stale min/max file scales "
            "the model's inputs and derivatives wrongly while every check above still passes: use the file the "
            "model was trained with (a narrow range is expected only if your data cover part of the training box)."
        ]
    width = all(np.isfinite(r["value"]) for r in rows if r["metric"] == "minmax_width_ratio")
    return [
        f"Min/max file vs the data: every input and output lies within its claimed range (to {_pct(RANGE_OUTSIDE)} "
        f"of its width)"
        + (f" and uses more than 1/{RANGE_WIDER:g} of it: consistent with the data." if width else
           f"; too few points (< {RANGE_MIN_POINTS}) to tell whether the range is much wider than the data's.")
    ]  # fmt: skip


def denorm_lines(ev) -> list[str]:
    v = next((r["value"] for r in ev.rows if r["metric"] == "denorm_check"), float("nan"))
    if v <= 1e-8 * (float(np.abs(ev.J_pred).max()) or 1.0):  # the wrapper's own Jacobian sets the scale
        return [
            "De-normalization: the raw-in/raw-out wrapper's Jacobian equals the chain rule "
            f"diag(y range) J_n diag(1 / x range) with the same scaler to {v:.3g}: the chain rule is applied "
            "correctly. This cannot tell whether the scaler is the one the model was trained with (see the min/max "
            "line above)."
        ]
    return [f"De-normalization check FAILED: wrapper and chain-rule Jacobians differ by {v:.3g} (a jacbench bug)."]


def diagnose(ev, remedy: str | None = None) -> list[str]:
    """All checks, in reading order; ``remedy`` is the `python -m bench fit` command for this user's model."""
    x_n = ev.scaler.transform_x(torch.as_tensor(ev.x)).to(next(ev.model.parameters()).dtype)
    first = entry_lines(ev) + spurious_lines(ev) + edge_lines(ev) if ev.eq.has_jacobian else []
    lines = fit_lines(ev, remedy) + first + hessian_lines(ev) + coupling_lines(ev.model, x_n)
    return lines + layernorm_lines(ev.model, x_n) + grid_lines(ev.model, x_n) + minmax_lines(ev) + denorm_lines(ev)
