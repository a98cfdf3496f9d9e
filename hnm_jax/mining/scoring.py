"""Scores and orders that mining and evaluation share: each query's best positive score (the reference of the
band), the cross-encoder's re-ranking of a retriever's top k (RerankSpec: its depth), and the checked batch sharding
every corpus and query encoding uses. Below `evaluate.py` and `training/`, so the miners never import evaluation.
"""

import dataclasses

import jax
import numpy as np

from hnm_jax import sharding as shardings
from hnm_jax.errors import ConfigError
from hnm_jax.models.pretrained import CrossEncoderModel

RETRIEVE_K = 100  # ranked depth kept per query; metrics use the top 10, per-query ranks go this deep


@dataclasses.dataclass(frozen=True)
class RerankSpec:
    """Whether evaluation re-ranks the retriever's top `rerank_depth` with the cross-encoder (`ce.rerank_depth`;
    0: no re-ranking), through `rerank`, and by what: the CE logit alone (`rerank_weight` 0) or the retriever's
    score + rerank_weight x the query's min-max-scaled CE logits (`interpolate_ce`)."""

    rerank_depth: int
    rerank_weight: float = 0.0

    def __post_init__(self):
        if self.rerank_depth < 0:
            raise ValueError(f"RerankSpec.rerank_depth: must be >= 0 (0: no re-ranking), got {self.rerank_depth}")
        if not self.rerank_weight >= 0.0:
            raise ValueError(f"RerankSpec.rerank_weight: must be >= 0 (0: the CE logit alone), got "
                             f"{self.rerank_weight}")


def best_positive_scores(query_emb: np.ndarray, doc_emb: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """max over each query's relevant docs of q . d: [Q, D], [N, D], [Q, P] -> [Q]."""
    scores = np.einsum("qd,qpd->qp", query_emb, doc_emb[np.maximum(positives, 0)])
    return np.max(np.where(positives >= 0, scores, -np.inf), axis=1)


def rerank_logits(ranked: np.ndarray, query_texts: list[str], doc_texts, cross_encoder: CrossEncoderModel,
                  depth: int, batch_size: int, show_progress: bool = False, max_length: int | None = None
                  ) -> np.ndarray:
    """[Q, K] ranked corpus rows (-1 = none) -> [Q, min(K, depth)] CE logits of each query's first `depth` rows
    (-inf where none). Pairs are tokenized at `max_length` (default: the cross-encoder's own max_length)."""
    top = ranked[:, :depth]
    query, column = np.nonzero(top >= 0)
    logits = np.full(top.shape, -np.inf, np.float32)
    logits[query, column] = cross_encoder.score([query_texts[q] for q in query],
                                                [doc_texts[d] for d in top[query, column]], batch_size=batch_size,
                                                max_length=max_length, show_progress=show_progress)
    return logits


def reorder_top(ranked: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[Q, K] ranked rows with the first scores.shape[1] of each row re-ordered by `scores` [Q, k], best first
    (stable: ties keep the retriever's order)."""
    depth = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.concatenate([np.take_along_axis(ranked[:, :depth], order, axis=1), ranked[:, depth:]], axis=1)


def interpolate_ce(scores: np.ndarray, logits: np.ndarray, weight: float) -> np.ndarray:
    """[Q, k] retrieval scores + weight x each query's CE logits [Q, k] min-max scaled to [0, 1] over its finite
    entries (all equal: 0); -inf where the logit is (no candidate). The scaling keeps the CE's order within a query
    and puts its spread on the retriever's scale, whatever the CE's logit range."""
    finite = np.isfinite(logits)
    lo = np.min(np.where(finite, logits, np.inf), axis=1, keepdims=True)
    hi = np.max(np.where(finite, logits, -np.inf), axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # rows without a finite logit: every entry is -inf anyway
        scaled = np.where(hi > lo, (logits - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    return np.where(finite, scores + weight * scaled, -np.inf)


def rerank(ranked: np.ndarray, query_texts: list[str], doc_texts, cross_encoder: CrossEncoderModel, depth: int,
           batch_size: int, show_progress: bool = False, max_length: int | None = None, *,
           retrieval_scores: np.ndarray | None = None, weight: float = 0.0) -> np.ndarray:
    """[Q, K] ranked corpus rows (-1 = none) with the first `depth` of each row re-ordered, best first: by CE logit
    (weight 0), else by `interpolate_ce` of the retriever's [Q, >= depth] `retrieval_scores` and the logits.

    Pairs are tokenized at `max_length` (default: the cross-encoder's own max_length)."""
    logits = rerank_logits(ranked, query_texts, doc_texts, cross_encoder, depth, batch_size, show_progress,
                           max_length)
    if weight > 0:
        if retrieval_scores is None:
            raise ValueError("rerank: weight > 0 interpolates the retriever's scores; pass retrieval_scores")
        scores = retrieval_scores[:, :logits.shape[1]]  # padded with -inf where `ranked` is (-1 rows)
        scores = np.pad(scores, ((0, 0), (0, logits.shape[1] - scores.shape[1])), constant_values=-np.inf)
        logits = interpolate_ce(scores, logits, weight)
    return reorder_top(ranked, logits)


def encoding_sharding(batch_size: int, sharding: jax.sharding.NamedSharding | None = None, *,
                      key: str = "eval.batch_size") -> jax.sharding.NamedSharding:
    """`sharding` (default: a batch sharding over every device), checked to split `batch_size` (the config's `key`)
    evenly (ConfigError naming the key otherwise)."""
    if sharding is None:
        sharding = shardings.batch_sharding(shardings.make_mesh())
    try:
        shardings.check_batch_size(batch_size, sharding.mesh, key=key)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return sharding
