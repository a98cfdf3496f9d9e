"""Ablation: in-batch negatives only (no explicit negatives).

    hnm train --config configs/ablations/in_batch.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: its paired difference in results/REPRODUCTION.md (`python -m experiments.suite --tier 1`, then
`python -m experiments.report`); older seed-averaged runs: results/ablations.md (docs/HISTORY.md).
"""

from configs.ablations import ablation_base


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.strategy = "in_batch"
    c.mining.num_negatives = 0
    return c
