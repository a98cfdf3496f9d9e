"""The one mining pipeline: what a training run's refresh (training/miner.py), `hnm mine` and evaluation share.

    build_retriever   corpus embeddings (+ texts) -> dense index (exact | ScaNN) + BM25 -> Retriever
                      (the training run's mining and fusion retrievers, `hnm mine`'s, evaluation's)
    mine_pool         retrieve -> score (dense, each query's best positive) -> cross-encoder stage (`judge_pool`:
                      score the pool's first `rescore_top` and the positives, `ce_filter`) -> Pool
    PairScorer        the cross-encoder scoring of (query row, corpus row) pairs, each query by its own CE,
                      logits cached per pair (the refresh, the CE gate on dev, `hnm mine`'s score columns)
    at_least_10       ranked rows padded to the @10 metrics' depth
    CEMiningSpec      how a cross-encoder guides mining (the `ce.*` filter, guide, rescore and gate keys)

The band is not a stage here: a pool keeps every candidate with its scores, and the band picks among them
(`negatives.band_negatives`, at each step in training, at the curriculum's final band in `hnm mine`).
"""

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from hnm_jax.mining import negatives
from hnm_jax.mining.dense_index import DenseIndex, IndexSpec
from hnm_jax.mining.lexical import LexicalIndex
from hnm_jax.mining.negatives import CEFilterSpec, Pool, ce_filter
from hnm_jax.mining.retriever import Retriever, RetrieverSpec
from hnm_jax.mining.scoring import best_positive_scores
from hnm_jax.models.pretrained import CrossEncoderModel

log = logging.getLogger(__name__)

METRIC_DEPTH = 10  # the @10 metrics (mrr@10, ndcg@10, accuracy@10) read this many ranked rows


def at_least_10(ranked: np.ndarray) -> np.ndarray:
    """[Q, K] ranked rows padded with -1 to K >= METRIC_DEPTH, so the @10 metrics are defined on tiny corpora."""
    return np.pad(ranked, ((0, 0), (0, max(0, METRIC_DEPTH - ranked.shape[1]))), constant_values=-1)


def build_lexical_index(doc_texts: Sequence[str], required: bool = True, tokens: str = "words") -> LexicalIndex | None:
    """BM25 over the corpus's `tokens` (`mining.lexical.LexicalIndex`; retriever.lexical_tokens), or None when bm25s
    cannot be imported and the caller can do without it (not `required`: evaluation then reports no hybrid
    retriever)."""
    try:
        return LexicalIndex.build(list(doc_texts), tokens=tokens)
    except ImportError:
        if required:
            raise
        log.warning("bm25s cannot be imported: no lexical or hybrid retriever")
        return None


def build_retriever(spec: RetrieverSpec, doc_emb: np.ndarray, doc_texts: Sequence[str] | None = None, *,
                    index: IndexSpec, exact: bool = False, lexical: LexicalIndex | None = None,
                    dense: DenseIndex | None = None) -> Retriever:
    """The retriever of `spec.mode` over the corpus embeddings doc_emb [N, D] (and texts).

    Dense index: exact jitted top-k when `exact`, when the mode is "lexical" (the index then only scores BM25's
    candidates, so that the pool carries the dense scores the band and the strategies read), or when the corpus is
    below index.exact_threshold (or ScaNN's minimum); else ScaNN with the `index.*` settings. `dense`: an index
    over the same embeddings to reuse when it fits (exact, or `exact` not asked), so one refresh builds one.
    BM25: `lexical` when given (training/miner.py builds it once a run: the texts do not change), else built from
    `doc_texts` when the mode needs it; the retriever of a dense mode gets `lexical` when given (its rows then
    carry BM25 scores too).
    """
    exact = exact or spec.mode == "lexical"
    if dense is None or not (dense.is_exact or not exact):
        if exact:
            index = dataclasses.replace(index, exact_threshold=doc_emb.shape[0] + 1)
        dense = DenseIndex.build(doc_emb, index)
    if lexical is None and spec.mode != "dense":
        if doc_texts is None:
            raise ValueError(f"build_retriever: mode {spec.mode!r} needs BM25: pass doc_texts or lexical")
        lexical = build_lexical_index(doc_texts, tokens=spec.lexical_tokens)
    return Retriever(spec, dense, lexical)


def with_mode(retriever: Retriever, mode: str) -> Retriever:
    """The same indexes retrieved in another mode (evaluation reports dense, hybrid and the deployed one)."""
    return Retriever(dataclasses.replace(retriever.spec, mode=mode), retriever.dense, retriever.lexical)


class PairScorer:
    """The cross-encoder scoring of (query row, corpus row) pairs: each query by the CE `scorer` assigns it
    (cross-fitting: the CE that did not train on it), logits cached per pair in `cache` (shared, not copied).

    ces: the cross-encoders; scorer [Q]: index into `ces` per query row (None: ces[0] for all);
    query_texts [Q], doc_texts [N]: the rows' texts; batch_size, max_length (0/None: the CE's own): as
    `CrossEncoderModel.score`.
    """

    def __init__(self, ces: Sequence[CrossEncoderModel], scorer: np.ndarray | None, query_texts: Sequence[str],
                 doc_texts: Sequence[str], batch_size: int, max_length: int | None = None,
                 cache: dict[tuple[int, int], float] | None = None):
        self.ces = tuple(ces)
        self.scorer = np.zeros(len(query_texts), np.int32) if scorer is None else np.asarray(scorer, np.int32)
        self.query_texts, self.doc_texts = query_texts, doc_texts
        self.batch_size, self.max_length = batch_size, max_length or None
        self.cache: dict[tuple[int, int], float] = {} if cache is None else cache

    def score(self, pairs: Sequence[tuple[int, int]], show_progress: bool = False) -> None:
        """CE-scores the pairs not cached yet (in the order given, duplicates once), each by its query's CE."""
        new = [pair for pair in dict.fromkeys(pairs) if pair not in self.cache]
        by = self.scorer[np.asarray([q for q, _ in new], np.int64)] if new else np.zeros(0, np.int32)
        for index, ce in enumerate(self.ces):
            group = [pair for pair, k in zip(new, by, strict=True) if k == index]
            if group:
                logits = ce.score([self.query_texts[q] for q, _ in group], [self.doc_texts[d] for _, d in group],
                                  batch_size=self.batch_size, max_length=self.max_length,
                                  show_progress=show_progress)
                self.cache.update(zip(group, logits.tolist(), strict=True))

    def lookup(self, rows: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """[R, C] cached logits of (query row rows[i], corpus row docs[i, j]); NaN = not scored or doc -1."""
        get = self.cache.get
        return np.asarray([[get((int(r), int(d)), np.nan) for d in row] for r, row in zip(rows, docs, strict=True)],
                          np.float32).reshape(docs.shape)

    def positive(self, rows: np.ndarray, positives: np.ndarray) -> np.ndarray:
        """[R] the best cached logit of each query row and its labelled positives [R, P]; NaN when none is."""
        logits = self.lookup(rows, positives)
        best = np.where(np.isnan(logits), -np.inf, logits).max(axis=1)
        best[~np.isfinite(best)] = np.nan
        return best


def pool_pairs(indices: np.ndarray, positives: np.ndarray, rows: np.ndarray, rescore_top: int) -> list[tuple[int, int]]:
    """The pairs the CE stage scores: each query row's first `rescore_top` pool entries (0: all) of
    indices [R, M] and its labelled positives [R, P], in row order."""
    top = indices[:, :rescore_top or None]
    return [(int(r), int(d)) for i, r in enumerate(rows) for d in (*top[i], *positives[i]) if d >= 0]


@dataclasses.dataclass(frozen=True)
class CEMiningSpec:
    """How a cross-encoder guides mining (`ce.*`): `filter` drops the pool entries its `rules` call likely positives
    (`ce_filter`: `threshold`, `margin`, `prefer_top`), `guide_in_batch` also masks such batch columns in the loss
    (`guide_mask`), `rescore_top` pool entries per query are scored (0: all), and the dev gate lets it filter and
    guide only at precision >= `gate_min_precision` (`ce_gate.gate_open`; 0: always). ValueError naming the field
    ('CEMiningSpec.<field>: ...', or CEFilterSpec's) when a value is impossible."""

    filter: bool
    guide_in_batch: bool
    threshold: float
    margin: float
    prefer_top: int
    rescore_top: int
    gate_min_precision: float

    def __post_init__(self):
        _ = self.rules  # CEFilterSpec checks threshold, margin, prefer_top
        if self.rescore_top < 0:
            raise ValueError(f"CEMiningSpec.rescore_top: must be >= 0 (0: the whole pool), got {self.rescore_top}")
        if not 0.0 <= self.gate_min_precision <= 1.0:
            raise ValueError(f"CEMiningSpec.gate_min_precision: must be in [0, 1] (0: no gate), got "
                             f"{self.gate_min_precision}")

    @property
    def rules(self) -> CEFilterSpec:
        """The `ce_filter` / `guide_mask` / gate rules."""
        return CEFilterSpec(self.threshold, self.margin, self.prefer_top)

    @property
    def guides(self) -> bool:
        """Whether the cross-encoder filters pools or masks batch columns."""
        return self.filter or self.guide_in_batch


@dataclasses.dataclass(frozen=True)
class CEStage:
    """How `mine_pool` runs the cross-encoder stage.

    scorer: the CEs and their cache. rules: the `ce_filter` rules (`CEMiningSpec.rules`). rescore_top: the pool
    entries scored per query (0: all). judge: the CEs may judge (the dev gate is open): score (with `score`) and
    `ce_filter`, counts returned; False: nothing scored or dropped, the pool carries the cached logits only.
    score: score the pool's pairs and the positives first (False: cached logits only, e.g. a pool re-queried
    between refreshes). drop: return the filtered pool (False: `ce.filter` off, the pool unfiltered with its `ce`
    column, counts still computed). drop_unscored: the filter also drops what the CE never scored.
    positive_ce: [R] the positives' logits to use (None: from the cache after scoring).
    """

    scorer: PairScorer
    rules: CEFilterSpec
    rescore_top: int = 0
    judge: bool = True
    score: bool = True
    drop: bool = True
    drop_unscored: bool = False
    positive_ce: np.ndarray | None = None
    show_progress: bool = False


@dataclasses.dataclass(frozen=True)
class Mined:
    """What `mine_pool` gives: `pool` (after the CE stage), `retrieved` (before it), `positive_ce` [R] (the
    positives' CE logits; None without a CE stage) and the CE filter's `counts` (empty when it did not judge)."""

    pool: Pool
    retrieved: Pool
    positive_ce: np.ndarray | None = None
    counts: dict[str, int] = dataclasses.field(default_factory=dict)


def mine_pool(retriever: Retriever, query_emb: np.ndarray, query_texts: list[str], positives: np.ndarray,
              doc_emb: np.ndarray, canonical: np.ndarray, pool_size: int, *, rows: np.ndarray | None = None,
              excluded: np.ndarray | None = None, fusion: tuple[Retriever, int] | None = None,
              ce: CEStage | None = None) -> Mined:
    """retrieve -> score -> cross-encoder stage: a pool of `pool_size` candidates per query.

    query_emb [R, D] and query_texts [R] of the query rows `rows` (default: 0..R-1, the rows the CE cache is keyed
    by); positives [R, P] their labelled positives (-1 padded); doc_emb [N, D] the corpus embeddings the
    retriever's index holds; canonical [N] each corpus row's exact-text class. excluded [R, E]: rows never in
    the pool (default: the positives; training's oracle filter adds the known unlabelled duplicates). The
    positives and their exact-text twins are removed (`negatives.retrieve_pool`); each query's best positive
    dense score is the band's reference; fusion: see `negatives.retrieve_pool`. ce: the CE stage (`CEStage`).
    """
    rows = np.arange(len(query_texts)) if rows is None else np.asarray(rows)
    retrieved = negatives.retrieve_pool(retriever, query_emb, query_texts,
                                        positives if excluded is None else excluded,
                                        best_positive_scores(query_emb, doc_emb, positives), canonical, pool_size,
                                        fusion=fusion)
    return Mined(retrieved, retrieved) if ce is None else judge_pool(retrieved, positives, rows, ce)


def judge_pool(pool: Pool, positives: np.ndarray, rows: np.ndarray, ce: CEStage) -> Mined:
    """The cross-encoder stage of `mine_pool` on pool [R, M] of the query rows `rows` (positives [R, P]): scores
    (`ce.judge` and `ce.score`) each query's first `ce.rescore_top` entries and its positives, then `ce_filter`
    on the cached logits (`ce.judge`). The result's pool carries the `ce` column either way. Training runs it
    (`training/miner.judge`) on a refreshed pool after the dev gate, and on a pool mined before the CEs existed."""
    if ce.judge and ce.score:
        ce.scorer.score(pool_pairs(pool.indices, positives, rows, ce.rescore_top), ce.show_progress)
    positive_ce = ce.scorer.positive(rows, positives) if ce.positive_ce is None else ce.positive_ce
    logits = ce.scorer.lookup(rows, pool.indices)
    unfiltered = dataclasses.replace(pool, ce=np.where(pool.indices >= 0, logits, -np.inf).astype(np.float32))
    if not ce.judge:
        return Mined(unfiltered, pool, positive_ce)
    filtered, counts = ce_filter(pool, logits, positive_ce, ce.rules, drop_unscored=ce.drop_unscored)
    return Mined(filtered if ce.drop else unfiltered, pool, positive_ce, counts)
