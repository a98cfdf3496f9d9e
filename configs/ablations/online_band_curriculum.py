"""Ablation: online_band + an easy-to-hard curriculum moving both edges of the gap band over the whole run.

The band goes from [s_pos - 0.8, s_pos - 0.4] to online_band's [s_pos - 0.3, s_pos + 0.3] (the schedule is the only difference),
refilled to 2 negatives per query like every band arm.

    hnm train --config configs/ablations/online_band_curriculum.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 and the mechanism's logged diagnostic (train/band_lo, train/band_hi, train/explicit_negative_gap); see the README (issue-11 table).
"""

from configs.ablations import ablation_base, easy_to_hard_curriculum, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    easy_to_hard_curriculum(c)
    return c
