"""Assemble a run's report: sections in a fixed order, written as report.html, report.md and figures/*.png."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import fig_fidelity, fig_ranking, fig_speed, fig_training, ranking, style
from bench.report.compare import metrics_version
from bench.report.leaderboard import (
    HEADLINE_DEF,
    HEADLINE_TEXT,
    HESS_TITLE,
    JAC_TITLE,
    TRAIN_S,
    best_throughput,
    chosen_lr_table,
    family_summary,
    headline_links,
    leaderboard,
    leaderboard_table,
    training_seconds,
)
from bench.report.load import RunData, largest_n_train, load_run, speed_key
from bench.report.peers import peer_section_items
from bench.report.render import Code, Group, Note, Section, Table, plot, pretty_json, to_html, to_markdown
from bench.report.stats import CONFIG_KEYS, aggregate, fmt_ci, fmt_key, fmt_num
from bench.run import results
from bench.run.results import HESS_HEADLINE, JAC_HEADLINE

GUIDES = {  # section title -> one sentence on how to read it (the order is the report's order)
    "Ranking across equation sets": "Each (architecture, training) is ranked by its headline test Jacobian error "
    "(median over seeds; a failed seed is a loss: fewer failures rank first) within every equation set, 1 = lowest; "
    "ranks, unlike mean errors, are not dominated by the hardest sets. The Friedman test asks whether the methods "
    "rank alike at all; in the critical-difference "
    "diagram (Demšar 2006) a thick bar joins methods whose average ranks differ by less than the Nemenyi critical "
    "difference, i.e. that this run cannot tell apart; the matrix gives, for each pair, the share of sets on which "
    "the row's errors are significantly lower than the column's over seeds, out of the sets it could test.",
    "Leaderboard": "First a summary by family of sets (generated smooth, mixed and hard sets, the named built-in "
    "sets, data), one row per architecture and training; then one leaderboard per set, grouped by family (folded "
    "in report.html: open one to read it): one row per architecture and training at its largest training set, mean "
    "± 95% confidence interval over seeds (t-distribution); bold marks the best value of each score column (highest "
    "R², lowest Jacobian error, most Jacobians/s of the fastest torch engine).",
    "Peers: JENN and SMT kriging": "Surrogates from other projects, each trained by its own code with its own "
    "settings on the same splits and scored by the same metrics, their Jacobians from their own APIs (checked "
    "against central differences of their values, jac_fd_check). JENN (PyPI jenn), the field's gradient-enhanced "
    "MLP: β = 1 trains it without gradient enhancement, β < 1 with it, γ = (1 - β) / β; its loss sums squared "
    "errors on standardized data where the zoo averages them on min-max scaled data, so γ = 1 weighs each Jacobian "
    "entry n_in times more than the zoo's β = 0.5. SMT's kriging (PyPI smt, bench.peers.smt), one model per "
    "output: KRG and KPLS on values (β = 1), GEKPLS on values and partials (β < 1, any β alike); its size is its "
    "training set, and its cost grows like n_train³ (the map, results/map, measures where that matters). Does the "
    "zoo's best recipe beat them, at a comparable parameter count, and at what training time?",
    "Fidelity vs fit": "Each point is one trained model: points far left (excellent fit) yet high up (large "
    "Jacobian error) show that a good fit does not mean good derivatives.",
    "Per-entry Jacobian error": "Each cell is the normalized RMSE of one Jacobian entry ∂f_i/∂x_j on the test set, "
    "mean over seeds (value training, largest n_train, one shared log colour scale): dark cells are the "
    "derivatives not to trust. The table below it scores the entries whose truth is exactly zero: the share of "
    "test samples where the model invents a derivative there (|prediction| above 1% of the output's typical "
    "derivative), which sign agreement cannot see.",
    "Predicted vs true derivatives": "Each row shows one architecture's three worst Jacobian entries on its test "
    "samples (first seed, value training): points on the dashed identity line are exact derivatives.",
    "Error near the domain boundary": "Median headline Jacobian error of test samples binned by normalized distance "
    "to the "
    "nearest face of the input box (0 = on the boundary, 0.5 = the centre), mean and 95% CI over the "
    "family's models and seeds: a curve rising to the left means derivatives degrade near the boundary.",
    "Second derivatives": "Hessians of the same models (value training, largest n_train, mean over seeds): the "
    "heatmaps give the normalized RMSE of each entry ∂²f_i/∂x_j∂x_k per output (a symmetric matrix, each distinct "
    "pair measured once), then each architecture's three worst entries predicted against true, and the Hessian "
    "error by distance to the boundary. Value training never sees curvature, and cubic B-spline KANs are only C² "
    "(piecewise linear second derivatives): these are the numbers a PINN or a Newton step would use.",
    "Sobolev beta sweep": "β weighs the value loss against the Jacobian loss (β = 1 is value-only training, "
    "β = 1e-7 almost derivative-only): the left column shows what the fit pays, the right what the derivatives gain.",
    "Value, Sobolev and Hessian training": "The Jacobian and Hessian errors of each family under each training "
    "of the same set: value only, Sobolev (values and Jacobians, β), and Sobolev plus a Hessian term (weight γ, "
    "exact training Hessians): mean and 95% CI over the family's models and seeds, largest n_train. What each "
    "supervised order buys, and what it costs in fit and training time, is in the table.",
    "Learning curves": "Validation loss against optimizer step for each cell of the reference training on the main "
    "equation set, one panel per family (a line per model and seed): a curve still falling at the right edge had "
    'not finished learning, and the leaderboard\'s "converged" column flags such rows.',
    "Training-set size": "Errors against the number of training samples on log-log axes: a steeper descent means "
    "the architecture learns more from each added sample.",
    "Throughput": "Jacobians per second against batch size for each engine (band: interquartile range over "
    "repeats), with the device's FLOP limit dashed and the JAX peer dotted: the gap to the dashed line is what "
    "a faster engine could still win.",
    "Accuracy vs speed": "Each point is one architecture's Jacobian error against its fastest torch engine: lower "
    "right is better, and the dashed Pareto front joins the architectures no other beats on both at once.",
    "Environment and config": "What produced these numbers: compare these before comparing two reports.",
    "Failed cells": "Cells that did not finish, with their error: they are missing from the means above, count as "
    "losses in the ranks and win rates, and are listed here so that nothing is dropped silently.",
}
SECTION_TITLES = list(GUIDES)


def main_equation(run: RunData) -> str | None:
    """forum4x4 (the forum's set) where the run has it, else the first set with Jacobian scores, a formula's
    (with Hessians too) before a data set's; else the first equation."""
    equations = sorted(run.ok["equation"].unique())
    if "forum4x4" in equations:
        return "forum4x4"
    jac = run.ok[(run.ok["metric"] == JAC_HEADLINE) & np.isfinite(run.ok["value"])]
    scored = sorted(jac["equation"].unique(), key=lambda e: (str(e).startswith("data:"), e))
    return scored[0] if scored else (equations[0] if equations else None)


def _figure(section: Section, name: str, draw: Callable, alt: str) -> Section:
    """Draw one figure into the section, or a one-line note where the run has nothing to draw."""
    try:
        with style.theme():
            fig = draw()
            for ax in [] if isinstance(fig, str) else fig.axes:
                style.tidy_log(ax)
            result = plot(name, fig, alt) if not isinstance(fig, str) else Note(f"Skipped: {fig}.")
    except Exception as err:  # a report with one broken figure beats no report; tests turn this warning into an error
        warnings.warn(f"figure {name} failed: {type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
        result = Note(f"Skipped: drawing failed ({type(err).__name__}: {err}).")
    return section.add(result)


FAMILY_TITLES = {  # set family (style.set_family) -> its heading among the per-set leaderboards
    "smooth": "Smooth generated sets (gen:smooth)",
    "mixed": "Mixed generated sets (gen:mixed)",
    "hard": "Hard generated sets (gen:hard)",
    style.NAMED: "Named sets (built-in formulas)",
    style.FILE: "Your own formula files (file:)",
    style.DATA: "Data sets (data:, measured derivatives)",
}


def short_set_name(eq: str) -> str:
    """A set's link text in the contents, under its family's name: ``gen:smooth:3`` -> ``3`` (``3:2x5`` with
    dimensions), ``data:path/to/file.csv`` -> ``file.csv``, a named set as it is."""
    parts = eq.split(":")
    if parts[0] == "gen" and len(parts) > 2:
        return ":".join(parts[2:])
    return eq.rsplit("/", 1)[-1] if ":" in eq else eq


def set_summary(board, eq: str) -> str:
    """One line beside a folded leaderboard: how many methods, and the best headline Jacobian error."""
    df = board[board["equation"] == eq]
    text = f"{df[['model', 'variant', 'beta']].drop_duplicates().shape[0]} methods"
    jac = df.get(f"{JAC_HEADLINE}_mean")
    if jac is None or not np.isfinite(jac).any():
        return text + "; no reference derivatives"
    best = df.loc[jac.idxmin()]
    secs = fmt_num(best.get("train_s_mean", np.nan))
    return (
        text
        + f"; lowest Jacobian error {fmt_num(best[f'{JAC_HEADLINE}_mean'])}: {best['model']} · "
        + (f"{best['training']} ({secs} s training)")
    )


def _leaderboard(run: RunData) -> Section:
    s = Section("Leaderboard", GUIDES["Leaderboard"])
    board = leaderboard(run)
    if board.empty:
        return s.add(Note("Skipped: no finished cell has test-split scores."))
    s.add(Group("Summary by set family", [family_summary(board)]))
    refs = run.config.get("references", {})
    sets = sorted(board["equation"].unique(), key=lambda e: (style.family_sort_key(style.set_family(e)), e))
    for family in dict.fromkeys(style.set_family(e) for e in sets):
        members = [e for e in sets if style.set_family(e) == family]
        title = FAMILY_TITLES.get(family, f"Generated {family} sets (gen:{family})")
        g = Group(title, summary=f"{len(members)} set{'s' if len(members) > 1 else ''}, one leaderboard each",
                  short=f"{'gen:' if members[0].startswith('gen:') else ''}{family} ({len(members)})")  # fmt: skip
        for eq in members:
            one = Group(eq, collapsed=True, summary=set_summary(board, eq), short=short_set_name(eq))
            if eq in refs:
                one.add(Note(f"{eq}: the reference is {refs[eq]}. Errors are measured against these measured "
                             "numbers, so they include the data's own noise."))  # fmt: skip
            g.add(one.add(leaderboard_table(board, eq)))
        s.add(g)
    if run.throughput is not None:
        s.add(Note("Jacobians/s: the fastest torch engine over batch sizes and dtypes; which engine, and the JAX "
                   "peer, are in the throughput section."))  # fmt: skip
    return s


def _ranking(run: RunData) -> Section:
    s = Section("Ranking across equation sets", GUIDES["Ranking across equation sets"])
    per_seed = ranking.per_seed_scores(run)
    r = ranking.rank_methods(per_seed)
    if r.n_sets < 2 or r.k < 2:
        return s.add(Note(f"Skipped: ranks need 2 or more equation sets on which 2 or more methods all finished "
                          f"(this run has {r.n_sets} such set(s)). The per-set leaderboards follow."))  # fmt: skip
    geo = r.scores  # the sets ranked: every method finished there
    secs = training_seconds(run)
    secs = secs[secs["equation"].isin(set(geo.index))]
    secs = secs.assign(method=[ranking.method_label(*k) for k in zip(secs["model"], secs["variant"], secs["beta"],
                                                                       strict=True)])  # fmt: skip
    secs = secs.groupby("method")["mean"].median()
    rows = []
    for m, avg in r.average.items():
        wins = (r.ranks[m] == r.ranks.min(axis=1)).sum()  # ties for first count for each
        with np.errstate(divide="ignore"):
            rows.append([m, f"{avg:.2f}", str(int(wins)), fmt_num(float(np.exp(np.log(geo[m]).mean()))),
                         fmt_num(secs.get(m, np.nan))])  # fmt: skip
    cols = ["method (architecture · training)", "average rank", "sets ranked first",
            f"geometric mean Jacobian error ({HEADLINE_DEF}; over sets)", f"{TRAIN_S}, median over sets"]  # fmt: skip
    if np.isinf(geo.to_numpy()).any():
        cols[3] += " (– : a failed cell, ranked last)"
    caption = f"{r.n_sets} equation sets, {r.k} methods; the error is the headline test Jacobian error (median over "
    caption += "seeds, a failed seed counting as a loss)"
    s.add(Table(cols, rows, {(0, 1)}, caption=caption, links=headline_links(cols)))
    if r.incomplete:
        s.add(Note(f"Left out of the ranks (some method did not finish there): {', '.join(r.incomplete)}."))
    unscored = [e for e, ref in run.config.get("references", {}).items() if "without derivatives" in ref]
    if unscored:
        s.add(Note(f"Not ranked (no reference derivatives, fit metrics only): {', '.join(unscored)}."))
    if r.partial:
        s.add(Note(f"Methods left out of the ranks (they have no cell on some equation sets: a variant the grid "
                   f"runs on a few sets, or a run still in progress; their numbers are in the leaderboards): "
                   f"{', '.join(r.partial)}."))  # fmt: skip
    if np.isfinite(r.p_value):
        verdict = "the methods do not all rank alike" if r.p_value < ranking.ALPHA else "no evidence that they differ"
        p = lambda v: "< 1e-16" if v < 1e-16 else f"= {v:.2g}"  # noqa: E731
        f = "∞ (the ranks agree on every set)" if np.isinf(r.f_stat) else f"{r.f_stat:.2f}"
        note = (f"Friedman test over {r.n_sets} sets and {r.k} methods: χ² = {r.chi2:.2f}, p {p(r.p_value)}; "
                f"Iman-Davenport F = {f}, p {p(r.f_p_value)} ({verdict} at α = {ranking.ALPHA:g}). "
                f"Nemenyi critical difference CD = {r.cd:.2f}.")  # fmt: skip
        if r.n_sets < ranking.FEW_SETS:
            note += (f" With fewer than {ranking.FEW_SETS} sets these p-values rest on a rough chi-square "
                     "approximation: read the ranks, and run more sets (the suite profile) first.")  # fmt: skip
        s.add(Note(note))
    _figure(s, "cd_diagram", lambda: fig_ranking.cd_diagram(r), "critical-difference diagram of average ranks")
    wins = ranking.win_rates(per_seed, list(r.average.index))
    _figure(s, "win_rates", lambda: fig_ranking.win_rate_heatmap(wins, list(r.average.index)), "pairwise win rates")
    return s.add(chosen_lr_table(run))


SPURIOUS_UNITS = (
    "A derivative is spurious (invented) where the true entry ∂f_i/∂x_j is exactly 0 at a test point and the model's "
    "|∂f_i/∂x_j| there exceeds 1% of output i's RMS true derivative (over test points and inputs). Share: of all "
    "(test point, zero entry) pairs, how many are spurious. Largest: the biggest |∂f_i/∂x_j| on a zero entry in units "
    "of that RMS (1 = as large as a typical true derivative of that output). Value training, largest n_train, mean "
    "over seeds"
)


def spurious_tables(run: RunData, eq: str | None) -> list:
    """Spurious derivatives, condensed: per architecture over the sets that have structurally zero entries (how
    many, the median and worst share, the largest invented derivative and where), then the main set's worst
    entries per architecture."""
    ok = fig_fidelity.reference_rows(run.ok[run.ok["split"] == "test"])
    spur = ok[ok["metric"].isin(["jac_entry_spurious", "jac_spurious", "jac_spurious_max"])]
    spur = spur[np.isfinite(spur["value"])]
    if spur.empty:
        return [Note("Spurious derivatives: no equation set of this run has a true Jacobian entry that is exactly 0 "
                     "(or the run predates the metric).")]  # fmt: skip
    mean = spur.groupby(["equation", "model", "metric", "output", "input"])["value"].mean().reset_index()
    share = mean[mean["metric"] == "jac_spurious"].set_index(["model", "equation"])["value"]
    worst = mean[mean["metric"] == "jac_spurious_max"].set_index(["model", "equation"])["value"]
    rows = []
    for model in fig_fidelity.models_in_order(spur):
        sh, wo = share.get(model, pd.Series(dtype=float)), worst.get(model, pd.Series(dtype=float))
        if sh.empty:
            continue
        top = sh.idxmax()
        big = wo.idxmax() if len(wo) else None
        rows.append([model, str(len(sh)), f"{sh.median():.1%}", f"{sh.max():.1%} ({top})",
                     f"{fmt_num(wo.max())} ({big})" if big is not None else "–"])  # fmt: skip
    cols = ["architecture", "sets with zero entries", "share spurious, median over sets", "worst set",
            "largest spurious |∂f_i/∂x_j| (× output i's RMS true derivative)"]  # fmt: skip
    out: list = [Table(cols, rows, caption="spurious derivatives on structural zeros, over the sets that have "
                       f"them. {SPURIOUS_UNITS}", text=True)]  # fmt: skip
    d = mean[(mean["equation"] == eq) & (mean["metric"] == "jac_entry_spurious")]
    if eq is not None and not d.empty:
        rows = []
        for model in fig_fidelity.models_in_order(spur[spur["equation"] == eq]):
            e = d[d["model"] == model].sort_values("value", ascending=False)
            per = ", ".join(f"∂{r.output}/∂{r.input} {r.value:.0%}" for r in e.head(3).itertuples())
            rows.append([model, f"{share.get((model, eq), np.nan):.1%}", fmt_num(worst.get((model, eq), np.nan)),
                         per + (f" (+{len(e) - 3} more)" if len(e) > 3 else "")])  # fmt: skip
        cols = ["architecture", "share spurious", "largest (× RMS true derivative)", "worst zero entries (share)"]
        out.append(Table(cols, rows, caption=f"{eq} (the set of the heatmaps above): the zero entries most often "
                         "invented, the share of test points where each is", text=True))  # fmt: skip
    return out


def best_engine_table(run: RunData) -> Table:
    """Fastest torch engine per architecture and device, its share of the FLOP limit, and the JAX peer."""
    best = best_throughput(run.throughput)
    peer = best_throughput(run.throughput, peers=True)[["config", "device", "jac_per_s", "engine"]]
    best = best.merge(peer, on=["config", "device"], how="left", suffixes=("", "_peer"))
    best = best.sort_values(["device", "jac_per_s"], ascending=[True, False])
    cols = ["configuration", "family", "params", "device", "dtype", "fastest engine", "batch size", "Jacobians/s"]
    cols += ["FLOP limit (Jacobians/s)", "% of limit", "JAX peer", "JAX peer Jacobians/s"]
    rows = []
    for _, r in best.iterrows():
        limit = results.limit_rate(r["flops_per_jac"], r["peak_flops"])
        share = results.limit_fraction(r["jac_per_s"], r["flops_per_jac"], r["peak_flops"])
        pct = f"{100 * share:.1f}%" if np.isfinite(share) else "–"
        peer_engine = r["engine_peer"] if isinstance(r["engine_peer"], str) else "–"
        row = [style.config_label(r["config"]), r["family"], fmt_key(r["params"]), r["device"], r["dtype"], r["engine"]]
        row += [fmt_key(r["batch_size"])]
        rows.append([*row, fmt_num(r["jac_per_s"]), fmt_num(limit), pct, peer_engine, fmt_num(r["jac_per_s_peer"])])
    return Table(cols, rows, caption="fastest engine per model configuration and device (over batch sizes)")


def _throughput(run: RunData) -> list[Section]:
    t = Section("Throughput", GUIDES["Throughput"])
    _figure(t, "throughput", lambda: fig_speed.throughput_curves(run), "Jacobians/s against batch size per engine")
    if run.throughput is not None:
        t.add(best_engine_table(run))
        bad = run.throughput[run.throughput["status"] != "ok"]
        bad = bad.assign(configuration=speed_key(bad).map(style.config_label))
        bad = bad.drop_duplicates(["configuration", "engine", "device", "dtype", "status", "error"])
        if not bad.empty:
            cols = ["configuration", "engine", "device", "dtype", "status", "error"]
            t.add(Table(cols, bad[cols].astype(str).values.tolist(), caption="engines not timed, and why", text=True))
    a = Section("Accuracy vs speed", GUIDES["Accuracy vs speed"])
    eq = main_equation(run)
    _figure(a, "accuracy_vs_speed", lambda: fig_speed.accuracy_vs_speed(run, eq), "Jacobian error against speed")
    return [t, a]


def _env(run: RunData) -> Section:
    s = Section("Environment and config", GUIDES["Environment and config"])
    if run.env:
        rows = [[k, v if isinstance(v, str) else pretty_json(v)] for k, v in run.env.items()]
        s.add(Table(["env.json", "value"], rows, text=True))
    else:
        s.add(Note("No env.json in this run."))
    return s.add(Code(pretty_json(run.config), "config.json") if run.config else Note("No config.json in this run."))


def _failed(run: RunData) -> Section:
    s = Section("Failed cells", GUIDES["Failed cells"])
    f = run.failed
    if f.empty:
        return s.add(Note("No failed cells."))
    cols = ["cell_id", "equation", "model", "variant", "beta", "n_train", "seed", "status", "error"]
    rows = [[fmt_key(v) for v in r] for r in f[cols].itertuples(index=False)]
    return s.add(Table(cols, rows, caption=f"{len(f)} failed cell(s)", text=True))


def sections(run: RunData) -> list[Section]:
    """Every section of the report, in order; a section without data holds a one-line note."""
    eq = main_equation(run)
    if run.metrics.empty:  # a throughput folder: the fidelity sections have nothing to show, and say it once
        note = Note("No fidelity grid in this folder (throughput.csv only): `python -m bench run` trains one.")
        fidelity = [t for t in SECTION_TITLES if t not in ("Throughput", "Accuracy vs speed", "Environment and config")]
        return [Section(t, GUIDES[t]).add(note) for t in fidelity[:-1]] + _throughput(run) + [_env(run), _failed(run)]
    peers = Section("Peers: JENN and SMT kriging", GUIDES["Peers: JENN and SMT kriging"])
    for item in peer_section_items(run):
        peers.add(item)
    out = [_ranking(run), _leaderboard(run), peers]
    s = Section("Fidelity vs fit", GUIDES["Fidelity vs fit"])
    out.append(_figure(s, "fidelity_vs_fit", lambda: fig_fidelity.fidelity_vs_fit(run), "1 - R² vs Jacobian error"))
    s = Section("Per-entry Jacobian error", GUIDES["Per-entry Jacobian error"])
    out.append(_figure(s, "entry_heatmaps", lambda: fig_fidelity.entry_heatmaps(run, eq), f"entry nRMSE, {eq}"))
    for block in spurious_tables(run, eq):
        s.add(block)
    s = Section("Predicted vs true derivatives", GUIDES["Predicted vs true derivatives"])
    out.append(_figure(s, "pred_vs_true", lambda: fig_fidelity.pred_vs_true(run, eq), f"worst entries, {eq}"))
    s = Section("Error near the domain boundary", GUIDES["Error near the domain boundary"])
    out.append(_figure(s, "edge_error", lambda: fig_fidelity.edge_error(run), "Jacobian error by boundary distance"))
    out.append(_second_derivatives(run, eq))
    s = Section("Sobolev beta sweep", GUIDES["Sobolev beta sweep"])
    out.append(_figure(s, "beta_sweep", lambda: fig_training.beta_sweep(run), "errors against beta"))
    out.append(_training_comparison(run, eq))
    s = Section("Learning curves", GUIDES["Learning curves"])
    out.append(_figure(s, "learning_curves", lambda: fig_training.learning_curves(run, eq), f"learning curves, {eq}"))
    s = Section("Training-set size", GUIDES["Training-set size"])
    out.append(_figure(s, "n_train", lambda: fig_training.n_train_curves(run), "errors against n_train"))
    slopes = fig_training.n_train_slopes(run)
    if not slopes.empty:
        rows = [[r.equation, r.model, r.training, str(r.sizes), fmt_ci(r.value_err_slope, r.value_err_ci, r.cells),
                 fmt_ci(r.jac_slope, r.jac_ci, r.cells)] for r in slopes.itertuples()]  # fmt: skip
        cols = ["equation", "architecture", "training", "sizes", "slope of 1 - R²", "slope of Jacobian error"]
        s.add(Table(cols, rows, caption="log-log slopes against n_train (OLS over sizes and seeds, 95% CI; -0.5: "
                    "the error halves when the training set grows 4x)"))  # fmt: skip
    ratio = fig_training.points_ratio(fig_training.cell_errors(run))
    if not ratio.empty:
        s.add(_points_tables(ratio))
    out += _throughput(run)
    out += [_env(run), _failed(run)]
    return out


def _second_derivatives(run: RunData, eq: str | None) -> Section:
    s = Section("Second derivatives", GUIDES["Second derivatives"])
    _figure(s, "hessian_heatmaps", lambda: fig_fidelity.hessian_heatmaps(run, eq), f"Hessian entry nRMSE, {eq}")
    _figure(s, "pred_vs_true_hessian", lambda: fig_fidelity.pred_vs_true(run, eq, order=2),
            f"worst Hessian entries, {eq}")  # fmt: skip
    return _figure(s, "edge_error_hessian", lambda: fig_fidelity.edge_error(run, order=2),
                   "Hessian error by boundary distance")  # fmt: skip


COMPARED = {  # metric (test split) -> column title of the training comparison
    "r2_min": "fit R² (min)",
    JAC_HEADLINE: JAC_TITLE,
    HESS_HEADLINE: HESS_TITLE,
    "lap_nrmse": "Laplacian nRMSE (mean over outputs)",
    "train_seconds": "training s (the chosen lr)",
}


def hessian_sets(run: RunData) -> list[str]:
    """Equation sets with Hessian-supervised cells (variant "hessian")."""
    return sorted(run.ok.loc[run.ok["variant"] == "hessian", "equation"].unique())


def training_comparison_table(run: RunData, equation: str) -> Table | Note:
    """Per architecture and training on one set: fit, Jacobian, Hessian and Laplacian errors and training time,
    mean ± 95% CI over seeds at the largest n_train."""
    ok = run.ok[(run.ok["equation"] == equation) & run.ok["metric"].isin(list(COMPARED))]
    ok = ok[(ok["split"] == "test") | (ok["metric"] == "train_seconds")]
    if ok.empty:
        return Note(f"Skipped: no test scores for {equation}.")
    ok = largest_n_train(ok, ["equation", "model", "variant", "beta"])
    per_cell = ok.groupby([*CONFIG_KEYS, "seed", "metric"], dropna=False)["value"].mean().reset_index()  # lap: outputs
    agg = aggregate(per_cell, [*CONFIG_KEYS, "metric"])
    weights = run.ok.loc[run.ok["variant"] == "hessian", "hess_weight"] if "hess_weight" in run.ok else []
    gamma = ", ".join(f"{w:g}" for w in sorted(set(weights)))
    rows = []
    configs = agg.drop_duplicates(["model", "variant", "beta"])
    rank = configs["variant"].map(fig_fidelity.VARIANT_RANK).fillna(len(fig_fidelity.VARIANT_RANK))
    configs = configs.assign(_o=rank)
    configs = configs.sort_values(["model", "_o", "beta"], ascending=[True, True, False])
    for c in configs.itertuples():
        d = agg[(agg["model"] == c.model) & (agg["variant"] == c.variant) & (agg["beta"] == c.beta)]
        d = d.set_index("metric")
        label = style.training_label(c.variant, c.beta) + (f" γ={gamma}" if c.variant == "hessian" and gamma else "")
        row = [c.model, c.family, label]
        for metric in COMPARED:
            row.append(fmt_ci(d.at[metric, "mean"], d.at[metric, "ci"], int(d.at[metric, "n"])) if metric in d.index
                       else "–")  # fmt: skip
        rows.append(row)
    cols = ["architecture", "family", "training", *COMPARED.values()]
    return Table(cols, rows, caption=f"{equation}: each training side by side (test split; training seconds of the "
                 "chosen learning rate, per cell)", links=headline_links(cols))  # fmt: skip


def _training_comparison(run: RunData, eq: str | None) -> Section:
    s = Section("Value, Sobolev and Hessian training", GUIDES["Value, Sobolev and Hessian training"])
    sets = hessian_sets(run)
    if not sets:
        s.add(Note("This run has no Hessian-supervised cells (set grid.hess_weights, e.g. "
                   "`--set grid.hess_weights=0,0.1 --set grid.hess_equations=forum4x4`): value and Sobolev training "
                   f"only, on {eq}."))  # fmt: skip
        sets = [eq] if eq else []
    for i, name in enumerate(sets[:3]):
        _figure(s, "training_comparison" + (f"_{i}" if i else ""),
                lambda n=name: fig_fidelity.training_comparison(run, n), f"errors by training, {name}")  # fmt: skip
        s.add(training_comparison_table(run, name))
    if len(sets) > 3:
        s.add(Note(f"{len(sets) - 3} more sets with Hessian-supervised cells: {', '.join(sets[3:])} (not drawn)."))
    return s


def _points_tables(ratio) -> Table:
    """k per set and, pooled over sets, per architecture and training (fig_training.points_ratio)."""
    pooled = fig_training.pooled_points_ratio(ratio)
    rows = [[r.model, r.training, str(r.sets), fmt_num(r.k), f"{fmt_num(r.k_lo)}-{fmt_num(r.k_hi)}",
             f"{r.bounded} of {r.sets}"] for r in pooled.itertuples()]  # fmt: skip
    for r in ratio.itertuples():
        ci = f"{fmt_num(r.k_lo)}-{fmt_num(r.k_hi)}"
        rows.append([f"{r.model} ({r.equation})", r.training, "1", f"{r.bound}{fmt_num(r.k)}", ci, r.bound or "no"])
    cols = ["architecture", "Sobolev training", "sets", "k: times fewer points", "95% CI (bootstrap)", "clipped"]
    return Table(cols, rows, caption="how many times fewer training points Sobolev training needs for the Jacobian "
                 "error value training reaches at its largest n_train, from log-log fits of both; k > 1: fewer points, "
                 "k < 1: more. Pooled rows first (geometric median over sets, bootstrap over sets), then each set "
                 "(bootstrap over cells). Never extrapolated: ≥ means already as good at its smallest size, ≤ not "
                 "there by its largest (clipped)", text=True)  # fmt: skip


def sets_text(m) -> str:
    """``38 equation sets (smooth: 10 gen:smooth:*, ...; named: forum4x4, lorenz96; data: ...)``: generated sets
    counted, the others named."""
    eqs = sorted(m["equation"].unique())
    parts = []
    for family in sorted({style.set_family(e) for e in eqs}, key=style.family_sort_key):
        members = [e for e in eqs if style.set_family(e) == family]
        generated = all(e.startswith("gen:") for e in members)
        parts.append(f"{family}: " + (f"{len(members)} gen:{family}:*" if generated and len(members) > 2
                                      else ", ".join(members)))  # fmt: skip
    return f"{len(eqs)} equation set{'s' if len(eqs) > 1 else ''} ({'; '.join(parts)})"


def _intro(run: RunData) -> str:
    m = run.metrics
    if m.empty:
        n = 0 if run.throughput is None else len(run.throughput)
        return f"Throughput folder {run.run_id}: {n} throughput rows, no fidelity grid."
    cells, failed = m["cell_id"].nunique(), run.failed["cell_id"].nunique()
    seeds = ", ".join(fmt_key(s) for s in sorted(m["seed"].dropna().unique()))
    models = ", ".join(fig_fidelity.models_in_order(m)) if not m.empty else "none"
    text = (
        f"Run {run.run_id}: {cells} cells ({cells - failed} finished, {failed} failed) over {sets_text(m)}; "
        f"architectures {models}; seeds {seeds}. Errors are on the test split unless stated; every Jacobian and "
        "Hessian error is the headline error defined below."
    )
    version = metrics_version(run)
    if version < results.METRICS_VERSION:
        text += (
            f" WARNING: this run was measured with metric definitions v{version}, before the headline error "
            f"(v{results.METRICS_VERSION}); its tables and ranks have no headline to show. Re-run the grid "
            "(`python -m bench run --resume` does not re-measure finished cells: run it afresh)."
        )
    return text


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write report.html, report.md and figures/*.png for one run folder (into ``out``, default the run folder).

    Returns the path of report.html.
    """
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.path
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "figures").glob("*.png"):  # figures/ belongs to the report: no stale figure survives
        old.unlink()
    secs = sections(run)
    title = f"jacbench report: {run.run_id}"
    intro = _intro(run)
    tails = " Its median, p90 and max over points stand beside it."
    definition = HEADLINE_TEXT + tails if not run.metrics.empty else ""
    (out / "report.md").write_text(to_markdown(title, intro, secs, out, definition), encoding="utf-8")
    (out / "report.html").write_text(to_html(title, intro, secs, definition), encoding="utf-8")
    return out / "report.html"
