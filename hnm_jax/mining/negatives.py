"""Negative strategies: one dict, name -> function choosing N explicit negatives per query.

Every strategy has the signature `(context, rows, rng) -> neg_doc [B, N] int32` (-1 = empty slot) and never
returns a known positive of the query. The train loop passes the host Generator of the step, so choices are
deterministic in (seed, epoch, step).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class NegativeContext:
    """What a strategy may look at: corpus size, the split's positives, how many negatives to return."""

    num_docs: int
    positives: np.ndarray  # [Q, P] corpus rows of every known positive of each split query, -1 padded
    num_negatives: int


def in_batch_negatives(context: NegativeContext, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """No explicit negatives: the other queries' positives are the only negatives. [B, 0]."""
    return np.zeros((len(rows), 0), np.int32)


def random_negatives(context: NegativeContext, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform corpus documents, redrawn while they hit a known positive of the query. [B, N]."""
    positives = context.positives[rows]
    draws = rng.integers(0, context.num_docs, size=(len(rows), context.num_negatives))
    for _ in range(8):
        bad = np.any(draws[:, :, None] == positives[:, None, :], axis=-1)
        if not bad.any():
            break
        draws[bad] = rng.integers(0, context.num_docs, size=int(bad.sum()))
    bad = np.any(draws[:, :, None] == positives[:, None, :], axis=-1)
    return np.where(bad, -1, draws).astype(np.int32)


NEGATIVE_STRATEGIES = {
    "in_batch": in_batch_negatives,
    "random": random_negatives,
}
