"""Ablation: in-batch negatives only (no explicit negatives).

    hnm train --config configs/ablations/in_batch.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 on abt_buy in results/ablation_table.md (experiments/ablation_table.py).
"""

from configs.ablations import ablation_base


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.strategy = "in_batch"
    c.mining.num_negatives = 0
    return c
