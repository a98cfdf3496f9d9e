"""Retrieval and near-duplicate discrimination metrics. Pure, jit-able, binary relevance.

Conventions: `ranked` [Q, K] holds corpus rows best first (-1 = empty slot); `positives` [Q, P] holds each
query's relevant corpus rows (-1 padded). Metric names match the eval JSON exactly.
"""

import jax.numpy as jnp
import numpy as np

ACCURACY_KS = (1, 5, 10)


def relevance(ranked: jnp.ndarray, positives: jnp.ndarray) -> jnp.ndarray:
    """rel[q, r] = 1.0 when ranked[q, r] is a relevant document of query q: [Q, K] float32."""
    hit = (ranked[:, :, None] == positives[:, None, :]) & (positives[:, None, :] >= 0) & (ranked[:, :, None] >= 0)
    return jnp.any(hit, axis=-1).astype(jnp.float32)


def retrieval_metrics(ranked: jnp.ndarray, positives: jnp.ndarray, ks: tuple[int, ...] = ACCURACY_KS) -> dict:
    """Per-query-averaged retrieval metrics.

    accuracy@k = mean_q [any relevant in top k]                (hit rate; accuracy@1 is the matching headline)
    recall@k   = mean_q |relevant in top k| / |relevant|      (BEIR / pytrec_eval definition)
    mrr@10     = mean_q 1 / rank of the first relevant in the top 10 (0 if none)
    ndcg@10    = mean_q DCG@10 / IDCG@10, DCG = sum_r rel_r / log2(r + 2) (r from 0)

    Args:
      ranked: [Q, K] int, K >= max(ks) and K >= 10.
      positives: [Q, P] int, every query has at least one positive.
    Returns:
      dict of Python floats.
    """
    rel = relevance(ranked, positives)
    num_relevant = jnp.sum(positives >= 0, axis=-1).astype(jnp.float32)  # [Q]
    out = {}
    for k in ks:
        out[f"accuracy@{k}"] = jnp.mean(jnp.any(rel[:, :k] > 0, axis=-1))
    for k in ks:
        out[f"recall@{k}"] = jnp.mean(jnp.sum(rel[:, :k], axis=-1) / num_relevant)
    top10 = rel[:, :10]
    first = jnp.argmax(top10 > 0, axis=-1)
    out["mrr@10"] = jnp.mean(jnp.where(jnp.any(top10 > 0, axis=-1), 1.0 / (first + 1.0), 0.0))
    discounts = 1.0 / jnp.log2(jnp.arange(10) + 2.0)
    dcg = jnp.sum(top10 * discounts[: top10.shape[1]], axis=-1)
    ideal = jnp.sum(jnp.where(jnp.arange(10)[None, :] < num_relevant[:, None], discounts[None, :], 0.0), axis=-1)
    out["ndcg@10"] = jnp.mean(dcg / ideal)
    return {name: float(value) for name, value in out.items()}


def pairwise_accuracy(candidate_query: np.ndarray, candidate_scores: np.ndarray, candidate_label: np.ndarray,
                      best_positive_score: np.ndarray) -> dict:
    """Discrimination between each query's positive and its labelled near-duplicates.

    pairwise_accuracy = fraction of labelled non-matching candidates (label 0) scored strictly below their
    query's best-scored positive; score_gap_mean = mean of (best positive score - candidate score) over them.

    Args:
      candidate_query: [C] int, query row of each candidate.
      candidate_scores: [C] float, model score of (query, candidate doc).
      candidate_label: [C] int, 1 = match, 0 = non-match.
      best_positive_score: [Q] float, the highest score among each query's relevant documents.
    """
    negative = np.asarray(candidate_label) == 0
    best = np.asarray(best_positive_score)[np.asarray(candidate_query)[negative]]
    gaps = best - np.asarray(candidate_scores)[negative]
    if gaps.size == 0:
        return {}
    return {"pairwise_accuracy": float(np.mean(gaps > 0)), "score_gap_mean": float(np.mean(gaps))}
