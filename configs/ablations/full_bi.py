"""Ablation: the recipe without its cross-encoder (online semi-hard band, hardness margin, easy-to-hard
curriculum, uniformity regularizer, hybrid logits and hybrid retriever): claim 9's arm, as cheap as one bi-encoder.
It is `online_band_margin_curriculum_hybrid` under the name PROTOCOL.md gives claim 9's arm.

    hnm train --config configs/ablations/full_bi.py --config.data.path=ANY_BEIR_FOLDER --workdir W

Figure: claim 9 of results/REPRODUCTION.md (`python -m experiments.report`).
"""

from configs.ablations.online_band_margin_curriculum_hybrid import get_config

__all__ = ["get_config"]
