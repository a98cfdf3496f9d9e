"""Shared budget of the ablation recipes: each file in this folder changes only what its name says.

Budget: batch 32, 2 epochs, 2 explicit negatives per query from a pool of 30. Token lengths come from the data
(data.*_max_length = 0: each side's width covers 95% of its records, capped at 256; evaluation at the wider one).
Every arm with explicit negatives trains on the same number of them: a band refills the slots it leaves empty with
the pool entries nearest to it (mining.band_refill; train/explicit_negatives_per_query logs the count).
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
    """Gap band: prefer negatives scoring from 0.3 below the positive to 0.3 above it (near the positive, or the
    model's errors; further above is more likely a false negative, which has its own rules too: labelled positives,
    exact twins, the cross-encoder). A query with fewer than N pool entries in the band gets the entries nearest to
    it (refill; the step does not re-mask)."""
    c.band.mode = "gap"
    c.band.lo = -0.3
    c.band.hi = 0.3
    c.mining.band_refill = True
    c.mining.band_in_step = False


def hardness_margin(c) -> None:
    """Additive margin on the InfoNCE logits, m(h) = max(0, 0.1 + 0.5 h), h = s_neg - s_pos: 0 for a negative 0.2 or
    more below the positive, 0.1 at the positive's score, 0.15 for an error 0.1 above it (2-3 nats at t = 0.05)."""
    c.loss.margin_kind = "additive"
    c.loss.margin = 0.1
    c.loss.margin_alpha = 0.5
    c.loss.margin_relative = True


def easy_to_hard_curriculum(c) -> None:
    """Both edges of the gap band move linearly over the whole run, from [s_pos - 0.8, s_pos - 0.4] (easy: well
    below the positive) to the band of `semi_hard_band`, [s_pos - 0.3, s_pos + 0.3] (hard: near or above it), so
    the curriculum arm differs from the band arm by the schedule only; the upper edge passes the positive 4/7 into
    the run."""
    semi_hard_band(c)
    c.band.curriculum = "linear"
    c.band.start_lo = -0.8
    c.band.start_hi = -0.4
    c.band.curriculum_fraction = 1.0


def hybrid_logits(c) -> None:
    """Hybrid logits in training: the deployed weighted fusion of dense + BM25 (retriever.*: BM25 weight 0.3,
    min-max per query over the retriever's candidates), as dense + beta_q x normalized BM25 (a per-query affine map
    of the fused score; train/hybrid_beta_mean logs beta_q)."""
    c.loss.hybrid_logits = True


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
