"""Ablation: every mechanism at once — the recipe `configs/full.py` was before issue 25 (claim 9's arm `full_bi`
plus the cross-encoder): in-batch negatives + negatives mined online from the hybrid BM25 + dense retriever, a
semi-hard band that a curriculum moves from easy to hard, a hardness margin, a uniformity regularizer and hybrid
logits, and two cross-fitted cross-encoders that drop likely false negatives from the pools of the queries they did
not train on (and mask in-batch ones), when at least half of what their rules would drop from the dev split's
labelled pairs is a true match (ce.gate_min_precision; else they are skipped with a warning).

    hnm train --config configs/ablations/full_stack.py --config.data.path=ANY_BEIR_FOLDER --workdir W
    hnm train-ce --config configs/ablations/full_stack.py --workdir W    # its cross-encoder alone

Kept to reproduce the stacked recipe and exercise every mechanism together; results/REPRODUCTION.md's claims 4, 6, 8
and 9 say the stack does not beat online_hardest, so `configs/full.py` is no longer this.
"""

from configs.ablations import full_bi


def get_config(arg: str | None = None):
    c = full_bi.get_config(arg)
    c.index.exact_threshold = 0  # ScaNN at every corpus size (exact search only below its minimum of docs)
    c.ce.filter = True
    c.ce.guide_in_batch = True
    c.ce.loss = "listwise"  # measured on abt_buy: 60 listwise steps lift re-ranking 0.816 -> 0.850 accuracy@1,
    # while 60 binary steps were still at 65% train accuracy with every logit below 0 (0.850 is below the trained
    # bi-encoders' 0.89-0.91)
    c.ce.threshold = 1.0  # off: listwise logits are shift-free, not probabilities
    c.ce.margin = 0.1  # drop pool candidates the CE scores within 0.1 of the query's positive
    c.ce.rescore_top = 0  # score (and filter) the whole pool of 30, not just its top 10
    c.ce.cross_fit = True  # a CE never filters pools of queries it was trained on (each trains on half the queries)
    c.ce.gate_min_precision = 0.5  # filter only while >= half of what each CE's rules drop from dev pairs is a match
    return c
