"""Ablation: online_band_margin + an easy-to-hard curriculum on the band.

    hnm train --config configs/ablations/online_band_margin_curriculum.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 (mean +- 95% CI over seeds) in results/ablations.md, from older runs
(docs/HISTORY.md); not an arm of the current suite (experiments/suite.py TIERS).
"""

from configs.ablations import ablation_base, easy_to_hard_curriculum, hardness_margin, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    hardness_margin(c)
    easy_to_hard_curriculum(c)
    return c
