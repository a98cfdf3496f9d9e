"""Negative strategies: one dict, name -> function choosing N explicit negatives per query.

Two orthogonal choices, each switchable alone for ablations:
  - `mining.pool` (POOL_SOURCES): where candidates come from. "none"; "offline": mined once with the initial
    model and never refreshed; "online": re-mined every epoch (re-encoded corpus, rebuilt index) AND re-queried
    every step with the current query embeddings.
  - `mining.strategy` (NEGATIVE_STRATEGIES): how N negatives are picked. "in_batch" (none), "random" (uniform
    over the corpus), "uniform" (uniform over the pool), "hardest" (top of the pool), "band" (semi-hard: inside
    the similarity band of the curriculum; uniform or SimANS-weighted).

Every strategy has the signature `(candidates, spec, rng) -> neg_doc [B, N] int32` (-1 = empty slot) and never
returns a known positive. Choices are deterministic in the step's host Generator, i.e. in (seed, epoch, step).
"""

import dataclasses

import numpy as np

from hnm_jax.mining.retriever import Retrieved, Retriever
from hnm_jax.mining.schedules import band_mask, simans_weights

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

    def take(self, rows: np.ndarray) -> "Pool":
        return Pool(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True, eq=False)
class Candidates:
    """What a strategy may look at for one batch of B queries."""

    positives: np.ndarray  # [B, P] corpus rows of every known positive, -1 padded
    num_docs: int
    pool: Pool | None  # this batch's rows of the pool ([B, M])
    band: tuple[float, float]  # the band at this step (host floats)
    band_relative: bool


@dataclasses.dataclass(frozen=True)
class SelectSpec:
    """The strategy knobs (a view of MiningSpec)."""

    num_negatives: int
    sampling: str = "uniform"
    simans_a: float = 5.0
    simans_b: float = -0.1


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


def _sample_rows(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per row, n distinct column indices drawn without replacement with probability ~ weights ([B, M] >= 0).

    Gumbel-top-k: argsort of log w + Gumbel noise. Rows with fewer than n positive weights get -1 slots.
    """
    keys = np.where(weights > 0, np.log(np.maximum(weights, 1e-30)) + rng.gumbel(size=weights.shape), -np.inf)
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
    """Semi-hard: pool entries whose cosine lies inside the band, sampled uniformly or with SimANS weights."""
    pool = candidates.pool
    in_band = np.asarray(band_mask(pool.dense, pool.positive, candidates.band, candidates.band_relative))
    kept = in_band & (pool.indices >= 0)
    if spec.sampling == "simans":
        weights = np.asarray(simans_weights(np.where(kept, pool.dense, -np.inf), pool.positive,
                                            spec.simans_a, spec.simans_b), np.float64)
    else:
        weights = kept.astype(np.float64)
    return _pick(pool, _sample_rows(weights, spec.num_negatives, rng))


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


def mine_pool(retriever: Retriever, query_emb: np.ndarray, query_texts: list[str], positives: np.ndarray,
              positive_emb_scores: np.ndarray, canonical: np.ndarray, pool_size: int) -> Pool:
    """A pool of `pool_size` candidates per query from the deployed retriever, known positives removed.

    Also removes exact-text twins of a positive (same canonical row): they are unlabelled positives.
    query_emb [Q, D], positives [Q, P] (-1 padded), positive_emb_scores [Q], canonical [N_docs].
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

    return Pool(indices=column(retrieved.indices, -1).astype(np.int32), dense=column(retrieved.dense, -np.inf),
                lexical=column(retrieved.lexical, -np.inf), fused=column(retrieved.fused, -np.inf),
                positive=positive_emb_scores.astype(np.float32))
