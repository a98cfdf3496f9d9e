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
    mine_pool,
    uniform_pool_negatives,
)
from hnm_jax.mining.retriever import Retriever, RetrieverSpec


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


def test_mine_pool_removes_positives_and_exact_twins():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(20, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[[0, 5]] + 0.01
    canonical = np.arange(20, dtype=np.int32)
    canonical[11] = 0  # doc 11 is an exact-text twin of doc 0, query 0's positive
    retriever = Retriever(RetrieverSpec(mode="dense"), DenseIndex.build(docs), None)
    positives = np.array([[0], [5]])
    pool = mine_pool(retriever, queries, ["a", "b"], positives, np.ones(2, np.float32), canonical, pool_size=6)
    assert pool.indices.shape == (2, 6)
    assert 0 not in pool.indices[0] and 11 not in pool.indices[0] and 5 not in pool.indices[1]
    assert np.all(np.diff(pool.fused, axis=1) <= 0)  # best first
    expected = np.sum(queries[:, None, :] * docs[pool.indices], axis=-1)
    np.testing.assert_allclose(pool.dense, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["in_batch", "random"])
def test_poolless_strategies_ignore_pool(name):
    neg = NEGATIVE_STRATEGIES[name](candidates(), SelectSpec(0 if name == "in_batch" else 3), np.random.default_rng(1))
    assert neg.shape == (2, 0 if name == "in_batch" else 3)
