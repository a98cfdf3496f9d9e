"""Negative strategies: one dict, name -> function choosing N explicit negatives per query.

Two orthogonal choices, each switchable alone for ablations:
  - `mining.pool` (POOL_SOURCES): where candidates come from. "none"; "offline": mined once with the initial
    model and never refreshed; "online": re-mined every epoch (re-encoded corpus, rebuilt index) AND re-queried
    every step with the current query embeddings.
  - `mining.strategy` (NEGATIVE_STRATEGIES): how N negatives are picked. "in_batch" (none), "random" (uniform
    over the corpus), "uniform" (uniform over the pool), "hardest" (top of the pool), "band" (semi-hard: inside
    the similarity band of the curriculum; uniform or SimANS-weighted; with `SelectSpec.refill` the slots the band
    leaves empty are filled by the pool entries nearest to it, so every arm trains on N negatives per query).

`ce_filter` (optional, after mining) drops pool entries a cross-encoder calls likely positives (unlabelled false
negatives); `guide_mask` does the same for in-batch columns (guide-model masking, as in GISTEmbed); whether they run is
`mining/ce_gate.py`'s call.

Every strategy has the signature `(candidates, spec, rng) -> neg_doc [B, N] int32` (-1 = empty slot) and never
returns a known positive. Choices are deterministic in the step's host Generator, i.e. in (seed, epoch, step).
"""

import dataclasses

import numpy as np

from hnm_jax.mining.retriever import Retrieved, Retriever, hybrid_beta
from hnm_jax.mining.schedules import band_fill, band_mask, simans_weights

POOL_SOURCES = ("none", "offline", "online")
SAMPLINGS = ("uniform", "simans")


@dataclasses.dataclass(frozen=True, eq=False)
class Pool:
    """Mined candidates of Q queries, best first by the retriever's fused score; -1 / -inf = empty slot."""

    indices: np.ndarray  # [Q, M] int32 corpus rows (known positives and their exact-text twins removed)
    dense: np.ndarray  # [Q, M] float32 cosine of query and candidate
    lexical: np.ndarray  # [Q, M] float32 BM25 score (NaN when the retriever has no lexical index)
    fused: np.ndarray  # [Q, M] float32 the retriever's ranking score
    positive: np.ndarray  # [Q] float32 cosine of the query and its best positive
    ce: np.ndarray | None = None  # [Q, M] float32 cross-encoder logit of (query, candidate) (`ce_filter`), or None
    # the deployed fusion of each query, for hybrid logits (`retriever.hybrid_logits`), or None: [Q] float32 each
    lexical_lo: np.ndarray | None = None  # min BM25 over the deployed retriever's candidates of the query
    lexical_span: np.ndarray | None = None  # max - min of those
    hybrid_beta: np.ndarray | None = None  # `retriever.hybrid_beta`: the BM25 weight on the dense scale

    def take(self, rows: np.ndarray) -> "Pool":
        return Pool(**{name: value[rows] for name, value in self.arrays().items()})

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by field name; `ce` and the fusion fields only when set (so such pools checkpoint as before)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclasses.dataclass(frozen=True, eq=False)
class Candidates:
    """What a strategy may look at for one batch of B queries."""

    positives: np.ndarray  # [B, P] corpus rows of every known positive, -1 padded
    num_docs: int
    pool: Pool | None  # this batch's rows of the pool ([B, M])
    band: tuple[float, float]  # the band at this step (host floats)
    band_mode: str  # schedules.BAND_MODES


@dataclasses.dataclass(frozen=True)
class SelectSpec:
    """The strategy knobs (a view of MiningSpec). refill ("band" only): fill the slots the band leaves empty with
    the pool entries nearest to the band (`schedules.band_fill`); False: the band is a filter (empty slots stay)."""

    num_negatives: int
    sampling: str = "uniform"
    simans_a: float = 5.0
    simans_b: float = -0.1
    refill: bool = False


def in_batch_negatives(candidates: Candidates, spec: SelectSpec, rng: np.random.Generator) -> np.ndarray:
    """No explicit negatives: the other queries' positives are the only negatives. [B, 0]."""
    return np.zeros((len(candidates.positives), 0), np.int32)


def random_negatives(candidates: Candidates, spec: SelectSpec, rng: np.random.Generator) -> np.ndarray:
    """Uniform corpus documents, redrawn while they hit a known positive of the query. [B, N]."""
    positives = candidates.positives
    draws = rng.integers(0, candidates.num_docs, size=(len(positives), spec.num_negatives))
    for _ in range(8):
        bad = np.any(draws[:, :, None] == positives[:, None, :], axis=-1)
        if not bad.any():
            break
        draws[bad] = rng.integers(0, candidates.num_docs, size=int(bad.sum()))
    bad = np.any(draws[:, :, None] == positives[:, None, :], axis=-1)
    return np.where(bad, -1, draws).astype(np.int32)


def _sample_keys(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gumbel keys log w + Gumbel noise of weights [B, M] >= 0 (-inf where w = 0): the top n of a row are n distinct
    columns drawn without replacement with probability ~ w."""
    return np.where(weights > 0, np.log(np.maximum(weights, 1e-30)) + rng.gumbel(size=weights.shape), -np.inf)


def _sample_rows(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per row, n distinct column indices drawn without replacement with probability ~ weights ([B, M] >= 0).

    Gumbel-top-k: argsort of log w + Gumbel noise. Rows with fewer than n positive weights get -1 slots.
    """
    keys = _sample_keys(weights, rng)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :n]
    chosen_ok = np.take_along_axis(keys, order, axis=1) > -np.inf
    return np.where(chosen_ok, order, -1)


def _pick(pool: Pool, columns: np.ndarray) -> np.ndarray:
    """Corpus rows at pool `columns` [B, N] (-1 column -> -1)."""
    rows = np.take_along_axis(pool.indices, np.maximum(columns, 0), axis=1)
    return np.where(columns >= 0, rows, -1).astype(np.int32)


def uniform_pool_negatives(candidates: Candidates, spec: SelectSpec, rng: np.random.Generator) -> np.ndarray:
    """Uniform over the valid pool entries (the top-M of the retriever)."""
    pool = candidates.pool
    return _pick(pool, _sample_rows((pool.indices >= 0).astype(np.float64), spec.num_negatives, rng))


def hardest_negatives(candidates: Candidates, spec: SelectSpec, rng: np.random.Generator) -> np.ndarray:
    """The N top-ranked pool entries (the pool is sorted best first)."""
    return candidates.pool.indices[:, :spec.num_negatives].astype(np.int32)  # valid entries are packed first


def band_negatives(candidates: Candidates, spec: SelectSpec, rng: np.random.Generator) -> np.ndarray:
    """Semi-hard: pool entries whose cosine lies inside the band, sampled uniformly or with SimANS weights.

    In band order (`schedules.band_fill`): the in-band entries by their sampling keys (Gumbel-top-k), then, with
    `spec.refill`, the entries nearest to the band (`band_distance`, ties by pool rank) fill the slots left, so
    min(N, valid pool entries) slots are filled; without it rows with fewer than N in-band entries keep -1 slots.
    """
    pool = candidates.pool
    valid = pool.indices >= 0
    in_band = np.asarray(band_mask(pool.dense, pool.positive, candidates.band, candidates.band_mode))
    kept = in_band & valid
    if spec.sampling == "simans":
        weights = np.asarray(simans_weights(np.where(kept, pool.dense, -np.inf), pool.positive,
                                            spec.simans_a, spec.simans_b), np.float64)
    else:
        weights = kept.astype(np.float64)
    keys = _sample_keys(weights, rng)
    rank = np.argsort(np.argsort(-keys, axis=1, kind="stable"), axis=1)  # exact in float32, unlike the keys
    priority = np.where(keys > -np.inf, -rank, -np.inf).astype(np.float32)
    columns = band_fill(pool.dense, pool.positive, candidates.band, candidates.band_mode, spec.num_negatives,
                        valid=valid, priority=priority, refill=spec.refill)
    return _pick(pool, np.asarray(columns))


NEGATIVE_STRATEGIES = {
    "in_batch": in_batch_negatives,
    "random": random_negatives,
    "uniform": uniform_pool_negatives,
    "hardest": hardest_negatives,
    "band": band_negatives,
}


def needs_pool(strategy: str) -> bool:
    """Whether `strategy` picks from a mined pool."""
    return strategy in ("uniform", "hardest", "band")


def retrieve_pool(retriever: Retriever, query_emb: np.ndarray, query_texts: list[str], positives: np.ndarray,
              positive_emb_scores: np.ndarray, canonical: np.ndarray, pool_size: int,
              fusion: tuple[Retriever, int] | None = None) -> Pool:
    """A pool of `pool_size` candidates per query from the deployed retriever, known positives removed.

    Also removes exact-text twins of a positive (same canonical row): they are unlabelled positives.
    query_emb [Q, D], positives [Q, P] (-1 padded), positive_emb_scores [Q], canonical [N_docs].
    fusion: (the deployed hybrid retriever, its k): the pool also carries each query's fusion coefficients for
    hybrid logits (lexical_lo, lexical_span, hybrid_beta: `Retriever.fusion_coefficients`, `hybrid_beta`).
    """
    extra = max(8, positives.shape[1])
    retrieved: Retrieved = retriever.retrieve(query_emb, query_texts, k=pool_size + extra, exclude=positives)
    canon_pos = np.where(positives >= 0, canonical[np.maximum(positives, 0)], -2)
    canon_cand = np.where(retrieved.indices >= 0, canonical[np.maximum(retrieved.indices, 0)], -3)
    twin = np.any(canon_cand[:, :, None] == canon_pos[:, None, :], axis=-1)
    keep = (retrieved.indices >= 0) & ~twin
    order = np.argsort(~keep, axis=1, kind="stable")[:, :pool_size]  # kept entries first, rank order preserved
    valid = np.take_along_axis(keep, order, axis=1)

    def column(values: np.ndarray, empty: float) -> np.ndarray:
        return np.where(valid, np.take_along_axis(values, order, axis=1), empty).astype(values.dtype)

    extras = {}
    if fusion is not None:
        fusion_retriever, k = fusion
        coefficients = fusion_retriever.fusion_coefficients(query_emb, query_texts, k)
        extras = {"lexical_lo": coefficients.lexical_lo.astype(np.float32),
                  "lexical_span": coefficients.lexical_span.astype(np.float32),
                  "hybrid_beta": hybrid_beta(coefficients, fusion_retriever.spec)}
    return Pool(indices=column(retrieved.indices, -1).astype(np.int32), dense=column(retrieved.dense, -np.inf),
                lexical=column(retrieved.lexical, -np.inf), fused=column(retrieved.fused, -np.inf),
                positive=positive_emb_scores.astype(np.float32), **extras)


@dataclasses.dataclass(frozen=True)
class CEFilterSpec:
    """Cross-encoder false-negative filter (scores are CE logits, probabilities sigmoid(logit)).

    threshold: drop a candidate when sigmoid(s) > threshold (the CE calls it a likely positive); >= 1 disables.
    margin: drop a candidate when s >= s_pos - margin (scored about as high as the query's own positive, in
      logit units); -inf disables, a negative margin drops only candidates above the positive by |margin|.
    prefer_top: 0 keeps the pool order; k > 0 moves the k highest-CE kept candidates to the front (highest
      first), the other kept candidates after them in pool order (so `hardest` picks the CE-hardest).
    """

    threshold: float = 0.9
    margin: float = 0.1
    prefer_top: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0 or np.isnan(self.threshold):
            raise ValueError(f"CEFilterSpec.threshold must be a probability in (0, 1] (1 = off), got {self.threshold}")
        if np.isnan(self.margin) or self.margin == np.inf:
            raise ValueError(f"CEFilterSpec.margin must be a float below +inf (-inf = off), got {self.margin}")
        if self.prefer_top < 0:
            raise ValueError(f"CEFilterSpec.prefer_top must be >= 0 (0 = keep the pool order), got {self.prefer_top}")


def likely_positive(scores: np.ndarray, positive: np.ndarray, spec: CEFilterSpec) -> tuple[np.ndarray, np.ndarray]:
    """(by threshold, by margin only) bool arrays shaped like `scores` ([R, C]); positive [R] broadcasts per row.

    by threshold: s > logit(threshold) (== sigmoid(s) > threshold, without sigmoid rounding to 1 for large s);
    by margin: not by threshold and s >= positive - margin. A NaN positive never triggers the margin rule.
    """
    scores = np.asarray(scores, np.float64)
    if spec.threshold >= 1.0:
        by_threshold = np.zeros(scores.shape, bool)
    else:
        by_threshold = scores > np.log(spec.threshold) - np.log1p(-spec.threshold)
    near = scores >= np.asarray(positive, np.float64)[:, None] - spec.margin
    return by_threshold, near & ~by_threshold


def ce_filter(pool: Pool, ce_scores: np.ndarray, positive_ce: np.ndarray, spec: CEFilterSpec,
              drop_unscored: bool = False) -> tuple[Pool, dict[str, int]]:
    """Drops the pool entries a cross-encoder judges likely positives; returns (filtered pool, counts).

    For a valid entry (indices >= 0) of query q with CE logit s and the query's positive at s_pos:
      removed by threshold  if sigmoid(s) > spec.threshold
      removed by margin     if not the above and s >= s_pos - spec.margin
      removed as unscored   if drop_unscored and s is NaN (the CE never scored it)
    Removed entries become empty slots (index -1, scores -inf) and the kept ones are packed left in pool order
    (like `retrieve_pool`), or with the `spec.prefer_top` highest-CE first. The result carries `ce` ([Q, M], -inf
    on empty slots). Only pool entries are ever dropped; the labelled positives are not in a pool.

    Args:
      pool: [Q, M] candidates.
      ce_scores: [Q, M] CE logits of (query, pool candidate); ignored on empty slots; NaN = unscored (kept, never
        moved to the front, unless `drop_unscored`); +-inf is an error.
      positive_ce: [Q] CE logit of (query, its labelled positive); NaN turns the margin rule off for that query.
      spec: the rules.
      drop_unscored: also drop the entries the CE never scored (a pool re-queried between refreshes keeps only
        what the CE judged).
    Returns:
      (Pool [Q, M], {"removed_threshold": int, "removed_margin": int, "kept": int}), counts over valid entries;
      with `drop_unscored`, also "removed_unscored".
    """
    ce_scores = np.asarray(ce_scores, np.float32)
    positive_ce = np.asarray(positive_ce, np.float32)
    q, m = pool.indices.shape
    if ce_scores.shape != (q, m) or positive_ce.shape != (q,):
        raise ValueError(f"ce_filter: pool is [{q}, {m}], so ce_scores must be [{q}, {m}] and positive_ce [{q}]; "
                         f"got {ce_scores.shape} and {positive_ce.shape}")
    valid = pool.indices >= 0
    bad = valid & np.isinf(ce_scores)
    if bad.any():
        raise ValueError(f"ce_filter: {int(bad.sum())} valid pool entries have an infinite CE score "
                         f"(first at query {int(np.argwhere(bad)[0][0])})")
    by_threshold, by_margin = likely_positive(ce_scores, positive_ce, spec)
    by_threshold &= valid
    by_margin &= valid
    unscored = valid & np.isnan(ce_scores) & drop_unscored
    keep = valid & ~by_threshold & ~by_margin & ~unscored

    position = np.broadcast_to(np.arange(m), (q, m))
    if spec.prefer_top:
        scored = keep & ~np.isnan(ce_scores)
        by_ce = np.argsort(-np.where(scored, ce_scores, -np.inf), axis=1, kind="stable")  # highest CE first
        rank = np.empty_like(by_ce)
        np.put_along_axis(rank, by_ce, position, axis=1)
        top = scored & (rank < spec.prefer_top)
    else:
        rank, top = position, np.zeros_like(keep)
    group = np.where(top, 0, np.where(keep, 1, 2))  # top CE, then the other kept in pool order, then dropped
    order = np.lexsort((np.where(top, rank, position), group), axis=1)
    kept_sorted = np.take_along_axis(keep, order, axis=1)

    def column(values: np.ndarray, empty: float) -> np.ndarray:
        return np.where(kept_sorted, np.take_along_axis(values, order, axis=1), empty).astype(values.dtype)

    filtered = dataclasses.replace(pool, indices=column(pool.indices, -1).astype(np.int32),
                                   dense=column(pool.dense, -np.inf), lexical=column(pool.lexical, -np.inf),
                                   fused=column(pool.fused, -np.inf), ce=column(ce_scores, -np.inf))
    counts = {"removed_threshold": int(by_threshold.sum()), "removed_margin": int(by_margin.sum()),
              "kept": int(keep.sum())}
    if drop_unscored:
        counts["removed_unscored"] = int(unscored.sum())
    return filtered, counts


def guide_mask(ce_scores_in_batch: np.ndarray, positive_ce: np.ndarray, spec: CEFilterSpec) -> np.ndarray:
    """Guide-model masking of in-batch candidates (GISTEmbed): bool [B, C], False = the CE says likely positive.

    Column j of query i is masked when sigmoid(s_ij) > spec.threshold or s_ij >= positive_ce_i - spec.margin
    (the `ce_filter` rules). Column i of query i is the query's own positive (the [B, B*(1+N)] layout of
    `losses`) and is never masked. AND it with `losses.candidate_mask`.

    Args:
      ce_scores_in_batch: [B, C] CE logits of (query i, column j), C >= B; NaN = unscored, kept.
      positive_ce: [B] CE logit of (query i, its positive), usually the diagonal of `ce_scores_in_batch`.
      spec: the rules (`prefer_top` is unused).
    Returns:
      np.ndarray bool [B, C].
    """
    scores = np.asarray(ce_scores_in_batch, np.float64)
    b, c = scores.shape
    if c < b or np.shape(positive_ce) != (b,):
        raise ValueError(f"guide_mask: expected scores [B, C >= B] and positive_ce [B], got {scores.shape} and "
                         f"{np.shape(positive_ce)}")
    by_threshold, by_margin = likely_positive(scores, positive_ce, spec)
    likely = by_threshold | by_margin
    own = np.arange(c)[None, :] == np.arange(b)[:, None]
    return own | ~likely


CROSS_FIT_SALT = 0x63726F73  # "cros": the fold permutation's own stream, apart from the (seed, epoch) batch orders


def cross_fit_folds(num_queries: int, seed: int) -> np.ndarray:
    """[Q] int32 fold (0 or 1) of each training query: two halves of a seeded permutation (sizes Q//2, Q - Q//2).

    Cross-fitting: the CE trained on fold k scores (filters, guides) only the queries of fold 1 - k, so no CE ever
    judges the pool of a query it was trained on. Deterministic in `seed`.
    """
    if num_queries < 2:
        raise ValueError(f"cross_fit_folds: needs at least 2 queries, got {num_queries}")
    order = np.random.default_rng((seed, CROSS_FIT_SALT)).permutation(num_queries)
    folds = np.zeros(num_queries, np.int32)
    folds[order[num_queries // 2:]] = 1
    return folds

