"""Ablation: online_band + the hardness-adaptive margin loss.

    hnm train --config configs/ablations/online_band_margin.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: its paired difference in results/REPRODUCTION.md (`python -m experiments.suite --tier 2`, then
`python -m experiments.report`); older seed-averaged runs: results/ablations.md (docs/HISTORY.md).
"""

from configs.ablations import ablation_base, hardness_margin, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    hardness_margin(c)
    return c
