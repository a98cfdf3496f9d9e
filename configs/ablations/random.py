"""Ablation: in-batch + 2 uniformly random corpus negatives per query.

    hnm train --config configs/ablations/random.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: its paired difference in results/REPRODUCTION.md (`python -m experiments.suite --tier 1`, then
`python -m experiments.report`); older seed-averaged runs: results/ablations.md (docs/HISTORY.md).
"""

from configs.ablations import ablation_base


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.strategy = "random"
    return c
