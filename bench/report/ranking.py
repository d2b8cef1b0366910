"""Rankings across equation sets (Demšar, JMLR 2006): average ranks, the Friedman test, the Nemenyi critical
difference, and a pairwise win-rate matrix.

A *method* is one (architecture, training) pair; a *block* is one equation set. Each method's score on a set is
the median over seeds of the cells' test headline Jacobian error (``results.JAC_HEADLINE``; lower is better), at the
largest n_train the set has. Mean errors across sets are dominated by the hardest sets; ranks are not, so
the verdict over a population of generated sets is drawn from ranks:

- a failed seed is a loss: within each set, methods are ordered first by their share of failed seeds (smaller is
  better), then by the median over their finished seeds (1 = best, ties share the average rank), so neither a
  failure nor the median of (a, b, inf) can flatter a method; ranks are averaged over the sets on which every
  method has a cell (complete blocks; the others are listed, never silently dropped; a method the grid runs on a
  few sets only, such as a Hessian variant, is left out of the ranks instead when that keeps more scores);
- the Friedman test of "all methods rank alike" and its Iman-Davenport F form, both by Demšar's formulas (eqs. 3
  and 4) on these ranks, without a tie correction (``scipy.stats.friedmanchisquare`` corrects for ties and would
  rank a failure's inf as a number);
- the Nemenyi critical difference CD = q_α √(k(k+1) / 6N), q_α the studentized range quantile / √2: two
  methods whose average ranks differ by less than CD are not significantly different (α = 0.05);
- win rates: W[A, B] = the share of sets on which A's per-seed errors are significantly lower than B's
  (one-sided Welch t-test on log10 errors over seeds, α = 0.05, no correction: each entry is a rate over
  sets, not a claim about one set), beside the plain share of sets on which A's median is lower. A set on which
  the two failed different shares of seeds goes to the one that failed fewer (in both matrices); with equal
  shares their finished seeds are compared. Denominators are the sets so decided ("testable"), shown.
Pandas and scipy only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.load import RunData, largest_n_train
from bench.report.style import training_label
from bench.run.results import JAC_HEADLINE

ALPHA = 0.05
FEW_SETS = 10  # below this many sets the Friedman chi-square approximation is rough (Demšar 2006)
SCORE = JAC_HEADLINE  # per cell, test split: lower is better
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


def set_outcomes(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sets x methods: share of failed seeds, sets x methods: median over finished seeds, inf where none finished);
    NaN where the method has no cell on the set. A share, not a count: a method with fewer cells on a set (a run in
    progress) has fewer chances to fail."""
    score = per_seed["score"].astype(float)
    g = per_seed.assign(failed=~np.isfinite(score), ok=score.where(np.isfinite(score)))
    grouped = g.groupby(["equation", "method"])
    failed = grouped["failed"].mean().unstack("method")
    median = grouped["ok"].median().unstack("method")
    return failed, median.where(median.notna() | failed.isna(), np.inf)


def rank_sets(failed: pd.DataFrame, median: pd.DataFrame) -> pd.DataFrame:
    """Ranks within each set (rows): a smaller share of failed seeds first, then the lower median; ties share the
    average rank."""
    k = failed.shape[1]
    key = failed.rank(axis=1, method="dense") * (k + 1) + median.rank(axis=1, method="min")
    return key.rank(axis=1, method="average")


def friedman(ranks: pd.DataFrame) -> tuple[float, float, float, float]:
    """(χ²_F, p, Iman-Davenport F_F, p) from a sets x methods rank table (Demšar 2006, eqs. 3 and 4, no tie
    correction); NaN where undefined (fewer than 3 methods or 2 sets, or every set a full tie)."""
    n, k = ranks.shape
    if k < 3 or n < 2 or (ranks.nunique(axis=1) == 1).all():
        return math.nan, math.nan, math.nan, math.nan
    avg = ranks.mean(axis=0).to_numpy()
    chi2 = 12.0 * n / (k * (k + 1)) * (float(np.sum(avg**2)) - k * (k + 1) ** 2 / 4.0)
    p = float(stats.chi2.sf(chi2, k - 1))
    denom = n * (k - 1) - chi2
    if denom <= 0:  # the ranks agree perfectly on every set
        return chi2, p, math.inf, 0.0
    f = (n - 1) * chi2 / denom
    return chi2, p, float(f), float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))


def rank_methods(per_seed: pd.DataFrame) -> Ranking:
    """Average ranks, Friedman and Iman-Davenport tests and the Nemenyi CD from ``per_seed_scores`` rows."""
    failed, median = set_outcomes(per_seed)
    shown = median.where(failed.fillna(0) == 0, np.inf).where(failed.notna())  # a failed seed: no score shown
    complete, partial = _complete_blocks(shown)
    incomplete = sorted(set(shown.index) - set(complete.index))
    if complete.empty:
        empty = pd.DataFrame()
        return Ranking(empty, empty, pd.Series(dtype=float), incomplete, partial)
    ranks = rank_sets(failed.loc[complete.index, complete.columns], median.loc[complete.index, complete.columns])
    average = ranks.mean(axis=0).sort_values(kind="stable")
    out = Ranking(complete, ranks, average, incomplete, partial)
    out.chi2, out.p_value, out.f_stat, out.f_p_value = friedman(ranks)
    out.cd = nemenyi_cd(complete.shape[1], complete.shape[0])
    return out


def lower_p(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Welch t-test p-value of "a is lower than b" on log10 values; NaN below 2 values per side."""
    a, b = np.log10(a[np.isfinite(a) & (a > 0)]), np.log10(b[np.isfinite(b) & (b > 0)])
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread at all: the difference is certain or absent
        return 0.0 if a[0] < b[0] else 1.0
    with warnings.catch_warnings():  # one side without spread (identical seeds): scipy warns, the test stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def compare_set(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(p of "A's errors are lower than B's", 1.0 / 0.5 / 0.0 for A's median lower / tied / higher) on one set,
    from per-seed scores with +inf for a failed seed. Different shares of failed seeds decide both (p 0 or 1) where
    each side has 2 or more seeds; equal ones leave it to the finished seeds (p NaN where fewer than 2 finished on a
    side). Both failing every seed: nothing to compare (NaN, NaN): the set is in neither denominator."""
    fa, fb = float(np.mean(~np.isfinite(a))), float(np.mean(~np.isfinite(b)))
    if fa == 1.0 and fb == 1.0:
        return math.nan, math.nan
    if fa != fb:
        p = (0.0 if fa < fb else 1.0) if min(len(a), len(b)) >= 2 else math.nan
        return p, 1.0 if fa < fb else 0.0
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    ma, mb = float(np.median(a)), float(np.median(b))
    return lower_p(a, b), 1.0 if ma < mb else (0.5 if ma == mb else 0.0)


def win_rates(
    per_seed: pd.DataFrame, methods: list[str] | None = None, alpha: float = ALPHA
) -> dict[str, pd.DataFrame]:
    """Pairwise matrices over the sets where both methods have cells, rows A, columns B (``compare_set``):

    ``significant``: share of the testable sets on which A's errors are significantly lower than B's (p < alpha),
    NaN where none is testable; ``median``: share of the sets on which A's median error is lower than B's (a tie
    counts half; a set where both failed every seed is left out); ``sets``: the number of sets both have cells on;
    ``testable``: how many of them the significance decided.
    """
    methods = methods or sorted(per_seed["method"].unique())
    groups = {key: g["score"].to_numpy(dtype=float) for key, g in per_seed.groupby(["equation", "method"])}
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
            outcomes = np.array([compare_set(x, y) for x, y in pairs])
            p = outcomes[:, 0]
            sets[i, j] = len(pairs)
            testable[i, j] = int(np.isfinite(p).sum())
            decided = outcomes[np.isfinite(outcomes[:, 1]), 1]
            med[i, j] = float(np.mean(decided)) if len(decided) else np.nan
            sig[i, j] = np.mean(p[np.isfinite(p)] < alpha) if np.isfinite(p).any() else np.nan
    frame = lambda m: pd.DataFrame(m, index=methods, columns=methods)  # noqa: E731
    return {"significant": frame(sig), "median": frame(med), "sets": frame(sets), "testable": frame(testable)}
