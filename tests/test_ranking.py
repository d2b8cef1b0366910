"""Rankings across equation sets: known ranks, the Friedman statistic, Demšar's critical values, win rates."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.report import fig_ranking, ranking

# Demšar (JMLR 2006), Table 5(a): q_0.05 of the Nemenyi test for k = 2..10 methods
DEMSAR_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


def _per_seed(errors: dict[str, list[float]], n_sets: int, seeds=(0, 1, 2), noise=0.0, seed=0) -> pd.DataFrame:
    """errors: method -> error on each set (cycled); each seed multiplies it by exp(noise * N(0, 1))."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n_sets):
        for method, per_set in errors.items():
            for s in seeds:
                score = per_set[e % len(per_set)] * math.exp(noise * rng.standard_normal())
                rows.append(dict(equation=f"gen:smooth:{e}", method=method, seed=s, score=score))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("k", sorted(DEMSAR_Q05))
def test_the_critical_difference_uses_demsars_critical_values(k):
    n = 14
    expected = DEMSAR_Q05[k] * math.sqrt(k * (k + 1) / (6 * n))
    assert ranking.nemenyi_cd(k, n) == pytest.approx(expected, abs=2e-3)  # the table has 3 decimals


def test_a_consistent_order_gives_ranks_1_to_k_and_the_friedman_statistic_by_hand():
    # A < B < C on all 10 sets: ranks 1, 2, 3; chi2 = 12N/(k(k+1)) sum R_j^2 - 3N(k+1) = 140 - 120 = 20
    r = ranking.rank_methods(_per_seed({"A": [0.01], "B": [0.1], "C": [1.0]}, 10))
    assert list(r.average.index) == ["A", "B", "C"] and list(r.average) == [1.0, 2.0, 3.0]
    assert r.chi2 == pytest.approx(20.0, rel=1e-12)
    assert r.p_value == pytest.approx(stats.chi2.sf(20.0, 2), rel=1e-9)
    assert r.f_stat == math.inf and r.f_p_value == 0.0  # perfect agreement: Iman-Davenport's F is unbounded
    assert r.cd == pytest.approx(2.343 * math.sqrt(12 / 60), abs=2e-3)  # 1.048: A-B and B-C within, A-C not
    assert r.cliques() == [["A", "B"], ["B", "C"]]


def test_ties_share_the_average_rank_and_incomplete_sets_are_listed_not_ranked():
    d = _per_seed({"A": [0.1], "B": [0.1], "C": [1.0]}, 4)
    d = d[~((d["equation"] == "gen:smooth:3") & (d["method"] == "C"))]  # C has no score on one set
    r = ranking.rank_methods(d)
    assert r.n_sets == 3 and r.incomplete == ["gen:smooth:3"]
    assert r.average.to_dict() == {"A": 1.5, "B": 1.5, "C": 3.0}
    # Iman-Davenport from the chi-square form, by hand
    chi2 = 12 * 3 / (3 * 4) * (1.5**2 + 1.5**2 + 3**2) - 3 * 3 * 4
    # Demšar's formula, no tie correction (scipy's friedmanchisquare would divide by 1 - 3*6/(3*24) = 0.75: 6.0)
    assert r.chi2 == pytest.approx(chi2, rel=1e-12) and chi2 == pytest.approx(4.5)


def test_no_difference_gives_a_large_friedman_p_value_and_one_clique():
    r = ranking.rank_methods(_per_seed({m: [0.1] for m in "ABCD"}, 30, noise=0.5, seed=3))
    assert r.p_value > 0.01  # the null is true; the seed makes it 0.7
    assert r.cliques() == [list(r.average.index)]


def test_win_rates_known_answers():
    # A is 10x below B on every set (noise 0.1 in log space, 3 seeds): significant on all sets; B never wins.
    d = _per_seed({"A": [0.01], "B": [0.1]}, 8, noise=0.1)
    w = ranking.win_rates(d)
    assert w["significant"].loc["A", "B"] == 1.0 and w["significant"].loc["B", "A"] == 0.0
    assert w["median"].loc["A", "B"] == 1.0 and w["sets"].loc["A", "B"] == 8 and w["testable"].loc["A", "B"] == 8
    assert np.isnan(w["significant"].loc["A", "A"])
    # one seed: medians still compare, but no set can be tested: n/a, not a loss
    w1 = ranking.win_rates(_per_seed({"A": [0.01], "B": [0.1]}, 5, seeds=(0,)))
    assert w1["median"].loc["A", "B"] == 1.0 and np.isnan(w1["significant"].loc["A", "B"])
    assert w1["testable"].loc["A", "B"] == 0


def test_win_rates_under_the_null_stay_near_alpha():
    d = _per_seed({"A": [0.1], "B": [0.1]}, 400, seeds=(0, 1, 2, 3, 4), noise=0.3, seed=11)
    w = ranking.win_rates(d)
    assert 0.01 <= w["significant"].loc["A", "B"] <= 0.10  # alpha = 0.05, 400 sets: about +-0.02 by chance


def test_a_method_that_fails_on_a_set_ranks_last_there_instead_of_dropping_the_set(tmp_path):
    from bench.report.load import RunData

    rows = []
    for e in range(4):
        for model, err in (("good", 0.01), ("flaky", 0.001)):  # flaky is best where it finishes, fails on set 3
            for seed in (0, 1):
                key = dict(equation=f"s{e}", model=model, family=model, variant="value", beta=1.0, n_train=64,
                           seed=seed, cell_id=f"s{e}__{model}__{seed}", split="test", output="", input="")  # fmt: skip
                if model == "flaky" and e == 3:
                    rows.append({**key, "split": "", "metric": "failed", "value": np.nan, "status": "failed"})
                else:
                    rows.append({**key, "metric": "jac_err_rms", "value": err, "status": "ok"})
    per_seed = ranking.per_seed_scores(RunData(tmp_path, pd.DataFrame(rows), None))
    r = ranking.rank_methods(per_seed)
    assert r.n_sets == 4 and r.incomplete == []  # the failed set stays in
    assert r.average.to_dict() == {"flaky · value": 1.25, "good · value": 1.75}
    w = ranking.win_rates(per_seed)
    good, flaky = "good · value", "flaky · value"
    assert w["median"].loc[good, flaky] == 0.25 and w["testable"].loc[good, flaky] == 4  # the failed set is tested
    assert w["significant"].loc[good, flaky] == 0.25 and w["significant"].loc[flaky, good] == 0.75


def _seed_rows(scores: dict[str, list[list[float]]]) -> pd.DataFrame:
    """per_seed_scores rows from {method: [[seed scores] per set]}; inf is a failed seed."""
    rows = [{"equation": f"s{e:02d}", "method": m, "seed": k, "score": v}
            for m, sets in scores.items() for e, seeds in enumerate(sets) for k, v in enumerate(seeds)]  # fmt: skip
    return pd.DataFrame(rows)


def test_a_method_failing_every_seed_on_half_the_sets_does_not_win_them():
    # A: 10x lower errors where it finishes, every seed failed on 6 of 12 sets; B: finishes everywhere.
    inf = np.inf
    a = [[0.01, 0.011, 0.012]] * 6 + [[inf, inf, inf]] * 6
    b = [[0.1, 0.11, 0.12]] * 12
    d = _seed_rows({"A": a, "B": b})
    w = ranking.win_rates(d)
    assert w["sets"].loc["A", "B"] == 12 and w["testable"].loc["A", "B"] == 12  # all 12 tested, not 6
    assert w["significant"].loc["A", "B"] == 0.5 and w["significant"].loc["B", "A"] == 0.5
    assert w["median"].loc["A", "B"] == 0.5
    r = ranking.rank_methods(d)
    assert r.n_sets == 12 and r.average.to_dict() == {"A": 1.5, "B": 1.5}


def test_one_failed_seed_of_three_is_a_loss_not_a_median():
    # A fails one seed of three on every set, with the lowest errors otherwise: median(a, b, inf) is finite and
    # would rank A first; a failed seed is a loss, so B and C (no failures) rank ahead of it on every set.
    inf = np.inf
    d = _seed_rows({"A": [[0.001, 0.002, inf]] * 10, "B": [[0.1, 0.1, 0.1]] * 10, "C": [[0.5, 0.5, 0.6]] * 10})
    r = ranking.rank_methods(d)
    assert r.average.to_dict() == {"B": 1.0, "C": 2.0, "A": 3.0}
    assert np.isinf(r.scores["A"]).all()  # shown as failed, not as the median of its finished seeds
    # Demšar's chi2 for a perfect order over N = 10 sets, k = 3: 12 N / (k (k+1)) (1 + 4 + 9 - 12) = 20
    assert r.chi2 == pytest.approx(20.0, rel=1e-12) and np.isinf(r.f_stat)
    w = ranking.win_rates(d)
    assert w["significant"].loc["A", "C"] == 0.0 and w["significant"].loc["C", "A"] == 1.0
    assert w["median"].loc["A", "B"] == 0.0 and w["testable"].loc["A", "B"] == 10
    # equal failures: the finished seeds decide; both failing everywhere is a tie, not a win
    e = _seed_rows({"A": [[0.01, 0.011, inf]], "B": [[0.1, 0.11, inf]], "C": [[inf, inf, inf]], "D": [[inf] * 3]})
    assert (
        ranking.compare_set(*[g.to_numpy() for _, g in e[e.method.isin(["A", "B"])].groupby("method")["score"]])[1]
        == 1.0
    )
    assert all(np.isnan(ranking.compare_set(np.array([inf] * 3), np.array([inf] * 3))))  # nothing to compare


def test_sets_where_both_failed_everything_leave_the_denominators_and_failure_is_a_share():
    inf = np.inf
    # X better than Y on s01 and s02; both failed every seed on s00: X wins 2 of the 2 tested sets, not 2 of 3
    d = _seed_rows({"X": [[inf] * 3, [0.01, 0.011, 0.012], [0.01, 0.011, 0.012]],
                    "Y": [[inf] * 3, [0.1, 0.11, 0.12], [0.1, 0.11, 0.12]]})  # fmt: skip
    w = ranking.win_rates(d)
    assert w["sets"].loc["X", "Y"] == 3 and w["testable"].loc["X", "Y"] == 2
    assert w["significant"].loc["X", "Y"] == 1.0 and w["median"].loc["X", "Y"] == 1.0
    # a method with one finished seed (a run in progress) is not ahead of one with 1 failure in 3 by counting:
    # shares 0 < 1/3 still order them, but one seed cannot make the difference significant
    e = _seed_rows({"X": [[0.01, 0.01, inf]], "Y": [[0.5]]})
    p, med = ranking.compare_set(*[g.to_numpy() for _, g in e.groupby("method")["score"]])
    assert np.isnan(p) and med == 0.0


def test_the_diagram_and_the_matrix_draw_or_say_why_not():
    d = _per_seed({"A": [0.01], "B": [0.1], "C": [1.0]}, 6)
    r = ranking.rank_methods(d)
    assert fig_ranking.cd_diagram(r).axes
    assert fig_ranking.win_rate_heatmap(ranking.win_rates(d), list(r.average.index)).axes
    one = ranking.rank_methods(_per_seed({"A": [0.01], "B": [0.1]}, 1))
    assert "ranks need 2" in fig_ranking.cd_diagram(one)


def test_a_method_run_on_few_sets_is_left_out_instead_of_the_sets():
    # a Hessian variant on 1 of 6 sets (grid.hess_equations): dropping 5 sets would leave 1, so the method goes
    d = _per_seed({"A": [0.1], "B": [0.2], "C": [1.0], "H": [0.05]}, 6)
    d = d[(d["method"] != "H") | (d["equation"] == d["equation"].min())]
    r = ranking.rank_methods(d)
    assert r.n_sets == 6 and r.incomplete == [] and r.partial == ["H"]
    assert list(r.average.index) == ["A", "B", "C"] and r.average.to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
