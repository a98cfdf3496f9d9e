"""Evaluation: ONE `evaluate(spec, encoder, data, split)` for every caller (`hnm eval`, the end of training,
`hnm train-ce`, experiments), every `eval.*`, `index.*`, `data.*` and `ce.*` key honoured.

Encodes the corpus and the split's queries at `eval.max_length` (0: measured on the data, see
`data/lengths.py`), batches of `eval.batch_size`, and retrieves over the whole corpus through the same
`Retriever` that mining uses. Dense search is EXACT (jitted, chunked matmul + top-k over every document) unless
`eval.search = "ann"` asks for ScaNN with the `index.*` settings; the JSON records which ("search").
Every run reports the dense retriever and, whenever BM25 (bm25s) works, the hybrid one ("retrievers"), the
deployed one (`retriever.mode`, then the cross-encoder re-ranking stage when asked) at the top level, and the
1-based rank of each query's first relevant document per retriever ("per_query"), for paired statistics. The
relevant documents are the qrels' and, with `eval.duplicates_relevant`, the unlabelled duplicates a synthetic
benchmark lists for the split's queries (unlabelled_duplicates.tsv: true matches that no qrels holds).
"""

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hnm_jax.atomic_write import write_text
from hnm_jax.config import ConfigError, ExperimentSpec
from hnm_jax.data.beir import Split, Texts, read_split
from hnm_jax.data.synthetic import load_unlabelled_duplicates
from hnm_jax.data.tokenize import tokenize_texts
from hnm_jax.metrics import (
    best_negative_scores,
    first_relevant_rank,
    near_duplicate_collapse,
    near_duplicate_cosines,
    pairwise_accuracy,
    ranking_instability,
    retrieval_metrics,
    score_gap_stats,
)
from hnm_jax.mining.dense_index import MIN_SCANN_DOCS, DenseIndex, scann_params
from hnm_jax.mining.pipeline import at_least_10, build_lexical_index, build_retriever, with_mode
from hnm_jax.mining.retriever import Retrieved
from hnm_jax.mining.scoring import RETRIEVE_K, best_positive_scores, encoding_sharding, rerank
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder

log = logging.getLogger(__name__)

EvalData = tuple[Path | None, Texts, Texts]  # (dataset root or None, corpus, queries), as `data.beir.load_texts` gives


def evaluate(spec: ExperimentSpec, encoder: Encoder, data: EvalData, split: str | Split, *, state=None,
             sharding: jax.sharding.NamedSharding | None = None, cache_dir: Path | None = None,
             reranker: CrossEncoderModel | None = None, show_progress: bool | None = None) -> dict[str, Any]:
    """Metrics of `encoder` (or of `state`, its parameters while training) on `split` over the whole corpus.

    spec: the run's ExperimentSpec; eval.max_length (0: resolved from the data), eval.batch_size, eval.search,
      index.* (ANN only), retriever.* (the deployed mode and the hybrid fusion), data.memory_budget_mb (corpus
      tokens over it stream to `cache_dir`), ce.rerank_depth and ce.max_length (with `reranker`). data.skip_empty
      applies where `data` is read (`data.beir.load_texts`, `load_beir(..., skip_empty=...)`).
    data: (root, corpus, queries); `root/perturbations.tsv` (synthetic benchmark) adds `pairwise_accuracy/<type>`
      for the labelled near-duplicates of each perturbation type; with eval.duplicates_relevant, the pairs of
      `root/unlabelled_duplicates.tsv` count as relevant in the ranking metrics, ranks and score gaps (`relevant_rows`).
      root may be None.
    split: a split name (read from `root`) or a read Split.
    sharding: batch NamedSharding over a 1-D 'data' mesh (default: every device).
    reranker: a cross-encoder re-ranking the deployed retriever's top `ce.rerank_depth` by logit (ce.rerank_weight 0)
      or by retriever score + ce.rerank_weight x min-max-scaled logit (`scoring.interpolate_ce`).
    show_progress: progress bars (default: on process 0).

    Returns the JSON-ready metrics: the deployed pipeline's final-stage ranking metrics at the top level
    (accuracy@k, recall@k, mrr@10, ndcg@10); "stages" ({"retrieve": {...}[, "rerank": {...}]}); "retrievers"
    ({"dense": {...}, "hybrid": {...}[, "lexical": {...}]}: each retrieval's ranking metrics); "per_query"
    ({"query_ids": [...], "rank_<retriever>": [...][, "rank_rerank": [...]]}: 1-based rank of the first relevant
    document within the top RETRIEVE_K, 0 when not retrieved); "duplicates_relevant" (how many unlabelled duplicates
    counted as relevant); the bi-encoder's (dense) score gaps, near-tie
    rate, pairwise accuracy and collapse; with labelled candidates, "per_pair" ({"query_ids", "doc_ids",
    "correct"}: per labelled negative pair, 1 when the query's best positive scores strictly above it); the
    settings used ("retriever", "search", "max_length", "batch_size", "rerank"); and the hardware ("device":
    `device_record`). near_duplicate_cosine is a cosine even when the encoder does not normalize (model.normalize).
    """
    root, corpus, queries = data
    if isinstance(split, str):
        split = read_split(root, split, corpus, queries)
    relevant, num_duplicates = relevant_rows(spec, root, corpus, queries, split)
    show_progress = jax.process_index() == 0 if show_progress is None else show_progress
    if reranker is not None and spec.ce.rerank.rerank_depth < 1:
        raise ConfigError("ce.rerank_depth: must be >= 1 to re-rank with a cross-encoder")
    spec, doc_emb, query_emb = embed_split(spec, encoder, corpus, queries, split, state=state, sharding=sharding,
                                           cache_dir=cache_dir, resolve_ce=reranker is not None,
                                           show_progress=show_progress)
    max_length, batch_size = spec.eval.max_length, spec.eval.batch_size
    query_texts = [queries.texts[i] for i in split.query_rows]

    k = min(RETRIEVE_K, len(corpus))
    deployed = spec.retriever.mode
    # the pipeline's retriever (mining's), its dense index exact unless eval.search = "ann" (built for the dense
    # mode, so a lexical deployed mode does not force it exact); BM25 whenever it imports; then every mode reported
    lexical = build_lexical_index(corpus.texts, required=deployed != "dense", tokens=spec.retriever.lexical_tokens)
    retriever = build_retriever(dataclasses.replace(spec.retriever, mode="dense"), doc_emb, corpus.texts,
                                index=spec.index, exact=spec.eval.search == "exact", lexical=lexical)
    search = search_record(spec, retriever.dense, k)
    modes = dict.fromkeys(["dense", *(["hybrid"] if lexical is not None else []), deployed])
    retrieved: dict[str, Retrieved] = {mode: with_mode(retriever, mode).retrieve(query_emb, query_texts, k=k)
                                       for mode in modes}
    ranked = {mode: at_least_10(r.indices) for mode, r in retrieved.items()}
    retrievers = {mode: retrieval_metrics(rows, relevant) for mode, rows in ranked.items()}
    ranks = {f"rank_{mode}": first_relevant_rank(rows, relevant) for mode, rows in ranked.items()}

    metrics: dict[str, Any] = dict(retrievers[deployed])
    stages = {"retrieve": dict(metrics)}
    if reranker is not None:
        depth = spec.ce.rerank.rerank_depth
        weight = spec.ce.rerank.rerank_weight
        final = rerank(ranked[deployed], query_texts, corpus.texts, reranker, depth, batch_size, show_progress,
                       max_length=spec.ce.source.max_length, retrieval_scores=retrieved[deployed].fused,
                       weight=weight)
        stages["rerank"] = retrieval_metrics(final, relevant)
        metrics.update(stages["rerank"])
        ranks["rank_rerank"] = first_relevant_rank(final, relevant)
        metrics["rerank"] = {"depth": depth, "weight": weight, "max_length": spec.ce.source.max_length,
                             "model": reranker.source}
    metrics.update(stages=stages, retriever=deployed, retrievers=retrievers)

    dense = retrieved["dense"]  # the bi-encoder's own figures, whatever the deployed pipeline
    best_positive = best_positive_scores(query_emb, doc_emb, split.positives)
    metrics.update(score_gap_stats(best_positive, best_negative_scores(dense.indices, dense.dense, relevant)))
    metrics.update(ranking_instability(dense.dense))
    if split.candidates is not None:
        cand = split.candidates
        doc_types = corpus_perturbations(root, corpus) if root is not None else None
        cand_scores = np.sum(query_emb[cand.query] * doc_emb[cand.doc], axis=-1)
        metrics.update(pairwise_accuracy(cand.query, cand_scores, cand.label, best_positive))
        neg = cand.label == 0  # per labelled negative pair, the pairwise_accuracy rule: best positive strictly above
        metrics["per_pair"] = {"query_ids": [queries.ids[split.query_rows[q]] for q in cand.query[neg]],
                               "doc_ids": [corpus.ids[d] for d in cand.doc[neg]],
                               "correct": (best_positive[cand.query[neg]] - cand_scores[neg] > 0).astype(int).tolist()}
        for kind in sorted(set(doc_types[cand.doc]) - {""}) if doc_types is not None else ():
            of_kind = (doc_types[cand.doc] == kind) | (cand.label == 1)
            per_kind = pairwise_accuracy(cand.query[of_kind], cand_scores[of_kind], cand.label[of_kind], best_positive)
            metrics.update({f"{name}/{kind}": value for name, value in per_kind.items()})
        unit = doc_emb if encoder.pooling.normalize else unit_rows(doc_emb)  # cosines, whatever the pooling
        cosines = near_duplicate_cosines(unit, cand.query, cand.doc, cand.label, split.positives)[0]
        metrics.update(near_duplicate_collapse(unit, cand.query, cand.doc, cand.label, split.positives))
    metrics.update(num_queries=len(split), num_docs=len(corpus), split=split.name, search=search,
                   duplicates_relevant=num_duplicates,
                   max_length=max_length, batch_size=batch_size, skipped_docs=corpus.skipped,
                   skipped_queries=queries.skipped, device=device_record())
    metrics["per_query"] = {"query_ids": [queries.ids[r] for r in split.query_rows],
                            **{name: rank.tolist() for name, rank in ranks.items()}}
    if split.candidates is not None:  # per query, for paired statistics (null: no labelled near-duplicate)
        metrics["per_query"]["near_duplicate_cosine"] = [None if np.isnan(c) else round(float(c), 6) for c in cosines]
    return metrics


def embed_split(spec: ExperimentSpec, encoder: Encoder, corpus: Texts, queries: Texts, split: Split, *,
                state=None, sharding: jax.sharding.NamedSharding | None = None, cache_dir: Path | None = None,
                resolve_ce: bool = False, show_progress: bool = False) -> tuple[ExperimentSpec, np.ndarray, np.ndarray]:
    """`evaluate`'s encoding: (spec with eval.max_length resolved, doc_emb [N, D], query_emb [Q, D] of the split's
    queries), at eval.max_length (0: measured on the data) and eval.batch_size; `resolve_ce` also resolves
    ce.max_length (a re-ranker needs it)."""
    if spec.eval.max_length == 0 or (resolve_ce and spec.ce.source.max_length == 0):
        from hnm_jax.data.lengths import resolve_lengths

        resolved = resolve_lengths(spec, encoder.tokenizer, corpus.texts, queries.texts)
        spec = resolved[0] if isinstance(resolved, tuple) else resolved
    sharding = encoding_sharding(spec.eval.batch_size, sharding)
    max_length, batch_size = spec.eval.max_length, spec.eval.batch_size
    query_texts = [queries.texts[i] for i in split.query_rows]
    corpus_tokens = tokenize_texts(encoder.tokenizer, corpus.texts, max_length, cache_dir=cache_dir,
                                   memory_budget_bytes=spec.data.memory_budget_bytes)
    query_tokens = tokenize_texts(encoder.tokenizer, query_texts, max_length, cache_dir=cache_dir)
    encode = dict(batch_size=batch_size, state=state, sharding=sharding, show_progress=show_progress)
    # with a frozen trunk, its hidden states (computed once per text, cached): only the blocks above it run here
    corpus_tokens, query_tokens = (encoder.cache_trunk(tokens, cache_dir=cache_dir, **encode)
                                   for tokens in (corpus_tokens, query_tokens))
    return spec, encoder.encode_tokens(corpus_tokens, **encode), encoder.encode_tokens(query_tokens, **encode)


def relevant_rows(spec: ExperimentSpec, root: Path | None, corpus: Texts, queries: Texts,
                  split: Split) -> tuple[np.ndarray, int]:
    """[Q, P + K] corpus rows relevant to each of `split`'s queries (-1 padded): its qrels positives and, with
    eval.duplicates_relevant, the unlabelled duplicates `root` lists for it (`load_unlabelled_duplicates`); and K's
    count of duplicates (0 without them)."""
    duplicates = (load_unlabelled_duplicates(root, corpus, queries, split)
                  if spec.eval.duplicates_relevant and root is not None else None)
    if duplicates is None:
        return split.positives, 0
    return np.concatenate([split.positives, duplicates], axis=1), int((duplicates >= 0).sum())


def device_record() -> dict[str, Any]:
    """The hardware a run computed on, for its JSON: {"kind": jax.devices()[0].device_kind (e.g. "cpu", "NVIDIA
    H200"), "platform": "cpu" | "gpu" | "tpu", "count": jax.device_count()}. Runs on different hardware differ in
    numerics, so they are not paired."""
    device = jax.devices()[0]
    return {"kind": str(device.device_kind), "platform": str(device.platform), "count": jax.device_count()}


def unit_rows(x: np.ndarray) -> np.ndarray:
    """[N, D] rows scaled to unit L2 norm (all-zero rows stay zero): float32."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def search_record(spec: ExperimentSpec, index: DenseIndex, k: int) -> str | dict[str, Any]:
    """The record of the dense search for the JSON ("search"): "exact" (eval.search = "exact", or "ann" on a
    corpus below index.exact_threshold or ScaNN's minimum, searched exactly all the same), else {"ann": "scann",
    num_leaves, leaves_to_search, training_sample_size, reorder (for a top-k search), dims_per_block,
    anisotropic_threshold}."""
    n = len(index)
    if index.is_exact:
        if spec.eval.search == "ann":
            log.info("eval.search = ann, but %d docs < index.exact_threshold %d (or ScaNN's minimum %d): exact "
                     "search", n, spec.index.exact_threshold, MIN_SCANN_DOCS)
        return "exact"
    return {"ann": "scann", **scann_params(n, spec.index), "reorder": index.reorder(k),
            "dims_per_block": spec.index.dims_per_block, "anisotropic_threshold": spec.index.anisotropic_threshold}


def corpus_perturbations(root: Path, corpus: Texts) -> np.ndarray | None:
    """[N] perturbation type of each corpus row from `root/perturbations.tsv` (synthetic benchmark), or None."""
    from hnm_jax.data.synthetic import PERTURBATIONS_FILE, perturbation_types

    if not (Path(root) / PERTURBATIONS_FILE).is_file():
        return None
    types = perturbation_types(root)
    return np.asarray([types.get(doc_id, "") for doc_id in corpus.ids], dtype=object)


PER_ITEM_KEYS = ("per_pair", "per_query")  # dicts of per-item lists, written one list a line


def dumps_metrics(metrics: Mapping) -> str:
    """JSON with sorted keys and 2-space indents, except that each list of "per_pair" and "per_query" takes one
    line (those two last)."""
    metrics = dict(metrics)
    per_item = {key: metrics.pop(key) for key in PER_ITEM_KEYS if key in metrics}
    text = json.dumps(metrics, indent=2, sort_keys=True)
    for key, lists in per_item.items():
        lines = ",\n".join(f"    {json.dumps(name)}: {json.dumps(values)}" for name, values in lists.items())
        text = (text[:-2] + ",\n" if text != "{}" else "{\n") + f'  "{key}": {{\n{lines}\n  }}\n}}'
    return text + "\n"


def write_metrics(metrics: Mapping, path: Path) -> None:
    """`dumps_metrics` JSON, written atomically."""
    write_text(path, dumps_metrics(metrics))


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
