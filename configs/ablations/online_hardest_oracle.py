"""Ablation: online_hardest + an oracle filter that keeps exactly the known unlabelled duplicates out of every pool.

    hnm train --config configs/ablations/online_hardest_oracle.py --config.data.path=SYNTHETIC_DUP_FOLDER --workdir W

Needs a benchmark that lists its unlabelled duplicates (unlabelled_duplicates.tsv: synthetic SIZES "ablation_dup",
experiments' synthetic_dup, or "power_dup"). Against online_hardest it measures what the false negatives in the pools
cost (claim 4's reported contrast); the cross-encoder filter's `refresh/ce_dup_precision` and `refresh/ce_dup_recall`
say how much of that a CE recovers. Figure: test accuracy@1 with the duplicates counted relevant
(eval.duplicates_relevant), and `refresh/pool_unlabelled_duplicates` = 0 at every refresh.
"""

from configs.ablations import ablation_base


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "hardest"
    c.mining.oracle_filter = True
    return c
