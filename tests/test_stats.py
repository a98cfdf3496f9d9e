"""Paired statistics (hnm_jax.stats): bootstrap, McNemar, MDE and verdicts against hand-computed cases and scipy."""

import math
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from hnm_jax import stats
from hnm_jax.stats import mcnemar, minimum_detectable_effect, paired_bootstrap, paired_sd, verdict


def test_mcnemar_counts_and_p_by_hand():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    b = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    # a only: rows 1, 2, 5, 7 -> b10 = 4; b only: row 4 -> b01 = 1; m = 5
    b01, b10, statistic, p = mcnemar(a, b)
    assert (b01, b10, statistic) == (1, 4, 1)
    assert p == pytest.approx(2 * (1 + 5) / 32)  # 2 P(X <= 1), X ~ Bin(5, 1/2) = 0.375
    assert p == pytest.approx(scipy_stats.binomtest(1, 5, 0.5).pvalue)


@pytest.mark.parametrize("b01, b10", [(0, 0), (3, 3), (0, 7), (12, 2), (25, 40), (100, 130)])
def test_mcnemar_matches_scipy_binomtest_and_the_fallback(b01, b10, monkeypatch):
    a = np.array([0] * b01 + [1] * b10 + [1] * 5 + [0] * 4)
    b = np.array([1] * b01 + [0] * b10 + [1] * 5 + [0] * 4)
    result = mcnemar(a, b)
    assert (result.b01, result.b10, result.statistic) == (b01, b10, min(b01, b10))
    expected = scipy_stats.binomtest(min(b01, b10), b01 + b10, 0.5).pvalue if b01 + b10 else 1.0
    assert result.p == pytest.approx(expected, rel=1e-12)
    assert stats.binomial_two_sided_p(min(b01, b10), b01 + b10) == pytest.approx(expected, rel=1e-9)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # no scipy: the exact fallback
    assert mcnemar(a, b).p == pytest.approx(expected, rel=1e-9)


def test_bootstrap_difference_is_a_minus_b_and_degenerate_cases():
    a = np.array([1.0, 1.0, 0.0, 1.0])
    b = np.array([0.0, 1.0, 0.0, 0.0])
    diff, lo, hi, p = paired_bootstrap(a, b, num_resamples=500)
    assert diff == pytest.approx(0.5)  # 3/4 - 1/4
    assert lo <= diff <= hi and lo >= 0.0 and hi <= 1.0  # every d_i >= 0, so every resampled mean is in [0, 1]
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0, 1.0)
    assert all(math.isnan(x) for x in paired_bootstrap(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(a, b[:3])


def test_bootstrap_is_deterministic_and_p_matches_the_resamples():
    rng = np.random.default_rng(1)
    a, b = rng.random(30), rng.random(30)
    first = paired_bootstrap(a, b, num_resamples=400, seed=3)
    assert paired_bootstrap(a, b, num_resamples=400, seed=3) == first
    # recompute the resamples by hand with the same generator (items are their own clusters)
    d = a - b
    drawn = np.random.default_rng(3).integers(0, 30, size=(400, 30))  # 30 items drawn with replacement, 400 times
    boot = d[drawn].mean(axis=1)
    below, above = (1 + np.sum(boot <= 0)) / 401, (1 + np.sum(boot >= 0)) / 401
    assert first.p == pytest.approx(min(1.0, 2 * min(below, above)))
    assert first.ci_lo == pytest.approx(np.percentile(boot, 2.5))
    assert first.ci_hi == pytest.approx(np.percentile(boot, 97.5))


def test_bootstrap_ci_covers_the_true_difference_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    true = 0.1  # P(a correct) = 0.7, P(b correct) = 0.6, independent
    widths, covered = [], 0
    for n in (100, 400, 1600):
        a = (rng.random(n) < 0.7).astype(float)
        b = (rng.random(n) < 0.6).astype(float)
        diff, lo, hi, p = paired_bootstrap(a, b, num_resamples=1000, seed=n)
        covered += lo <= true <= hi
        widths.append(hi - lo)
        # the percentile CI is close to the normal one: 1.96 SD(d) / sqrt(n)
        assert hi - lo == pytest.approx(2 * 1.96 * np.std(a - b, ddof=1) / math.sqrt(n), rel=0.15)
    assert covered == 3
    assert widths[0] > 1.6 * widths[1] > 1.6 * 1.6 * widths[2]  # ~ 1/sqrt(n): halves when n quadruples
    assert p == pytest.approx(2 / 1001)  # n = 1600: no resample reaches 0, the smallest p of 1000 resamples


def test_cluster_resampling_keeps_the_seeds_of_a_query_together():
    # 3 queries x 2 seeds; each query's two items have the same difference, queries differ: -1, 0, +1 (x 2)
    a = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    b = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    clusters = np.array(["q0", "q0", "q1", "q1", "q2", "q2"], dtype=object)
    boot = paired_bootstrap(a, b, num_resamples=2000, seed=0, clusters=clusters)
    # resampling 3 whole queries: every resampled mean is (k_2 - k_0) / 3 for counts k of q2 and q0
    thirds = {-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0}
    for x in (boot.ci_lo, boot.ci_hi):
        assert min(abs(x - t) for t in thirds) < 1e-9
    # item-level resampling of the same 6 items takes means in sixths, and a narrower CI
    items = paired_bootstrap(a, b, num_resamples=2000, seed=0)
    assert boot.diff == items.diff == 0.0
    assert boot.ci_hi - boot.ci_lo > items.ci_hi - items.ci_lo
    # the labels' type does not matter, only which items share one: still thirds
    relabelled = paired_bootstrap(a, b, num_resamples=2000, seed=1, clusters=np.array([7, 7, 3, 3, 5, 5]))
    for x in (relabelled.ci_lo, relabelled.ci_hi):
        assert min(abs(x - t) for t in thirds) < 1e-9


def test_cluster_bootstrap_by_hand_with_unequal_clusters():
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    b = np.array([0.0, 0.0, 0.0, 1.0, 1.0])
    clusters = np.array([0, 0, 1, 2, 2])  # d sums per cluster: 1, 1, -1; sizes 2, 1, 2
    result = paired_bootstrap(a, b, num_resamples=300, seed=5, clusters=clusters)
    drawn = np.random.default_rng(5).integers(0, 3, size=(300, 3))  # 3 clusters drawn with replacement
    boot = np.array([1.0, 1.0, -1.0])[drawn].sum(axis=1) / np.array([2.0, 1.0, 2.0])[drawn].sum(axis=1)
    assert result.diff == pytest.approx(1 / 5)
    assert result.ci_lo == pytest.approx(np.percentile(boot, 2.5))
    assert result.ci_hi == pytest.approx(np.percentile(boot, 97.5))


def test_minimum_detectable_effect_by_hand():
    z = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.8
    assert minimum_detectable_effect(0.3, 400) == pytest.approx(z * 0.3 / 20)
    assert minimum_detectable_effect(0.3, 400) == pytest.approx(
        (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) * 0.3 / 20)
    # alpha 0.01, power 0.9
    expected = (scipy_stats.norm.ppf(0.995) + scipy_stats.norm.ppf(0.9)) * 0.5 / 10
    assert minimum_detectable_effect(0.5, 100, alpha=0.01, power=0.9) == pytest.approx(expected)
    assert math.isnan(minimum_detectable_effect(0.5, 0))


def test_paired_sd_items_and_clusters():
    a = np.array([1.0, 0.0, 1.0, 1.0])
    b = np.array([0.0, 0.0, 0.0, 1.0])
    sd, n = paired_sd(a, b)
    assert n == 4 and sd == pytest.approx(np.std([1, 0, 1, 0], ddof=1))
    sd, n = paired_sd(a, b, clusters=np.array(["x", "x", "y", "y"]))  # cluster means 0.5, 0.5
    assert n == 2 and sd == pytest.approx(0.0)
    assert math.isnan(paired_sd(a[:1], b[:1])[0])


def test_verdict():
    mde = 0.05
    assert verdict(0.08, (0.02, 0.14), 0.01, mde) == "holds"
    assert verdict(0.08, (0.02, 0.14), math.nan, mde) == "holds"
    assert verdict(-0.08, (-0.14, -0.02), 0.01, mde) == "fails"  # CI below 0
    assert verdict(0.0, (-0.03, 0.03), 0.9, mde) == "fails"  # a gain as large as the MDE is ruled out
    assert verdict(0.03, (-0.01, 0.07), 0.2, mde) == "inconclusive (could detect >= 0.050)"
    assert verdict(0.02, (0.001, 0.04), 0.06, mde) == "inconclusive (could detect >= 0.050)"  # p disagrees
    # claims in the other direction (a < b)
    assert verdict(-0.08, (-0.14, -0.02), 0.01, mde, direction=-1) == "holds"
    assert verdict(0.08, (0.02, 0.14), 0.01, mde, direction=-1) == "fails"
    assert verdict(math.nan, (math.nan, math.nan), math.nan, math.nan) == "not measured"
