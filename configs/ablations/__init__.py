"""Shared budget of the ablation recipes: each file in this folder changes only what its name says.

Budget: batch 32, 2 epochs, 2 explicit negatives per query from a pool of 30. Token lengths come from the data
(data.*_max_length = 0: each side's width covers 95% of its records, capped at 256; evaluation at the wider one).
"""

from configs import base


def ablation_base(arg: str | None = None):
    """base.py with the ablation budget; `arg` is passed through ("tiny" for tests)."""
    c = base.get_config(arg)
    if arg != "tiny":
        c.train.num_epochs = 2
        c.train.batch_size = 32
        c.train.learning_rate = 3e-5
    c.mining.num_negatives = 2
    c.mining.pool_size = 30
    return c


def semi_hard_band(c) -> None:
    """Gap band: keep negatives scoring at most 0.3 below the positive, and every one above it (the model's errors;
    false negatives are dropped by their own rules: labelled positives, exact twins, the cross-encoder)."""
    c.band.mode = "gap"
    c.band.lo = -0.3
    c.band.hi = 2.0


def hardness_margin(c) -> None:
    """Additive margin on the InfoNCE logits, m(h) = max(0, 0.1 + 0.5 h), h = s_neg - s_pos: 0 for a negative 0.2 or
    more below the positive, 0.1 at the positive's score, 0.15 for an error 0.1 above it (2-3 nats at t = 0.05)."""
    c.loss.margin_kind = "additive"
    c.loss.margin = 0.1
    c.loss.margin_alpha = 0.5
    c.loss.margin_relative = True


def easy_to_hard_curriculum(c) -> None:
    """The gap band moves linearly from [s_pos - 1, s_pos - 0.1] (easy: well below the positive) to the semi-hard
    band of `semi_hard_band` over the first 70% of the run's steps."""
    c.band.curriculum = "linear"
    c.band.start_lo = -1.0
    c.band.start_hi = -0.1
    c.band.curriculum_fraction = 0.7


def hybrid_logits(c) -> None:
    """Hybrid logits in training: dense + 0.1 x per-query min-max BM25 of the same pair."""
    c.loss.hybrid_beta = 0.1


def uniformity(c) -> None:
    """The uniformity regularizer on the batch's documents (anti-collapse), weight 0.05."""
    c.loss.uniformity_weight = 0.05


def hybrid_retriever(c) -> None:
    """Deploy and mine with BM25 + dense fusion (weighted, BM25 weight 0.3)."""
    c.retriever.mode = "hybrid"
    c.retriever.lexical_weight = 0.3


def hybrid(c) -> None:
    """The three collapse/lexical switches together: hybrid logits, uniformity, hybrid retriever."""
    hybrid_logits(c)
    uniformity(c)
    hybrid_retriever(c)
