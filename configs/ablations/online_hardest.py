"""Ablation: in-batch + the 2 hardest negatives of the online pool (re-mined every epoch, re-queried every step).

    hnm train --config configs/ablations/online_hardest.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 (mean +- 95% CI over seeds) in results/ablations.md (experiments/ablate.py).
"""

from configs.ablations import ablation_base


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "hardest"
    return c
