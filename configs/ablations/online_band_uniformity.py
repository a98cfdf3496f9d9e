"""Ablation: online_band + the uniformity regularizer on the batch's documents.

    hnm train --config configs/ablations/online_band_uniformity.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 and the mechanism's logged diagnostic (train/uniformity); see the README (issue-11 table).
"""

from configs.ablations import ablation_base, semi_hard_band, uniformity


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    uniformity(c)
    return c
