"""Bands, curricula and SimANS weights: hand-computed cases, properties, and jit without retracing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hnm_jax.config import load_config_file, spec_from_config
from hnm_jax.mining.schedules import (
    CURRICULA,
    BandSpec,
    band_at,
    band_distance,
    band_fill,
    band_fill_order,
    band_mask,
    simans_weights,
)


def _band(step, spec):
    lo, hi = band_at(step, spec)
    return float(np.asarray(lo)), float(np.asarray(hi))


def test_band_at_none_is_final_band():
    spec = BandSpec(lo=0.2, hi=0.8, curriculum="none")
    for step in (0, 1, 500, 10**6):
        assert _band(step, spec) == pytest.approx((0.2, 0.8))


def test_band_at_linear_hand_computed():
    spec = BandSpec(lo=0.4, hi=0.9, curriculum="linear", start_lo=0.0, start_hi=0.5, curriculum_steps=100)
    assert _band(0, spec) == pytest.approx((0.0, 0.5))
    assert _band(25, spec) == pytest.approx((0.1, 0.6))
    assert _band(50, spec) == pytest.approx((0.2, 0.7))
    assert _band(100, spec) == pytest.approx((0.4, 0.9))
    assert _band(1000, spec) == pytest.approx((0.4, 0.9))
    assert _band(-5, spec) == pytest.approx((0.0, 0.5))


def test_band_at_cosine_hand_computed():
    spec = BandSpec(lo=1.0, hi=1.0, curriculum="cosine", start_lo=0.0, start_hi=0.0, curriculum_steps=100)
    for step in (0, 25, 50, 75, 100):
        t = 0.5 * (1 - math.cos(math.pi * step / 100))
        assert _band(step, spec) == pytest.approx((t, t), abs=1e-6)


def test_band_at_step_hand_computed():
    # 4 stages of 25 steps: t = 0, 1/3, 2/3, 1
    spec = BandSpec(lo=0.3, hi=0.9, curriculum="step", start_lo=0.0, start_hi=0.6, curriculum_steps=100, num_stages=4)
    expected = {0: 0.0, 24: 0.0, 25: 1 / 3, 49: 1 / 3, 50: 2 / 3, 74: 2 / 3, 75: 1.0, 100: 1.0, 500: 1.0}
    for step, t in expected.items():
        assert _band(step, spec) == pytest.approx((0.3 * t, 0.6 + 0.3 * t), abs=1e-6), step


def test_unknown_curriculum_lists_valid_names():
    with pytest.raises(ValueError, match="cosine"):
        BandSpec(curriculum="exponential")


def test_band_mask_absolute_and_relative_hand_computed():
    neg = np.array([[0.1, 0.3, 0.5, 0.7, 0.9], [0.2, 0.4, 0.6, 0.8, 1.0]], np.float32)
    pos = np.array([1.0, 0.5], np.float32)
    got = np.asarray(band_mask(neg, pos, (0.3, 0.7), "absolute"))
    np.testing.assert_array_equal(got, [[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]])
    # relative: row 0 keeps [0.3, 0.7]; row 1 keeps [0.15, 0.35]
    got = np.asarray(band_mask(neg, pos, (0.3, 0.7), "relative"))
    np.testing.assert_array_equal(got, [[0, 1, 1, 1, 0], [1, 0, 0, 0, 0]])


def test_band_mask_invalid_scores_dropped():
    neg = jnp.array([-jnp.inf, jnp.nan, 0.0])
    got = np.asarray(band_mask(neg, jnp.float32(1.0), (-1.0, 1.0), "absolute"))
    np.testing.assert_array_equal(got, [False, False, True])


def test_gap_band_hand_computed_keeps_errors_above_the_positive():
    # gap band (lo, hi) = (-0.3, 0.1): keep pos - 0.3 <= s <= pos + 0.1, i.e. d_hi = 0.3 and d_lo = -0.1 < 0
    neg = np.array([[0.2, 0.55, 0.75, 0.85, 0.95], [0.0, 0.1, 0.3, 0.45, 0.6]], np.float32)
    pos = np.array([0.8, 0.4], np.float32)
    got = np.asarray(band_mask(neg, pos, (-0.3, 0.1), "gap"))
    # row 0 keeps [0.5, 0.9]: 0.55, 0.75, 0.85 (0.85 scores ABOVE the positive: an error, kept)
    # row 1 keeps [0.1, 0.5]: 0.1, 0.3, 0.45
    np.testing.assert_array_equal(got, [[0, 1, 1, 1, 0], [0, 1, 1, 1, 0]])


@settings(max_examples=40, deadline=None)
@given(d_lo=st.floats(-0.5, -0.01), d_hi=st.floats(0.0, 1.0), pos=st.floats(-0.5, 0.9), above=st.floats(0.0, 1.0))
def test_gap_band_keeps_a_negative_above_the_positive_when_d_lo_negative(d_lo, d_hi, pos, above):
    # a negative scoring above the positive by less than |d_lo| is inside the band [pos - d_hi, pos - d_lo]
    neg = np.float32(pos) + np.float32(above) * np.float32(-d_lo) * np.float32(0.99)
    kept = np.asarray(band_mask(np.array([[neg]], np.float32), np.array([pos], np.float32), (-d_hi, -d_lo), "gap"))
    assert kept[0, 0]


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 5000), fraction=st.floats(0.05, 1.0),
       curriculum=st.sampled_from(["linear", "cosine", "step"]))
def test_curriculum_reaches_its_end_at_the_stated_fraction_of_any_run(total, fraction, curriculum):
    spec = BandSpec(lo=-0.3, hi=0.2, mode="gap", curriculum=curriculum, start_lo=-1.0, start_hi=-0.2,
                    curriculum_fraction=fraction).for_run(total)
    end = max(1, round(fraction * total))
    assert spec.curriculum_steps == end
    assert _band(end, spec) == (pytest.approx(-0.3), pytest.approx(0.2))
    assert _band(total, spec) == (pytest.approx(-0.3), pytest.approx(0.2))
    if end >= 4:  # half-way, the band is not the final one yet
        assert _band(end // 2, spec)[0] < -0.3 - 1e-3


def test_curriculum_needs_a_run_length():
    with pytest.raises(ValueError, match="for_run"):
        band_at(0, BandSpec(curriculum="linear"))


def keep_mask(neg_scores, pos_scores, band, mode, is_positive):
    """What a caller does: band mask AND not a known positive."""
    return band_mask(neg_scores, pos_scores, band, mode) & ~is_positive


@settings(max_examples=60, deadline=None)
@given(
    curriculum=st.sampled_from(sorted(CURRICULA)),
    a=st.integers(0, 5000),
    b=st.integers(0, 5000),
    start_lo=st.floats(-1, 1),
    d_lo=st.floats(0, 1),
    start_hi=st.floats(-1, 1),
    d_hi=st.floats(0, 1),
    total=st.integers(1, 3000),
    stages=st.integers(1, 8),
)
def test_band_bounds_non_decreasing(curriculum, a, b, start_lo, d_lo, start_hi, d_hi, total, stages):
    start_lo, start_hi = min(start_lo, start_hi), max(start_lo, start_hi)
    spec = BandSpec(
        lo=start_lo + d_lo,
        hi=start_hi + d_hi + d_lo,
        curriculum=curriculum,
        start_lo=start_lo,
        start_hi=start_hi,
        curriculum_steps=total,
        num_stages=stages,
    )
    s0, s1 = min(a, b), max(a, b)
    lo0, hi0 = _band(s0, spec)
    lo1, hi1 = _band(s1, spec)
    assert lo0 <= lo1 and hi0 <= hi1
    t0 = float(CURRICULA[curriculum](s0, total, stages))
    t1 = float(CURRICULA[curriculum](s1, total, stages))
    assert 0.0 <= t0 <= t1 <= 1.0
    assert _band(total, spec) == (pytest.approx(spec.lo), pytest.approx(spec.hi))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.sampled_from([1, 3]),  # few shapes: each new shape compiles the eager jnp ops
    n=st.sampled_from([1, 8]),
    lo=st.floats(-1, 1),
    width=st.floats(0, 1),
    mode=st.sampled_from(["absolute", "relative", "gap"]),
    seed=st.integers(0, 2**16),
)
def test_band_mask_elementwise_and_positives_never_kept(rows, n, lo, width, mode, seed):
    rng = np.random.default_rng(seed)
    neg = rng.uniform(-1, 1, (rows, n)).astype(np.float32)
    pos = rng.uniform(0.1, 1, rows).astype(np.float32)
    is_positive = rng.random((rows, n)) < 0.3
    got = np.asarray(band_mask(neg, pos, (lo, lo + width), mode))
    assert got.dtype == np.bool_ and got.shape == neg.shape
    lo32, hi32 = np.float32(lo), np.float32(lo + width)
    if mode == "gap":
        expected = (neg >= pos[:, None] + lo32) & (neg <= pos[:, None] + hi32)
    else:
        scale = pos[:, None] if mode == "relative" else 1.0
        expected = (neg >= lo32 * scale) & (neg <= hi32 * scale)
    np.testing.assert_array_equal(got, expected)
    kept = np.asarray(keep_mask(neg, pos, (lo, lo + width), mode, jnp.asarray(is_positive)))
    assert not kept[is_positive].any()


@pytest.mark.parametrize("curriculum", sorted(CURRICULA))
def test_jitted_band_traces_once(curriculum):
    traces = []
    spec = BandSpec(lo=0.5, hi=0.9, mode="absolute", curriculum=curriculum, start_lo=-1.0, start_hi=0.5,
                    curriculum_steps=50)

    @jax.jit
    def masked_count(step, neg, pos):
        traces.append(1)
        return band_mask(neg, pos, band_at(step, spec), spec.mode).sum()

    neg = jnp.linspace(-1, 1, 32).reshape(4, 8)
    pos = jnp.ones(4)
    counts = [int(masked_count(jnp.int32(step), neg, pos)) for step in range(0, 60, 3)]
    assert len(traces) == 1
    expected = []
    for step in range(0, 60, 3):
        lo, hi = _band(step, spec)
        expected.append(int(((np.asarray(neg) >= lo) & (np.asarray(neg) <= hi)).sum()))
    assert counts == expected

    @jax.jit
    def with_band(neg, pos, lo, hi):
        traces.append(1)
        return band_mask(neg, pos, (lo, hi), "relative")

    for lo in np.linspace(0.0, 0.8, 7, dtype=np.float32):
        with_band(neg, pos, lo, lo + np.float32(0.2))
    assert len(traces) == 2


def test_simans_weights_normalized_and_peaked():
    neg = np.linspace(-1, 1, 201, dtype=np.float32)[None].repeat(2, 0)
    pos = np.array([0.8, 0.5], np.float32)
    b = -0.3
    w = simans_weights(neg, pos, a=5.0, b=b)
    assert isinstance(w, np.ndarray)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    # w ~ exp(-a (s - pos - b)^2) peaks at s = pos + b
    np.testing.assert_allclose(neg[0, w.argmax(-1)], pos + b, atol=0.011)
    expected = np.exp(-5.0 * (neg - pos[:, None] - b) ** 2)
    np.testing.assert_allclose(w, expected / expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-7)


def test_simans_weights_invalid_entries_and_jax():
    neg = jnp.array([[0.2, -jnp.inf, jnp.nan, 0.4], [-jnp.inf, -jnp.inf, -jnp.inf, -jnp.inf]])
    w = jax.jit(simans_weights)(neg, jnp.array([0.5, 0.5]))
    assert isinstance(w, jax.Array)
    w = np.asarray(w)
    np.testing.assert_array_equal(w[0, 1:3], 0.0)
    np.testing.assert_allclose(w[0].sum(), 1.0, rtol=1e-6)
    assert w[0, 3] > w[0, 0]
    np.testing.assert_array_equal(w[1], 0.0)


# ---------------------------------------------------------------- filling slots in band order


def test_band_distance_hand_computed():
    # gap band (-0.3, 0.1) around pos 0.8: [0.5, 0.9]; around pos 0.4: [0.1, 0.5]
    neg = np.array([[0.2, 0.5, 0.7, 0.9, 1.0, np.nan], [0.0, 0.1, 0.3, 0.5, 0.8, -np.inf]], np.float32)
    got = np.asarray(band_distance(neg, np.array([0.8, 0.4], np.float32), (-0.3, 0.1), "gap"))
    np.testing.assert_allclose(got, [[0.3, 0, 0, 0, 0.1, np.inf], [0.1, 0, 0, 0, 0.3, np.inf]], atol=1e-6)
    absolute = np.asarray(band_distance(np.array([-1.0, 0.25, 2.0], np.float32), 0.0, (0.0, 0.5), "absolute"))
    np.testing.assert_allclose(absolute, [1.0, 0.0, 1.5], atol=1e-6)


def test_band_fill_hand_computed_refills_nearest_to_the_band():
    # pos 0.9, gap band (-0.3, -0.1): keep [0.6, 0.8]. Pool: 0.95 (above by 0.15), 0.86 (above by 0.06), 0.7 (in),
    # 0.4 (below by 0.2), 0.55 (below by 0.05), an invalid slot. Band order: 0.7 | 0.55, 0.86, 0.95, 0.4 | invalid.
    neg = np.array([[0.95, 0.86, 0.7, 0.4, 0.55, -np.inf]], np.float32)
    valid = np.array([[True, True, True, True, True, False]])
    pos = np.array([0.9], np.float32)
    order = np.asarray(band_fill_order(neg, pos, (-0.3, -0.1), "gap", valid))
    assert order.tolist() == [[2, 4, 1, 0, 3, 5]]
    assert np.asarray(band_fill(neg, pos, (-0.3, -0.1), "gap", 3, valid)).tolist() == [[2, 4, 1]]
    assert np.asarray(band_fill(neg, pos, (-0.3, -0.1), "gap", 3, valid, refill=False)).tolist() == [[2, -1, -1]]
    # more slots than valid entries: min(N, #valid) filled, the rest empty
    assert np.asarray(band_fill(neg, pos, (-0.3, -0.1), "gap", 7, valid)).tolist() == [[2, 4, 1, 0, 3, -1, -1]]
    # in the band, priority first (default: the score, hardest first): [0.3, 0.9] holds 0.86, 0.7, 0.55, 0.4
    wide = np.asarray(band_fill(neg, pos, (-0.6, 0.0), "gap", 6, valid)).tolist()
    assert wide == [[1, 2, 4, 3, 0, -1]]  # then 0.95, above the band by 0.05
    by_priority = band_fill(neg, pos, (-0.6, 0.0), "gap", 2, valid, priority=np.array([[0, 1, 2, 3, 4, 5]]))
    assert np.asarray(by_priority).tolist() == [[4, 3]]


@settings(max_examples=60, deadline=None)
@given(m=st.sampled_from([1, 6, 12]), n=st.integers(1, 8), lo=st.floats(-1, 0.5), width=st.floats(0, 0.5),
       mode=st.sampled_from(["gap", "absolute"]), seed=st.integers(0, 2**16))
def test_band_fill_keeps_n_when_the_pool_allows_and_respects_band_order(m, n, lo, width, mode, seed):
    rng = np.random.default_rng(seed)
    neg = rng.uniform(-1, 1, (3, m)).astype(np.float32)
    pos = rng.uniform(0, 1, 3).astype(np.float32)
    valid = rng.random((3, m)) < 0.8
    band = (lo, lo + width)
    cols = np.asarray(band_fill(neg, pos, band, mode, n, valid))
    inside = np.asarray(band_mask(neg, pos, band, mode)) & valid
    distance = np.asarray(band_distance(neg, pos, band, mode))
    for row in range(3):
        chosen = cols[row][cols[row] >= 0]
        assert len(chosen) == min(n, valid[row].sum()) and len(set(chosen)) == len(chosen)
        assert valid[row, chosen].all() and (cols[row][len(chosen):] == -1).all()
        flags = inside[row, chosen]
        assert not np.any(~flags[:-1] & flags[1:])  # every in-band entry before any out-of-band one
        assert flags.sum() == min(n, inside[row].sum())  # as many in-band ones as there are (up to n)
        outside = chosen[~flags]
        assert np.all(np.diff(distance[row, outside]) >= 0)  # nearest to the band first
        rest = np.setdiff1d(np.flatnonzero(valid[row] & ~inside[row]), outside)
        if len(outside) and len(rest):
            assert distance[row, outside].max() <= distance[row, rest].min()
        filtered = np.asarray(band_fill(neg, pos, band, mode, n, valid, refill=False))[row]
        assert set(filtered[filtered >= 0]) == set(chosen[flags])


def test_band_fill_under_jit_traces_once():
    traces = []
    spec = BandSpec(lo=-0.2, hi=0.2, curriculum="linear", start_lo=-0.8, start_hi=-0.4, curriculum_steps=10)

    @jax.jit
    def fill(step, neg, pos):
        traces.append(1)
        return band_fill(neg, pos, band_at(step, spec), spec.mode, 3)

    neg, pos = jnp.linspace(-1, 1, 24).reshape(2, 12), jnp.array([0.5, 0.9])
    for step in range(12):
        assert int((fill(jnp.int32(step), neg, pos) >= 0).sum()) == 6
    assert len(traces) == 1


def test_curriculum_needs_start_edges_below_end_edges():
    with pytest.raises(ValueError, match="easy to hard"):
        BandSpec(lo=-0.3, hi=2.0, curriculum="linear", start_lo=-0.1, start_hi=0.0)
    with pytest.raises(ValueError, match="easy to hard"):
        BandSpec(lo=-0.3, hi=-0.2, curriculum="linear", start_lo=-1.0, start_hi=0.0)
    BandSpec(lo=-2.0, hi=2.0, curriculum="none", start_lo=-0.8, start_hi=-0.4)  # no curriculum: start unused


@pytest.mark.parametrize("config_file", ["configs/ablations/online_band_curriculum.py",
                                         "configs/ablations/full_stack.py"])
def test_recipe_curriculum_moves_both_edges_from_easy_to_hard_over_the_run(config_file):
    total = 200
    spec = spec_from_config(load_config_file(config_file)).band.for_run(total)
    assert spec.curriculum_steps == total  # spans the whole run
    assert spec.start_lo < spec.lo and spec.start_hi < spec.hi  # start edges below end edges
    assert spec.start_hi < 0 < spec.hi  # from negatives below the positive to ones near or above it
    edges = np.array([_band(step, spec) for step in range(total + 1)])
    assert np.all(np.diff(edges, axis=0) >= 0)  # both edges non-decreasing in step
    assert np.all(edges[: total // 2, 1] <= 0)  # the upper edge stays below the positive for half the run
    assert edges[-1] == pytest.approx((spec.lo, spec.hi))

    # a synthetic pool: per query 60 negatives spread below and above the positive
    rng = np.random.default_rng(0)
    pos = rng.uniform(0.6, 0.9, 16).astype(np.float32)
    neg = (pos[:, None] + rng.uniform(-1.0, 0.4, (16, 60))).astype(np.float32)
    traces = []

    @jax.jit
    def mean_gap(step):
        traces.append(1)
        cols = band_fill(neg, pos, band_at(step, spec), spec.mode, 2)
        kept = jnp.take_along_axis(jnp.asarray(neg), jnp.maximum(cols, 0), axis=1)
        return jnp.mean(jnp.asarray(pos)[:, None] - kept), jnp.sum(cols >= 0)

    gaps = []
    for step in range(0, total + 1, 20):
        gap, count = mean_gap(jnp.int32(step))
        assert int(count) == 32  # every slot filled
        gaps.append(float(gap))
    assert len(traces) == 1
    assert np.all(np.diff(gaps) < 0)  # the kept negatives get harder (closer to the positive) every 20 steps
    assert gaps[0] > 0.3 and gaps[-1] < 0.0  # easy at the start; near or above the positive at the end
