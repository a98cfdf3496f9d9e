"""The cross-encoder gate: what the CE filter would remove, measured on labelled pairs, and whether it may filter.

The filter (`negatives.ce_filter`) drops a pool entry of query q whose CE logit s has sigmoid(s) > threshold, or
s >= s_pos(q) - margin, s_pos(q) being the logit of q's best labelled positive. `gate_figures` applies those rules,
unchanged, to every labelled pair of a split (the dev split's candidates: label 1 = true match, 0 = labelled
negative), each pair judged as a pool entry of its query would be, against the same s_pos(q):

    recall             = positives dropped / positives           (the false negatives it catches)
    precision          = positives dropped / pairs dropped        (how much of what it drops is a true match)
    negatives_removed  = negatives dropped / negatives            (true hard negatives it loses)

A query's best positive is its own reference, so with margin >= 0 the margin rule always drops it; its other
positives are judged as unlabelled matches would be. On data with one positive per query the margin rule's recall
is therefore 1 and precision = P / (P + negatives dropped): at precision p the filter drops (1 - p) / p labelled
negatives per true match it catches. The threshold rule does not use the reference, so its recall is measured as is.

`gate_open`: the filter runs only when precision >= `ce.gate_min_precision` (0: always). `removal_precision_recall`
gives the same two figures for what a filter removed from the pools, against known true matches (the unlabelled
duplicates of a synthetic benchmark). Pure numpy.
"""

import dataclasses

import numpy as np

from hnm_jax.mining.negatives import CEFilterSpec, likely_positive


def _share(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


@dataclasses.dataclass(frozen=True)
class GateFigures:
    """What the filter rules would drop from a split's labelled pairs (counts and the three shares; NaN share:
    empty denominator)."""

    positives: int  # labelled positive pairs
    negatives: int  # labelled negative pairs
    dropped_positives: int
    dropped_negatives: int

    @property
    def precision(self) -> float:
        return _share(self.dropped_positives, self.dropped_positives + self.dropped_negatives)

    @property
    def recall(self) -> float:
        return _share(self.dropped_positives, self.positives)

    @property
    def negatives_removed(self) -> float:
        return _share(self.dropped_negatives, self.negatives)

    def stats(self, suffix: str = "") -> dict[str, float]:
        """{"ce_gate_precision<suffix>", "ce_gate_recall<suffix>", "ce_gate_negatives_removed<suffix>"}."""
        return {f"ce_gate_precision{suffix}": self.precision, f"ce_gate_recall{suffix}": self.recall,
                f"ce_gate_negatives_removed{suffix}": self.negatives_removed}


def gate_figures(pair_query: np.ndarray, pair_ce: np.ndarray, pair_label: np.ndarray, positive_ce: np.ndarray,
                 spec: CEFilterSpec) -> GateFigures:
    """What the `ce_filter` rules would drop from labelled pairs, each judged as a pool entry of its query.

    Pair i (query q = pair_query[i], logit s = pair_ce[i]) is dropped when sigmoid(s) > spec.threshold or
    s >= positive_ce[q] - spec.margin (a NaN positive_ce[q] turns the margin rule off for q).

    Args:
      pair_query: [C] int, query row of each labelled pair.
      pair_ce: [C] float, CE logit of each pair (NaN: unscored, never dropped).
      pair_label: [C] int, 1 = true match, 0 = labelled negative.
      positive_ce: [Q] float, CE logit of each query and its best labelled positive (the filter's reference).
      spec: the rules.
    Returns:
      GateFigures (counts; precision, recall, negatives_removed).
    """
    pair_query, label = np.asarray(pair_query, np.int64), np.asarray(pair_label)
    scores = np.asarray(pair_ce, np.float64)
    if not pair_query.shape == scores.shape == label.shape or pair_query.ndim != 1:
        raise ValueError(f"gate_figures: pair_query, pair_ce and pair_label must be [C] alike, got {pair_query.shape}, "
                         f"{scores.shape} and {label.shape}")
    reference = np.asarray(positive_ce, np.float64)[pair_query]
    by_threshold, by_margin = likely_positive(scores[:, None], reference, spec)  # one row per pair
    dropped = (by_threshold | by_margin)[:, 0]
    positive = label == 1
    return GateFigures(positives=int(positive.sum()), negatives=int((label == 0).sum()),
                       dropped_positives=int((dropped & positive).sum()),
                       dropped_negatives=int((dropped & (label == 0)).sum()))


def gate_open(figures: GateFigures, min_precision: float) -> bool:
    """Whether the filter may run: min_precision <= 0 (no gate), or precision >= min_precision (a NaN precision,
    nothing dropped, is no evidence: closed)."""
    return min_precision <= 0 or bool(figures.precision >= min_precision)


def removal_precision_recall(before: np.ndarray, after: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a pool filter's removals on known true matches.

    before, after: [Q, M] corpus rows of each query's pool before and after the filter (-1 = empty slot; `after`
    may be re-ordered). relevant: [Q, K] corpus rows of each query's known true matches (-1 padded). An entry of
    `before` is removed when its row is not in the query's `after`.
    Returns (removed true matches / removed entries, removed true matches / true matches in `before`); NaN for an
    empty denominator.
    """
    valid = before >= 0
    removed = valid & ~(before[:, :, None] == after[:, None, :]).any(axis=2)
    is_match = valid & ((before[:, :, None] == relevant[:, None, :]) & (relevant[:, None, :] >= 0)).any(axis=2)
    hits = int((removed & is_match).sum())
    return _share(hits, int(removed.sum())), _share(hits, int(is_match.sum()))
