"""`hnm mine`: hard negatives from the project's live mining pipeline, written for other trainers.

The pipeline is the training refresh's (`mining/pipeline.py`), run once: encode the corpus and the split's queries,
`build_retriever` (`mining.retriever`, "" = the deployed `retriever.mode`: dense, BM25 or hybrid; `index.*` as in
training), `mine_pool` (known positives and their exact-text twins removed; with a cross-encoder, its stage:
the `ce.*` rules' `ce_filter` on its logits, as a refresh whose gate is open), then a pool strategy
(`hardest`, `band` at the curriculum's final band, `uniform`) picks N negatives. The band is a filter here, as
`mining.band_refill` aside: an exported band negative always lies inside the band.

One row per (query, labelled positive) of the split, in qrels order:

    query, positive, negative_1 .. negative_N      texts
    score                                          `scores="list"` (default): [positive, negative_1 .. negative_N],
                                                   the CE logits when a cross-encoder is given, else the dense cosine
    positive_score, negative_i_score               `scores="columns"`: dense cosine of (query, text)
    positive_ce_score, negative_i_ce_score         `scores="columns"` with a cross-encoder: CE logits

The default layout is what the sentence-transformers trainer reads directly: its data collator tokenizes every
column except one named "label" or "score" (the label: ignored by MultipleNegativesRankingLoss, the teacher scores
of MarginMSELoss / DistillKLDivLoss). `columns` is for reading and for other trainers (for sentence-transformers,
`dataset.select_columns` the texts first). Rows with fewer than N negatives (a narrow band, a small pool, a
strict CE filter) are left out unless `keep_incomplete` (empty slots: null text, null scores). A score the
pipeline did not compute (beyond `ce.rescore_top`) is null.
"""

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hnm_jax.atomic_write import atomic_path
from hnm_jax.config import ConfigError, ExperimentSpec
from hnm_jax.data.batches import canonical_rows
from hnm_jax.data.beir import Split, Texts
from hnm_jax.data.tokenize import tokenize_texts
from hnm_jax.mining.negatives import NEGATIVE_STRATEGIES, Candidates, SelectSpec, needs_pool
from hnm_jax.mining.pipeline import CEStage, PairScorer, build_retriever, mine_pool
from hnm_jax.mining.schedules import band_at
from hnm_jax.mining.scoring import encoding_sharding
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")
SCORE_LAYOUTS = ("list", "columns", "none")  # see the module docstring
DEFAULT_STRATEGY = "hardest"  # when the config mines no pool (e.g. configs/base.py: random negatives)
DEFAULT_NUM_NEGATIVES = 5


def mining_spec(spec: ExperimentSpec, *, strategy: str | None = None, num_negatives: int | None = None,
                pool_size: int | None = None, retriever: str | None = None) -> ExperimentSpec:
    """`spec` set up to mine once: the arguments given replace mining.strategy / num_negatives / pool_size /
    retriever; the others come from a config that mines a pool (mining.pool != "none"), else `hardest` with
    DEFAULT_NUM_NEGATIVES. The pool is "offline" (mined once) and the band the curriculum's final band.
    Raises ConfigError naming the key."""
    mines = spec.mining.pool != "none"
    strategy = strategy or (spec.mining.strategy if mines else DEFAULT_STRATEGY)
    if num_negatives is None:
        num_negatives = spec.mining.num_negatives if mines else DEFAULT_NUM_NEGATIVES
    if strategy in NEGATIVE_STRATEGIES and not needs_pool(strategy):
        valid = ", ".join(name for name in NEGATIVE_STRATEGIES if needs_pool(name))
        raise ConfigError(f"mining.strategy: {strategy!r} does not pick mined negatives; valid here: {valid}")
    mining = dataclasses.replace(spec.mining, strategy=strategy, num_negatives=num_negatives, pool="offline",
                                 pool_size=spec.mining.pool_size if pool_size is None else pool_size,
                                 retriever=spec.mining.retriever if retriever is None else retriever)
    return dataclasses.replace(spec, mining=mining, band=spec.band.for_run(1))


def final_band(spec: ExperimentSpec) -> tuple[float, float]:
    """The band (lo, hi) at the end of the curriculum (the whole band when there is none)."""
    band = spec.band.for_run(1)
    lo, hi = band_at(band.curriculum_steps, band)
    return float(lo), float(hi)


def mine_to_rows(spec: ExperimentSpec, encoder: Encoder, corpus: Texts, queries: Texts, split: Split, *,
                 cross_encoder: CrossEncoderModel | None = None, scores: str = "list", keep_incomplete: bool = False,
                 sharding=None, cache_dir: Path | None = None, show_progress: bool = True) -> list[dict[str, Any]]:
    """Mines negatives for every (query, labelled positive) pair of `split`; the rows of the module docstring.

    spec: a validated ExperimentSpec (see `mining_spec`): mining.strategy (a pool strategy), num_negatives,
      pool_size, sampling, retriever; band.* (the final band); retriever.*; index.*; data.query_max_length and
      data.doc_max_length (0: measured on the data), eval.batch_size (encoding), ce.* (with `cross_encoder`), seed.
    corpus, queries, split: as `data.beir.load_beir` gives them.
    cross_encoder: scores the pool and drops likely false negatives (`ce_filter`); None: no filter.
    scores: one of SCORE_LAYOUTS. keep_incomplete: keep rows with fewer than N negatives (null slots).
    sharding: batch NamedSharding for encoding (default: every device). cache_dir: token cache (and where
      corpus tokens over data.memory_budget_mb stream to).
    """
    if scores not in SCORE_LAYOUTS:
        raise ValueError(f"scores={scores!r}: expected one of {', '.join(SCORE_LAYOUTS)}")
    strategy = spec.mining.strategy
    if not needs_pool(strategy):
        raise ConfigError(f"mining.strategy: {strategy!r} does not pick mined negatives (see mining_spec)")
    auto_ce = cross_encoder is not None and not spec.ce.source.max_length
    if not (spec.data.query_max_length and spec.data.doc_max_length) or auto_ce:
        from hnm_jax.data.lengths import resolve_lengths

        spec = resolve_lengths(spec, encoder.tokenizer, corpus.texts, queries.texts)[0]
    sharding = encoding_sharding(spec.eval.batch_size, sharding)

    query_texts = [queries.texts[r] for r in split.query_rows]
    budget = spec.data.memory_budget_bytes if cache_dir is not None else None
    doc_tokens = tokenize_texts(encoder.tokenizer, corpus.texts, spec.data.doc_max_length, cache_dir=cache_dir,
                                memory_budget_bytes=budget)
    query_tokens = tokenize_texts(encoder.tokenizer, query_texts, spec.data.query_max_length, cache_dir=cache_dir)
    encode = dict(batch_size=spec.eval.batch_size, sharding=sharding, show_progress=show_progress)
    doc_emb = encoder.encode_tokens(doc_tokens, **encode)
    query_emb = encoder.encode_tokens(query_tokens, **encode)

    # The training refresh's pipeline; the dense index is built in every mode so each row carries dense cosines.
    retriever = build_retriever(spec.mining_retriever, doc_emb, corpus.texts, index=spec.index)
    positives = split.positives
    ce = None
    if cross_encoder is not None:  # the CE stage of a refresh with an open gate, its filter always on
        scorer = PairScorer((cross_encoder,), None, query_texts, corpus.texts, spec.eval.batch_size,
                            spec.ce.source.max_length)
        ce = CEStage(scorer, spec.ce.mining.rules, spec.ce.mining.rescore_top, show_progress=show_progress)
    mined = mine_pool(retriever, query_emb, query_texts, positives, doc_emb, canonical_rows(corpus.texts),
                      spec.mining.pool_size, ce=ce)
    pool, ce_cache = mined.pool, ({} if ce is None else ce.scorer.cache)
    if ce is not None:
        log.info("cross-encoder filter: %d candidates kept, %d removed by ce.threshold, %d by ce.margin",
                 mined.counts["kept"], mined.counts["removed_threshold"], mined.counts["removed_margin"])

    pair_query, pair_column = np.nonzero(positives >= 0)  # one row per (query, positive), queries in split order
    pair_positive = positives[pair_query, pair_column]
    candidates = Candidates(positives=positives[pair_query], num_docs=len(corpus), pool=pool.take(pair_query),
                            band=final_band(spec), band_mode=spec.band.mode)
    # no refill: an exported band negative lies inside the band (rows short of N are left out or kept incomplete)
    select = SelectSpec(spec.mining.num_negatives, spec.mining.sampling, spec.mining.simans_a, spec.mining.simans_b,
                        refill=False)
    negatives = NEGATIVE_STRATEGIES[strategy](candidates, select, np.random.default_rng(spec.seed))

    dense_positive = np.einsum("rd,rd->r", query_emb[pair_query], doc_emb[pair_positive])
    dense_negative = np.einsum("rd,rnd->rn", query_emb[pair_query], doc_emb[np.maximum(negatives, 0)])
    dense_negative = np.where(negatives >= 0, dense_negative, np.nan)
    complete = np.all(negatives >= 0, axis=1)
    if not complete.all():
        log.warning("%d of %d (query, positive) rows have fewer than %d negatives (pool_size %d, strategy %r%s)%s",
                    int((~complete).sum()), len(complete), negatives.shape[1], spec.mining.pool_size, strategy,
                    f", band {final_band(spec)}" if strategy == "band" else "",
                    ": kept with empty slots" if keep_incomplete else ": left out")

    def number(value: float) -> float | None:
        return None if value is None or np.isnan(value) else round(float(value), 6)

    def ce(q: int, d: int) -> float | None:
        return number(ce_cache.get((q, d), np.nan)) if d >= 0 else None

    rows = []
    for r, (q, p) in enumerate(zip(pair_query.tolist(), pair_positive.tolist(), strict=True)):
        if not (complete[r] or keep_incomplete):
            continue
        docs = negatives[r].tolist()
        row: dict[str, Any] = {"query": query_texts[q], "positive": corpus.texts[p]}
        row.update({f"negative_{i}": corpus.texts[d] if d >= 0 else None for i, d in enumerate(docs, 1)})
        dense = [number(dense_positive[r]), *(number(s) for s in dense_negative[r])]
        if scores == "list":
            row["score"] = [ce(q, d) for d in (p, *docs)] if cross_encoder is not None else dense
        elif scores == "columns":
            row["positive_score"] = dense[0]
            row.update({f"negative_{i}_score": s for i, s in enumerate(dense[1:], 1)})
            if cross_encoder is not None:
                row["positive_ce_score"] = ce(q, p)
                row.update({f"negative_{i}_ce_score": ce(q, d) for i, d in enumerate(docs, 1)})
        rows.append(row)
    return rows


def check_format(fmt: str) -> None:
    """Raises ConfigError unless `fmt` is one of FORMATS and can be written here (parquet needs pyarrow)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("format 'parquet': needs pyarrow (pip install pyarrow), or write jsonl")


def write_rows(rows: list[dict[str, Any]], path: str | Path, fmt: str = "jsonl") -> None:
    """Writes `rows` (dicts with the same keys) to `path` as JSONL (one JSON object a line, UTF-8) or Parquet
    (pyarrow), atomically. Column order is the first row's key order."""
    check_format(fmt)
    with atomic_path(path) as partial:
        if fmt == "jsonl":
            with open(partial, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), partial)
