"""The Miner: host-side mining state of a run (the mining retriever over the corpus and the pool of candidates).

The refresh re-encodes the corpus with the current parameters (jitted, sharded), rebuilds the dense index, mines a
pool per training query, and (with cross-encoders) checks them on the dev split before they filter and guide.
Also here: the dev split of that check (DevSet, load_dev_set), the unlabelled duplicates of a synthetic benchmark
(load_unlabelled_duplicates), the run's Miner with its tokens (make_miner) and whether a run cross-fits its
cross-encoders (cross_fitted).
"""

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hnm_jax.config import ExperimentSpec
from hnm_jax.data import batches
from hnm_jax.data.beir import Split, Texts, list_splits, read_split
from hnm_jax.data.tokenize import TokenizedTexts, tokenize_texts
from hnm_jax.evaluate import RETRIEVE_K, best_positive_scores, rerank
from hnm_jax.metrics import pool_statistics, retrieval_metrics
from hnm_jax.mining.dense_index import DenseIndex
from hnm_jax.mining.lexical import LexicalIndex
from hnm_jax.mining.negatives import Candidates, Pool, ce_filter, dropped_share, guide_mask, mine_pool
from hnm_jax.mining.retriever import Retriever
from hnm_jax.mining.schedules import band_at, band_mask
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder

log = logging.getLogger(__name__)

DEV_SPLIT = "dev"  # the split the cross-encoder must do well on before it may filter (see Miner.apply_cross_encoder)


@dataclasses.dataclass(frozen=True)
class DevSet:
    """The dev split the cross-encoder gate measures on: qrels (+ labelled candidates), query texts and tokens."""

    split: Split
    query_texts: list[str]
    query_tokens: TokenizedTexts


def load_dev_set(spec: ExperimentSpec, root: Path, corpus: Texts, queries: Texts, tokenizer: Any,
                 cache_dir: Path | None = None) -> DevSet | None:
    """The `DEV_SPLIT` of the dataset (queries tokenized like the training queries), or None when it has none."""
    if DEV_SPLIT not in list_splits(root) or spec.data.train_split == DEV_SPLIT:
        return None
    split = read_split(root, DEV_SPLIT, corpus, queries)
    texts = [queries.texts[r] for r in split.query_rows]
    return DevSet(split, texts, tokenize_texts(tokenizer, texts, spec.data.query_max_length, cache_dir=cache_dir))


def load_unlabelled_duplicates(root: Path, corpus: Texts, queries: Texts, split: Split) -> np.ndarray | None:
    """[Q, K] corpus rows of the unlabelled duplicates of each of `split`'s queries (K >= 1, -1 padded), from
    `root`/unlabelled_duplicates.tsv (`hnm_jax.data.synthetic.read_unlabelled_duplicates`); None when the dataset
    lists none. Rows naming a query outside the split or a document outside the corpus are ignored."""
    from hnm_jax.data.synthetic import read_unlabelled_duplicates

    pairs = read_unlabelled_duplicates(root)
    if not pairs:
        return None
    split_row = {int(query_row): q for q, query_row in enumerate(split.query_rows)}
    by_query: dict[int, list[int]] = {}
    for query_id, doc_id in pairs:
        q = split_row.get(queries.index.get(query_id, -1))
        if q is not None and doc_id in corpus.index:
            by_query.setdefault(q, []).append(corpus.index[doc_id])
    out = np.full((len(split), max(map(len, by_query.values()), default=1)), -1, np.int32)
    for q, docs in by_query.items():
        out[q, :len(docs)] = docs
    return out


class Miner:
    """Host-side mining state of a run: the mining retriever over the corpus and the pool of candidates.

    refresh(): re-encode the corpus with the current parameters (jitted, sharded), rebuild the dense index,
    and mine a pool of `pool_size` candidates per training query with the mining retriever (`mining.retriever`,
    "" = the deployed `retriever.mode`: BM25 + dense, fused, as configured), known positives and exact-text twins
    removed. candidates(): this step's candidates; with an online pool the batch's queries are re-encoded with the
    current parameters and re-queried against the index.

    With cross-encoders (`use_cross_encoders`, called by the cross-encoder phase), each refresh first checks them
    on the dev split (`check_cross_encoders`), then scores the first `ce.rescore_top` pool entries (0: all) and
    the labelled positives of every query, each query by its own CE (`scorer`: with cross-fitting the CE trained
    on the other half of the queries; scores cached per (query, doc) pair for the run), and `ce_filter` drops the
    likely positives (when `ce.filter`); the per-step re-queried pools are filtered on the cached scores.
    `guide()` gives the loss a mask of batch columns the CE calls likely positives.
    """

    def __init__(self, spec: ExperimentSpec, encoder: Encoder, corpus: Texts, query_texts: list[str],
                 split: Split, query_tokens: TokenizedTexts, doc_tokens: TokenizedTexts, canonical: np.ndarray,
                 batch_sharding: jax.sharding.NamedSharding):
        self.spec, self.encoder, self.split, self.canonical = spec, encoder, split, canonical
        self.query_texts = query_texts  # texts of the split's queries, in split order
        self.query_tokens = query_tokens  # tokens of the split's queries, in split order
        self.doc_tokens, self.batch_sharding = doc_tokens, batch_sharding
        self.num_docs = len(corpus)
        self.doc_texts = corpus.texts
        mines_lexically = spec.mining.pool != "none" and spec.mining_retriever.mode in ("lexical", "hybrid")
        needs_lexical = mines_lexically or spec.loss.hybrid_logits  # BM25 for mining and/or hybrid logits
        self.lexical = LexicalIndex.build(list(corpus.texts)) if needs_lexical else None
        self.retriever: Retriever | None = None
        self.fusion: Retriever | None = None  # hybrid logits: the deployed fusion (retriever.*, mode hybrid)
        self.pool: Pool | None = None
        self.doc_emb: np.ndarray | None = None
        self.pool_step = -1  # step at which the pool was mined
        self.ces: tuple[CrossEncoderModel, ...] = ()  # the run's cross-encoders (two when cross-fitted)
        self.scorer: np.ndarray | None = None  # [Q] index into `ces` of the CE that scores each query's pairs
        self.ce_scores: dict[tuple[int, int], float] = {}  # (split row, corpus row) -> CE logit (by its scorer)
        self.ce_positive: np.ndarray | None = None  # [Q] CE logit of each query and its best labelled positive
        self.ce_filter_on = True  # the last dev check let the CEs filter and guide (`check_cross_encoders`)
        self.dev: DevSet | None = None  # the split of that check (None: no check, the CEs filter)
        # [Q, K] corpus rows of each query's unlabelled duplicates, -1 padded (`load_unlabelled_duplicates`); None:
        # the dataset lists none. With them, each refresh whose CE filter runs counts those in and out of the pool.
        self.duplicates: np.ndarray | None = None
        self._dev_dropped: dict[int, float] = {}  # CE index -> share of dev negatives its rules drop (fixed)
        self._warned_no_dev = False

    @property
    def enabled(self) -> bool:
        return self.spec.mining.pool != "none"

    def due(self, step: int, steps_per_epoch: int) -> bool:
        """Whether the pool must be (re)mined before `step`."""
        if not self.enabled:
            return False
        if self.pool is None:
            return True
        period = steps_per_epoch * self.spec.mining.refresh_every_epochs
        return self.spec.mining.pool == "online" and step % period == 0 and self.pool_step < step

    def _encode(self, tokens: TokenizedTexts, params, show_progress: bool = False) -> np.ndarray:
        return self.encoder.encode_tokens(tokens, batch_size=self.spec.train.batch_size, state=params,
                                          sharding=self.batch_sharding, show_progress=show_progress)

    def _build_retriever(self, doc_emb: np.ndarray) -> None:
        """The mining retriever (`ExperimentSpec.mining_retriever`) over this refresh's corpus embeddings. Lexical
        mining gets an exact dense index too, so its pool carries the dense scores the band and strategies read.
        With hybrid logits also `fusion`: the deployed hybrid fusion (retriever.* in mode hybrid) over a dense
        index searched as evaluation searches it (exact unless eval.search = ann)."""
        retriever, index = self.spec.mining_retriever, self.spec.index
        if retriever.mode == "lexical":  # the index only scores BM25's candidates: exact, never ScaNN
            index = dataclasses.replace(index, exact_threshold=doc_emb.shape[0] + 1)
        self.doc_emb = doc_emb
        dense = DenseIndex.build(doc_emb, index)
        self.retriever = Retriever(retriever, dense, self.lexical)
        if self.spec.loss.hybrid_logits:
            if not dense.is_exact and self.spec.eval.search == "exact":
                dense = DenseIndex.build(doc_emb, dataclasses.replace(index, exact_threshold=doc_emb.shape[0] + 1))
            self.fusion = Retriever(dataclasses.replace(self.spec.retriever, mode="hybrid"), dense, self.lexical)

    def _mine(self, query_emb: np.ndarray, rows: np.ndarray) -> Pool:
        positives = self.split.positives[rows]
        fusion = None if self.fusion is None else (self.fusion, min(RETRIEVE_K, self.num_docs))
        return mine_pool(self.retriever, query_emb, [self.query_texts[r] for r in rows], positives,
                         best_positive_scores(query_emb, self.doc_emb, positives), self.canonical,
                         self.spec.mining.pool_size, fusion=fusion)

    def refresh(self, params, step: int) -> dict[str, float]:
        """Re-encodes, rebuilds and re-mines; returns timings and pool statistics."""
        t0 = time.perf_counter()
        doc_emb = self._encode(self.doc_tokens, params, show_progress=jax.process_index() == 0)
        query_emb = self._encode(self.query_tokens, params)
        t1 = time.perf_counter()
        self._build_retriever(doc_emb)
        t2 = time.perf_counter()
        self.pool = self._mine(query_emb, np.arange(len(self.split)))
        t3 = time.perf_counter()
        self.pool_step = step
        stats = {"encode_s": t1 - t0, "build_s": t2 - t1, "search_s": t3 - t2}
        if self.ces:
            stats.update(self.apply_cross_encoder(params))
        stats["total_s"] = time.perf_counter() - t0
        kept = np.asarray(band_mask(self.pool.dense, self.pool.positive, band_at(step, self.spec.band),
                                    self.spec.band.mode)) & (self.pool.indices >= 0)
        stats.update({k: v for k, v in pool_statistics(self.pool.dense, self.pool.positive, kept).items()
                      if isinstance(v, float)})
        return stats

    def use_cross_encoders(self, ces: list[CrossEncoderModel], scorer: np.ndarray | None = None) -> None:
        """Hands the miner its cross-encoders. scorer [Q]: index into `ces` of the CE that scores each training
        query's pairs (cross-fitting: the CE that did not train on the query); None: ces[0] scores every query."""
        scorer = np.zeros(len(self.split), np.int32) if scorer is None else np.asarray(scorer, np.int32)
        if not ces or scorer.shape != (len(self.split),) or scorer.min() < 0 or scorer.max() >= len(ces):
            raise ValueError(f"use_cross_encoders: {len(ces)} CEs need a scorer [{len(self.split)}] of indices in "
                             f"[0, {len(ces)}), got shape {scorer.shape}")
        self.ces, self.scorer = tuple(ces), scorer
        self._dev_dropped = {}

    def _score_pairs(self, pairs: list[tuple[int, int]]) -> None:
        """CE-scores the (split row, corpus row) pairs not cached yet, each by the CE `scorer` assigns its query."""
        new = [pair for pair in dict.fromkeys(pairs) if pair not in self.ce_scores]
        by = self.scorer[np.asarray([q for q, _ in new], np.int64)] if new else np.zeros(0, np.int32)
        for index, ce in enumerate(self.ces):
            group = [pair for pair, k in zip(new, by, strict=True) if k == index]
            if group:
                logits = ce.score([self.query_texts[q] for q, _ in group], [self.doc_texts[d] for _, d in group],
                                  batch_size=self.spec.eval.batch_size, max_length=self.spec.ce.max_length,
                                  show_progress=jax.process_index() == 0)
                self.ce_scores.update(zip(group, logits.tolist(), strict=True))

    def cached_ce(self, rows: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """[R, C] cached CE logits of (split row rows[i], corpus row docs[i, j]); NaN = not scored or doc -1."""
        get = self.ce_scores.get
        return np.asarray([[get((int(r), int(d)), np.nan) for d in row] for r, row in zip(rows, docs, strict=True)],
                          np.float32).reshape(docs.shape)

    def _filter(self, pool: Pool, rows: np.ndarray) -> tuple[Pool, dict[str, int]]:
        """`ce_filter` of a pool on the cached scores; the pool unfiltered, with its `ce` column, when not
        ce.filter (counts still computed) or when the dev check turned the CEs off (no counts)."""
        scores = self.cached_ce(rows, pool.indices)
        unfiltered = dataclasses.replace(pool, ce=np.where(pool.indices >= 0, scores, -np.inf).astype(np.float32))
        if not self.ce_filter_on:
            return unfiltered, {}
        filtered, counts = ce_filter(pool, scores, self.ce_positive[rows], self.spec.ce.filter_spec())
        return (filtered if self.spec.ce.filter else unfiltered), counts

    def _count_duplicates(self, indices: np.ndarray, rows: np.ndarray) -> int:
        """How many entries of pool `indices` [R, M] (of split rows `rows`) are their query's unlabelled duplicate."""
        duplicates = self.duplicates[rows][:, None, :]  # [R, 1, K]
        return int(((indices[:, :, None] == duplicates) & (duplicates >= 0)).any(axis=2).sum())

    def apply_cross_encoder(self, params) -> dict[str, float]:
        """The dev check (`check_cross_encoders`, with the bi-encoder at `params`); when it passes, CE scores of the
        pool's first `ce.rescore_top` entries (0: all) and of every query's positives, then `ce_filter`. Returns
        the check's figures, the filter's counts and the time taken; with `duplicates` (a synthetic benchmark's
        unlabelled duplicates: true matches no qrels lists), when the filter ran (`ce.filter`, the check passed),
        also `pool_unlabelled_duplicates` (pool entries before the filter that are their query's unlabelled
        duplicate) and `ce_removed_unlabelled_duplicates` (those the filter dropped).

        When the check fails, nothing is scored or dropped: the pool keeps every candidate (its `ce` column from
        the cache, NaN where unscored) and `guide()` masks nothing, until a later refresh passes the check.
        """
        t0 = time.perf_counter()
        stats = self.check_cross_encoders(params)
        rows = np.arange(len(self.split))
        positives = self.split.positives
        if self.ce_filter_on:
            top = self.pool.indices[:, :self.spec.ce.rescore_top or None]
            self._score_pairs([(int(r), int(d)) for r in rows for d in (*top[r], *positives[r]) if d >= 0])
        positive = self.cached_ce(rows, positives)
        self.ce_positive = np.where(np.isnan(positive), -np.inf, positive).max(axis=1)
        self.ce_positive[~np.isfinite(self.ce_positive)] = np.nan
        before = self.pool
        self.pool, counts = self._filter(self.pool, rows)
        stats = {**stats, **{f"ce_{k}": float(v) for k, v in counts.items()}}
        if self.duplicates is not None and self.ce_filter_on and self.spec.ce.filter:
            in_pool = self._count_duplicates(before.indices, rows)
            stats["pool_unlabelled_duplicates"] = float(in_pool)
            stats["ce_removed_unlabelled_duplicates"] = float(in_pool - self._count_duplicates(self.pool.indices, rows))
        return {**stats, "ce_s": time.perf_counter() - t0}

    def check_cross_encoders(self, params) -> dict[str, float]:
        """Whether the CEs earn the right to filter: sets `ce_filter_on` and returns the figures behind it.

        On the dev split, the bi-encoder at `params` (with this refresh's corpus index) retrieves each query's top k
        (k = ce.rerank_depth, 10 when 0); `ce_dev_biencoder_acc1` is its accuracy@1 and `ce_dev_rerank_acc1` the
        accuracy@1 after a CE re-ranks that top k. With two cross-fitted CEs EACH must beat the bi-encoder: the
        figure is the lower of the two (`..._fold0`, `..._fold1` give both). `ce_dev_negatives_dropped` is the
        share of the dev split's labelled negatives (candidates label 0) the `ce_filter` rules would drop (mean over
        the CEs). Filtering and guide masking stay on when re-ranking accuracy@1 > the bi-encoder's (or when not
        `ce.require_better`); otherwise they are skipped with one warning naming both figures. A dataset without a
        dev split skips the check (one warning per run) and filters.
        """
        if self.dev is None:
            if not self._warned_no_dev:
                log.warning("the dataset has no %r split: the cross-encoder filters without the dev check", DEV_SPLIT)
                self._warned_no_dev = True
            self.ce_filter_on = True
            return {"ce_filter_on": 1.0}
        t0, dev, depth = time.perf_counter(), self.dev, self.spec.ce.rerank_depth or 10
        query_emb = self._encode(dev.query_tokens, params)
        ranked = self.retriever.retrieve(query_emb, dev.query_texts, k=min(max(depth, 10), self.num_docs)).indices
        ranked = np.pad(ranked, ((0, 0), (0, max(0, 10 - ranked.shape[1]))), constant_values=-1)
        biencoder = retrieval_metrics(ranked, dev.split.positives)["accuracy@1"]
        reranked = [retrieval_metrics(rerank(ranked, dev.query_texts, self.doc_texts, ce, depth,
                                             self.spec.eval.batch_size, max_length=self.spec.ce.max_length or None),
                                      dev.split.positives)["accuracy@1"]
                    for ce in self.ces]
        dropped = [self._dev_dropped_share(index) for index in range(len(self.ces))]
        worst = min(reranked)
        self.ce_filter_on = worst > biencoder or not self.spec.ce.require_better
        if not self.ce_filter_on:
            log.warning("cross-encoder filtering and guide masking skipped: its dev re-ranking accuracy@1 %.4f%s does "
                        "not beat the bi-encoder's dev accuracy@1 %.4f", worst,
                        f" (the lower of {len(self.ces)} cross-fitted CEs)" if len(self.ces) > 1 else "", biencoder)
        stats = {"ce_dev_rerank_acc1": worst, "ce_dev_biencoder_acc1": biencoder,
                 "ce_filter_on": float(self.ce_filter_on)}
        if not np.isnan(dropped).all():
            stats["ce_dev_negatives_dropped"] = float(np.nanmean(dropped))
        if len(self.ces) > 1:
            stats.update({f"ce_dev_rerank_acc1_fold{k}": value for k, value in enumerate(reranked)})
            stats.update({f"ce_dev_negatives_dropped_fold{k}": value for k, value in enumerate(dropped)
                          if not np.isnan(value)})
        stats["ce_dev_s"] = time.perf_counter() - t0
        return stats

    def _dev_dropped_share(self, index: int) -> float:
        """`dropped_share` of CE `index` on the dev split's labelled candidates (NaN without any); cached per CE."""
        if index not in self._dev_dropped:
            split, texts = self.dev.split, self.dev.query_texts
            candidates = split.candidates
            if candidates is None or not np.any(candidates.label == 0):
                self._dev_dropped[index] = float("nan")
                return self._dev_dropped[index]
            negative = candidates.label == 0
            pos_query, pos_column = np.nonzero(split.positives >= 0)
            query = np.concatenate([candidates.query[negative], pos_query])
            doc = np.concatenate([candidates.doc[negative], split.positives[pos_query, pos_column]])
            logits = self.ces[index].score([texts[q] for q in query], [self.doc_texts[d] for d in doc],
                                           batch_size=self.spec.eval.batch_size, max_length=self.spec.ce.max_length)
            num_negatives = int(negative.sum())
            positive_ce = np.full(len(split), -np.inf)
            np.maximum.at(positive_ce, pos_query, logits[num_negatives:])
            self._dev_dropped[index] = dropped_share(candidates.query[negative], logits[:num_negatives],
                                                     candidates.label[negative], positive_ce,
                                                     self.spec.ce.filter_spec())
        return self._dev_dropped[index]

    def guide(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """[B, C] bool guide-model mask (`guide_mask`) of the batch's columns (corpus rows, -1 = empty); all True
        while the dev check has the CEs off."""
        if not self.ce_filter_on:
            return np.ones((len(rows), len(columns)), bool)
        scores = self.cached_ce(rows, np.broadcast_to(columns, (len(rows), len(columns))))
        return guide_mask(scores, self.ce_positive[rows], self.spec.ce.filter_spec())

    def restore(self, arrays: dict[str, np.ndarray], pool_step: int, ce_filter_on: bool = True) -> None:
        """Reinstates a checkpointed pool and the corpus embeddings its index was built from (no re-mining), and
        whether the dev check of that refresh let the CEs filter (saved in the checkpoint's position)."""
        self._build_retriever(np.asarray(arrays["doc_emb"]))
        self.pool = Pool(**{k: np.asarray(v) for k, v in arrays.items() if k not in ("doc_emb", "ce_positive")})
        self.pool_step = pool_step
        self.ce_filter_on = bool(ce_filter_on)
        if "ce_positive" in arrays:  # the CE cache of the pool, so per-step filtering needs no re-scoring
            self.ce_positive = np.asarray(arrays["ce_positive"])
            scored = np.argwhere((self.pool.indices >= 0) & np.isfinite(self.pool.ce))
            self.ce_scores.update({(int(q), int(self.pool.indices[q, m])): float(self.pool.ce[q, m])
                                   for q, m in scored})

    def checkpoint_arrays(self) -> dict[str, np.ndarray] | None:
        if self.pool is None:
            return None
        arrays = {**self.pool.arrays(), "doc_emb": self.doc_emb}
        if self.ce_positive is not None:
            arrays["ce_positive"] = self.ce_positive
        return arrays

    @property
    def guided(self) -> bool:
        """Whether this run's mining uses a cross-encoder (filter and/or guide-model masking)."""
        return self.enabled and (self.spec.ce.filter or self.spec.ce.guide_in_batch)

    def template(self, hidden_size: int) -> dict[str, np.ndarray] | None:
        """Shapes of checkpoint_arrays(), for restoring."""
        if not self.enabled:
            return None
        q, m = len(self.split), self.spec.mining.pool_size
        f32 = np.zeros((q, m), np.float32)
        arrays = {"indices": np.zeros((q, m), np.int32), "dense": f32, "lexical": f32, "fused": f32,
                  "positive": np.zeros((q,), np.float32), "doc_emb": np.zeros((self.num_docs, hidden_size), np.float32)}
        if self.guided:
            arrays.update(ce=f32, ce_positive=np.zeros((q,), np.float32))
        if self.spec.loss.hybrid_logits:
            arrays.update({name: np.zeros((q,), np.float32) for name in ("lexical_lo", "lexical_span", "hybrid_beta")})
        return arrays

    def candidates(self, rows: np.ndarray, params, step: int) -> Candidates:
        """The strategy's view of this batch; an online pool is re-queried with fresh query embeddings."""
        pool = None
        if self.enabled:
            if self.spec.mining.pool == "online" and self.pool_step < step:
                query_emb = self._encode(self.query_tokens.subset(rows), params)
                pool = self._mine(query_emb, rows)
                if self.ces:
                    pool = self._filter(pool, rows)[0]
            else:
                pool = self.pool.take(rows)
        band = tuple(float(b) for b in band_at(step, self.spec.band))
        return Candidates(positives=self.split.positives[rows], num_docs=self.num_docs, pool=pool, band=band,
                          band_mode=self.spec.band.mode)

    def reads_params(self) -> bool:
        """Whether `candidates` depends on the parameters of the step it feeds (an online pool re-queries with
        them; a pool not mined yet is mined with them); False: a function of (rows, step) alone."""
        return self.enabled and (self.spec.mining.pool == "online" or self.pool is None)

    def hybrid_columns(self, rows: np.ndarray, columns: np.ndarray, pool: Pool) -> dict[str, np.ndarray]:
        """What a step needs for hybrid logits (`retriever.hybrid_logits`): "lexical" [B, C] raw BM25 of every
        (query, candidate column) pair (0 for empty columns), and the queries' deployed fusion coefficients
        "lexical_lo", "lexical_span", "hybrid_beta" [B] from `pool` (this batch's rows of the pool)."""
        texts = [self.query_texts[r] for r in rows]
        scores = self.lexical.score_pairs(texts, np.broadcast_to(columns, (len(rows), len(columns))))
        scores = np.where(np.isfinite(scores), scores, 0.0).astype(np.float32)
        return {"lexical": scores, "lexical_lo": pool.lexical_lo, "lexical_span": pool.lexical_span,
                "hybrid_beta": pool.hybrid_beta}


def make_miner(spec: ExperimentSpec, workdir: Path, encoder: Encoder, corpus: Texts, queries: Texts, split: Split,
                batch_sharding: jax.sharding.NamedSharding) -> tuple[Miner, TokenizedTexts, TokenizedTexts]:
    """Tokenizes the corpus and the queries (cached in the workdir) and builds the run's Miner over `split`."""
    cache, budget = workdir / "cache", spec.data.memory_budget_bytes
    doc_tokens = tokenize_texts(encoder.tokenizer, corpus.texts, spec.data.doc_max_length, cache_dir=cache,
                                memory_budget_bytes=budget)
    query_tokens = tokenize_texts(encoder.tokenizer, queries.texts, spec.data.query_max_length, cache_dir=cache,
                                  memory_budget_bytes=budget)
    miner = Miner(spec, encoder, corpus, [queries.texts[r] for r in split.query_rows], split,
                  query_tokens.subset(split.query_rows), doc_tokens, batches.canonical_rows(corpus.texts),
                  batch_sharding)
    return miner, query_tokens, doc_tokens


def cross_fitted(spec: ExperimentSpec, miner: Miner) -> bool:
    """Whether the run trains two cross-fitted CEs (`ce.cross_fit`, no given `ce.model`, a CE-guided pool)."""
    return spec.ce.cross_fit and not spec.ce.model and miner.guided
