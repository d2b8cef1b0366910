"""Figures of the rankings across equation sets: the critical-difference diagram and the win-rate matrix.

Each function returns a matplotlib Figure, or a string saying why the run has nothing to draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bench.report import style
from bench.report.ranking import ALPHA, Ranking


def cd_diagram(r: Ranking) -> Figure | str:
    """Demšar's diagram: the rank axis (1 = best, left), each method at its average rank, thick bars joining
    methods whose average ranks differ by less than the Nemenyi critical difference (drawn top left)."""
    if r.k < 2 or r.n_sets < 2:
        return f"{r.n_sets} complete equation set(s) and {r.k} method(s): ranks need 2 or more of each"
    names, ranks = list(r.average.index), r.average.to_numpy()
    k = len(names)
    half = (k + 1) // 2
    cliques = r.cliques()
    drop = 0.25 * len(cliques)  # the clique bars sit between the axis and the labels
    fig, axes = style.new_figure(1, 1, width=9.0, height=1.3 + 0.22 * half + 0.15 * len(cliques), margin=0.0)
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.set_xlim(0.3 - 0.18 * k, k + 0.7 + 0.18 * k)
    ax.set_ylim(-(0.6 + (half - 1) * 0.32 + drop + 0.3), 1.6)
    ax.hlines(0, 1, k, color="k", lw=1)
    for t in range(1, k + 1):
        ax.vlines(t, 0, 0.15, color="k", lw=1)
        ax.text(t, 0.25, str(t), ha="center", va="bottom", fontsize="small")
    if np.isfinite(r.cd):
        end = min(1 + r.cd, k)  # a CD wider than the axis: every pair is within it
        ax.hlines(1.1, 1, end, color="k", lw=1.5)
        ax.vlines([1, end], 1.0, 1.2, color="k", lw=1.5)
        wide = " > the whole axis" if 1 + r.cd > k else ""
        ax.text((1 + end) / 2, 1.25, f"CD = {r.cd:.2f}{wide} (Nemenyi, α = {ALPHA:g})", ha="center", va="bottom",
                fontsize="small")  # fmt: skip
    for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
        left = i < half
        level = -(0.6 + (i if left else k - 1 - i) * 0.32) - drop
        end = 1 - 0.1 * k if left else k + 0.1 * k
        ax.plot([rank, rank, end], [0, level, level], color="0.25", lw=0.9)
        ax.text(end + (-0.05 if left else 0.05), level, f"{name} ({rank:.2f})", ha="right" if left else "left",
                va="center", fontsize="small")  # fmt: skip
    for j, clique in enumerate(cliques):
        lo, hi = r.average[clique].min(), r.average[clique].max()
        ax.hlines(-0.3 - 0.25 * j, lo - 0.03, hi + 0.03, color="k", lw=3.5)
    ax.set_title(f"average rank of the Jacobian error over {r.n_sets} equation sets (1 = lowest error)")
    return fig


def win_rate_heatmap(wins: dict[str, pd.DataFrame], order: list[str]) -> Figure | str:
    """Rows A, columns B: the share of sets on which A's Jacobian error is significantly lower than B's; each
    cell's text also gives the share on which A's median is lower."""
    sig = wins["significant"].reindex(index=order, columns=order)
    med = wins["median"].reindex(index=order, columns=order)
    if sig.shape[0] < 2 or not np.isfinite(med.to_numpy()).any():
        return "fewer than two methods share an equation set: no pairwise comparison"
    tested = wins["testable"].reindex(index=order, columns=order)
    sets = wins["sets"].to_numpy()
    n_sets = int(np.nanmax(sets)) if np.isfinite(sets).any() else 0

    def text(s: float, m: float, t: float) -> str:  # "/T": tested on T sets only, where fewer than all n
        if not np.isfinite(m):
            return ""
        return (f"{s:.0%}" + (f"/{int(t)}" if t < n_sets else "") if np.isfinite(s) else "n/a") + f"\n({m:.0%})"

    annot = np.array([[text(s, m, t) for s, m, t in zip(rs, rm, rt, strict=True)]
                      for rs, rm, rt in zip(sig.values, med.values, tested.values, strict=True)])  # fmt: skip
    n = len(order)
    fig, axes = style.new_figure(1, 1, width=1.0 + 0.85 * n, height=0.9 + 0.6 * n, margin=0.0)
    ax = axes[0, 0]
    bar = {"label": "share of sets, A < B significant"}
    sns.heatmap(sig, ax=ax, vmin=0, vmax=1, cmap="mako_r", annot=annot, fmt="", cbar=True, square=True,
                linewidths=0.5, annot_kws={"fontsize": "x-small"}, cbar_kws=bar)  # fmt: skip
    ax.set(xlabel="B", ylabel="A")
    ax.set_title(f"share of the {n_sets} sets (x%/T: of the T it could test) on which A's Jacobian error is\n"
                 f"significantly below B's (one-sided Welch on log errors over seeds, α = {ALPHA:g}; a failed seed "
                 "loses; n/a: under 2 seeds);\nin brackets: A's median below B's", fontsize="small")  # fmt: skip
    ax.tick_params(axis="x", labelrotation=60)
    return fig
