"""The mining of a training run: a frozen context (what a run gives once), a frozen state (what each refresh makes)
and the functions over them.

MinerContext: the training split, its texts and tokens, the corpus's canonical rows, BM25, the dev split of the
cross-encoder gate, the known unlabelled duplicates, and the judges (`Judges`: the CEs, which CE scores each query,
the gate's figures memo); all given at construction (`make_context`, `with_judges`), nothing set afterwards.
MinerState: the pool, the corpus embeddings and the retrievers built from them, the step it was mined at, the CE
logits of the pairs scored so far and the gate's verdict. `refresh` re-encodes and re-mines (a new state + its
statistics), `judge` runs the gate and the CE stage on a state's pool, `candidates` / `guide` / `hybrid_columns` give
a step what it draws from; train.py holds the current state and hands it to the batch source (training/batches.py).
The checkpoint form of a state (template, to / from arrays) is in training/checkpointing.py.
"""

import dataclasses
import logging
import time
import types
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from hnm_jax.config import ExperimentSpec
from hnm_jax.data import batches
from hnm_jax.data.beir import Split, Texts, list_splits, read_split
from hnm_jax.data.tokenize import TokenizedTexts, tokenize_texts
from hnm_jax.metrics import pool_statistics
from hnm_jax.mining.ce_gate import GateFigures, gate_figures, gate_open, removal_precision_recall
from hnm_jax.mining.lexical import LexicalIndex
from hnm_jax.mining.negatives import Candidates, CEFilterSpec, Pool, guide_mask
from hnm_jax.mining.pipeline import CEStage, PairScorer, build_lexical_index, build_retriever, judge_pool, mine_pool
from hnm_jax.mining.retriever import Retriever
from hnm_jax.mining.schedules import band_at, band_mask
from hnm_jax.mining.scoring import RETRIEVE_K
from hnm_jax.models.encoder import HiddenStates
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder

log = logging.getLogger(__name__)

Inputs = TokenizedTexts | HiddenStates  # texts as tokens, or as a frozen trunk's hidden states
Scores = Mapping[tuple[int, int], float]  # (split row, corpus row) -> CE logit (by the query's CE)
DEV_SPLIT = "dev"  # the split whose labelled pairs gate the cross-encoder filter (see `gate`)


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


def mines(spec: ExperimentSpec) -> bool:
    """Whether the run mines a pool (`mining.pool` != "none")."""
    return spec.mining.pool != "none"


def guided(spec: ExperimentSpec) -> bool:
    """Whether this run's mining uses a cross-encoder (filter and/or guide-model masking)."""
    return mines(spec) and spec.ce.mining.guides


def cross_fitted(spec: ExperimentSpec) -> bool:
    """Whether the run trains two cross-fitted CEs (`ce.cross_fit`, no given `ce.model`, a CE-guided pool)."""
    return spec.ce.train.cross_fit and not spec.ce.source.model and guided(spec)


@dataclasses.dataclass(frozen=True, eq=False)
class Judges:
    """The run's cross-encoders (two when cross-fitted) and scorer [Q]: index into `ces` of the CE that scores each
    training query's pairs (cross-fitting: the CE that did not train on the query).

    `gate_memo` holds each CE's figures on the dev split's labelled pairs (`gate`), computed on first use: a pure
    cache (a CE's figures on fixed pairs under fixed rules do not change; no result depends on whether it is filled).
    """

    ces: tuple[CrossEncoderModel, ...]
    scorer: np.ndarray
    gate_memo: dict[tuple[int, CEFilterSpec], GateFigures] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True, eq=False)
class MinerContext:
    """What mining reads and a run gives once: the spec, the encoder, the training `split` with its query texts
    and tokens (split order), the corpus texts and tokens, `canonical` [N] (each corpus row's exact-text class), the
    batch sharding of the encodings, BM25 (`lexical`, when mining or hybrid logits use it), the dev split of the CE
    gate (`dev`, None: no gate), `duplicates` [Q, K] (corpus rows of each query's unlabelled duplicates, -1 padded,
    `data.synthetic.load_unlabelled_duplicates`; None: none listed; counted in each refresh's pools, and kept out
    of them by `mining.oracle_filter`) and the cross-encoders (`judges`, None: none)."""

    spec: ExperimentSpec
    encoder: Encoder
    split: Split
    query_texts: list[str]
    query_tokens: Inputs
    doc_texts: tuple[str, ...]
    doc_tokens: Inputs
    canonical: np.ndarray
    batch_sharding: jax.sharding.NamedSharding | None
    lexical: LexicalIndex | None = None
    dev: DevSet | None = None
    duplicates: np.ndarray | None = None
    judges: Judges | None = None

    @property
    def num_docs(self) -> int:
        return len(self.doc_texts)

    @property
    def enabled(self) -> bool:
        return mines(self.spec)

    @property
    def guided(self) -> bool:
        return guided(self.spec)


@dataclasses.dataclass(frozen=True, eq=False)
class MinerState:
    """The mining state of a run at one point: the `pool` (None: not mined yet), the corpus embeddings `doc_emb`
    its index was built from, the mining `retriever` over them and, with hybrid logits, the deployed `fusion`,
    `pool_step` (the step it was mined at; -1: never), `ce_positive` [Q] (each query's best labelled positive's CE
    logit), `ce_filter_on` (the last gate let the CEs filter and guide) and `ce_scores` (the CE logits of every pair
    scored so far in the run, read-only: a re-queried pool keeps only scored entries, so they are state)."""

    pool: Pool | None = None
    doc_emb: np.ndarray | None = None
    pool_step: int = -1
    retriever: Retriever | None = None
    fusion: Retriever | None = None
    ce_positive: np.ndarray | None = None
    ce_filter_on: bool = True
    ce_scores: Scores = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))


def make_context(spec: ExperimentSpec, workdir: Path, encoder: Encoder, corpus: Texts, queries: Texts, split: Split,
                 batch_sharding: jax.sharding.NamedSharding | None, dev: DevSet | None = None,
                 duplicates: np.ndarray | None = None) -> tuple[MinerContext, Inputs, Inputs]:
    """Tokenizes the corpus and the queries (cached in the workdir) and builds the run's MinerContext over `split`;
    returns it with the tokens of every query and of the corpus.

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
    context = new_context(spec, encoder, corpus.texts, [queries.texts[r] for r in split.query_rows], split,
                          query_tokens.subset(split.query_rows), doc_tokens, batch_sharding, dev, duplicates)
    return context, query_tokens, doc_tokens


def new_context(spec: ExperimentSpec, encoder: Encoder, doc_texts: tuple[str, ...], query_texts: list[str],
                split: Split, query_tokens: Inputs, doc_tokens: Inputs,
                batch_sharding: jax.sharding.NamedSharding | None, dev: DevSet | None = None,
                duplicates: np.ndarray | None = None) -> MinerContext:
    """The MinerContext of the given texts and tokens (the split's queries, in split order); builds BM25 when
    mining or hybrid logits use it, and the canonical rows."""
    mines_lexically = mines(spec) and spec.mining_retriever.mode in ("lexical", "hybrid")
    needs_lexical = mines_lexically or spec.loss.hybrid_logits  # BM25 for mining and/or hybrid logits
    lexical = build_lexical_index(doc_texts, tokens=spec.mining_retriever.lexical_tokens) if needs_lexical else None
    return MinerContext(spec, encoder, split, query_texts, query_tokens, tuple(doc_texts), doc_tokens,
                        batches.canonical_rows(doc_texts), batch_sharding, lexical, dev, duplicates)


def with_judges(context: MinerContext, ces: list[CrossEncoderModel], scorer: np.ndarray | None = None
                ) -> MinerContext:
    """The context with these cross-encoders as judges. scorer [Q]: index into `ces` of the CE that scores each
    training query's pairs (cross-fitting: the CE that did not train on the query); None: ces[0] scores every query.
    Warns (once: here) when there is no gate: no dev split, or one without labelled pairs."""
    q = len(context.split)
    scorer = np.zeros(q, np.int32) if scorer is None else np.asarray(scorer, np.int32)
    if not ces or scorer.shape != (q,) or scorer.min() < 0 or scorer.max() >= len(ces):
        raise ValueError(f"with_judges: {len(ces)} CEs need a scorer [{q}] of indices in [0, {len(ces)}), got shape "
                         f"{scorer.shape}")
    if not _has_gate(context):
        reason = (f"the dataset has no {DEV_SPLIT!r} split" if context.dev is None
                  else f"the {DEV_SPLIT!r} split has no labelled pairs (candidates/{DEV_SPLIT}.tsv)")
        log.warning("%s: the cross-encoder filters without the gate", reason)
    return dataclasses.replace(context, judges=Judges(tuple(ces), scorer))


def refresh_due(context: MinerContext, state: MinerState, step: int, steps_per_epoch: int) -> bool:
    """Whether the pool must be (re)mined before `step`."""
    if not context.enabled:
        return False
    if state.pool is None:
        return True
    period = steps_per_epoch * context.spec.mining.refresh_every_epochs
    return context.spec.mining.pool == "online" and step % period == 0 and state.pool_step < step


def reads_params(context: MinerContext, state: MinerState) -> bool:
    """Whether `candidates` depends on the parameters of the step it feeds (an online pool re-queries with them; a
    pool not mined yet is mined with them); False: a function of (rows, step) alone."""
    return context.enabled and (context.spec.mining.pool == "online" or state.pool is None)


def _encode(context: MinerContext, tokens: Inputs, params, show_progress: bool = False) -> np.ndarray:
    return context.encoder.encode_tokens(tokens, batch_size=context.spec.train.batch_size, state=params,
                                         sharding=context.batch_sharding, show_progress=show_progress)


def encode_queries(context: MinerContext, params, rows: np.ndarray | None = None) -> np.ndarray:
    """[R, D] embeddings of the split rows `rows` (None: all) with `params`."""
    tokens = context.query_tokens if rows is None else context.query_tokens.subset(rows)
    return _encode(context, tokens, params)


def with_embeddings(context: MinerContext, state: MinerState, doc_emb: np.ndarray) -> MinerState:
    """`state` with these corpus embeddings and the retrievers over them: the mining retriever
    (`ExperimentSpec.mining_retriever`, `pipeline.build_retriever`) and, with hybrid logits, `fusion` (the deployed
    hybrid fusion, retriever.* in mode hybrid, over a dense index searched as evaluation searches it: exact unless
    eval.search = ann)."""
    spec = context.spec
    retriever = build_retriever(spec.mining_retriever, doc_emb, index=spec.index, lexical=context.lexical)
    fusion = None
    if spec.loss.hybrid_logits:
        fusion = build_retriever(dataclasses.replace(spec.retriever, mode="hybrid"), doc_emb, index=spec.index,
                                 exact=spec.eval.search == "exact", lexical=context.lexical, dense=retriever.dense)
    return dataclasses.replace(state, doc_emb=doc_emb, retriever=retriever, fusion=fusion)


def _pair_scorer(context: MinerContext, scores: Scores) -> PairScorer:
    """The CE scoring of this run's (split row, corpus row) pairs over `scores` (written to only when it scores)."""
    judges = context.judges
    ces, scorer = ((), None) if judges is None else (judges.ces, judges.scorer)
    return PairScorer(ces, scorer, context.query_texts, context.doc_texts, context.spec.eval.batch_size,
                      context.spec.ce.source.max_length, cache=scores)


def _mine(context: MinerContext, state: MinerState, query_emb: np.ndarray, rows: np.ndarray,
          ce: CEStage | None = None):
    """`pipeline.mine_pool` of the split rows `rows` (query_emb: theirs) with the state's retriever."""
    spec = context.spec
    positives = context.split.positives[rows]
    excluded = positives  # never in a pool; with the oracle filter, neither are the known unlabelled duplicates
    if spec.mining.oracle_filter:
        excluded = np.concatenate([positives, context.duplicates[rows]], axis=1)
    fusion = None if state.fusion is None else (state.fusion, min(RETRIEVE_K, context.num_docs))
    return mine_pool(state.retriever, query_emb, [context.query_texts[r] for r in rows], positives, state.doc_emb,
                     context.canonical, spec.mining.pool_size, rows=rows, excluded=excluded, fusion=fusion, ce=ce)


def _ce_stage(context: MinerContext, scores: Scores, judge: bool, refresh: bool,
              positive_ce: np.ndarray | None = None) -> CEStage:
    """The CE stage of a refresh (score, then filter) or of a pool re-queried between refreshes (cached scores
    only, the unscored entries dropped)."""
    ce = context.spec.ce.mining
    return CEStage(_pair_scorer(context, scores), ce.rules, ce.rescore_top, judge=judge, score=refresh,
                   drop=ce.filter, drop_unscored=not refresh and ce.filter, positive_ce=positive_ce,
                   show_progress=jax.process_index() == 0)


def _count_duplicates(context: MinerContext, indices: np.ndarray, rows: np.ndarray) -> int:
    """How many entries of pool `indices` [R, M] (of split rows `rows`) are their query's unlabelled duplicate."""
    duplicates = context.duplicates[rows][:, None, :]  # [R, 1, K]
    return int(((indices[:, :, None] == duplicates) & (duplicates >= 0)).any(axis=2).sum())


def refresh(context: MinerContext, state: MinerState, params, step: int) -> tuple[MinerState, dict[str, float]]:
    """Re-encodes the corpus and the queries with `params` (jitted, sharded), rebuilds the retrievers and mines a
    pool of `mining.pool_size` candidates per training query with the mining retriever (`mining.retriever`, "" =
    the deployed `retriever.mode`), known positives and exact-text twins removed (with `mining.oracle_filter`, the
    known unlabelled duplicates too); with judges, then `judge`. Returns the new state, timings and pool statistics.
    """
    t0 = time.perf_counter()
    doc_emb = _encode(context, context.doc_tokens, params, show_progress=jax.process_index() == 0)
    query_emb = encode_queries(context, params)
    t1 = time.perf_counter()
    state = with_embeddings(context, state, doc_emb)
    t2 = time.perf_counter()
    rows = np.arange(len(context.split))
    state = dataclasses.replace(state, pool=_mine(context, state, query_emb, rows).pool, pool_step=step)
    t3 = time.perf_counter()
    stats = {"encode_s": t1 - t0, "build_s": t2 - t1, "search_s": t3 - t2}
    if context.judges is not None:  # the CE stage (`pipeline.judge_pool`) after the gate; it counts duplicates
        state, judged = judge(context, state)
        stats.update(judged)
    elif context.duplicates is not None:  # no CE: the false negatives left in the pools (0 with the oracle filter)
        stats["pool_unlabelled_duplicates"] = float(_count_duplicates(context, state.pool.indices, rows))
    stats["total_s"] = time.perf_counter() - t0
    spec, pool = context.spec, state.pool
    kept = np.asarray(band_mask(pool.dense, pool.positive, band_at(step, spec.band), spec.band.mode)) & (
        pool.indices >= 0)
    stats.update({k: v for k, v in pool_statistics(pool.dense, pool.positive, kept).items() if isinstance(v, float)})
    return state, stats


def judge(context: MinerContext, state: MinerState) -> tuple[MinerState, dict[str, float]]:
    """The CE stage of the pipeline (`pipeline.judge_pool`) on the state's pool, after the gate (`gate`).

    When the gate opens: CE scores of the pool's first `ce.rescore_top` entries (0: all) and of every query's
    positives, each query by its own CE, then `ce_filter` (when `ce.filter`). Returns the new state (pool, the
    positives' logits, the gate's verdict, the scores so far) and the gate's figures, the filter's counts and the
    time taken; with `duplicates` (a synthetic benchmark's unlabelled duplicates: true matches no qrels lists),
    when the filter ran (`ce.filter`, the gate open), also `pool_unlabelled_duplicates` (pool entries before the
    filter that are their query's unlabelled duplicate), `ce_removed_unlabelled_duplicates` (those the filter
    dropped), `ce_dup_precision` (their share of every entry it dropped) and `ce_dup_recall` (the share of the
    pool's duplicates it dropped); NaN for an empty denominator.

    When the gate is closed, nothing is scored or dropped: the pool keeps every candidate (its `ce` column from
    the scores so far, NaN where unscored) and `guide` masks nothing, until a later refresh's gate opens.
    """
    t0 = time.perf_counter()
    filter_on, stats = gate(context)
    rows = np.arange(len(context.split))
    scores = dict(state.ce_scores)  # the new state's: this stage adds to the scores so far
    mined = judge_pool(state.pool, context.split.positives, rows, _ce_stage(context, scores, filter_on, True))
    state = dataclasses.replace(state, pool=mined.pool, ce_positive=mined.positive_ce, ce_filter_on=filter_on,
                                ce_scores=types.MappingProxyType(scores))
    stats = {**stats, **{f"ce_{k}": float(v) for k, v in mined.counts.items()}}
    if context.duplicates is not None and filter_on and context.spec.ce.mining.filter:
        before, after = mined.retrieved.indices, mined.pool.indices
        in_pool = _count_duplicates(context, before, rows)
        stats["pool_unlabelled_duplicates"] = float(in_pool)
        stats["ce_removed_unlabelled_duplicates"] = float(in_pool - _count_duplicates(context, after, rows))
        precision, recall = removal_precision_recall(before, after, context.duplicates[rows])
        stats.update(ce_dup_precision=precision, ce_dup_recall=recall)
    return state, {**stats, "ce_s": time.perf_counter() - t0}


def _has_gate(context: MinerContext) -> bool:
    dev = context.dev
    return dev is not None and dev.split.candidates is not None and len(dev.split.candidates) > 0


def gate(context: MinerContext) -> tuple[bool, dict[str, float]]:
    """Whether the judges may filter and guide, and the figures behind it.

    Each CE scores the dev split's labelled pairs (candidates: label 1 = true match, 0 = labelled negative) and
    the dev queries' qrels positives, once per CE (`Judges.gate_memo`: the figures do not change between
    refreshes); `gate_figures` says what its `ce_filter` rules would drop there: `ce_gate_precision` (share of the
    dropped pairs that are true matches), `ce_gate_recall` (share of the true matches dropped) and
    `ce_gate_negatives_removed` (share of the labelled negatives dropped). The CEs filter and guide when precision
    >= `ce.gate_min_precision` (`gate_open`; 0: always); with two cross-fitted CEs EACH must pass, and the figures
    are those of the CE with the lower precision (`..._fold0`, `..._fold1` give both). A closed gate logs one
    warning naming the figures. A dataset without a dev split, or a dev split without labelled pairs, has no gate
    (`with_judges` warned): the CEs filter.
    """
    if not _has_gate(context):
        return True, {"ce_filter_on": 1.0}
    t0 = time.perf_counter()
    ces = context.judges.ces
    figures = [_gate_figures(context, index) for index in range(len(ces))]
    worst = min(range(len(figures)), key=lambda k: np.nan_to_num(figures[k].precision, nan=-1.0))
    min_precision = context.spec.ce.mining.gate_min_precision
    filter_on = all(gate_open(f, min_precision) for f in figures)
    if not filter_on:
        f = figures[worst]
        log.warning("cross-encoder filtering and guide masking skipped: on the dev split's labelled pairs its "
                    "rules would drop %d of %d true matches and %d of %d labelled negatives, precision %.4f < "
                    "ce.gate_min_precision %.4f%s", f.dropped_positives, f.positives, f.dropped_negatives,
                    f.negatives, f.precision, min_precision,
                    f" (the lower of {len(ces)} cross-fitted CEs)" if len(ces) > 1 else "")
    stats = {**figures[worst].stats(), "ce_filter_on": float(filter_on)}
    if len(ces) > 1:
        for k, f in enumerate(figures):
            stats.update(f.stats(f"_fold{k}"))
    stats["ce_gate_s"] = time.perf_counter() - t0
    return filter_on, stats


def _gate_figures(context: MinerContext, index: int) -> GateFigures:
    """`gate_figures` of CE `index` on the dev split's labelled pairs (memoised in `Judges.gate_memo`)."""
    rules, memo = context.spec.ce.mining.rules, context.judges.gate_memo
    if (index, rules) not in memo:
        split, texts = context.dev.split, context.dev.query_texts
        candidates = split.candidates
        pos_query, pos_column = np.nonzero(split.positives >= 0)
        pairs = list(dict.fromkeys(zip(np.concatenate([candidates.query, pos_query]).tolist(),
                                       np.concatenate([candidates.doc, split.positives[pos_query, pos_column]])
                                       .tolist(), strict=True)))
        scorer = PairScorer(context.judges.ces[index:index + 1], None, texts, context.doc_texts,
                            context.spec.eval.batch_size, context.spec.ce.source.max_length)
        scorer.score(pairs)
        logit = scorer.cache
        positive_ce = np.full(len(split), -np.inf)
        np.maximum.at(positive_ce, pos_query, [logit[(int(q), int(d))] for q, d in
                                               zip(pos_query, split.positives[pos_query, pos_column], strict=True)])
        positive_ce[~np.isfinite(positive_ce)] = np.nan
        pair_ce = [logit[(int(q), int(d))] for q, d in zip(candidates.query, candidates.doc, strict=True)]
        memo[(index, rules)] = gate_figures(candidates.query, pair_ce, candidates.label, positive_ce, rules)
    return memo[(index, rules)]


def cached_ce(context: MinerContext, state: MinerState, rows: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """[R, C] CE logits of (split row rows[i], corpus row docs[i, j]) scored so far; NaN = not scored or doc -1."""
    return _pair_scorer(context, state.ce_scores).lookup(rows, docs)


def guide(context: MinerContext, state: MinerState, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """[B, C] bool guide-model mask (`guide_mask`) of the batch's columns (corpus rows, -1 = empty); all True
    while the gate has the CEs off."""
    if not state.ce_filter_on:
        return np.ones((len(rows), len(columns)), bool)
    scores = cached_ce(context, state, rows, np.broadcast_to(columns, (len(rows), len(columns))))
    return guide_mask(scores, state.ce_positive[rows], context.spec.ce.mining.rules)


def candidates(context: MinerContext, state: MinerState, rows: np.ndarray, params, step: int) -> Candidates:
    """The strategy's view of this batch; an online pool is re-queried with fresh query embeddings (with the CE
    filter on, keeping only the entries the CE scored and kept: the filter judged nothing else)."""
    spec, pool = context.spec, None
    if context.enabled:
        if spec.mining.pool == "online" and state.pool_step < step:
            query_emb = encode_queries(context, params, rows)
            ce = None
            if context.judges is not None:
                ce = _ce_stage(context, state.ce_scores, state.ce_filter_on, False, state.ce_positive[rows])
            pool = _mine(context, state, query_emb, rows, ce).pool
        else:
            pool = state.pool.take(rows)
    band = tuple(float(b) for b in band_at(step, spec.band))
    return Candidates(positives=context.split.positives[rows], num_docs=context.num_docs, pool=pool, band=band,
                      band_mode=spec.band.mode)


def hybrid_columns(context: MinerContext, rows: np.ndarray, columns: np.ndarray, pool: Pool) -> dict[str, np.ndarray]:
    """What a step needs for hybrid logits (`retriever.hybrid_logits`): "lexical" [B, C] raw BM25 of every
    (query, candidate column) pair (0 for empty columns), and the queries' deployed fusion coefficients
    "lexical_lo", "lexical_span", "hybrid_beta" [B] from `pool` (this batch's rows of the pool)."""
    texts = [context.query_texts[r] for r in rows]
    scores = context.lexical.score_pairs(texts, np.broadcast_to(columns, (len(rows), len(columns))))
    scores = np.where(np.isfinite(scores), scores, 0.0).astype(np.float32)
    return {"lexical": scores, "lexical_lo": pool.lexical_lo, "lexical_span": pool.lexical_span,
            "hybrid_beta": pool.hybrid_beta}
