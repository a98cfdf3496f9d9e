"""train_and_evaluate(config, workdir): the only place in training with side effects.

Loads data and the pretrained encoder, runs the jitted train step over a 1-D 'data' mesh (the next batch is built
on the host while a step runs, see BatchBuilder), logs on process 0, checkpoints every K steps (rerunning the same
command resumes), stops on a non-finite loss with the step range, and evaluates on the eval split at the end.
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from hnm_jax import sharding
from hnm_jax.ce_train_step import jit_ce_train_step
from hnm_jax.checkpointing import Checkpointer
from hnm_jax.compile_stats import CompileCounter, enable_compilation_cache
from hnm_jax.config import ConfigError, ExperimentSpec, ModelSpec, check_against_data, check_splits, spec_from_config
from hnm_jax.data import batches
from hnm_jax.data.beir import (
    DataError,
    Split,
    Texts,
    list_splits,
    read_corpus,
    read_queries,
    read_split,
    resolve_dataset_path,
)
from hnm_jax.data.lengths import lengths_summary, resolve_lengths
from hnm_jax.data.tokenize import TokenizedTexts, length_buckets, tokenize_texts
from hnm_jax.evaluate import (
    best_positive_scores,
    evaluate,
    format_table,
    rerank,
    write_metrics,
)
from hnm_jax.metric_logging import MetricWriter
from hnm_jax.metrics import pool_statistics, retrieval_metrics
from hnm_jax.mining.dense_index import DenseIndex
from hnm_jax.mining.lexical import LexicalIndex, normalize_per_query
from hnm_jax.mining.negatives import (
    NEGATIVE_STRATEGIES,
    Candidates,
    Pool,
    SelectSpec,
    ce_filter,
    cross_fit_folds,
    dropped_share,
    guide_mask,
    mine_pool,
)
from hnm_jax.mining.retriever import Retriever
from hnm_jax.mining.schedules import band_at, band_mask
from hnm_jax.models.encoder import BertConfig
from hnm_jax.models.pretrained import (
    CrossEncoderModel,
    Encoder,
    load_cross_encoder,
    load_encoder,
    random_cross_encoder,
    random_encoder,
    resolve_model_dir,
)
from hnm_jax.optimizer import learning_rate_schedule, make_optimizer
from hnm_jax.train_step import create_train_state, jit_train_step

log = logging.getLogger(__name__)

TINY_TOKENIZER = "all-MiniLM-L6-v2"  # the tiny random model borrows this tokenizer (packaged, offline)
CE_DIR = "ce"  # <workdir>/ce: the cross-encoder's checkpoints, logs and exported HF folder ("model")
CE_FOLD_DIR = "fold{}"  # cross-fitting: <workdir>/ce/fold0, <workdir>/ce/fold1, each laid out like <workdir>/ce
DEV_SPLIT = "dev"  # the split the cross-encoder must do well on before it may filter (see Miner.apply_cross_encoder)


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; the message names the step range."""


def build_encoder(spec: ModelSpec, seed: int) -> Encoder:
    """The pretrained encoder named by `model.name` (or a tiny random one), with the configured dropout."""
    if spec.name == "tiny":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(TINY_TOKENIZER))
        encoder = random_encoder(BertConfig.tiny(vocab_size=tokenizer.vocab_size), tokenizer, seed=seed,
                                 dtype=jax.numpy.dtype(spec.dtype), attention=spec.attention)
    else:
        encoder = load_encoder(spec.name, dtype=jax.numpy.dtype(spec.dtype), attention=spec.attention)
    return with_dropout(encoder, spec.dropout)


def build_cross_encoder(spec: ExperimentSpec) -> CrossEncoderModel:
    """The cross-encoder to train: `ce.model` if set, else initialised from the bi-encoder's `model.name`."""
    name, max_length = spec.ce.model or spec.model.name, spec.ce.max_length
    if name == "tiny":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(TINY_TOKENIZER))
        model = random_cross_encoder(BertConfig.tiny(vocab_size=tokenizer.vocab_size), tokenizer, seed=spec.seed,
                                     max_length=max_length, dtype=jax.numpy.dtype(spec.model.dtype),
                                     attention=spec.model.attention)
    else:
        model = load_cross_encoder(name, dtype=jax.numpy.dtype(spec.model.dtype), max_length=max_length,
                                   seed=spec.seed, attention=spec.model.attention)
    return with_dropout(model, spec.model.dropout)


def with_dropout(encoder: Encoder | CrossEncoderModel, rate: float) -> Encoder | CrossEncoderModel:
    """The same model with hidden and attention dropout `rate` (used only when a step passes a dropout key)."""
    model = encoder.module()
    for _, module in nnx.iter_modules(model):
        for name in ("hidden_dropout", "attention_dropout"):
            if hasattr(module, name):
                setattr(module, name, rate)
    graphdef, state = nnx.split(model)
    config = dataclasses.replace(encoder.config, hidden_dropout=rate, attention_dropout=rate)
    return dataclasses.replace(encoder, graphdef=graphdef, state=state, config=config)


def load_texts(spec: ExperimentSpec) -> tuple[Path, Texts, Texts]:
    """(dataset root, corpus, queries) of the configured dataset."""
    try:
        root = resolve_dataset_path(name=None if spec.data.path else spec.data.name, path=spec.data.path or None)
    except DataError as error:
        raise ConfigError(f"{'data.path' if spec.data.path else 'data.name'}: {error}") from None
    corpus = read_corpus(root / "corpus.jsonl", skip_empty=spec.data.skip_empty)
    queries = read_queries(root / "queries.jsonl", skip_empty=spec.data.skip_empty)
    return root, corpus, queries


def _finite_or_raise(window: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Fetches the buffered step metrics; raises TrainingDiverged naming the steps if any is not finite."""
    fetched = [(step, jax.device_get(m)) for step, m in window]
    bad = [step for step, m in fetched if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]))]
    if bad:
        raise TrainingDiverged(
            f"non-finite loss or gradient at step {bad[0] + 1} (first bad step among {fetched[0][0] + 1}.."
            f"{fetched[-1][0] + 1}); the last checkpoint before it is kept"
        )
    return fetched


def _save_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    path = workdir / "config.json"
    text = config.to_json(indent=2, sort_keys=True)
    if path.exists() and json.loads(path.read_text()) != json.loads(text):
        log.warning("%s differs from this run's config; resuming with the new config", path)
    partial = path.with_name(path.name + ".tmp")  # write-then-rename: a kill never leaves a truncated file
    partial.write_text(text + "\n")
    os.replace(partial, path)


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


class Miner:
    """Host-side mining state of a run: the deployed retriever over the corpus and the pool of candidates.

    refresh(): re-encode the corpus with the current parameters (jitted, sharded), rebuild the dense index,
    and mine a pool of `pool_size` candidates per training query with the retriever (BM25 + dense, fused, as
    configured), known positives and exact-text twins removed. candidates(): this step's candidates; with an
    online pool the batch's queries are re-encoded with the current parameters and re-queried against the index.

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
        mines_lexically = spec.mining.pool != "none" and spec.retriever.mode in ("lexical", "hybrid")
        needs_lexical = mines_lexically or spec.loss.hybrid_beta > 0  # BM25 for mining and/or hybrid logits
        self.lexical = LexicalIndex.build(list(corpus.texts)) if needs_lexical else None
        self.retriever: Retriever | None = None
        self.pool: Pool | None = None
        self.doc_emb: np.ndarray | None = None
        self.pool_step = -1  # step at which the pool was mined
        self.ces: tuple[CrossEncoderModel, ...] = ()  # the run's cross-encoders (two when cross-fitted)
        self.scorer: np.ndarray | None = None  # [Q] index into `ces` of the CE that scores each query's pairs
        self.ce_scores: dict[tuple[int, int], float] = {}  # (split row, corpus row) -> CE logit (by its scorer)
        self.ce_positive: np.ndarray | None = None  # [Q] CE logit of each query and its best labelled positive
        self.ce_filter_on = True  # the last dev check let the CEs filter and guide (`check_cross_encoders`)
        self.dev: DevSet | None = None  # the split of that check (None: no check, the CEs filter)
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
        dense = DenseIndex.build(doc_emb, self.spec.index) if self.spec.retriever.mode != "lexical" else None
        self.doc_emb = doc_emb
        self.retriever = Retriever(self.spec.retriever, dense, self.lexical)

    def _mine(self, query_emb: np.ndarray, rows: np.ndarray) -> Pool:
        positives = self.split.positives[rows]
        return mine_pool(self.retriever, query_emb, [self.query_texts[r] for r in rows], positives,
                         best_positive_scores(query_emb, self.doc_emb, positives), self.canonical,
                         self.spec.mining.pool_size)

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

    def apply_cross_encoder(self, params) -> dict[str, float]:
        """The dev check (`check_cross_encoders`, with the bi-encoder at `params`); when it passes, CE scores of the
        pool's first `ce.rescore_top` entries (0: all) and of every query's positives, then `ce_filter`. Returns
        the check's figures, the filter's counts and the time taken.

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
        self.pool, counts = self._filter(self.pool, rows)
        return {**stats, **{f"ce_{k}": float(v) for k, v in counts.items()}, "ce_s": time.perf_counter() - t0}

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

    def lexical_columns(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """[B, C] per-query min-max normalized BM25 score of every (query, candidate column) pair."""
        texts = [self.query_texts[r] for r in rows]
        scores = self.lexical.score_pairs(texts, np.broadcast_to(columns, (len(rows), len(columns))))
        normalized = normalize_per_query(scores)
        return np.where(np.isfinite(normalized), normalized, 0.0).astype(np.float32)


@dataclasses.dataclass
class StepInputs:
    """The host-side inputs of one step; `batch` is None until its negatives are drawn (see BatchBuilder)."""

    step: int
    rows: np.ndarray  # [B] split rows of the batch's queries
    pos_doc: np.ndarray  # [B] corpus row of each query's positive
    rng: np.random.Generator  # the step's generator, after drawing the positives
    batch: dict[str, np.ndarray] | None = None  # the global batch (train_step.BATCH_KEYS, + lexical, guide)


class BatchBuilder:
    """Builds each step's global batch on the host, a pure function of (seed, step, params of that step).

    `start(step)` does what no parameters decide: rows, positives and, when the miner's candidates do not read
    the parameters (no pool, or an offline one), the negatives, token arrays and lexical/guide columns too. It
    runs in a background thread while the previous step runs on the device. `finish(inputs, params)` completes
    an online-mined batch with the parameters of the step it feeds: the queries are re-encoded with them and
    re-queried against the index (the only part of mining that waits for the previous step).
    """

    def __init__(self, spec: ExperimentSpec, miner: Miner, query_tokens: TokenizedTexts,
                 doc_tokens: TokenizedTexts, steps_per_epoch: int):
        self.spec, self.miner, self.steps_per_epoch = spec, miner, steps_per_epoch
        self.query_tokens, self.doc_tokens = query_tokens, doc_tokens
        self.strategy = NEGATIVE_STRATEGIES[spec.mining.strategy]
        mining = spec.mining
        self.select = SelectSpec(mining.num_negatives, mining.sampling, mining.simans_a, mining.simans_b)

    def start(self, step: int) -> StepInputs:
        """Rows and positives of `step` (and the whole batch when the miner does not read the parameters)."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        split = self.miner.split
        rng = batches.step_rng(self.spec.seed, epoch, in_epoch)
        rows = batches.batch_rows(self.spec.seed, epoch, in_epoch, len(split), self.spec.train.batch_size)
        inputs = StepInputs(step, rows, batches.sample_positives(split.positives[rows], rng), rng)
        if not self.miner.reads_params():
            self.finish(inputs, params=None)
        return inputs

    def finish(self, inputs: StepInputs, params) -> dict[str, np.ndarray]:
        """The global batch of `inputs`, drawing its negatives with `params` (the state the step will update)."""
        if inputs.batch is None:
            miner, rows, pos_doc = self.miner, inputs.rows, inputs.pos_doc
            neg_doc = self.strategy(miner.candidates(rows, params, inputs.step), self.select, inputs.rng)
            batch = batches.make_batch(rows, miner.split, self.query_tokens, self.doc_tokens, pos_doc, neg_doc,
                                       miner.canonical, buckets=length_buckets(jax.default_backend()))
            columns = np.concatenate([pos_doc, neg_doc.reshape(-1)])
            if self.spec.loss.hybrid_beta > 0:
                batch["lexical"] = miner.lexical_columns(rows, columns)
            if self.spec.ce.guide_in_batch:
                batch["guide"] = miner.guide(rows, columns)
            inputs.batch = batch
        return inputs.batch


def _make_miner(spec: ExperimentSpec, workdir: Path, encoder: Encoder, corpus: Texts, queries: Texts, split: Split,
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


def make_ce_batch(ce: CrossEncoderModel, query_texts: list[str], doc_texts: tuple[str, ...], rows: np.ndarray,
                  pos_doc: np.ndarray, neg_doc: np.ndarray, max_length: int) -> dict[str, np.ndarray]:
    """A cross-encoder batch (see `ce_train_step`): query rows[i] paired with its positive, then its negatives.

    pos_doc [B], neg_doc [B, N] corpus rows (-1 = empty slot) -> input_ids, attention_mask, token_type_ids
    [B, 1+N, max_length] and valid [B, 1+N].
    """
    docs = np.concatenate([pos_doc[:, None], neg_doc], axis=1)
    b, c = docs.shape
    tokens, type_ids = ce.tokenize([query_texts[r] for r in rows for _ in range(c)],
                                   [doc_texts[d] if d >= 0 else "" for d in docs.reshape(-1)], max_length)
    return {"input_ids": tokens.input_ids.reshape(b, c, max_length),
            "attention_mask": tokens.attention_mask().reshape(b, c, max_length),
            "token_type_ids": type_ids.reshape(b, c, max_length), "valid": docs >= 0}


def train_cross_encoder(spec: ExperimentSpec, ce_dir: Path, miner: Miner, mesh: jax.sharding.Mesh,
                        rows: np.ndarray | None = None) -> CrossEncoderModel:
    """Trains a cross-encoder on the positives of the split rows `rows` (None: every query) and negatives drawn
    from those rows' `miner.pool` entries (the first `ce.negatives_top`, 0: all), checkpointing in `ce_dir`
    (<workdir>/ce, or <workdir>/ce/fold<k> when cross-fitted; rerunning resumes); exports the HF folder
    <ce_dir>/model at the end. Loads that folder instead when it exists.
    """
    rows = np.arange(len(miner.split)) if rows is None else np.asarray(rows)
    export_dir = ce_dir / "model"
    if (export_dir / "config.json").is_file():  # the export is renamed into place last: it is complete
        return load_cross_encoder(str(export_dir), max_length=spec.ce.max_length,
                                  dtype=jax.numpy.dtype(spec.model.dtype))
    try:
        sharding.check_batch_size(spec.ce.batch_size, mesh, key="ce.batch_size")
        per_epoch = batches.steps_per_epoch(len(rows), spec.ce.batch_size)
    except ValueError as error:
        raise ConfigError(str(error).replace("train.batch_size", "ce.batch_size")
                          + (" (cross-fitting: each CE trains on half of them)" if len(rows) < len(miner.split)
                             else "")) from None
    model = build_cross_encoder(spec)
    tx = make_optimizer(dataclasses.replace(spec.train, learning_rate=spec.ce.learning_rate), spec.ce.train_steps)
    state = create_train_state(model.graphdef, model.state, tx, spec.seed)
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    state = jax.device_put(state, state_sharding)
    checkpointer = Checkpointer(ce_dir / "checkpoints", keep=1)
    restored = checkpointer.restore(state)
    if restored is not None:
        state = jax.device_put(restored[0], state_sharding)
    step_fn = jit_ce_train_step(tx, spec.ce.loss, spec.model.dropout > 0, state_sharding,
                                sharding.batch_sharding(mesh), rng_impl=spec.model.rng_impl)
    top = spec.ce.negatives_top or miner.pool.indices.shape[1]
    pool = Pool(**{k: v[:, :top] if v.ndim == 2 else v for k, v in miner.pool.arrays().items()})
    select, local_rows = SelectSpec(spec.ce.num_negatives), sharding.process_rows(spec.ce.batch_size)
    split, seed = miner.split, spec.seed + 1  # its own batch order, not the bi-encoder's
    writer, window = MetricWriter(ce_dir), []
    start, total = int(jax.device_get(state.step)), spec.ce.train_steps
    try:
        for step in tqdm(range(start, total), initial=start, total=total, desc="train-ce", unit="step",
                         disable=jax.process_index() != 0):
            epoch, in_epoch = divmod(step, per_epoch)
            rng = batches.step_rng(seed, epoch, in_epoch)
            batch_rows = rows[batches.batch_rows(seed, epoch, in_epoch, len(rows), spec.ce.batch_size)]
            candidates = Candidates(split.positives[batch_rows], miner.num_docs, pool.take(batch_rows),
                                    (-np.inf, np.inf), "absolute")
            neg_doc = NEGATIVE_STRATEGIES["uniform"](candidates, select, rng)
            batch = make_ce_batch(model, miner.query_texts, miner.doc_texts, batch_rows,
                                  batches.sample_positives(split.positives[batch_rows], rng), neg_doc,
                                  spec.ce.max_length)
            state, metrics = step_fn(state, sharding.to_global({k: v[local_rows] for k, v in batch.items()}, mesh))
            window.append((step, metrics))
            done = step + 1
            if done % spec.train.log_every == 0 or done == total:
                fetched = _finite_or_raise(window)
                writer.write(done, {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]},
                             prefix="ce_train/")
                window = []
            if done % spec.train.checkpoint_every == 0 or done == total:
                _finite_or_raise(window)
                checkpointer.save(state, position={"step": done})
    finally:
        checkpointer.close()
        writer.close()
    model = dataclasses.replace(model, state=state.params)
    if jax.process_index() == 0:
        partial = ce_dir / "model.tmp"
        shutil.rmtree(partial, ignore_errors=True)  # left by a kill during an earlier export
        model.export(partial)
        os.replace(partial, export_dir)
    return model


def _cross_encoder_phase(spec: ExperimentSpec, workdir: Path, miner: Miner, params, mesh: jax.sharding.Mesh,
                         writer: MetricWriter) -> CrossEncoderModel | None:
    """The run's cross-encoders (`ce.model`, or trained in <workdir>/ce), handed to the miner when it guides
    mining; returns the one evaluation re-ranks with, None when the config uses none. A missing pool is mined
    first with the current parameters.

    Cross-fitting (`ce.cross_fit`, when the CE is trained here and guides mining): the training queries split in
    two halves (`cross_fit_folds`), a CE trained on each (<workdir>/ce/fold0, fold1), and each scores only the
    other half's pools and batch rows, so no CE judges a query it was trained on. Evaluation re-ranks with the
    fold-0 CE. Otherwise one CE, trained on every query (<workdir>/ce), scores every query.
    """
    if not spec.ce.needed:
        return None
    scorer = None
    if spec.ce.model:
        ces = [build_cross_encoder(spec)]
    else:
        if miner.pool is None:
            writer.write(0, miner.refresh(params, 0), prefix="refresh/")
        if cross_fitted(spec, miner):
            folds = cross_fit_folds(len(miner.split), spec.seed)
            ces = [train_cross_encoder(spec, workdir / CE_DIR / CE_FOLD_DIR.format(k), miner, mesh,
                                       rows=np.flatnonzero(folds == k)) for k in (0, 1)]
            scorer = 1 - folds  # the CE of the other fold
        else:
            ces = [train_cross_encoder(spec, workdir / CE_DIR, miner, mesh)]
    if miner.guided:
        miner.use_cross_encoders(ces, scorer)
        if miner.pool is not None and miner.pool.ce is None:
            writer.write(miner.pool_step, miner.apply_cross_encoder(params), prefix="refresh/")
    return ces[0]


def cross_fitted(spec: ExperimentSpec, miner: Miner) -> bool:
    """Whether the run trains two cross-fitted CEs (`ce.cross_fit`, no given `ce.model`, a CE-guided pool)."""
    return spec.ce.cross_fit and not spec.ce.model and miner.guided


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains as `config` says, checkpointing into `workdir`; returns the eval-split metrics."""
    spec = spec_from_config(config)
    enable_compilation_cache()  # see compile_stats: compiled programs persist across runs
    compiles = CompileCounter().start()
    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)
    root, corpus, queries = load_texts(spec)
    check_splits(spec, list_splits(root))  # before any split, model or token is read
    train_split = read_split(root, spec.data.train_split, corpus, queries)
    check_against_data(spec, train_queries=len(train_split), devices=mesh.size, processes=jax.process_count())
    workdir = Path(workdir)  # a config that fails the checks above leaves no workdir behind
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        _save_config(config, workdir)
    steps_per_epoch = batches.steps_per_epoch(len(train_split), spec.train.batch_size)
    total_steps = spec.train.max_steps or spec.train.num_epochs * steps_per_epoch
    spec = dataclasses.replace(spec, band=spec.band.for_run(total_steps))  # the curriculum spans a share of the run
    encoder = build_encoder(spec.model, spec.seed)
    spec, length_stats = resolve_lengths(spec, encoder.tokenizer, corpus.texts, queries.texts)
    miner, query_tokens, doc_tokens = _make_miner(spec, workdir, encoder, corpus, queries, train_split,
                                                  batch_sharding)
    if miner.guided:  # the split the CEs must do well on before they filter
        miner.dev = load_dev_set(spec, root, corpus, queries, encoder.tokenizer, cache_dir=workdir / "cache")
    tx = make_optimizer(spec.train, total_steps)
    lr_at = learning_rate_schedule(spec.train, total_steps)
    replicated = sharding.replicated(mesh)
    state = create_train_state(encoder.graphdef, encoder.state, tx, spec.seed)
    state_sharding = jax.tree.map(lambda _: replicated, state)
    state = jax.device_put(state, state_sharding)
    checkpointer = Checkpointer(workdir / "checkpoints", keep=spec.train.keep_checkpoints)
    restored = checkpointer.restore(state, miner.template(encoder.config.hidden_size))
    if restored is not None:
        state = jax.device_put(restored[0], state_sharding)
        if restored[2] is not None:
            miner.restore(restored[2], restored[1]["pool_step"], restored[1].get("ce_filter_on", True))
        log.info("resumed from step %d", int(state.step))
    band_in_step = spec.band if spec.mining.band_in_step and spec.mining.strategy == "band" else None
    step_fn = jit_train_step(tx, spec.loss, band_in_step, encoder.pooling, spec.model.dropout > 0, state_sharding,
                             batch_sharding, fault_step=spec.train.inject_nan_at_step, rng_impl=spec.model.rng_impl)
    builder = BatchBuilder(spec, miner, query_tokens, doc_tokens, steps_per_epoch)
    local_rows = sharding.process_rows(spec.train.batch_size)

    writer = MetricWriter(workdir)
    writer.write(0, {**lengths_summary(length_stats), "band/curriculum_steps": float(spec.band.curriculum_steps)},
                 prefix="setup/")
    ce = _cross_encoder_phase(spec, workdir, miner, state.params, mesh, writer)
    window: list[tuple[int, dict]] = []
    start = int(jax.device_get(state.step))
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hnm-batch")  # the next batch's host work
    ahead: Future[StepInputs] | None = None
    logged_at = time.perf_counter()
    try:
        with tqdm(total=total_steps, initial=start, desc="train", unit="step",
                  disable=jax.process_index() != 0) as bar:
            for step in range(start, total_steps):
                epoch, in_epoch = divmod(step, steps_per_epoch)
                if miner.due(step, steps_per_epoch):
                    writer.write(step, miner.refresh(state.params, step), prefix="refresh/")
                    writer.write_histogram(step, "refresh/pool_dense_scores", miner.pool.dense)
                inputs = ahead.result() if ahead is not None else builder.start(step)
                batch = builder.finish(inputs, state.params)
                ahead = prefetch.submit(builder.start, step + 1) if step + 1 < total_steps else None
                local = {k: v[local_rows] for k, v in batch.items()}
                state, metrics = step_fn(state, sharding.to_global(local, mesh))
                window.append((step, metrics))
                done = step + 1
                bar.update(1)
                last = done == total_steps
                if done % spec.train.log_every == 0 or last:
                    fetched = _finite_or_raise(window)
                    means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
                    means["learning_rate"] = float(lr_at(step))
                    means["epoch"] = epoch + in_epoch / steps_per_epoch
                    now = time.perf_counter()  # wall-clock s/step of the window: refresh, compiles, saves included
                    means["step_s"], logged_at = (now - logged_at) / len(fetched), now
                    if miner.enabled:
                        means["index_staleness_steps"] = step - miner.pool_step
                    writer.write(done, means, prefix="train/")
                    bar.set_postfix(loss=f"{means['loss']:.4f}")
                    window = []
                if done % spec.train.checkpoint_every == 0 or last:
                    _finite_or_raise(window)
                    position = {"step": done, "epoch": epoch, "step_in_epoch": in_epoch + 1,
                                "pool_step": miner.pool_step, "ce_filter_on": miner.ce_filter_on}
                    checkpointer.save(state, position=position, pool=miner.checkpoint_arrays())
    finally:
        prefetch.shutdown(cancel_futures=True)
        checkpointer.close()

    metrics = evaluate(spec, encoder, (root, corpus, queries), spec.data.eval_split, state=state.params,
                       sharding=batch_sharding, cache_dir=workdir / "cache",
                       reranker=ce if spec.ce.rerank_depth else None)
    metrics["train_steps"] = total_steps
    if jax.process_index() == 0:
        write_metrics(metrics, workdir / f"eval_{spec.data.eval_split}.json")
        writer.write(total_steps, {k: v for k, v in metrics.items() if isinstance(v, float)},
                     prefix=f"eval_{spec.data.eval_split}/")
        print(format_table({f"fine-tuned ({spec.data.eval_split})": metrics}))
    writer.write(total_steps, compiles.stop(), prefix="setup/")  # setup/compiles, setup/compile_s, ...
    writer.close()
    return metrics


def train_cross_encoder_run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """`hnm train-ce`: trains only the cross-encoder, into <workdir>/ce (exported to <workdir>/ce/model).

    Its negatives are mined by `model.name` with the configured retriever (a pool of `mining.pool_size`, mined
    once, whatever `mining.pool` says). Then it re-ranks that retriever's top `ce.rerank_depth` (10 when 0) on
    the eval split; returns those metrics (both stages) and writes them to <workdir>/ce/eval_<split>.json.
    It is one CE trained on every training query (no cross-fitting). A later `hnm train` with the same workdir
    uses it unless that run cross-fits (`ce.cross_fit` with a CE-guided pool: it trains <workdir>/ce/fold0, fold1).
    """
    spec = spec_from_config(config)
    enable_compilation_cache()
    mining = dataclasses.replace(spec.mining, strategy="uniform", pool="offline",
                                 num_negatives=min(spec.ce.num_negatives, spec.mining.pool_size))
    spec = dataclasses.replace(spec, mining=mining)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        _save_config(config, workdir)
    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)
    root, corpus, queries = load_texts(spec)
    train_split = read_split(root, spec.data.train_split, corpus, queries)
    spec = dataclasses.replace(spec, band=spec.band.for_run(1))  # no bi-encoder steps: the final band throughout
    encoder = build_encoder(spec.model, spec.seed)
    spec = resolve_lengths(spec, encoder.tokenizer, corpus.texts, queries.texts)[0]
    miner = _make_miner(spec, workdir, encoder, corpus, queries, train_split, batch_sharding)[0]
    if not (workdir / CE_DIR / "model" / "config.json").is_file():
        miner.refresh(encoder.state, 0)
    ce = train_cross_encoder(spec, workdir / CE_DIR, miner, mesh)
    eval_spec = dataclasses.replace(spec, ce=dataclasses.replace(spec.ce, rerank_depth=spec.ce.rerank_depth or 10))
    metrics = evaluate(eval_spec, encoder, (root, corpus, queries), spec.data.eval_split, sharding=batch_sharding,
                       cache_dir=workdir / "cache", reranker=ce)
    if jax.process_index() == 0:
        write_metrics(metrics, workdir / CE_DIR / f"eval_{spec.data.eval_split}.json")
        print(format_table({stage: values for stage, values in metrics["stages"].items()}))
    return metrics


def load_trained_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a training workdir was run with (its config.json)."""
    config_path = Path(workdir) / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: no config.json; is {workdir} a training workdir?")
    return ml_collections.ConfigDict(json.loads(config_path.read_text()))


def _newest_params(directory: Path, graphdef, params, spec: ExperimentSpec):
    """The params of the newest checkpoint in `directory`, given a model's graphdef and params as template."""
    tx = make_optimizer(spec.train, total_steps=1)  # the opt_state structure does not depend on the schedule
    template = create_train_state(graphdef, params, tx, spec.seed)
    checkpointer = Checkpointer(directory, keep=spec.train.keep_checkpoints)
    try:
        restored = checkpointer.restore(template)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"{directory}: no readable checkpoint")
    return restored[0].params


def load_trained(workdir: str | Path) -> tuple[Encoder, ml_collections.ConfigDict]:
    """The encoder of a training workdir with the parameters of its newest checkpoint, and its config."""
    workdir = Path(workdir)
    config = load_trained_config(workdir)
    spec = spec_from_config(config)
    encoder = build_encoder(spec.model, spec.seed)
    params = _newest_params(workdir / "checkpoints", encoder.graphdef, encoder.state, spec)
    return dataclasses.replace(encoder, state=params), config


def load_trained_cross_encoder(workdir: str | Path) -> CrossEncoderModel:
    """The cross-encoder of a training workdir (<workdir>/ce) with the parameters of its newest checkpoint; of a
    cross-fitted run without <workdir>/ce/checkpoints, the fold-0 CE (<workdir>/ce/fold0, the one its evaluation
    re-ranked with)."""
    spec = spec_from_config(load_trained_config(workdir))
    model = build_cross_encoder(spec)
    ce_dir = Path(workdir) / CE_DIR
    if not (ce_dir / "checkpoints").is_dir() and (ce_dir / CE_FOLD_DIR.format(0) / "checkpoints").is_dir():
        ce_dir = ce_dir / CE_FOLD_DIR.format(0)
    params = _newest_params(ce_dir / "checkpoints", model.graphdef, model.state, spec)
    return dataclasses.replace(model, state=params)
