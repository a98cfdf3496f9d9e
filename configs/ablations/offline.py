"""Ablation: in-batch + 2 semi-hard negatives from a pool mined ONCE with the initial model (never refreshed).

    hnm train --config configs/ablations/offline.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: its paired difference in results/REPRODUCTION.md (`python -m experiments.suite --tier 1`, then
`python -m experiments.report`); older seed-averaged runs: results/ablations.md (docs/HISTORY.md).
"""

from configs.ablations import ablation_base, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "offline"
    c.mining.strategy = "band"
    semi_hard_band(c)
    return c
