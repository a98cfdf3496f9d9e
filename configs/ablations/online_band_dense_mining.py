"""Ablation: online_band mining from the dense index alone, whatever retriever it deploys (retriever.mode).

    hnm train --config configs/ablations/online_band_dense_mining.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Claim 7 of experiments/PROTOCOL.md: online_band under `retriever.mode=hybrid` (the suite's PROTOCOL) mines
from BM25 + dense, this arm from dense only; both deploy the same pipeline. Figure: results/REPRODUCTION.md.
"""

from configs.ablations import ablation_base, semi_hard_band


def get_config(arg: str | None = None):
    c = ablation_base(arg)
    c.mining.pool = "online"
    c.mining.strategy = "band"
    c.mining.retriever = "dense"
    semi_hard_band(c)
    return c
