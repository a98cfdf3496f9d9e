"""Paired statistics (hnm_jax.stats) against hand-computed cases, exact enumeration, normal theory and simulated
studies of the decision rule.

Simulated studies draw paired outcomes directly: each query is discordant with probability ``discordance``, and a
discordant query favours arm B (+1) with probability (1 + effect / discordance) / 2, else arm A (-1), so the true
effect is ``effect``. Inside simulations the bootstrap uses 1,000 resamples (the report uses 10,000).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from collections import Counter

import numpy as np
import pytest
from scipy import stats as scipy_stats

from hnm_jax import stats
from hnm_jax.stats import (
    Decision,
    EffectResult,
    decide,
    holm,
    mcnemar,
    minimum_detectable_effect,
    sign_test,
    stratified_cluster_bootstrap,
)

SIZES = (1016, 1002, 852)  # queries per dataset: 2,870 in all
Z_95, Z_80 = 1.6448536269514722, 0.8416212335729143  # z_{0.95}, z_{0.80}


# ----------------------------------------------------------------------------------------- holm, sign test, MDE


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1.0, then max(1.0, 0.6 x 1): capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one test: unadjusted
    assert holm([0.01, 0.01, 0.2]) == pytest.approx([0.03, 0.03, 0.2])  # ties: 0.03, max(0.03, 0.02), 0.2
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match="pass 1.0 for a missing one"):
        holm([0.01, math.nan])


def test_holm_rejects_what_the_step_down_procedure_rejects():
    """adjusted p <= alpha exactly for the hypotheses Holm's sequential procedure rejects at level alpha."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 12))
        p = rng.random(m) ** 3  # many small p-values
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        rejected = np.zeros(m, bool)
        for k, i in enumerate(np.argsort(p)):  # step down: stop at the first p_(k) > alpha / (m - k)
            if p[i] > alpha / (m - k):
                break
            rejected[i] = True
        adjusted = holm(p)
        assert np.array_equal(adjusted <= alpha, rejected)
        assert np.all(adjusted >= p) and np.all(adjusted <= 1)
        assert np.all(np.diff(adjusted[np.argsort(p)]) >= 0)  # monotone in the sorted order


def test_sign_test_by_hand():
    # 15 (dataset, fold) differences: 12 positive, 2 negative, 1 tie -> m = 14
    diffs = [0.02] * 12 + [-0.01, -0.03] + [0.0]
    result = sign_test(diffs)
    assert (result.positive, result.negative, result.ties) == (12, 2, 1)
    # 2 P(X <= 2), X ~ Bin(14, 1/2) = 2 (1 + 14 + 91) / 2^14
    assert result.p_two_sided == pytest.approx(2 * 106 / 16384)
    assert result.p_two_sided == pytest.approx(scipy_stats.binomtest(2, 14, 0.5).pvalue)
    assert sign_test([0.0] * 15) == stats.SignTest(0, 0, 15, 1.0)
    assert sign_test([1.0] * 7 + [-1.0] * 8).p_two_sided == 1.0  # 2 P(X <= 7) of Bin(15) = 1.0 (capped)
    assert sign_test([0.1] * 15).p_two_sided == pytest.approx(2 / 2**15)
    with pytest.raises(ValueError, match="leave a missing one out"):
        sign_test([0.1, math.nan])


def test_minimum_detectable_effect_by_hand():
    assert minimum_detectable_effect(0.01) == pytest.approx((Z_95 + Z_80) * 0.01)  # 0.02486
    assert minimum_detectable_effect(0.01) == pytest.approx(
        (scipy_stats.norm.ppf(0.95) + scipy_stats.norm.ppf(0.8)) * 0.01)  # fmt: skip
    assert minimum_detectable_effect(0.01, sides=2) == pytest.approx(2.8015852 * 0.01)
    one_sided = (scipy_stats.norm.ppf(0.99) + scipy_stats.norm.ppf(0.9)) * 0.5
    assert minimum_detectable_effect(0.5, alpha=0.01, power=0.9, sides=1) == pytest.approx(one_sided)
    two_sided = (scipy_stats.norm.ppf(0.995) + scipy_stats.norm.ppf(0.9)) * 0.5
    assert minimum_detectable_effect(0.5, alpha=0.01, power=0.9, sides=2) == pytest.approx(two_sided)
    assert math.isnan(minimum_detectable_effect(math.nan))
    with pytest.raises(ValueError, match="sides"):
        minimum_detectable_effect(0.01, sides=3)


# ----------------------------------------------------------------------------------------- the bootstrap


TINY_DIFFS = [1, 1, 0, -1, 1, 0, -1, 0]
TINY_STRATA = list("xxxxyyyy")
TINY_CLUSTERS = [1, 1, 2, 3, 1, 2, 2, 2]  # x: {+1, +1}, {0}, {-1}; y: {+1}, {0, -1, 0} (labels 1, 2 reused)


def test_bootstrap_matches_exact_enumeration_on_a_tiny_case():
    """Every one of the 3^3 x 2^2 = 108 equally likely resamples enumerated, against 200,000 random ones."""
    x, y = [(2, 2), (0, 1), (-1, 1)], [(1, 1), (-1, 3)]  # (d-sum, queries) per cluster; 4 queries per stratum
    def mean(drawn: tuple[tuple[int, int], ...]) -> float:
        return sum(t for t, _ in drawn) / sum(k for _, k in drawn)

    exact = np.array([0.5 * mean(a) + 0.5 * mean(b)  # each stratum weighs 4 / 8
                      for a in itertools.product(x, repeat=3) for b in itertools.product(y, repeat=2)])  # fmt: skip
    atoms, counts = np.unique(np.round(exact, 12), return_counts=True)
    cdf = np.cumsum(counts) / exact.size
    low, high = atoms[np.searchsorted(cdf, 0.025)], atoms[np.searchsorted(cdf, 0.975)]
    assert (low, high) == (-0.5, 0.9)  # F(-2/3) = 0.009 < 0.025 < F(-0.5) = 0.056; F(0.8) = 0.963 < 0.975 < F(0.9)
    # the sign flip: 2^5 sign patterns of the cluster sums (2, 0, -1, 1, -1), observed sum 1
    flips = np.array([np.dot(signs, [2, 0, -1, 1, -1]) for signs in itertools.product([1, -1], repeat=5)])

    result = stratified_cluster_bootstrap(TINY_DIFFS, TINY_STRATA, TINY_CLUSTERS, num_resamples=200_000, seed=0)
    assert result.effect == pytest.approx(1 / 8)  # (2 + 0 - 1 + 1 - 1) / 8
    assert (result.n, result.num_clusters, result.num_strata) == (8, 5, 2)
    assert result.se == pytest.approx(exact.std(), rel=0.02)  # 0.3586
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert result.p_gain_at_least_delta == pytest.approx(np.mean(exact >= 0.01), abs=0.005)  # 68 / 108
    assert result.p_no_gain == pytest.approx(np.mean(flips >= 1), abs=0.005)  # 16 / 32
    assert result.p_no_loss == pytest.approx(np.mean(flips <= 1), abs=0.005)  # 24 / 32


def test_bootstrap_se_and_p_match_normal_theory_on_large_cases():
    rng = np.random.default_rng(0)
    # one stratum, every query its own cluster: se = SD(d) / sqrt(n); sign flip: z = sum d / sqrt(sum d^2)
    d = rng.normal(0.02, 1.0, 5000)
    result = stratified_cluster_bootstrap(d, None, None, num_resamples=10_000, seed=1)
    assert result.effect == pytest.approx(d.mean())
    assert result.se == pytest.approx(d.std() / math.sqrt(d.size), rel=0.03)
    assert result.ci_high - result.ci_low == pytest.approx(2 * 1.959964 * result.se, rel=0.05)
    z = d.sum() / math.sqrt(np.sum(d**2))
    assert result.p_no_gain == pytest.approx(scipy_stats.norm.sf(z), abs=0.01)
    assert result.p_no_loss == pytest.approx(scipy_stats.norm.cdf(z), abs=0.01)
    # three strata of 0/±1 differences whose means differ (+0.3, 0, -0.3): se^2 = sum_s w_s^2 var_s / n_s, smaller
    # than the unstratified var / n by the between-strata variance
    strata = np.repeat([0, 1, 2], SIZES)
    probs = {0: (0.35, 0.05), 1: (0.2, 0.2), 2: (0.05, 0.35)}  # (P(+1), P(-1))
    u = rng.random(strata.size)
    plus, minus = np.array([probs[s][0] for s in strata]), np.array([probs[s][1] for s in strata])
    d = np.where(u < plus, 1.0, np.where(u < plus + minus, -1.0, 0.0))
    n = d.size
    stratified_se = math.sqrt(sum((np.sum(strata == s) / n) ** 2 * d[strata == s].var() / np.sum(strata == s)
                                  for s in range(3)))  # fmt: skip
    pooled_se = d.std() / math.sqrt(n)
    assert pooled_se > 1.05 * stratified_se
    assert stratified_cluster_bootstrap(d, strata, None, seed=2).se == pytest.approx(stratified_se, rel=0.025)
    assert stratified_cluster_bootstrap(d, None, None, seed=2).se == pytest.approx(pooled_se, rel=0.025)


def test_a_stratum_weighs_its_share_of_queries():
    # stratum "a": 100 queries, all +1, in clusters of unequal sizes; stratum "b": 300 queries, all 0. Each stratum's
    # resampled mean is constant (1 and 0), so with fixed weights 100/400 and 300/400 every resample is 0.25
    diffs = np.r_[np.ones(100), np.zeros(300)]
    strata = np.array(["a"] * 100 + ["b"] * 300, dtype=object)
    clusters = np.r_[np.repeat(np.arange(10), [1, 2, 3, 4, 5, 10, 15, 20, 20, 20]), np.arange(300) // 3]
    result = stratified_cluster_bootstrap(diffs, strata, clusters, num_resamples=2000)
    assert result.effect == pytest.approx(0.25)
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.25), pytest.approx(0.25))
    assert result.se == pytest.approx(0.0, abs=1e-12)
    assert result.num_clusters == 10 + 100 and result.num_strata == 2
    # unstratified, a resample's share of "a" queries varies: a CI around 0.25 with width ~ 4 x SD of that share
    pooled = stratified_cluster_bootstrap(diffs, None, clusters + np.r_[np.zeros(100), 1000 * np.ones(300)],
                                          num_resamples=2000)  # fmt: skip
    assert pooled.effect == pytest.approx(0.25) and pooled.ci_low < 0.2 < 0.3 < pooled.ci_high


def test_clusters_of_perfect_duplicates_widen_the_ci():
    """1,500 independent 0/±1 differences, each copied 4 times: resampled as clusters the CI is that of 1,500
    queries (se = SD / sqrt(1500)), twice as wide as when the 6,000 rows count as independent."""
    rng = np.random.default_rng(3)
    base = rng.choice([1.0, -1.0, 0.0], p=[0.17, 0.15, 0.68], size=1500)
    diffs, clusters = np.repeat(base, 4), np.repeat(np.arange(1500), 4)
    clustered = stratified_cluster_bootstrap(diffs, None, clusters, seed=4)
    independent = stratified_cluster_bootstrap(diffs, None, None, seed=4)
    assert clustered.effect == independent.effect == pytest.approx(base.mean())
    assert clustered.se == pytest.approx(base.std() / math.sqrt(1500), rel=0.03)
    assert independent.se == pytest.approx(base.std() / math.sqrt(6000), rel=0.03)
    ratio = (clustered.ci_high - clustered.ci_low) / (independent.ci_high - independent.ci_low)
    assert 1.85 < ratio < 2.15
    assert clustered.num_clusters == 1500 and independent.num_clusters == 6000
    assert clustered.p_no_gain > independent.p_no_gain  # the duplicates' evidence counts once


def test_bootstrap_degenerate_cases_determinism_and_errors():
    zeros = stratified_cluster_bootstrap(np.zeros(50), np.repeat([0, 1], 25), None, num_resamples=500)
    assert (zeros.effect, zeros.ci_low, zeros.ci_high, zeros.se) == (0.0, 0.0, 0.0, 0.0)
    assert zeros.p_no_gain == zeros.p_no_loss == 1.0 and zeros.p_gain_at_least_delta == pytest.approx(1 / 501)
    empty = stratified_cluster_bootstrap(np.array([]), np.array([]), np.array([]))
    assert empty.n == 0 and all(math.isnan(x) for x in (empty.effect, empty.ci_low, empty.se, empty.p_no_gain))
    rng = np.random.default_rng(5)
    d = rng.normal(size=300)
    first = stratified_cluster_bootstrap(d, np.arange(300) % 3, np.arange(300) // 2, num_resamples=1000, seed=7)
    assert stratified_cluster_bootstrap(d, np.arange(300) % 3, np.arange(300) // 2, num_resamples=1000,
                                        seed=7) == first  # fmt: skip
    assert isinstance(first, EffectResult) and first.delta == stats.DELTA
    with pytest.raises(ValueError, match="one label per difference"):
        stratified_cluster_bootstrap(d, np.zeros(299), None)
    with pytest.raises(ValueError, match="finite"):
        stratified_cluster_bootstrap([0.0, math.nan], None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.effect = 1.0  # type: ignore[misc]


def test_bootstrap_of_2870_queries_is_fast():
    import time

    rng = np.random.default_rng(6)
    strata = np.repeat([0, 1, 2], SIZES)
    for d in (rng.choice([1.0, -1.0, 0.0], p=[0.03, 0.02, 0.95], size=2870), rng.normal(size=2870)):
        start = time.perf_counter()
        stratified_cluster_bootstrap(d, strata, np.arange(2870) // 2, num_resamples=10_000)
        assert time.perf_counter() - start < 1.5  # ~0.03 s (0/±1) and ~0.3 s (real-valued) on one idle core


# ----------------------------------------------------------------------------------------- decide


def result_with(effect: float = 0.02, ci: tuple[float, float] = (0.0, 0.04), se: float = 0.01,
                p_no_gain: float = 0.5, p_no_loss: float = 0.5) -> EffectResult:  # fmt: skip
    return EffectResult(effect, *ci, se, p_no_gain, p_no_loss, 0.5, 0.01, 1000, 1000, 1)


def test_decide_labels():
    mde = (Z_95 + Z_80) * 0.01  # 0.0249
    holds = decide(result_with(p_no_gain=0.001), 0.01)
    assert holds == Decision("holds", "holds", pytest.approx(mde)) and str(holds) == "holds"
    # holds wins over "CI below delta": a significant gain smaller than 1 point
    assert decide(result_with(effect=0.004, ci=(0.001, 0.007)), 0.02).kind == "holds"
    assert decide(result_with(), 0.049).label == "holds"
    assert decide(result_with(), 0.05).label == "inconclusive (MDE 2.5 points)"  # p must be < alpha
    assert decide(result_with(effect=-0.03, ci=(-0.05, -0.01), p_no_loss=0.001), 0.99).label == (
        "fails (significantly negative)")  # fmt: skip
    assert decide(result_with(effect=0.0, ci=(-0.006, 0.006)), 0.5).label == "fails (no gain ≥ 1 point)"
    assert decide(result_with(effect=0.0, ci=(-0.006, 0.006)), 0.5, delta=0.02).label == "fails (no gain ≥ 2 points)"
    assert decide(result_with(effect=0.0, ci=(-0.006, 0.0099)), 0.5).kind == "fails"
    assert decide(result_with(effect=0.0, ci=(-0.006, 0.01)), 0.5).kind == "inconclusive"  # upper bound = delta
    # both fails conditions: the sign is what the label reports
    assert decide(result_with(effect=-0.02, ci=(-0.03, -0.01), p_no_loss=0.01), 1.0).label == (
        "fails (significantly negative)")  # fmt: skip
    inconclusive = decide(result_with(se=0.0123), 0.3)
    assert inconclusive.kind == "inconclusive" and inconclusive.mde == pytest.approx((Z_95 + Z_80) * 0.0123)
    assert inconclusive.label == "inconclusive (MDE 3.1 points)"  # 2.486 x 1.23 = 3.06
    # a missing adjusted p counts as 1; no queries: not measured
    assert decide(result_with(p_no_gain=0.0001), None).kind == "inconclusive"
    assert decide(result_with(p_no_gain=0.0001), math.nan).kind == "inconclusive"
    nan = math.nan
    assert decide(EffectResult(nan, nan, nan, nan, nan, nan, nan, 0.01, 0, 0, 0), None).label == "not measured"


# ----------------------------------------------------------------------------------------- simulated studies


def simulated_diffs(rng: np.random.Generator, effect: float, discordance: float,
                    sizes: tuple[int, ...] = SIZES) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(diffs, strata) of one simulated study (module docstring)."""
    strata = np.repeat(np.arange(len(sizes)), sizes)
    u = rng.random(strata.size)
    plus = discordance * (1 + effect / discordance) / 2
    return np.where(u < plus, 1.0, np.where(u < discordance, -1.0, 0.0)), strata


def rule_rates(effect: float, discordance: float, studies: int, sizes: tuple[int, ...] = SIZES,
               seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Share of simulated studies per decision kind (one contrast: the Holm-adjusted p is p_no_gain)."""
    rng = np.random.default_rng(seed)
    kinds = Counter()
    for i in range(studies):
        diffs, strata = simulated_diffs(rng, effect, discordance, sizes)
        result = stratified_cluster_bootstrap(diffs, strata, None, num_resamples=1000, seed=i)
        kinds[decide(result, result.p_no_gain).kind] += 1
    return {kind: kinds[kind] / studies for kind in ("holds", "fails", "inconclusive")}


def test_rule_on_a_true_null_holds_in_at_most_alpha_of_studies():
    """2,000 studies, 2,870 queries (3 strata), 3% discordant, effect 0: observed "holds" 4.0% (80 of 2,000). The
    sign-flip test is exact for exchangeable arms, so its long-run rate is <= 5% (4.3% over 4,000 other studies,
    where the bootstrap's own percentile p gave 5.3%). Most studies fail (86.9%): the CI's upper bound is under 1
    point."""
    rates = rule_rates(0.0, 0.03, 2000, seed=10)
    assert rates["holds"] <= 0.05
    assert rates["fails"] > 0.8  # observed 86%: se = sqrt(0.03 / 2870) = 0.32 points, upper bound ~0.63 points


def test_rule_detects_a_three_point_gain():
    """+3 points at 2,870 queries: with 3% discordance every discordant query favours B, and "holds" in 100% of 300
    studies; with 30% discordance (se = sqrt(0.2991 / 2870) = 1.02 points, theoretical power
    Phi(3 / 1.02 - 1.645) = 0.90) observed 90.3% (271 of 300), the rest inconclusive."""
    assert rule_rates(0.03, 0.03, 300, seed=11)["holds"] == 1.0
    rates = rule_rates(0.03, 0.30, 300, seed=12)
    assert rates["holds"] >= 0.8 and rates["fails"] == 0.0


def test_rule_on_a_true_zero_with_tight_cis_fails():
    """30,000 queries (3 strata of 10,000), 3% discordant, effect 0: se 0.1 points, so the CI's upper bound is
    ~0.2 points: "fails (no gain ≥ 1 point)" in 96.5% of 200 studies, never "inconclusive". "holds" still comes in
    ~alpha of studies (observed 3.5%, 7 of 200): a level-0.05 test of "no gain" rejects a true null that often,
    however tight the CI. With the sample effect exactly 0 (discordant queries split in half) it never holds."""
    rates = rule_rates(0.0, 0.03, 200, sizes=(10_000, 10_000, 10_000), seed=13)
    assert rates["fails"] >= 0.9 and rates["inconclusive"] == 0.0 and rates["holds"] <= 0.05
    # discordant queries split exactly in half in each stratum (the sample effect is 0): fails, never holds
    rng = np.random.default_rng(14)
    for i in range(50):
        strata = np.repeat([0, 1, 2], [10_000] * 3)
        d = np.zeros(strata.size)
        for s in range(3):
            where = rng.choice(np.flatnonzero(strata == s), size=300, replace=False)
            d[where[:150]], d[where[150:]] = 1.0, -1.0
        result = stratified_cluster_bootstrap(d, strata, None, num_resamples=1000, seed=i)
        assert decide(result, result.p_no_gain).label == "fails (no gain ≥ 1 point)"


def test_holm_keeps_a_family_of_null_contrasts_at_alpha():
    """Three contrasts per study, all true nulls (2,870 queries, 3% discordant, independent): the study claims any
    gain ("holds" on some contrast) in 4.0% of 400 studies with Holm, 13.25% without (1 - 0.95^3 = 14% expected)."""
    rng = np.random.default_rng(15)
    any_holm = any_raw = 0
    for i in range(400):
        results = []
        for j in range(3):
            diffs, strata = simulated_diffs(rng, 0.0, 0.03)
            results.append(stratified_cluster_bootstrap(diffs, strata, None, num_resamples=1000, seed=3 * i + j))
        p = [r.p_no_gain for r in results]
        any_holm += any(decide(r, q).kind == "holds" for r, q in zip(results, holm(p), strict=True))
        any_raw += any(decide(r, q).kind == "holds" for r, q in zip(results, p, strict=True))
    assert any_holm / 400 <= 0.05 < 0.08 <= any_raw / 400


def test_rule_needs_clusters_when_queries_are_duplicated():
    """700 clusters of 4 identical queries (2,800 rows), 3% of clusters discordant, effect 0: with clusters the rule
    holds in 3.3% of 300 studies; rows treated as independent it holds in 21.3% (z inflated by sqrt(4) = 2)."""
    rng = np.random.default_rng(16)
    holds = Counter()
    for i in range(300):
        base, _ = simulated_diffs(rng, 0.0, 0.03, sizes=(700,))
        diffs, clusters = np.repeat(base, 4), np.repeat(np.arange(700), 4)
        for name, labels in (("clusters", clusters), ("rows", None)):
            result = stratified_cluster_bootstrap(diffs, None, labels, num_resamples=1000, seed=i)
            holds[name] += decide(result, result.p_no_gain).kind == "holds"
    assert holds["clusters"] / 300 <= 0.05 and holds["rows"] / 300 >= 0.12


# ----------------------------------------------------------------------------------------- McNemar


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
