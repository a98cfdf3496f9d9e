"""Ablation: online_band + an easy-to-hard curriculum moving the gap band over the first 70% of the run.

    hnm train --config configs/ablations/online_band_curriculum.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 and the mechanism's logged diagnostic (train/band_lo, train/band_kept_per_query); see the README (issue-11 table).
"""

from configs.ablations import ablation_base, easy_to_hard_curriculum, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    easy_to_hard_curriculum(c)
    return c
