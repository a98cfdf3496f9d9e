"""Ablation: in-batch + 2 semi-hard negatives from a pool mined ONCE with the initial model (never refreshed).

    hnm train --config configs/ablations/offline.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 (mean +- 95% CI over seeds) in results/ablations.md (experiments/ablate.py).
"""

from configs.ablations import ablation_base, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "offline"
    c.mining.strategy = "band"
    semi_hard_band(c)
    return c
