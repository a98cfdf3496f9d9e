"""Shared budget of the ablation recipes: each file in this folder changes only what its name says.

Budget (fits ~15 minutes on 2 CPU cores for a ~5k-record corpus): batch 32, 2 epochs, training texts cut at
32 tokens (these records have a median of ~26), evaluation at 128 tokens, 2 explicit negatives per query.
"""

from configs import base


def ablation_base(arg: str | None = None):
    """base.py with the ablation budget; `arg` is passed through ("tiny" for tests)."""
    c = base.get_config(arg)
    if arg != "tiny":
        c.train.num_epochs = 2
        c.train.batch_size = 32
        c.train.learning_rate = 3e-5
        c.data.query_max_length = 32
        c.data.doc_max_length = 32
    c.mining.num_negatives = 2
    c.mining.pool_size = 30
    return c


def semi_hard_band(c) -> None:
    """Positive-aware semi-hard band: keep negatives scoring 50%..95% of the positive's cosine."""
    c.band.relative = True
    c.band.lo = 0.5
    c.band.hi = 0.95


def hardness_margin(c) -> None:
    """Margin loss beside InfoNCE, margin m(h) = 0.05 + 0.1 * h growing with the negative's cosine h."""
    c.loss.margin_weight = 1.0
    c.loss.margin = 0.05
    c.loss.margin_alpha = 0.1


def easy_to_hard_curriculum(c) -> None:
    """The band moves linearly from 30%..80% to 50%..95% of the positive's cosine over the run (~36 steps)."""
    c.band.curriculum = "linear"
    c.band.start_lo = 0.3
    c.band.start_hi = 0.8
    c.band.curriculum_steps = 36


def hybrid(c) -> None:
    """Deploy and mine with BM25 + dense fusion; hybrid logits and a uniformity regularizer in the loss."""
    c.retriever.mode = "hybrid"
    c.retriever.lexical_weight = 0.3
    c.loss.hybrid_beta = 0.1
    c.loss.uniformity_weight = 0.05
