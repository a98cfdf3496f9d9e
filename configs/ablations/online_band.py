"""Ablation: in-batch + 2 semi-hard negatives of the online pool (band first, refilled nearest to the band).

    hnm train --config configs/ablations/online_band.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: its paired difference in results/REPRODUCTION.md (`python -m experiments.suite --tier 1`, then
`python -m experiments.report`); older seed-averaged runs: results/ablations.md (docs/HISTORY.md).
"""

from configs.ablations import ablation_base, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    return c
