"""The retrieval pipeline shared by evaluation and negative mining: dense, lexical, or both fused.

Per query:
  1. candidates: top-n rows of each source the mode uses (n = k + P for one source, max(depth, k) + P
     per source for hybrid, P = width of ``exclude``); hybrid takes the union of both lists.
  2. rows in ``exclude`` (known positives) are dropped.
  3. every candidate is scored by every available source: dense = exact dot product against the dense
     index's embeddings, lexical = BM25 (hybrid reuses the one BM25 pass that found its candidates).
  4. fused score: the source's own score (dense / lexical mode) or FUSIONS[spec.fusion] (hybrid).
  5. top-k by (fused desc, row asc), padded with row -1 (lexical mode returns only docs sharing a token
     with the query, so its rows can be short).

Hybrid logits in training use this fusion: the weighted fusion of one query is an affine map of the dense score
plus a per-query multiple of the normalized BM25 score (`fusion_coefficients`, `hybrid_logits`), so a train step
scores each (query, column) pair as the deployed retriever ranks it, on the dense scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from hnm_jax.mining.dense_index import DenseIndex
from hnm_jax.mining.lexical import TOKENIZERS, LexicalIndex, minmax_apply, minmax_range, top_k_rows

MODES = ("dense", "lexical", "hybrid")
QUERY_CHUNK = 1024  # queries processed together (bounds the [chunk, candidates, D] re-scoring memory)


@dataclasses.dataclass(frozen=True)
class RetrieverSpec:
    """How candidates are retrieved and fused.

    mode: "dense" | "lexical" | "hybrid".
    fusion (hybrid only): "weighted" = w_d * minmax(dense) + w_l * minmax(lexical) per query over the
      candidates; "rrf" = sum_s w_s / (rrf_k + rank_s) with rank_s the 1-based rank of the candidate
      among the query's candidates by source s (ties share the best rank).
    depth: candidates taken from each source before fusion (raised to k when smaller).
    lexical_tokens: BM25's tokens (`lexical.tokenize`): "words", or "codes" (adjacent tokens holding a digit are
      also indexed joined, so "HT-Z510" matches "htz510").
    """

    mode: str = "dense"
    fusion: str = "weighted"
    dense_weight: float = 1.0
    lexical_weight: float = 0.3
    rrf_k: int = 60
    depth: int = 100
    lexical_tokens: str = "words"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"RetrieverSpec.mode={self.mode!r} is unknown; expected one of {list(MODES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"RetrieverSpec.fusion={self.fusion!r} is unknown; expected one of {sorted(FUSIONS)}")
        if self.depth < 1:
            raise ValueError(f"RetrieverSpec.depth must be >= 1, got {self.depth}")
        if self.rrf_k < 0:
            raise ValueError(f"RetrieverSpec.rrf_k must be >= 0, got {self.rrf_k}")
        if self.lexical_tokens not in TOKENIZERS:
            raise ValueError(f"RetrieverSpec.lexical_tokens={self.lexical_tokens!r} is unknown; expected one of "
                             f"{list(TOKENIZERS)}")  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class Retrieved:
    """Top-k per query. indices [Q, k] int32 corpus rows (best first, -1 padded); fused / dense /
    lexical [Q, k] float32: the ranking score, the exact dot product, the BM25 score (-inf in padded
    slots; NaN throughout when that source was not available)."""

    indices: np.ndarray
    fused: np.ndarray
    dense: np.ndarray
    lexical: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class FusionCoefficients:
    """The per-query constants of the weighted fusion over each query's candidates: [Q] float64 each.

    dense_lo, dense_span: min and (max - min) of the dense scores of the query's candidates; lexical_lo,
    lexical_span: the same of their BM25 scores (span 0: the source normalizes to 0 for that query).
    """

    dense_lo: np.ndarray
    dense_span: np.ndarray
    lexical_lo: np.ndarray
    lexical_span: np.ndarray

    def take(self, rows: np.ndarray) -> FusionCoefficients:
        return FusionCoefficients(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def fusion_coefficients(dense: np.ndarray, lexical: np.ndarray) -> FusionCoefficients:
    """The weighted fusion's per-query min-max constants over the valid candidates (both scores finite).

    dense, lexical [Q, M] -> FusionCoefficients of [Q] (float64).
    """
    dense, lexical = np.asarray(dense, np.float64), np.asarray(lexical, np.float64)
    valid = np.isfinite(dense) & np.isfinite(lexical)
    return FusionCoefficients(*minmax_range(dense, valid), *minmax_range(lexical, valid))


def fuse_weighted(dense: np.ndarray, lexical: np.ndarray, spec: RetrieverSpec) -> np.ndarray:
    """fused = w_d * minmax(dense) + w_l * minmax(lexical), min-max per row over valid candidates.

    dense, lexical [Q, M]; a candidate is valid when both scores are finite; invalid -> -inf. float64.
    A source with weight 0 is skipped (so fusion with lexical_weight=0 ranks exactly by dense score). The min-max
    constants are `fusion_coefficients(dense, lexical)`, applied by `lexical.minmax_apply`.
    """
    dense, lexical = np.asarray(dense, np.float64), np.asarray(lexical, np.float64)
    valid = np.isfinite(dense) & np.isfinite(lexical)
    c = fusion_coefficients(dense, lexical)
    fused = np.zeros(dense.shape, np.float64)
    if spec.dense_weight != 0:
        fused += spec.dense_weight * minmax_apply(np.where(valid, dense, 0.0), c.dense_lo, c.dense_span)
    if spec.lexical_weight != 0:
        fused += spec.lexical_weight * minmax_apply(np.where(valid, lexical, 0.0), c.lexical_lo, c.lexical_span)
    return np.where(valid, fused, -np.inf)


def hybrid_beta(coefficients: FusionCoefficients, spec: RetrieverSpec) -> np.ndarray:
    """The per-query BM25 weight of `hybrid_logits` on the dense scale: [Q] float32.

        beta_q = (w_l / w_d) * dense_span_q        (dense_span_q = 0: w_l / w_d, as if the span were 1)

    For a candidate of query q inside the retriever's ranges, the weighted fusion f = w_d * (s - dense_lo) /
    dense_span + w_l * minmax(l) gives dense_lo + (dense_span / w_d) * f = s + beta_q * minmax(l): the training
    score is a per-query increasing affine map of the deployed fused score. Needs w_d > 0.
    """
    if spec.dense_weight <= 0:
        raise ValueError(f"hybrid_beta: the training form needs retriever.dense_weight > 0, got {spec.dense_weight}")
    span = np.where(coefficients.dense_span > 0, coefficients.dense_span, 1.0)
    return (spec.lexical_weight / spec.dense_weight * span).astype(np.float32)


def hybrid_logits(dense, lexical, lexical_lo, lexical_span, beta):
    """Hybrid logits of training, the deployed weighted fusion on the dense scale: [B, C] -> [B, C].

        s_qc = dense_qc + beta_q * clip((bm25_qc - lexical_lo_q) / lexical_span_q, 0, 1)

    dense: [B, C] cosines (live, differentiable); lexical: [B, C] raw BM25 of the same pairs (0 for empty columns);
    lexical_lo, lexical_span, beta: [B], the query's `FusionCoefficients` and `hybrid_beta` from the retriever. The
    BM25 term is normalized by `lexical.minmax_apply`, as `fuse_weighted` normalizes it; jit-able (jax in -> jax
    out). For a pair among the retriever's candidates, s = dense_lo + (dense_span / w_d) * fused (see
    `hybrid_beta`), so training ranks a query's candidates as the deployed retriever does.
    """
    return dense + beta[..., None] * minmax_apply(lexical, lexical_lo, lexical_span)


def _competition_rank(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1-based rank per row, descending, ties share the best rank: 1 + #{j valid: x_j > x_i}."""
    key = np.where(valid, x, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    sorted_key = np.take_along_axis(key, order, axis=1)
    pos = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    run_start = np.ones(x.shape, bool)
    run_start[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    first = np.maximum.accumulate(np.where(run_start, pos, 0), axis=1)
    ranks = np.empty(x.shape, np.int64)
    np.put_along_axis(ranks, order, first + 1, axis=1)
    return ranks


def fuse_rrf(dense: np.ndarray, lexical: np.ndarray, spec: RetrieverSpec) -> np.ndarray:
    """Reciprocal rank fusion over the candidates: w_d / (rrf_k + rank_d) + w_l / (rrf_k + rank_l).

    dense, lexical [Q, M]; ranks are 1-based within the row's valid candidates (valid: both scores finite),
    ties share the best rank; invalid -> -inf. float64.
    """
    dense, lexical = np.asarray(dense, np.float64), np.asarray(lexical, np.float64)
    valid = np.isfinite(dense) & np.isfinite(lexical)
    fused = np.zeros(dense.shape, np.float64)
    if spec.dense_weight != 0:
        fused += spec.dense_weight / (spec.rrf_k + _competition_rank(dense, valid))
    if spec.lexical_weight != 0:
        fused += spec.lexical_weight / (spec.rrf_k + _competition_rank(lexical, valid))
    return np.where(valid, fused, -np.inf)


FUSIONS: dict[str, Callable[[np.ndarray, np.ndarray, RetrieverSpec], np.ndarray]] = {
    "weighted": fuse_weighted,
    "rrf": fuse_rrf,
}


def _drop_excluded(candidates: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """Set candidates that appear in their row of ``exclude`` [Q, P] (-1 padded) to -1."""
    if exclude is None or exclude.shape[1] == 0:
        return candidates
    hit = ((candidates[:, :, None] == exclude[:, None, :]) & (exclude[:, None, :] >= 0)).any(axis=2)
    return np.where(hit, -1, candidates)


class Retriever:
    """Dense, lexical or hybrid retrieval over one corpus (rows shared by both indexes)."""

    def __init__(self, spec: RetrieverSpec, dense: DenseIndex | None, lexical: LexicalIndex | None):
        if spec.mode in ("dense", "hybrid") and dense is None:
            raise ValueError(f"retriever mode {spec.mode!r} needs a dense index, got dense=None")
        if spec.mode in ("lexical", "hybrid") and lexical is None:
            raise ValueError(f"retriever mode {spec.mode!r} needs a lexical index, got lexical=None")
        if dense is not None and lexical is not None and len(dense) != len(lexical):
            raise ValueError(
                f"dense index has {len(dense)} docs but lexical index has {len(lexical)}; "
                "both must index the same corpus rows"
            )
        if lexical is not None and lexical.tokens != spec.lexical_tokens:
            raise ValueError(f"the lexical index has {lexical.tokens!r} tokens but retriever.lexical_tokens is "
                             f"{spec.lexical_tokens!r}: build it with tokens={spec.lexical_tokens!r}")  # fmt: skip
        self.spec = spec
        self.dense = dense
        self.lexical = lexical

    def retrieve(
        self,
        query_embeddings: np.ndarray | None,
        query_texts: Sequence[str] | None,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> Retrieved:
        """Top-k corpus rows per query (see the module docstring for the pipeline).

        query_embeddings [Q, D] (dense/hybrid), query_texts length Q (lexical/hybrid); the other input
        is optional and, when given with its index, fills that score column. exclude [Q, P] int corpus
        rows (-1 padded) never returned.
        """
        mode = self.spec.mode
        if mode in ("dense", "hybrid") and query_embeddings is None:
            raise ValueError(f"retriever mode {mode!r} needs query_embeddings")
        if mode in ("lexical", "hybrid") and query_texts is None:
            raise ValueError(f"retriever mode {mode!r} needs query_texts")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        sizes = set()
        if query_embeddings is not None:
            query_embeddings = np.asarray(query_embeddings, np.float32)
            sizes.add(query_embeddings.shape[0])
        if query_texts is not None:
            query_texts = list(query_texts)
            sizes.add(len(query_texts))
        if len(sizes) > 1:
            raise ValueError(f"query_embeddings and query_texts disagree on the number of queries: {sizes}")
        num_q = sizes.pop()
        if exclude is not None:
            exclude = np.asarray(exclude).astype(np.int64)
            if exclude.ndim != 2 or exclude.shape[0] != num_q:
                raise ValueError(f"exclude must be [Q={num_q}, P] (-1 padded), got shape {exclude.shape}")

        parts = []
        for start in range(0, num_q, QUERY_CHUNK):
            sl = slice(start, start + QUERY_CHUNK)
            parts.append(
                self._retrieve_chunk(
                    None if query_embeddings is None else query_embeddings[sl],
                    None if query_texts is None else query_texts[sl],
                    k,
                    None if exclude is None else exclude[sl],
                )
            )
        if not parts:
            empty = np.zeros((0, k), np.float32)
            return Retrieved(np.zeros((0, k), np.int32), empty, empty.copy(), empty.copy())
        return Retrieved(*(np.concatenate(cols, axis=0) for cols in zip(*parts, strict=True)))

    def _hybrid_candidates(self, dense_top: np.ndarray, texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Union of the dense top-n rows [Q, n] and the BM25 top-n per query, with the BM25 score of every
        candidate: (rows [Q, 2n] -1 padded, bm25 [Q, 2n]). One BM25 pass per query serves both."""
        rows = np.full((len(texts), 2 * n), -1, np.int32)
        bm25 = np.full(rows.shape, -np.inf, np.float32)
        for r, text in enumerate(texts):
            scores = self.lexical.scores(text)
            union = np.union1d(dense_top[r], top_k_rows(scores, n)[0])
            union = union[union >= 0]
            rows[r, : union.size] = union
            bm25[r, : union.size] = scores[union]
        return rows, bm25

    def fusion_coefficients(self, query_embeddings: np.ndarray, query_texts: Sequence[str],
                            k: int) -> FusionCoefficients:
        """The per-query constants of this retriever's weighted fusion when it retrieves the top k of each query
        (hybrid mode, no exclusion: what deployment computes); [Q] each. The candidates are those of `retrieve`
        (the union of the dense and BM25 top max(depth, k)), each scored by both sources."""
        if self.spec.mode != "hybrid" or self.spec.fusion != "weighted":
            raise ValueError(f"fusion_coefficients: needs a hybrid retriever with weighted fusion, got mode "
                             f"{self.spec.mode!r}, fusion {self.spec.fusion!r}")
        query_embeddings = np.asarray(query_embeddings, np.float32)
        texts = list(query_texts)
        if len(texts) != query_embeddings.shape[0]:
            raise ValueError(f"{query_embeddings.shape[0]} query embeddings but {len(texts)} query texts")
        parts = []
        for start in range(0, len(texts), QUERY_CHUNK):
            emb, chunk = query_embeddings[start:start + QUERY_CHUNK], texts[start:start + QUERY_CHUNK]
            n = max(self.spec.depth, k)
            candidates, lexical = self._hybrid_candidates(self.dense.search(emb, n)[0], chunk, n)
            valid = candidates >= 0
            dense = np.where(valid, self.dense.score_pairs(emb, candidates), -np.inf)
            parts.append(fusion_coefficients(dense, np.where(valid, lexical, -np.inf)))
        if not parts:
            return FusionCoefficients(*(np.zeros(0, np.float64) for _ in range(4)))
        return FusionCoefficients(*(np.concatenate([getattr(p, f.name) for p in parts])
                                    for f in dataclasses.fields(FusionCoefficients)))

    def _retrieve_chunk(self, emb, texts, k, exclude):
        spec, mode = self.spec, self.spec.mode
        extra = 0 if exclude is None else exclude.shape[1]
        use_dense = self.dense is not None and emb is not None
        use_lexical = self.lexical is not None and texts is not None

        own_scores = None
        if mode == "dense":
            candidates, own_scores = self.dense.search(emb, k + extra)
        elif mode == "lexical":
            candidates, own_scores = self.lexical.search(texts, k + extra)
        else:
            n = max(spec.depth, k) + extra
            candidates, lexical = self._hybrid_candidates(self.dense.search(emb, n)[0], texts, n)
        candidates = _drop_excluded(candidates, exclude)
        valid = candidates >= 0

        nan = np.full(candidates.shape, np.nan, np.float32)
        if mode == "dense":
            dense = np.where(valid, own_scores, -np.inf).astype(np.float32)
        else:
            dense = self.dense.score_pairs(emb, candidates) if use_dense else nan
        if mode == "lexical":
            lexical = np.where(valid, own_scores, -np.inf).astype(np.float32)
        elif mode == "hybrid":
            lexical = np.where(valid, lexical, -np.inf).astype(np.float32)
        else:
            lexical = self.lexical.score_pairs(texts, candidates) if use_lexical else nan

        if mode == "dense":
            fused = dense.astype(np.float64)
        elif mode == "lexical":
            fused = lexical.astype(np.float64)
        else:
            fused = FUSIONS[spec.fusion](dense, lexical, spec)
        fused = np.where(valid, fused, -np.inf)

        # candidates has >= k columns in every mode, so no padding is needed after the cut
        key_i = np.where(valid, candidates, np.iinfo(np.int32).max)
        order = np.lexsort((key_i, -fused), axis=-1)[:, :k]
        take = lambda x: np.take_along_axis(x, order, axis=1)
        out = [take(np.where(valid, candidates, -1)).astype(np.int32)]
        out += [take(fused).astype(np.float32), take(dense), take(lexical)]
        return out
