"""Retrieval metrics against hand-computed values."""

import math

import jax
import numpy as np

from hnm_jax.metrics import pairwise_accuracy, retrieval_metrics


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
