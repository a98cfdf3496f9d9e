"""Ablation: online_band mining from, and deployed with, the hybrid BM25 + dense retriever.

    hnm train --config configs/ablations/online_band_hybrid_retriever.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: test accuracy@1 / MRR@10 and the mechanism's logged diagnostic (refresh/pool_* statistics); see the README (issue-11 table).
"""

from configs.ablations import ablation_base, hybrid_retriever, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    semi_hard_band(c)
    hybrid_retriever(c)
    return c
