"""Negative strategies on hand-made pools, and pool mining from the retriever."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hnm_jax.mining.dense_index import DenseIndex
from hnm_jax.mining.negatives import (
    NEGATIVE_STRATEGIES,
    Candidates,
    Pool,
    SelectSpec,
    band_negatives,
    hardest_negatives,
    retrieve_pool,
    uniform_pool_negatives,
)
from hnm_jax.mining.retriever import Retriever, RetrieverSpec
from hnm_jax.mining.schedules import band_mask


def hand_pool() -> Pool:
    indices = np.array([[7, 3, 9, 4, -1], [2, 8, 5, 6, 1]], np.int32)
    dense = np.array([[0.95, 0.8, 0.6, 0.2, -np.inf], [0.7, 0.65, 0.5, 0.1, 0.0]], np.float32)
    return Pool(indices=indices, dense=dense, lexical=dense.copy(), fused=dense.copy(),
                positive=np.array([1.0, 0.8], np.float32))


def candidates(band=(-1.0, 1.0), mode="absolute") -> Candidates:
    return Candidates(positives=np.array([[0, -1], [3, -1]]), num_docs=10, pool=hand_pool(), band=band,
                      band_mode=mode)


def test_strategy_names_are_listed():
    assert set(NEGATIVE_STRATEGIES) == {"in_batch", "random", "uniform", "hardest", "band"}


def test_hardest_takes_the_top_of_the_pool():
    np.testing.assert_array_equal(hardest_negatives(candidates(), SelectSpec(2), np.random.default_rng(0)),
                                  [[7, 3], [2, 8]])


def test_band_absolute_keeps_only_inside():
    # band [0.3, 0.85]: query 0 keeps {3 (0.8), 9 (0.6)}; query 1 keeps {2, 8, 5}
    for seed in range(10):
        neg = band_negatives(candidates((0.3, 0.85)), SelectSpec(2), np.random.default_rng(seed))
        assert set(neg[0]) == {3, 9}
        assert set(neg[1]) <= {2, 8, 5} and len(set(neg[1])) == 2


def test_band_relative_to_positive_and_empty_slots():
    # relative [0.7, 0.9] of positive: q0 (pos 1.0) keeps 0.7..0.9 -> {3}; q1 (pos 0.8) keeps 0.56..0.72 -> {2, 8}
    neg = band_negatives(candidates((0.7, 0.9), mode="relative"), SelectSpec(2), np.random.default_rng(0))
    assert neg[0].tolist() == [3, -1]  # only one candidate inside: the second slot stays empty
    assert set(neg[1]) == {2, 8}


def test_band_gap_keeps_pool_entries_above_the_positive():
    # gap (-0.25, 0.1): q0 (pos 1.0) keeps 0.75..1.1 -> {7 (0.95), 3 (0.8)}; q1 (pos 0.8) keeps 0.55..0.9 -> {2, 8}
    for seed in range(5):
        neg = band_negatives(candidates((-0.25, 0.1), mode="gap"), SelectSpec(3), np.random.default_rng(seed))
        assert set(neg[0]) == {7, 3, -1} and set(neg[1]) == {2, 8, -1}


def test_simans_prefers_scores_near_positive_plus_b():
    spec = SelectSpec(1, sampling="simans", simans_a=500.0, simans_b=-0.15)
    picks = [band_negatives(candidates(), spec, np.random.default_rng(s))[1, 0] for s in range(200)]
    counts = {d: picks.count(d) for d in set(picks)}
    assert max(counts, key=counts.get) == 8  # 0.65 == 0.8 - 0.15


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_pool_strategies_never_return_empty_or_foreign_rows(seed, n):
    pool = hand_pool()
    for fn in (uniform_pool_negatives, band_negatives, hardest_negatives):
        neg = fn(candidates(), SelectSpec(n), np.random.default_rng(seed))
        assert neg.shape == (2, n)
        for row in range(2):
            chosen = [d for d in neg[row] if d >= 0]
            assert set(chosen) <= set(pool.indices[row][pool.indices[row] >= 0])
            assert len(chosen) == len(set(chosen))


def test_retrieve_pool_removes_positives_and_exact_twins():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(20, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[[0, 5]] + 0.01
    canonical = np.arange(20, dtype=np.int32)
    canonical[11] = 0  # doc 11 is an exact-text twin of doc 0, query 0's positive
    retriever = Retriever(RetrieverSpec(mode="dense"), DenseIndex.build(docs), None)
    positives = np.array([[0], [5]])
    pool = retrieve_pool(retriever, queries, ["a", "b"], positives, np.ones(2, np.float32), canonical, pool_size=6)
    assert pool.indices.shape == (2, 6)
    assert 0 not in pool.indices[0] and 11 not in pool.indices[0] and 5 not in pool.indices[1]
    assert np.all(np.diff(pool.fused, axis=1) <= 0)  # best first
    expected = np.sum(queries[:, None, :] * docs[pool.indices], axis=-1)
    np.testing.assert_allclose(pool.dense, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["in_batch", "random"])
def test_poolless_strategies_ignore_pool(name):
    neg = NEGATIVE_STRATEGIES[name](candidates(), SelectSpec(0 if name == "in_batch" else 3), np.random.default_rng(1))
    assert neg.shape == (2, 0 if name == "in_batch" else 3)


def test_band_refill_fills_every_slot_in_band_order_when_few_are_in_band():
    # absolute band [0.55, 0.65]: q0 (0.95, 0.8, 0.6, 0.2, empty) has only 9 (0.6) inside; nearest outside: 3 (0.8,
    # 0.15 above), then 4 (0.2, 0.35 below), then 7 (0.95, 0.3 above) -> 9, 3, 7. q1 (0.7, 0.65, 0.5, 0.1, 0.0): 8
    # (0.65) inside, then 2 (0.7, 0.05 above) and 5 (0.5, 0.05 below) tie -> pool rank: 2 first.
    spec = SelectSpec(3, refill=True)
    for seed in range(5):
        neg = band_negatives(candidates((0.55, 0.65)), spec, np.random.default_rng(seed))
        assert neg.tolist() == [[9, 3, 7], [8, 2, 5]]
    filtered = band_negatives(candidates((0.55, 0.65)), SelectSpec(3), np.random.default_rng(0))
    assert filtered.tolist() == [[9, -1, -1], [8, -1, -1]]  # without refill the band is a filter
    # a query's pool of 4 valid entries fills at most 4 of 5 slots
    assert (band_negatives(candidates((0.55, 0.65)), SelectSpec(5, refill=True), np.random.default_rng(0)) >= 0
            ).sum(axis=1).tolist() == [4, 5]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), lo=st.floats(-1.0, 1.0), width=st.floats(0.0, 0.3),
       sampling=st.sampled_from(["uniform", "simans"]))
def test_band_refill_keeps_n_when_the_pool_allows_and_prefers_the_band(seed, n, lo, width, sampling):
    pool = hand_pool()
    band = (lo, lo + width)
    cand = candidates(band, mode="gap")
    neg = band_negatives(cand, SelectSpec(n, sampling=sampling, refill=True), np.random.default_rng(seed))
    filtered = band_negatives(cand, SelectSpec(n, sampling=sampling), np.random.default_rng(seed))
    in_band = np.asarray(band_mask(pool.dense, pool.positive, band, "gap")) & (pool.indices >= 0)
    for row in range(2):
        valid = pool.indices[row][pool.indices[row] >= 0]
        chosen = [d for d in neg[row] if d >= 0]
        assert len(chosen) == min(n, len(valid)) == len(set(chosen))  # kept = min(N, pool size)
        inside = set(pool.indices[row][in_band[row]])
        flags = [d in inside for d in chosen]
        assert flags == sorted(flags, reverse=True)  # in-band entries first
        assert sum(flags) == min(n, len(inside))
        # the in-band picks are the filter's picks (same draws), the refill only adds to them
        assert [d for d in filtered[row] if d >= 0] == chosen[: sum(flags)]
