"""Ablation: online_band + cross-encoder filtering of the pool (cross-fitted CEs, the whole pool scored).

    hnm train --config configs/ablations/online_band_ce.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 and refresh/ce_* (removals, dev re-ranking accuracy vs the bi-encoder).
"""

from configs.ablations import ablation_base, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    c.ce.filter = True
    c.ce.loss = "listwise"
    c.ce.threshold = 1.0  # off: listwise logits are shift-free, not probabilities
    c.ce.margin = 0.1  # drop pool candidates the CE scores within 0.1 of the query's positive
    return c
