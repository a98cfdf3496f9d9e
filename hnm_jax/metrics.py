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


def first_relevant_rank(ranked: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """1-based rank of each query's first relevant document in its ranked list, 0 when none is retrieved.

    rank_q = 1 + min { r : ranked[q, r] in positives[q] }  (0 if the set is empty), so that
    accuracy@k = mean_q [1 <= rank_q <= k] and mrr@10 = mean_q [1 <= rank_q <= 10] / rank_q.

    Args:
      ranked: [Q, K] int corpus rows, best first (-1 = empty slot).
      positives: [Q, P] int, -1 padded.
    Returns:
      [Q] int64.
    """
    ranked, positives = np.asarray(ranked), np.asarray(positives)
    hit = np.any((ranked[:, :, None] == positives[:, None, :]) & (positives[:, None, :] >= 0), axis=-1)
    hit &= ranked >= 0
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1) + 1, 0).astype(np.int64)


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


def _percentiles(values: np.ndarray, prefix: str) -> dict:
    """{prefix_mean, prefix_p10, prefix_p50, prefix_p90} of a 1-D array (NaN when empty)."""
    if values.size == 0:
        return {f"{prefix}_mean": float("nan"), **{f"{prefix}_p{p}": float("nan") for p in (10, 50, 90)}}
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {f"{prefix}_mean": float(np.mean(values)), f"{prefix}_p10": float(p10), f"{prefix}_p50": float(p50),
            f"{prefix}_p90": float(p90)}


def score_gap_stats(best_positive: np.ndarray, best_negative: np.ndarray) -> dict:
    """Distribution over queries of gap_q = best_positive_q - best_negative_q.

    gap_mean and gap_p10/p50/p90 (linear-interpolated percentiles) are over the queries whose gap is finite;
    gap_negative_fraction = mean_q [gap_q < 0] over all queries (the best negative outranks the positive; a query
    with no retrieved negative, best_negative = -inf, counts as not outranked).

    Args:
      best_positive: [Q] float, highest score among each query's relevant documents.
      best_negative: [Q] float, highest score among its non-relevant documents (-inf if none).
    """
    gap = np.asarray(best_positive, np.float64) - np.asarray(best_negative, np.float64)
    out = _percentiles(gap[np.isfinite(gap)], "gap")
    out["gap_negative_fraction"] = float(np.mean(gap < 0)) if gap.size else float("nan")
    return out


def ranking_instability(top_scores: np.ndarray, epsilon: float = 0.01) -> dict:
    """Fraction of queries whose two best retrieved scores are within epsilon (a near-tie at the top).

    top2_within_eps = mean_q [ s_q1 - s_q2 <= epsilon ]   (an empty slot, -inf, never ties)

    Args:
      top_scores: [Q, K >= 2] float, each row sorted descending.
      epsilon: tie tolerance.
    """
    top = np.asarray(top_scores, np.float64)
    diff = top[:, 0] - top[:, 1]
    tied = np.isfinite(diff) & (diff <= epsilon)
    return {"top2_within_eps": float(np.mean(tied)) if top.shape[0] else float("nan")}


def near_duplicate_cosines(doc_emb: np.ndarray, cand_query: np.ndarray, cand_doc: np.ndarray,
                           cand_label: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query, how close its positive sits to its labelled near-duplicates: (mean, max) cosines, [Q] each.

    For query q with first positive p_q = positives[q, 0] and non-matching candidates D_q = {d : label 0}:
    mean_q = mean_{d in D_q} <e_{p_q}, e_d> and max_q = max_{d in D_q} <e_{p_q}, e_d>; NaN where q has no positive
    or no label-0 candidate.

    Args:
      doc_emb: [N, D] L2-normalized document embeddings.
      cand_query: [C] int query row, cand_doc: [C] int corpus row, cand_label: [C] int (1 match, 0 non-match).
      positives: [Q, P] int, -1 padded.
    """
    doc_emb = np.asarray(doc_emb)
    cand_query, cand_doc = np.asarray(cand_query), np.asarray(cand_doc)
    first_positive = np.asarray(positives)[:, 0]
    keep = (np.asarray(cand_label) == 0) & (cand_doc >= 0)
    keep &= first_positive[cand_query] >= 0
    query, doc = cand_query[keep], cand_doc[keep]
    num_queries = first_positive.shape[0]
    cosine = np.sum(doc_emb[first_positive[query]] * doc_emb[doc], axis=-1).astype(np.float64)  # [C']
    count = np.bincount(query, minlength=num_queries)
    total = np.bincount(query, weights=cosine, minlength=num_queries)
    best = np.full(num_queries, -np.inf)
    np.maximum.at(best, query, cosine)
    has = count > 0
    mean = np.where(has, total / np.maximum(count, 1), np.nan)
    return mean, np.where(has, best, np.nan)


def near_duplicate_collapse(doc_emb: np.ndarray, cand_query: np.ndarray, cand_doc: np.ndarray,
                            cand_label: np.ndarray, positives: np.ndarray) -> dict:
    """Collapse indicator: the means over queries of `near_duplicate_cosines` (queries without a positive or a
    label-0 candidate skipped; {} when none remain, as pairwise_accuracy does).

        near_duplicate_cosine     = mean_{q : D_q non-empty} mean_{d in D_q} <e_{p_q}, e_d>
        near_duplicate_cosine_max = mean_{q : D_q non-empty} max_{d in D_q}  <e_{p_q}, e_d>
    """
    mean, best = near_duplicate_cosines(doc_emb, cand_query, cand_doc, cand_label, positives)
    has = ~np.isnan(mean)
    if not has.any():
        return {}
    return {"near_duplicate_cosine": float(np.mean(mean[has])), "near_duplicate_cosine_max": float(np.mean(best[has]))}


def best_negative_scores(ranked: np.ndarray, ranked_scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Highest retrieved score among non-relevant documents of each query: [Q] float (-inf if none).

    best_negative_q = max { ranked_scores[q, r] : ranked[q, r] >= 0 and ranked[q, r] not in positives[q] }

    Args:
      ranked: [Q, K] int corpus rows, best first (-1 = empty slot).
      ranked_scores: [Q, K] float, their scores.
      positives: [Q, P] int, -1 padded.
    """
    ranked, positives = np.asarray(ranked), np.asarray(positives)
    hit = np.any((ranked[:, :, None] == positives[:, None, :]) & (positives[:, None, :] >= 0), axis=-1)
    negative = (ranked >= 0) & ~hit
    scores = np.where(negative, np.asarray(ranked_scores, np.float64), -np.inf)
    return scores.max(axis=-1, initial=-np.inf)


def pool_statistics(pool_scores: np.ndarray, positive_scores: np.ndarray, kept: np.ndarray) -> dict:
    """Statistics of one mining refresh's candidate pool.

    Valid entries V = finite pool_scores (-inf/NaN = empty slot). Over V:
      pool_score_mean / _p10 / _p50 / _p90      distribution of the mined candidates' dense scores
      band_kept_fraction                       |V and kept| / |V|
      false_negative_suspects                  |{(q, m) in V : s_qm >= positive_q}| / |V|
      false_negative_suspects_per_query        that count divided by Q
      pool_histogram                           (counts [20], edges [21]) = np.histogram(V, 20, range=(-1, 1))

    Args:
      pool_scores: [Q, M] float dense scores of the mined candidates.
      positive_scores: [Q] float, each query's score against its positive.
      kept: [Q, M] bool, the band filter's decision.
    """
    scores = np.asarray(pool_scores, np.float64)
    valid = np.isfinite(scores)
    values = scores[valid]
    out = _percentiles(values, "pool_score")
    num_valid = values.size
    suspects = valid & (np.where(valid, scores, -np.inf) >= np.asarray(positive_scores, np.float64)[:, None])
    out["band_kept_fraction"] = float(np.sum(np.asarray(kept) & valid) / num_valid) if num_valid else float("nan")
    out["false_negative_suspects"] = float(np.sum(suspects) / num_valid) if num_valid else float("nan")
    out["false_negative_suspects_per_query"] = float(np.sum(suspects) / scores.shape[0]) if scores.shape[0] else 0.0
    out["pool_histogram"] = np.histogram(values, bins=20, range=(-1.0, 1.0))
    return out
