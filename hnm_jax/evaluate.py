"""Evaluation: encode the corpus and the split's queries, retrieve over the whole corpus, compute metrics.

Retrieval goes through the same `Retriever` that mining uses, so evaluation measures the pipeline a trained
model is deployed with (exact dense top-k by default: a jitted, chunked matmul).
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hnm_jax.data.beir import Split, Texts
from hnm_jax.data.tokenize import tokenize_texts
from hnm_jax.metrics import (
    best_negative_scores,
    near_duplicate_collapse,
    pairwise_accuracy,
    ranking_instability,
    retrieval_metrics,
    score_gap_stats,
)
from hnm_jax.mining.dense_index import DenseIndex
from hnm_jax.mining.retriever import Retriever, RetrieverSpec
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder

RETRIEVE_K = 100  # ranked depth kept per query; metrics use the top 10


def best_positive_scores(query_emb: np.ndarray, doc_emb: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """max over each query's relevant docs of q . d: [Q, D], [N, D], [Q, P] -> [Q]."""
    scores = np.einsum("qd,qpd->qp", query_emb, doc_emb[np.maximum(positives, 0)])
    return np.max(np.where(positives >= 0, scores, -np.inf), axis=1)


def evaluate(encoder: Encoder, corpus: Texts, queries: Texts, split: Split, *, max_length: int, batch_size: int,
             state=None, sharding: jax.sharding.NamedSharding | None = None,
             retriever_spec: RetrieverSpec | None = None, cache_dir: Path | None = None,
             show_progress: bool = True, doc_types: np.ndarray | None = None,
             memory_budget_bytes: int | None = None,
             reranker: tuple[CrossEncoderModel, int] | None = None) -> dict[str, Any]:
    """Metrics of `encoder` (or of `state`, its parameters while training) on `split` over the whole corpus.

    doc_types: [N] str, the perturbation type of each corpus row ("" for none; see `corpus_perturbations`);
    adds `pairwise_accuracy/<type>` for the labelled near-duplicates of each type.
    reranker: (cross-encoder, k): a second stage re-ranks the retriever's top k by CE logit.
    The ranking metrics at the top level are those of the final stage; `stages` holds each stage's
    ({"retrieve": {...}} or {"retrieve": {...}, "rerank": {...}}). The other metrics (score gaps, pairwise
    accuracy, collapse) are the bi-encoder's.
    """
    query_texts = [queries.texts[i] for i in split.query_rows]
    corpus_tokens = tokenize_texts(encoder.tokenizer, corpus.texts, max_length, cache_dir=cache_dir,
                                   memory_budget_bytes=memory_budget_bytes)
    query_tokens = tokenize_texts(encoder.tokenizer, query_texts, max_length, cache_dir=cache_dir)
    encode = dict(batch_size=batch_size, state=state, sharding=sharding, show_progress=show_progress)
    doc_emb = encoder.encode_tokens(corpus_tokens, **encode)
    query_emb = encoder.encode_tokens(query_tokens, **encode)
    retriever_spec = retriever_spec or RetrieverSpec()
    retriever = build_retriever(retriever_spec, doc_emb, corpus.texts)
    retrieved = retriever.retrieve(query_emb, query_texts, k=min(RETRIEVE_K, len(corpus)))
    ranked = retrieved.indices
    if ranked.shape[1] < 10:  # tiny corpora: pad so @10 metrics are defined
        ranked = np.pad(ranked, ((0, 0), (0, 10 - ranked.shape[1])), constant_values=-1)
    metrics = retrieval_metrics(ranked, split.positives)
    stages = {"retrieve": dict(metrics)}
    if reranker is not None:
        cross_encoder, depth = reranker
        ranked = rerank(ranked, query_texts, corpus.texts, cross_encoder, depth, batch_size, show_progress)
        stages["rerank"] = retrieval_metrics(ranked, split.positives)
        metrics.update(stages["rerank"])
    metrics["stages"] = stages
    best_positive = best_positive_scores(query_emb, doc_emb, split.positives)
    if retriever_spec.mode != "lexical":
        best_negative = best_negative_scores(retrieved.indices, retrieved.dense, split.positives)
        metrics.update(score_gap_stats(best_positive, best_negative))
    metrics.update(ranking_instability(retrieved.fused))
    if split.candidates is not None:
        cand = split.candidates
        cand_scores = np.sum(query_emb[cand.query] * doc_emb[cand.doc], axis=-1)
        metrics.update(pairwise_accuracy(cand.query, cand_scores, cand.label, best_positive))
        for kind in sorted(set(doc_types[cand.doc]) - {""}) if doc_types is not None else ():
            of_kind = (doc_types[cand.doc] == kind) | (cand.label == 1)
            per_kind = pairwise_accuracy(cand.query[of_kind], cand_scores[of_kind], cand.label[of_kind], best_positive)
            metrics.update({f"{name}/{kind}": value for name, value in per_kind.items()})
        metrics.update(near_duplicate_collapse(doc_emb, cand.query, cand.doc, cand.label, split.positives))
    metrics["num_queries"] = len(split)
    metrics["num_docs"] = len(corpus)
    return metrics


def rerank(ranked: np.ndarray, query_texts: list[str], doc_texts, cross_encoder: CrossEncoderModel, depth: int,
           batch_size: int, show_progress: bool = False) -> np.ndarray:
    """[Q, K] ranked corpus rows (-1 = none) with the first `depth` of each row re-ordered by CE logit, best first."""
    top = ranked[:, :depth]
    query, column = np.nonzero(top >= 0)
    logits = np.full(top.shape, -np.inf, np.float32)
    logits[query, column] = cross_encoder.score([query_texts[q] for q in query],
                                                [doc_texts[d] for d in top[query, column]], batch_size=batch_size,
                                                show_progress=show_progress)
    order = np.argsort(-logits, axis=1, kind="stable")
    return np.concatenate([np.take_along_axis(top, order, axis=1), ranked[:, depth:]], axis=1)


def corpus_perturbations(root: Path, corpus: Texts) -> np.ndarray | None:
    """[N] perturbation type of each corpus row from `root/perturbations.tsv` (synthetic benchmark), or None."""
    from hnm_jax.data.synthetic import PERTURBATIONS_FILE, perturbation_types

    if not (Path(root) / PERTURBATIONS_FILE).is_file():
        return None
    types = perturbation_types(root)
    return np.asarray([types.get(doc_id, "") for doc_id in corpus.ids], dtype=object)


def build_retriever(spec: RetrieverSpec, doc_emb: np.ndarray, doc_texts) -> Retriever:
    """The deployed retrieval pipeline over one corpus: dense index and/or BM25, as `spec.mode` asks."""
    from hnm_jax.mining.lexical import LexicalIndex

    dense = DenseIndex.build(doc_emb) if spec.mode in ("dense", "hybrid") else None
    lexical = LexicalIndex.build(list(doc_texts)) if spec.mode in ("lexical", "hybrid") else None
    return Retriever(spec, dense, lexical)


def write_metrics(metrics: Mapping, path: Path) -> None:
    """JSON with sorted keys, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


TABLE_METRICS = ("accuracy@1", "accuracy@5", "accuracy@10", "recall@1", "recall@10", "mrr@10", "ndcg@10",
                 "pairwise_accuracy", "gap_mean", "top2_within_eps", "near_duplicate_cosine")


def format_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """A small text table: one row per metric, one column per run."""
    names = list(columns)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'metric':<18}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for metric in TABLE_METRICS:
        if any(metric in columns[n] for n in names):
            cells = "".join(
                f"{columns[n][metric]:>{width + 2}.4f}" if metric in columns[n] else f"{'-':>{width + 2}}"
                for n in names
            )
            lines.append(f"{metric:<18}{cells}")
    return "\n".join(lines)
