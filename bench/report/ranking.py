"""Rankings across equation sets (Demšar, JMLR 2006): average ranks, the Friedman test, the Nemenyi critical
difference, and a pairwise win-rate matrix.

A *method* is one (architecture, training) pair; a *block* is one equation set. Each method's score on a set is
the median over seeds of the cells' test Jacobian error (``jac_rel_fro_median``; lower is better), at the
largest n_train the set has. Mean errors across sets are dominated by the hardest sets; ranks are not, so
the verdict over a population of generated sets is drawn from ranks:

- ranks within each set (1 = lowest error, ties share the average rank), averaged over the sets on which
  every method has a cell (complete blocks; the others are listed, never silently dropped; a method the grid
  runs on a few sets only, such as a Hessian variant, is left out of the ranks instead when that keeps more scores);
- the Friedman test of "all methods rank alike" (``scipy.stats.friedmanchisquare``) with the Iman-Davenport
  F form Demšar recommends;
- the Nemenyi critical difference CD = q_α √(k(k+1) / 6N), q_α the studentized range quantile / √2: two
  methods whose average ranks differ by less than CD are not significantly different (α = 0.05);
- win rates: W[A, B] = the share of sets on which A's per-seed errors are significantly lower than B's
  (one-sided Welch t-test on log10 errors over seeds, α = 0.05, no correction: each entry is a rate over
  sets, not a claim about one set), beside the plain share of sets on which A's median is lower.
Pandas and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.load import RunData, largest_n_train
from bench.report.style import training_label

ALPHA = 0.05
FEW_SETS = 10  # below this many sets the Friedman chi-square approximation is rough (Demšar 2006)
SCORE = "jac_rel_fro_median"  # per cell, test split: lower is better
METHOD_KEYS = ["model", "variant", "beta"]


def method_label(model: str, variant: str, beta: float) -> str:
    return f"{model} · {training_label(variant, beta)}"


def per_seed_scores(run: RunData, metric: str = SCORE) -> pd.DataFrame:
    """One row per cell: equation, method (label), seed, score (test split, largest n_train per set). A failed cell
    (or one without a finite score) scores +inf: it ranks last, so a set where a method fails stays in the
    comparison instead of vanishing from it (which would flatter that method). A set on which no cell has a score
    (a data set without reference derivatives) is not ranked at all."""
    ok = run.ok
    d = ok[(ok["split"] == "test") & (ok["metric"] == metric) & np.isfinite(ok["value"])]
    keys = ["equation", "model", "variant", "beta", "n_train", "seed"]
    cells = run.metrics.drop_duplicates("cell_id")[[*keys, "cell_id"]]
    cells = cells[cells["equation"].isin(set(d["equation"]))]
    lost = cells[~cells["cell_id"].isin(set(d["cell_id"]))].assign(value=np.inf)
    d = pd.concat([d[[*keys, "cell_id", "value"]], lost[[*keys, "cell_id", "value"]]], ignore_index=True)
    if not np.isfinite(d["value"]).any():
        return pd.DataFrame(columns=["equation", "method", "seed", "score"])
    d = largest_n_train(d, ["equation"])
    labels = [method_label(m, v, b) for m, v, b in zip(d["model"], d["variant"], d["beta"], strict=True)]
    return pd.DataFrame({"equation": d["equation"].to_numpy(), "method": labels, "seed": d["seed"].to_numpy(),
                         "score": d["value"].to_numpy(dtype=float)})  # fmt: skip


@dataclass
class Ranking:
    """The ranking of k methods over N complete sets."""

    scores: pd.DataFrame  # sets x methods: median score over seeds (complete blocks only)
    ranks: pd.DataFrame  # sets x methods: rank within each set (1 = best)
    average: pd.Series  # method -> average rank, best first
    incomplete: list[str] = field(default_factory=list)  # sets dropped because some method has no score there
    partial: list[str] = field(default_factory=list)  # methods left out: the grid ran them on some sets only
    chi2: float = math.nan  # Friedman statistic
    p_value: float = math.nan  # Friedman p-value (chi-square form)
    f_stat: float = math.nan  # Iman-Davenport F
    f_p_value: float = math.nan
    cd: float = math.nan  # Nemenyi critical difference at ALPHA

    @property
    def k(self) -> int:
        return self.scores.shape[1]

    @property
    def n_sets(self) -> int:
        return self.scores.shape[0]

    def cliques(self) -> list[list[str]]:
        """Maximal runs of methods (in average-rank order) whose rank spread is below CD: not significantly
        different from each other; the bars of the critical-difference diagram."""
        if not np.isfinite(self.cd):
            return []
        names, r = list(self.average.index), self.average.to_numpy()
        runs = []
        for i in range(len(r)):
            j = i
            while j + 1 < len(r) and r[j + 1] - r[i] < self.cd:
                j += 1
            if j > i and not any(a <= i and j <= b for a, b in runs):
                runs.append((i, j))
        return [names[a : b + 1] for a, b in runs]


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Critical difference of average ranks for k methods over n sets (Demšar 2006, eq. 5)."""
    if k < 2 or n < 1:
        return math.nan
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def _complete_blocks(med: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(sets x methods with no gap, methods left out). A gap is a method with no cell on a set (a failed cell
    scores +inf and is no gap). Either the sets with a gap go, or the methods with one (a variant the grid runs
    on some sets only, e.g. grid.hess_equations): whichever keeps more (set, method) scores, the sets on a tie,
    and the methods only while 2 of them remain."""
    by_set = med.dropna(axis=0, how="any")
    by_method = med.dropna(axis=1, how="any")
    if by_method.shape[1] >= 2 and by_method.size > by_set.size:
        return by_method, sorted(set(med.columns) - set(by_method.columns))
    return by_set, []


def rank_methods(per_seed: pd.DataFrame) -> Ranking:
    """Average ranks, Friedman and Iman-Davenport tests and the Nemenyi CD from ``per_seed_scores`` rows."""
    med = per_seed.groupby(["equation", "method"])["score"].median().unstack("method")
    complete, partial = _complete_blocks(med)
    incomplete = sorted(set(med.index) - set(complete.index))
    if complete.empty:
        empty = pd.DataFrame()
        return Ranking(empty, empty, pd.Series(dtype=float), incomplete, partial)
    ranks = complete.rank(axis=1, method="average")
    average = ranks.mean(axis=0).sort_values(kind="stable")
    out = Ranking(complete, ranks, average, incomplete, partial)
    k, n = complete.shape[1], complete.shape[0]
    if k >= 3 and n >= 2:
        ties = (complete.nunique(axis=1) == 1).all()  # every set a full tie: the test is undefined
        if not ties:
            chi2, p = stats.friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns])
            out.chi2, out.p_value = float(chi2), float(p)
            denom = n * (k - 1) - chi2
            if denom > 0:
                out.f_stat = float((n - 1) * chi2 / denom)
                out.f_p_value = float(stats.f.sf(out.f_stat, k - 1, (k - 1) * (n - 1)))
            else:  # the ranks agree perfectly on every set
                out.f_stat, out.f_p_value = math.inf, 0.0
    out.cd = nemenyi_cd(k, n)
    return out


def lower_p(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Welch t-test p-value of "a is lower than b" on log10 values; NaN below 2 values per side."""
    a, b = np.log10(a[np.isfinite(a) & (a > 0)]), np.log10(b[np.isfinite(b) & (b > 0)])
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread at all: the difference is certain or absent
        return 0.0 if a[0] < b[0] else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def win_rates(
    per_seed: pd.DataFrame, methods: list[str] | None = None, alpha: float = ALPHA
) -> dict[str, pd.DataFrame]:
    """Pairwise matrices over the sets where both methods have scores, rows A, columns B:

    ``significant``: share of the testable sets (both with 2+ finite seeds) on which A's errors are significantly
    lower than B's (lower_p < alpha), NaN where none is testable; ``median``: share of the sets on which A's
    median error is lower than B's; ``sets``: the number of such sets; ``testable``: how many could be tested.
    """
    methods = methods or sorted(per_seed["method"].unique())
    groups = {key: g["score"].to_numpy() for key, g in per_seed.groupby(["equation", "method"])}
    equations = sorted(per_seed["equation"].unique())
    shape = (len(methods), len(methods))
    sig, med, sets, testable = (np.full(shape, np.nan) for _ in range(4))
    for i, a in enumerate(methods):
        for j, b in enumerate(methods):
            if i == j:
                continue
            pairs = [(groups[(e, a)], groups[(e, b)]) for e in equations if (e, a) in groups and (e, b) in groups]
            if not pairs:
                continue
            p = np.array([lower_p(x, y) for x, y in pairs])
            sets[i, j] = len(pairs)
            testable[i, j] = int(np.isfinite(p).sum())
            med[i, j] = np.mean([np.median(x) < np.median(y) for x, y in pairs])
            sig[i, j] = np.mean(p[np.isfinite(p)] < alpha) if np.isfinite(p).any() else np.nan
    frame = lambda m: pd.DataFrame(m, index=methods, columns=methods)  # noqa: E731
    return {"significant": frame(sig), "median": frame(med), "sets": frame(sets), "testable": frame(testable)}
