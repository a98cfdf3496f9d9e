"""Paired statistics over per-item outcomes (per query, per labelled pair). Pure numpy, host side.

Convention: every difference is ``a - b`` (as in experiments/ablate.py and reproduce.py: "A − B"), so a positive
difference means arm ``a`` scores higher. Items are paired: ``a[i]`` and ``b[i]`` are the two arms' outcomes on
the same item (e.g. the same query under the same seed). Items that are not independent (the same query under
several seeds) share a cluster label, and the bootstrap resamples clusters, not items.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

CI_LEVEL = 0.95


class Bootstrap(NamedTuple):
    """Result of `paired_bootstrap`: diff = mean(a) - mean(b), its percentile CI and a two-sided p-value."""

    diff: float
    ci_lo: float
    ci_hi: float
    p: float


class McNemar(NamedTuple):
    """Result of `mcnemar`: discordant counts b01 (a wrong, b right), b10 (a right, b wrong), min(b01, b10), p."""

    b01: int
    b10: int
    statistic: int
    p: float


def _cluster_sums(d: np.ndarray, clusters: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sum of d and item count: ([G], [G]); each item is its own cluster when clusters is None."""
    if clusters is None:
        return d, np.ones_like(d)
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    inverse = inverse.reshape(-1)
    return np.bincount(inverse, weights=d), np.bincount(inverse).astype(np.float64)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, num_resamples: int = 2000, seed: int = 0,
                     clusters: np.ndarray | None = None, level: float = CI_LEVEL) -> Bootstrap:
    """Paired (cluster) bootstrap of the difference of means a - b.

    With d_i = a_i - b_i and clusters g = 1..G (each item its own cluster when ``clusters`` is None), a resample
    draws G clusters uniformly with replacement (g_1..g_G, multiplicities w_g) and keeps every item of each:

        diff   = sum_i d_i / n
        diff*  = sum_g w_g S_g / sum_g w_g n_g     (S_g, n_g: sum of d and item count of cluster g)
        CI     = percentiles (1 - level) / 2 and (1 + level) / 2 of diff* (percentile interval)
        p      = min(1, 2 min((1 + #{diff* <= 0}) / (B + 1), (1 + #{diff* >= 0}) / (B + 1)))

    p is two-sided and consistent with the percentile interval (the 95% CI excludes 0 about when p < 0.05); all
    d_i = 0 gives diff = 0, CI [0, 0], p = 1.

    Args:
      a, b: [n] paired per-item values (0/1 correctness, reciprocal rank, ...).
      num_resamples: B.
      seed: numpy Generator seed (same inputs + seed -> same result).
      clusters: optional [n] labels (e.g. query ids when items pool seeds): resampled as units.
      level: CI coverage.
    Returns:
      Bootstrap(diff, ci_lo, ci_hi, p); all NaN when n = 0.
    """
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: a and b must have the same length, got {a.shape[0]} and {b.shape[0]}")
    if clusters is not None and np.asarray(clusters).reshape(-1).shape != a.shape:
        raise ValueError(f"paired_bootstrap: clusters must have one label per item ({a.shape[0]})")
    if a.size == 0:
        return Bootstrap(math.nan, math.nan, math.nan, math.nan)
    d = a - b
    sums, counts = _cluster_sums(d, clusters)
    num_clusters = sums.shape[0]
    rng = np.random.default_rng(seed)
    draws = []
    chunk = max(1, 2_000_000 // num_clusters)  # bounds the [chunk, G] index matrix
    for start in range(0, num_resamples, chunk):
        drawn = rng.integers(0, num_clusters, size=(min(chunk, num_resamples - start), num_clusters))
        draws.append(sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1))
    boot = np.concatenate(draws)
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    below = (1 + np.sum(boot <= 0)) / (num_resamples + 1)
    above = (1 + np.sum(boot >= 0)) / (num_resamples + 1)
    return Bootstrap(float(np.mean(d)), float(lo), float(hi), float(min(1.0, 2 * min(below, above))))


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n Binomial(n, 1/2) trials: min(1, 2 P(X <= min(k, n - k))); 1 if n = 0."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Exact (binomial) two-sided McNemar test for paired binary outcomes.

        b01 = #{a_i = 0, b_i = 1},  b10 = #{a_i = 1, b_i = 0},  statistic = min(b01, b10)
        p   = P(|X - m/2| >= |statistic - m/2|),  X ~ Binomial(m = b01 + b10, 1/2)  (1 when m = 0)

    (scipy.stats.binomtest(statistic, m, 0.5).pvalue when scipy is installed, else `binomial_two_sided_p`; the
    two agree because Binomial(m, 1/2) is symmetric.) Items must be independent: pooled seeds of one query are
    not, which makes p optimistic there (prefer `paired_bootstrap` with clusters).

    Args:
      a_correct, b_correct: [n] 0/1 (or bool) outcomes of the two arms on the same items.
    """
    a, b = np.asarray(a_correct).astype(bool).reshape(-1), np.asarray(b_correct).astype(bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: a_correct and b_correct must have the same length, got {a.size} and {b.size}")
    b01, b10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    statistic, m = min(b01, b10), b01 + b10
    try:
        from scipy.stats import binomtest
    except ImportError:
        p = binomial_two_sided_p(statistic, m)
    else:
        p = float(binomtest(statistic, m, 0.5).pvalue) if m else 1.0
    return McNemar(b01, b10, statistic, p)


def minimum_detectable_effect(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean paired difference a two-sided level-alpha test detects with probability ``power``.

        MDE = (z_{1 - alpha/2} + z_{power}) * sd_diff / sqrt(n)       (normal approximation)

    sd_diff is the standard deviation of the per-item differences d_i = a_i - b_i (for 0/1 outcomes under no
    effect, sd_diff = sqrt(discordant rate)). With clustered items (seeds of one query), pass the SD of the
    per-cluster mean differences and n = the number of clusters (`paired_sd`). alpha = 0.05, power = 0.8 give
    MDE = 2.8016 sd_diff / sqrt(n). NaN when n < 1.
    """
    if n < 1 or math.isnan(sd_diff):
        return math.nan
    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * sd_diff / math.sqrt(n)


def paired_sd(a: np.ndarray, b: np.ndarray, clusters: np.ndarray | None = None) -> tuple[float, int]:
    """(sd_diff, n) for `minimum_detectable_effect`: the sample SD (ddof 1) of d_i = a_i - b_i over n items, or,
    with ``clusters``, of the per-cluster mean differences over n clusters. NaN SD when n < 2."""
    d = np.asarray(a, np.float64).reshape(-1) - np.asarray(b, np.float64).reshape(-1)
    sums, counts = _cluster_sums(d, clusters)
    means = sums / np.maximum(counts, 1)
    n = int(means.shape[0])
    return (float(np.std(means, ddof=1)) if n >= 2 else math.nan), n


def verdict(diff: float, ci: tuple[float, float], p: float | None, mde: float, alpha: float = 0.05,
            direction: int = 1) -> str:
    """Verdict on the claim "the true difference has the sign ``direction``" (+1: a > b, -1: a < b).

    With the CI turned to the claimed direction (lo, hi) = direction * CI (sorted):
      "holds"     lo > 0 (the CI excludes 0 on the claimed side), and p < alpha when p is given (not NaN);
      "fails"     hi < 0 (the CI excludes 0 on the other side), or lo <= 0 and hi < mde: the CI rules out a gain in
                  the claimed direction as large as the minimum detectable effect (which a test with that power
                  would have found);
      "inconclusive (could detect >= {mde:.3f})" otherwise (the data cannot tell a real gain of up to the MDE
                  from none);
      "not measured" when diff or the CI is NaN.
    """
    lo, hi = sorted(direction * float(c) for c in ci)
    if math.isnan(diff) or math.isnan(lo) or math.isnan(hi):
        return "not measured"
    if lo > 0:
        return "holds" if p is None or math.isnan(p) or p < alpha else f"inconclusive (could detect >= {mde:.3f})"
    if hi < 0 or (not math.isnan(mde) and hi < mde):
        return "fails"
    return f"inconclusive (could detect >= {mde:.3f})"
