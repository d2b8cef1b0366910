"""The peer comparison: does the zoo's best recipe beat a peer's (JENN's) Jacobian error, at what size and time?

Per equation set with a peer, at the largest n_train, mean over seeds:
    the peer's trainings | the zoo's best recipe (lowest Jacobian error of any architecture and training)
    | the zoo's best among architectures of comparable size (parameters within COMPARABLE x of the peer's best)
and one answer over the sets: how often each zoo pick has the lower Jacobian error, by what ratio, at what
training time. A peer is a family listed in ``results.PEER_FAMILIES``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.leaderboard import JAC_TITLE, TRAIN_S, headline_links, leaderboard
from bench.report.load import RunData
from bench.report.render import Group, Note, Table
from bench.report.stats import fmt_ci, fmt_key, fmt_num
from bench.run.results import JAC_HEADLINE, JAC_TAIL, PEER_FAMILIES

COMPARABLE = 2.0  # "comparable parameter count": within a factor 2 of the peer's


def comparison(run: RunData) -> pd.DataFrame:
    """One row per (equation, role): role "peer <training>", "zoo best" or "zoo best, comparable size", with
    model, family, training, params, Jacobian error (mean, ci, n), R² min (mean) and training seconds (mean)."""
    board = leaderboard(run)
    if board.empty or f"{JAC_HEADLINE}_mean" not in board:
        return pd.DataFrame()
    board = board[np.isfinite(board[f"{JAC_HEADLINE}_mean"])].rename(columns={"train_s_mean": "train_s"})
    rows = []
    for eq, df in board.groupby("equation", sort=True):
        peer, zoo = df[df["family"].isin(PEER_FAMILIES)], df[~df["family"].isin(PEER_FAMILIES)]
        if peer.empty or zoo.empty:
            continue
        best_peer = peer.loc[peer[f"{JAC_HEADLINE}_mean"].idxmin()]
        rows += [_row(eq, f"peer ({r.family})", r) for _, r in peer.iterrows()]
        rows.append(_row(eq, "zoo best", zoo.loc[zoo[f"{JAC_HEADLINE}_mean"].idxmin()]))
        ratio = zoo["params"] / best_peer["params"]
        near = zoo[(ratio <= COMPARABLE) & (ratio >= 1 / COMPARABLE)]
        if not near.empty:
            rows.append(_row(eq, "zoo best, comparable size", near.loc[near[f"{JAC_HEADLINE}_mean"].idxmin()]))
    return pd.DataFrame(rows)


def peer_training(beta: float, family: str = "jenn") -> str:
    """A peer's training in its own terms: JENN's gamma = (1 - beta) / beta (gamma = 0: no partials passed); kriging
    on values, or (GEKPLS, any beta < 1) on values and partials."""
    if family == "kriging":
        return "values only" if beta == 1 else "values + partials"
    gamma = (1 - beta) / beta if beta > 0 else np.inf
    return "values only (γ=0)" if gamma == 0 else f"gradient-enhanced γ={gamma:g} (β={beta:g})"


def _row(eq: str, role: str, r: pd.Series) -> dict:
    training = peer_training(r["beta"], r["family"]) if r["family"] in PEER_FAMILIES else r["training"]
    return {"equation": eq, "role": role, "model": r["model"], "family": r["family"], "training": training,
            "params": r["params"], "jac": r[f"{JAC_HEADLINE}_mean"], "jac_ci": r[f"{JAC_HEADLINE}_ci"],
            "n": r[f"{JAC_HEADLINE}_n"], "r2": r.get("r2_min_mean", np.nan), "train_s": r["train_s"],
            "tail": " / ".join(fmt_num(r.get(f"{t}_mean", np.nan)) for t in JAC_TAIL)}  # fmt: skip


def comparison_table(comp: pd.DataFrame) -> Table:
    cols = ["equation", "who", "architecture", "training", "params", JAC_TITLE, "median / p90 / max",
            TRAIN_S, "fit R² (min)"]  # fmt: skip
    rows = [[r.equation, r.role, r.model, r.training, fmt_key(r.params), fmt_ci(r.jac, r.jac_ci, int(r.n)), r.tail,
             fmt_num(r.train_s), fmt_num(r.r2, 4)] for r in comp.itertuples()]  # fmt: skip
    return Table(cols, rows, caption=f"per set: the peer's trainings, the zoo's best recipe, and the zoo's best with "
                 f"a parameter count within {COMPARABLE:g}x of the peer's best (test split, largest n_train, mean ± "
                 "95% CI over seeds; training seconds per cell, summed over the learning rates a zoo cell tried, "
                 "since choosing one is part of its recipe; a peer trains once with its own settings)",
                 text=True, links=headline_links(cols))  # fmt: skip


def answer(comp: pd.DataFrame) -> str:
    """The verdict in one paragraph: per zoo pick, on how many sets its Jacobian error is below the peer's best."""
    parts = []
    names = {"zoo best": "zoo's best recipe", "zoo best, comparable size": f"zoo's best recipe of comparable size "
             f"(parameters within {COMPARABLE:g}x)"}  # fmt: skip
    families = sorted(comp.loc[comp["role"].str.startswith("peer"), "family"].unique())
    for (role, name), family in ((rn, f) for rn in names.items() for f in families):
        pairs = []
        for _, df in comp.groupby("equation"):
            peer = df[df["role"].str.startswith("peer") & (df["family"] == family)]
            pick = df[df["role"] == role]
            if peer.empty or pick.empty:
                continue
            p, z = peer.loc[peer["jac"].idxmin()], pick.iloc[0]
            pairs.append((z["jac"] / p["jac"], z["train_s"] / p["train_s"]))
        if not pairs:
            continue
        err, time = np.array(pairs).T
        wins = int((err < 1).sum())
        parts.append(
            f"The {name} beats {family}'s best Jacobian error "
            f"on {wins} of {len(pairs)} set(s) (error ratio zoo / peer: median {fmt_num(float(np.median(err)))}, "
            f"range {fmt_num(float(err.min()))}-{fmt_num(float(err.max()))}), at a median "
            f"{fmt_num(float(np.nanmedian(time)))}x {family}'s training time."
        )
    if not parts:
        return "No set has both a peer and a zoo architecture with finished test scores."
    return " ".join(parts) + (" Ratios are of means over seeds; the per-set confidence intervals are in the table.")


def peer_section_items(run: RunData) -> list:
    comp = comparison(run)
    if comp.empty:
        return [
            Note(
                "Skipped: this run trains no peer (add `jenn`, `krg` or `gekpls` to grid.models) next to a zoo "
                "architecture."
            )
        ]
    items = [Note(answer(comp))]
    absent = {"jenn": "JENN (add `jenn` to grid.models)",
              "kriging": "SMT kriging (add `krg`, `kpls` or `gekpls` to grid.models; results/map compares it across "
                         "data sizes and dimensions)"}  # fmt: skip
    missing = [text for family, text in absent.items() if family not in set(comp["family"])]
    if missing:
        items.append(Note(f"Not in this run: {'; '.join(missing)}."))
    sets = comp["equation"].nunique()
    table = comparison_table(comp)
    if sets <= 3:
        return [*items, table]
    fold = Group("Per set: the peers beside the zoo's best", [table], collapsed=True, short="per set",
                 summary=f"{sets} sets, {len(comp)} rows")  # fmt: skip
    return [*items, fold]
