"""Ablation: online_band + hybrid (dense + BM25) logits in the loss: the deployed weighted fusion (retriever.*) of
each (query, column) pair, up to a per-query affine map; the retriever deployed is retriever.mode (dense here).

    hnm train --config configs/ablations/online_band_hybrid_logits.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 and the mechanism's logged diagnostic (train/hybrid_beta_mean, train/hardest_negative_score); see the README (issue-11 table).
"""

from configs.ablations import ablation_base, hybrid_logits, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    hybrid_logits(c)
    return c
