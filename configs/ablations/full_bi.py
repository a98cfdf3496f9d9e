"""Ablation: the recipe without its cross-encoder (online semi-hard band, hardness margin, easy-to-hard
curriculum, uniformity regularizer, hybrid logits and hybrid retriever): claim 9's arm, as cheap as one bi-encoder.

    hnm train --config configs/ablations/full_bi.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: claim 9 of results/REPRODUCTION.md (`python -m experiments.report`).
"""

from configs.ablations import ablation_base, easy_to_hard_curriculum, hardness_margin, hybrid, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    hardness_margin(c)
    easy_to_hard_curriculum(c)
    hybrid(c)
    return c
