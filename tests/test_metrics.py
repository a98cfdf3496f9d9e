"""Retrieval metrics against hand-computed values."""

import math

import jax
import numpy as np

from hnm_jax.metrics import (
    best_negative_scores,
    near_duplicate_collapse,
    near_duplicate_cosines,
    pairwise_accuracy,
    pool_statistics,
    ranking_instability,
    retrieval_metrics,
    score_gap_stats,
)


def test_retrieval_metrics_hand_case():
    ranked = np.array([
        [3, 1, 2, 4, 5, 6, 7, 8, 9, 10],   # q0: relevant {1}: rank 2
        [7, 8, 9, 4, 5, 6, 1, 2, 3, 0],    # q1: relevant {0, 4}: ranks 4 and 10
        [11, 12, 13, 14, 15, 16, 17, 18, 19, 20],  # q2: relevant {2}: missing
    ])
    positives = np.array([[1, -1], [0, 4], [2, -1]])
    m = retrieval_metrics(ranked, positives)
    assert m["accuracy@1"] == 0.0
    assert math.isclose(m["accuracy@5"], 2 / 3, rel_tol=1e-6)
    assert math.isclose(m["recall@5"], (1 + 0.5 + 0) / 3, rel_tol=1e-6)
    assert math.isclose(m["recall@10"], (1 + 1 + 0) / 3, rel_tol=1e-6)
    assert math.isclose(m["mrr@10"], (1 / 2 + 1 / 4 + 0) / 3, rel_tol=1e-5)
    d = lambda r: 1 / math.log2(r + 1)  # rank r from 1
    ndcg0 = d(2) / d(1)
    ndcg1 = (d(4) + d(10)) / (d(1) + d(2))
    assert math.isclose(m["ndcg@10"], (ndcg0 + ndcg1 + 0) / 3, rel_tol=1e-5)


def test_retrieval_metrics_perfect_and_jittable():
    ranked = np.tile(np.arange(10), (2, 1))
    positives = np.array([[0], [0]])
    m = retrieval_metrics(ranked, positives)
    assert all(m[k] == 1.0 for k in ("accuracy@1", "recall@1", "mrr@10", "ndcg@10"))
    from hnm_jax.metrics import relevance
    rel = jax.jit(relevance)(ranked, positives)
    assert rel.shape == (2, 10) and float(rel.sum()) == 2.0


def test_pairwise_accuracy():
    out = pairwise_accuracy(np.array([0, 0, 1, 1]), np.array([0.5, 0.9, 0.2, 0.1]), np.array([0, 0, 0, 1]),
                            np.array([0.7, 0.3]))
    assert math.isclose(out["pairwise_accuracy"], 2 / 3)
    assert math.isclose(out["score_gap_mean"], ((0.7 - 0.5) + (0.7 - 0.9) + (0.3 - 0.2)) / 3)


def test_score_gap_stats_hand_case():
    best_positive = np.array([0.9, 0.5, 0.7, 0.6, 0.8])
    best_negative = np.array([0.4, 0.6, 0.7, 0.2, -np.inf])  # gaps 0.5, -0.1, 0.0, 0.4, inf (no negative)
    out = score_gap_stats(best_positive, best_negative)
    finite = np.array([0.5, -0.1, 0.0, 0.4])
    assert math.isclose(out["gap_mean"], 0.2, rel_tol=1e-9)
    assert math.isclose(out["gap_p50"], 0.2, rel_tol=1e-9)  # median of (-0.1, 0, 0.4, 0.5)
    assert math.isclose(out["gap_p10"], -0.1 + 0.3 * 0.1, rel_tol=1e-9)  # position 0.3 between -0.1 and 0
    assert math.isclose(out["gap_p90"], np.percentile(finite, 90), rel_tol=1e-9)
    assert math.isclose(out["gap_p90"], 0.4 + 0.7 * 0.1, rel_tol=1e-9)  # position 2.7 between 0.4 and 0.5
    assert out["gap_negative_fraction"] == 1 / 5  # only query 1; a tie (query 2) is not outranked


def test_ranking_instability():
    top = np.array([[0.90, 0.895, 0.1], [0.9, 0.5, 0.4], [0.7, 0.7, 0.7], [0.3, -np.inf, -np.inf]])
    assert ranking_instability(top)["top2_within_eps"] == 0.5
    assert ranking_instability(top, epsilon=0.5)["top2_within_eps"] == 0.75
    assert ranking_instability(top, epsilon=0.001)["top2_within_eps"] == 0.25


def test_near_duplicate_collapse_hand_case():
    doc_emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0], [0.8, 0.6]])
    positives = np.array([[0, -1], [1, 3], [-1, -1], [4, -1]])
    cand_query = np.array([0, 0, 0, 1, 1, 2, 3])
    cand_doc = np.array([0, 2, 3, 4, 3, 1, 0])
    cand_label = np.array([1, 0, 0, 0, 1, 0, 1])
    # q0 (pos d0): d2 -> 0.6, d3 -> -1.0; q1 (pos d1): d4 -> 0.6 (d3 is a match); q2 has no positive;
    # q3 has no label-0 candidate
    out = near_duplicate_collapse(doc_emb, cand_query, cand_doc, cand_label, positives)
    assert math.isclose(out["near_duplicate_cosine"], ((0.6 - 1.0) / 2 + 0.6) / 2, rel_tol=1e-9)
    assert math.isclose(out["near_duplicate_cosine_max"], (0.6 + 0.6) / 2, rel_tol=1e-9)
    assert near_duplicate_collapse(doc_emb, cand_query, cand_doc, np.ones(7, int), positives) == {}
    mean, best = near_duplicate_cosines(doc_emb, cand_query, cand_doc, cand_label, positives)
    np.testing.assert_allclose(mean, [(0.6 - 1.0) / 2, 0.6, np.nan, np.nan])  # per query, NaN where undefined
    np.testing.assert_allclose(best, [0.6, 0.6, np.nan, np.nan])


def test_best_negative_scores():
    ranked = np.array([[3, 1, 2], [1, 5, -1], [7, -1, -1], [-1, -1, -1]])
    scores = np.array([[0.9, 0.8, 0.1], [0.7, 0.6, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    positives = np.array([[3, -1], [1, 5], [2, -1], [0, -1]])
    got = best_negative_scores(ranked, scores, positives)
    np.testing.assert_array_equal(got, [0.8, -np.inf, 0.5, -np.inf])


def test_pool_statistics_hand_case():
    pool = np.array([[0.2, 0.6, np.nan, -np.inf], [0.9, -0.4, 0.1, 0.5]])
    positive = np.array([0.5, 0.5])
    kept = np.array([[True, False, True, True], [False, True, True, True]])
    out = pool_statistics(pool, positive, kept)
    values = np.array([0.2, 0.6, 0.9, -0.4, 0.1, 0.5])
    assert math.isclose(out["pool_score_mean"], values.mean(), rel_tol=1e-9)
    assert math.isclose(out["pool_score_p50"], 0.35, rel_tol=1e-9)  # median of (-0.4, 0.1, 0.2, 0.5, 0.6, 0.9)
    assert math.isclose(out["pool_score_p10"], -0.15, rel_tol=1e-9)  # position 0.5 between -0.4 and 0.1
    assert math.isclose(out["pool_score_p90"], 0.75, rel_tol=1e-9)  # position 4.5 between 0.6 and 0.9
    assert math.isclose(out["band_kept_fraction"], 4 / 6)  # empty slots' kept flags are ignored
    # suspects: 0.6 (q0), 0.9 and 0.5 (q1; >= counts)
    assert math.isclose(out["false_negative_suspects"], 3 / 6)
    assert math.isclose(out["false_negative_suspects_per_query"], 1.5)
    counts, edges = out["pool_histogram"]
    assert counts.shape == (20,) and edges.shape == (21,) and counts.sum() == 6
    assert math.isclose(edges[0], -1.0) and math.isclose(edges[-1], 1.0)
    assert counts[:10].sum() == 1 and counts[10:].sum() == 5  # one score below 0 (values sit on bin edges)


def test_pool_statistics_all_empty():
    out = pool_statistics(np.full((2, 3), -np.inf), np.zeros(2), np.ones((2, 3), bool))
    assert math.isnan(out["pool_score_mean"]) and math.isnan(out["band_kept_fraction"])
    assert out["false_negative_suspects_per_query"] == 0.0 and out["pool_histogram"][0].sum() == 0
