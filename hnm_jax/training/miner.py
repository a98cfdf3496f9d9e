"""The Miner: host-side mining state of a run (the mining retriever over the corpus and the pool of candidates).

The refresh re-encodes the corpus with the current parameters (jitted, sharded), rebuilds the dense index, mines a
pool per training query, and (with cross-encoders) gates them on the dev split's labelled pairs (`mining/ce_gate.py`)
before they filter and guide. Also here: the dev split of that gate (DevSet, load_dev_set), the run's Miner with its
tokens (make_miner) and whether a run cross-fits its cross-encoders (cross_fitted).
"""

import dataclasses
import logging
import time
from pathlib import Path

import jax
import numpy as np

from hnm_jax.config import ExperimentSpec
from hnm_jax.data import batches
from hnm_jax.data.beir import Split, Texts, list_splits, read_split
from hnm_jax.data.tokenize import TokenizedTexts, tokenize_texts
from hnm_jax.metrics import pool_statistics
from hnm_jax.mining.ce_gate import GateFigures, gate_figures, gate_open, removal_precision_recall
from hnm_jax.mining.negatives import Candidates, Pool, guide_mask
from hnm_jax.mining.pipeline import CEStage, PairScorer, build_lexical_index, build_retriever, judge_pool, mine_pool
from hnm_jax.mining.retriever import Retriever
from hnm_jax.mining.schedules import band_at, band_mask
from hnm_jax.mining.scoring import RETRIEVE_K
from hnm_jax.models.encoder import HiddenStates
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder

log = logging.getLogger(__name__)

Inputs = TokenizedTexts | HiddenStates  # texts as tokens, or as a frozen trunk's hidden states
DEV_SPLIT = "dev"  # the split whose labelled pairs gate the cross-encoder filter (see Miner.check_cross_encoders)


@dataclasses.dataclass(frozen=True)
class DevSet:
    """The dev split the cross-encoder gate measures on: qrels + labelled candidates, and its query texts."""

    split: Split
    query_texts: list[str]


def load_dev_set(spec: ExperimentSpec, root: Path, corpus: Texts, queries: Texts) -> DevSet | None:
    """The `DEV_SPLIT` of the dataset, or None when it has none (or trains on it)."""
    if DEV_SPLIT not in list_splits(root) or spec.data.train_split == DEV_SPLIT:
        return None
    split = read_split(root, DEV_SPLIT, corpus, queries)
    return DevSet(split, [queries.texts[r] for r in split.query_rows])


class Miner:
    """Host-side mining state of a run: the mining retriever over the corpus and the pool of candidates.

    refresh(): re-encode the corpus with the current parameters (jitted, sharded), rebuild the dense index,
    and mine a pool of `pool_size` candidates per training query with the mining retriever (`mining.retriever`,
    "" = the deployed `retriever.mode`: BM25 + dense, fused, as configured), known positives and exact-text twins
    removed (with `mining.oracle_filter`, the known unlabelled duplicates of `duplicates` too). candidates(): this
    step's candidates; with an online pool the batch's queries are re-encoded with the current parameters and
    re-queried against the index.

    With cross-encoders (`use_cross_encoders`, called by the cross-encoder phase), each refresh first gates them
    on the dev split's labelled pairs (`check_cross_encoders`), then scores the first `ce.rescore_top` pool entries
    (0: all) and the labelled positives of every query, each query by its own CE (`scorer`: with cross-fitting the
    CE trained on the other half of the queries; scores cached per (query, doc) pair for the run), and `ce_filter`
    drops the likely positives (when `ce.filter`). The per-step re-queried pools are filtered on the cached scores
    and keep only entries the CE scored. `guide()` gives the loss a mask of batch columns the CE calls likely
    positives.
    """

    def __init__(self, spec: ExperimentSpec, encoder: Encoder, corpus: Texts, query_texts: list[str],
                 split: Split, query_tokens: Inputs, doc_tokens: Inputs, canonical: np.ndarray,
                 batch_sharding: jax.sharding.NamedSharding):
        self.spec, self.encoder, self.split, self.canonical = spec, encoder, split, canonical
        self.query_texts = query_texts  # texts of the split's queries, in split order
        self.query_tokens = query_tokens  # tokens of the split's queries, in split order
        self.doc_tokens, self.batch_sharding = doc_tokens, batch_sharding
        self.num_docs = len(corpus)
        self.doc_texts = corpus.texts
        mines_lexically = spec.mining.pool != "none" and spec.mining_retriever.mode in ("lexical", "hybrid")
        needs_lexical = mines_lexically or spec.loss.hybrid_logits  # BM25 for mining and/or hybrid logits
        self.lexical = build_lexical_index(corpus.texts) if needs_lexical else None
        self.retriever: Retriever | None = None
        self.fusion: Retriever | None = None  # hybrid logits: the deployed fusion (retriever.*, mode hybrid)
        self.pool: Pool | None = None
        self.doc_emb: np.ndarray | None = None
        self.pool_step = -1  # step at which the pool was mined
        self.ces: tuple[CrossEncoderModel, ...] = ()  # the run's cross-encoders (two when cross-fitted)
        self.scorer: np.ndarray | None = None  # [Q] index into `ces` of the CE that scores each query's pairs
        self.ce_scores: dict[tuple[int, int], float] = {}  # (split row, corpus row) -> CE logit (by its scorer)
        self.ce_positive: np.ndarray | None = None  # [Q] CE logit of each query and its best labelled positive
        self.ce_filter_on = True  # the last gate let the CEs filter and guide (`check_cross_encoders`)
        self.dev: DevSet | None = None  # the split of that gate (None: no gate, the CEs filter)
        # [Q, K] corpus rows of each query's unlabelled duplicates, -1 padded (`data.synthetic.
        # load_unlabelled_duplicates`); None: the dataset lists none. With them, each refresh counts those in the
        # pool, and those a CE filter removes; `mining.oracle_filter` keeps them out of every pool.
        self.duplicates: np.ndarray | None = None
        self._dev_gate: dict[int, GateFigures] = {}  # CE index -> its gate figures on dev (fixed per CE)
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

    def _encode(self, tokens: Inputs, params, show_progress: bool = False) -> np.ndarray:
        return self.encoder.encode_tokens(tokens, batch_size=self.spec.train.batch_size, state=params,
                                          sharding=self.batch_sharding, show_progress=show_progress)

    def _build_retriever(self, doc_emb: np.ndarray) -> None:
        """The mining retriever (`ExperimentSpec.mining_retriever`, `pipeline.build_retriever`) over this
        refresh's corpus embeddings. With hybrid logits also `fusion`: the deployed hybrid fusion (retriever.* in
        mode hybrid) over a dense index searched as evaluation searches it (exact unless eval.search = ann)."""
        self.doc_emb = doc_emb
        self.retriever = build_retriever(self.spec.mining_retriever, doc_emb, index=self.spec.index,
                                         lexical=self.lexical)
        if self.spec.loss.hybrid_logits:
            self.fusion = build_retriever(dataclasses.replace(self.spec.retriever, mode="hybrid"), doc_emb,
                                          index=self.spec.index, exact=self.spec.eval.search == "exact",
                                          lexical=self.lexical, dense=self.retriever.dense)

    def _pair_scorer(self) -> PairScorer:
        """The CE scoring of this run's (split row, corpus row) pairs, over the run's cache `ce_scores`."""
        return PairScorer(self.ces, self.scorer, self.query_texts, self.doc_texts, self.spec.eval.batch_size,
                          self.spec.ce.source.max_length, cache=self.ce_scores)

    def _mine(self, query_emb: np.ndarray, rows: np.ndarray, ce: CEStage | None = None):
        """`pipeline.mine_pool` of the split rows `rows` (query_emb: theirs) with this refresh's retriever."""
        positives = self.split.positives[rows]
        excluded = positives  # never in a pool; with the oracle filter, neither are the known unlabelled duplicates
        if self.spec.mining.oracle_filter:
            excluded = np.concatenate([positives, self.duplicates[rows]], axis=1)
        fusion = None if self.fusion is None else (self.fusion, min(RETRIEVE_K, self.num_docs))
        return mine_pool(self.retriever, query_emb, [self.query_texts[r] for r in rows], positives, self.doc_emb,
                         self.canonical, self.spec.mining.pool_size, rows=rows, excluded=excluded, fusion=fusion,
                         ce=ce)

    def _ce_stage(self, refresh: bool, positive_ce: np.ndarray | None = None) -> CEStage:
        """The CE stage of a refresh (score, then filter) or of a pool re-queried between refreshes (cached
        scores only, the unscored entries dropped)."""
        ce = self.spec.ce.mining
        return CEStage(self._pair_scorer(), ce.rules, ce.rescore_top, judge=self.ce_filter_on,
                       score=refresh, drop=ce.filter, drop_unscored=not refresh and ce.filter,
                       positive_ce=positive_ce, show_progress=jax.process_index() == 0)

    def refresh(self, params, step: int) -> dict[str, float]:
        """Re-encodes, rebuilds and re-mines; returns timings and pool statistics."""
        t0 = time.perf_counter()
        doc_emb = self._encode(self.doc_tokens, params, show_progress=jax.process_index() == 0)
        query_emb = self._encode(self.query_tokens, params)
        t1 = time.perf_counter()
        self._build_retriever(doc_emb)
        t2 = time.perf_counter()
        self.pool = self._mine(query_emb, np.arange(len(self.split))).pool
        t3 = time.perf_counter()
        self.pool_step = step
        stats = {"encode_s": t1 - t0, "build_s": t2 - t1, "search_s": t3 - t2}
        if self.ces:  # the CE stage (`pipeline.judge_pool`) after the gate; it counts duplicates and removals
            stats.update(self.apply_cross_encoder())
        elif self.duplicates is not None:  # no CE: the false negatives left in the pools (0 with the oracle filter)
            stats["pool_unlabelled_duplicates"] = float(self._count_duplicates(self.pool.indices,
                                                                               np.arange(len(self.split))))
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
        self._dev_gate = {}

    def cached_ce(self, rows: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """[R, C] cached CE logits of (split row rows[i], corpus row docs[i, j]); NaN = not scored or doc -1."""
        return self._pair_scorer().lookup(rows, docs)

    def _count_duplicates(self, indices: np.ndarray, rows: np.ndarray) -> int:
        """How many entries of pool `indices` [R, M] (of split rows `rows`) are their query's unlabelled duplicate."""
        duplicates = self.duplicates[rows][:, None, :]  # [R, 1, K]
        return int(((indices[:, :, None] == duplicates) & (duplicates >= 0)).any(axis=2).sum())

    def apply_cross_encoder(self) -> dict[str, float]:
        """The CE stage of the pipeline (`pipeline.judge_pool`) on the current pool, after the gate.

        The gate (`check_cross_encoders`); when it opens, CE scores of the pool's first `ce.rescore_top` entries
        (0: all) and of every query's positives, then `ce_filter`. Returns the gate's figures, the filter's counts
        and the time taken; with `duplicates` (a synthetic benchmark's unlabelled duplicates: true matches no qrels
        lists), when the filter ran (`ce.filter`, the gate open), also `pool_unlabelled_duplicates` (pool entries
        before the filter that are their query's unlabelled duplicate), `ce_removed_unlabelled_duplicates` (those
        the filter dropped), `ce_dup_precision` (their share of every entry it dropped) and `ce_dup_recall` (the
        share of the pool's duplicates it dropped); NaN for an empty denominator.

        When the gate is closed, nothing is scored or dropped: the pool keeps every candidate (its `ce` column from
        the cache, NaN where unscored) and `guide()` masks nothing, until a later refresh's gate opens.
        """
        t0 = time.perf_counter()
        stats = self.check_cross_encoders()
        rows = np.arange(len(self.split))
        mined = judge_pool(self.pool, self.split.positives, rows, self._ce_stage(refresh=True))
        before, self.pool, self.ce_positive, counts = mined.retrieved, mined.pool, mined.positive_ce, mined.counts
        stats = {**stats, **{f"ce_{k}": float(v) for k, v in counts.items()}}
        if self.duplicates is not None and self.ce_filter_on and self.spec.ce.mining.filter:
            in_pool = self._count_duplicates(before.indices, rows)
            stats["pool_unlabelled_duplicates"] = float(in_pool)
            stats["ce_removed_unlabelled_duplicates"] = float(in_pool - self._count_duplicates(self.pool.indices, rows))
            precision, recall = removal_precision_recall(before.indices, self.pool.indices, self.duplicates[rows])
            stats.update(ce_dup_precision=precision, ce_dup_recall=recall)
        return {**stats, "ce_s": time.perf_counter() - t0}

    def check_cross_encoders(self) -> dict[str, float]:
        """The gate: whether the CEs may filter and guide; sets `ce_filter_on` and returns the figures behind it.

        Each CE scores the dev split's labelled pairs (candidates: label 1 = true match, 0 = labelled negative) and
        the dev queries' qrels positives, once per CE (the figures do not change between refreshes); `gate_figures`
        says what its `ce_filter` rules would drop there: `ce_gate_precision` (share of the dropped pairs that are
        true matches), `ce_gate_recall` (share of the true matches dropped) and `ce_gate_negatives_removed` (share
        of the labelled negatives dropped). The CEs filter and guide when precision >= `ce.gate_min_precision`
        (`gate_open`; 0: always); with two cross-fitted CEs EACH must pass, and the figures are those of the CE
        with the lower precision (`..._fold0`, `..._fold1` give both). A closed gate logs one warning naming the
        figures. A dataset without a dev split, or a dev split without labelled pairs, has no gate (one warning per
        run): the CEs filter.
        """
        if self.dev is None or self.dev.split.candidates is None or not len(self.dev.split.candidates):
            if not self._warned_no_dev:
                reason = (f"the dataset has no {DEV_SPLIT!r} split" if self.dev is None
                          else f"the {DEV_SPLIT!r} split has no labelled pairs (candidates/{DEV_SPLIT}.tsv)")
                log.warning("%s: the cross-encoder filters without the gate", reason)
                self._warned_no_dev = True
            self.ce_filter_on = True
            return {"ce_filter_on": 1.0}
        t0 = time.perf_counter()
        figures = [self._gate_figures(index) for index in range(len(self.ces))]
        worst = min(range(len(figures)), key=lambda k: np.nan_to_num(figures[k].precision, nan=-1.0))
        min_precision = self.spec.ce.mining.gate_min_precision
        self.ce_filter_on = all(gate_open(f, min_precision) for f in figures)
        if not self.ce_filter_on:
            f = figures[worst]
            log.warning("cross-encoder filtering and guide masking skipped: on the dev split's labelled pairs its "
                        "rules would drop %d of %d true matches and %d of %d labelled negatives, precision %.4f < "
                        "ce.gate_min_precision %.4f%s", f.dropped_positives, f.positives, f.dropped_negatives,
                        f.negatives, f.precision, min_precision,
                        f" (the lower of {len(self.ces)} cross-fitted CEs)" if len(self.ces) > 1 else "")
        stats = {**figures[worst].stats(), "ce_filter_on": float(self.ce_filter_on)}
        if len(self.ces) > 1:
            for k, f in enumerate(figures):
                stats.update(f.stats(f"_fold{k}"))
        stats["ce_gate_s"] = time.perf_counter() - t0
        return stats

    def _gate_figures(self, index: int) -> GateFigures:
        """`gate_figures` of CE `index` on the dev split's labelled pairs; cached per CE."""
        if index not in self._dev_gate:
            split, texts = self.dev.split, self.dev.query_texts
            candidates = split.candidates
            pos_query, pos_column = np.nonzero(split.positives >= 0)
            pairs = list(dict.fromkeys(zip(np.concatenate([candidates.query, pos_query]).tolist(),
                                           np.concatenate([candidates.doc, split.positives[pos_query, pos_column]])
                                           .tolist(), strict=True)))
            scorer = PairScorer(self.ces[index:index + 1], None, texts, self.doc_texts, self.spec.eval.batch_size,
                                self.spec.ce.source.max_length)
            scorer.score(pairs)
            logit = scorer.cache
            positive_ce = np.full(len(split), -np.inf)
            np.maximum.at(positive_ce, pos_query, [logit[(int(q), int(d))] for q, d in
                                                   zip(pos_query, split.positives[pos_query, pos_column], strict=True)])
            positive_ce[~np.isfinite(positive_ce)] = np.nan
            pair_ce = [logit[(int(q), int(d))] for q, d in zip(candidates.query, candidates.doc, strict=True)]
            self._dev_gate[index] = gate_figures(candidates.query, pair_ce, candidates.label, positive_ce,
                                                 self.spec.ce.mining.rules)
        return self._dev_gate[index]

    def guide(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """[B, C] bool guide-model mask (`guide_mask`) of the batch's columns (corpus rows, -1 = empty); all True
        while the gate has the CEs off."""
        if not self.ce_filter_on:
            return np.ones((len(rows), len(columns)), bool)
        scores = self.cached_ce(rows, np.broadcast_to(columns, (len(rows), len(columns))))
        return guide_mask(scores, self.ce_positive[rows], self.spec.ce.mining.rules)

    def restore(self, arrays: dict[str, np.ndarray], pool_step: int, ce_filter_on: bool = True) -> None:
        """Reinstates a checkpointed pool and the corpus embeddings its index was built from (no re-mining), and
        whether the gate of that refresh let the CEs filter (saved in the checkpoint's position)."""
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
        return self.enabled and (self.spec.ce.mining.filter or self.spec.ce.mining.guide_in_batch)

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
        """The strategy's view of this batch; an online pool is re-queried with fresh query embeddings (with the CE
        filter on, keeping only the entries the CE scored and kept: the filter judged nothing else)."""
        pool = None
        if self.enabled:
            if self.spec.mining.pool == "online" and self.pool_step < step:
                query_emb = self._encode(self.query_tokens.subset(rows), params)
                ce = self._ce_stage(refresh=False, positive_ce=self.ce_positive[rows]) if self.ces else None
                pool = self._mine(query_emb, rows, ce).pool
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
                batch_sharding: jax.sharding.NamedSharding) -> tuple[Miner, Inputs, Inputs]:
    """Tokenizes the corpus and the queries (cached in the workdir) and builds the run's Miner over `split`.

    With a frozen trunk (model.freeze_layers > 0) the texts are its hidden states instead (`Encoder.cache_trunk`,
    computed once and cached in the workdir): refreshes and training batches run only the blocks above it.
    """
    cache, budget = workdir / "cache", spec.data.memory_budget_bytes

    def inputs(texts: tuple[str, ...], max_length: int) -> Inputs:
        tokens = tokenize_texts(encoder.tokenizer, texts, max_length, cache_dir=cache, memory_budget_bytes=budget)
        return encoder.cache_trunk(tokens, spec.train.batch_size, sharding=batch_sharding, cache_dir=cache,
                                   show_progress=jax.process_index() == 0)

    doc_tokens = inputs(corpus.texts, spec.data.doc_max_length)
    query_tokens = inputs(queries.texts, spec.data.query_max_length)
    miner = Miner(spec, encoder, corpus, [queries.texts[r] for r in split.query_rows], split,
                  query_tokens.subset(split.query_rows), doc_tokens, batches.canonical_rows(corpus.texts),
                  batch_sharding)
    return miner, query_tokens, doc_tokens


def cross_fitted(spec: ExperimentSpec, miner: Miner) -> bool:
    """Whether the run trains two cross-fitted CEs (`ce.cross_fit`, no given `ce.model`, a CE-guided pool)."""
    return spec.ce.train.cross_fit and not spec.ce.source.model and miner.guided
