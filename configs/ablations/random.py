"""Ablation: in-batch + 2 uniformly random corpus negatives per query.

    hnm train --config configs/ablations/random.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 (mean +- 95% CI over seeds) in results/ablations.md (experiments/ablate.py).
"""

from configs.ablations import ablation_base


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.strategy = "random"
    return c
