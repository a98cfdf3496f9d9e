"""Ablation: in-batch negatives only (no explicit negatives).

    hnm train --config configs/ablations/in_batch.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 (mean +- 95% CI over seeds) in results/ablations.md (experiments/ablate.py).
"""

from configs.ablations import ablation_base


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.strategy = "in_batch"
    c.mining.num_negatives = 0
    return c
