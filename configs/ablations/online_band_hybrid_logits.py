"""Ablation: online_band + hybrid (dense + BM25) logits in the loss; dense retriever.

    hnm train --config configs/ablations/online_band_hybrid_logits.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 and the mechanism's logged diagnostic (train/loss, train/hardest_negative_score); see the README (issue-11 table).
"""

from configs.ablations import ablation_base, hybrid_logits, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    hybrid_logits(c)
    return c
