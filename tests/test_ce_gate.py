"""The cross-encoder gate (mining/ce_gate.py): what the filter rules would drop from labelled pairs, the gate's
decision, the filter's precision/recall on known true matches, and the filter's `drop_unscored` (hand-made scores)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hnm_jax.mining.ce_gate import GateFigures, gate_figures, gate_open, removal_precision_recall
from hnm_jax.mining.negatives import CEFilterSpec, Pool, ce_filter

# Query 0: labelled positives at 2.0 (its best: the reference), 1.95 and 0.0; negatives at 3.0, 1.0, 0.5.
# Query 1: its positive at -1.0; negatives at -1.05 and -3.0.
QUERY = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
CE = np.array([2.0, 1.95, 0.0, 3.0, 1.0, 0.5, -1.0, -1.05, -3.0])
LABEL = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0])
POSITIVE_CE = np.array([2.0, -1.0])


def test_gate_figures_hand_case():
    # threshold 0.9 (logit 2.197), margin 0.1. Dropped: positives 2.0 (>= 1.9: its own reference), 1.95 (>= 1.9),
    # -1.0 (>= -1.1), not 0.0: 3 of 4; negatives 3.0 (sigmoid 0.953 > 0.9), -1.05 (>= -1.1), not 1.0, 0.5, -3.0:
    # 2 of 5. Precision 3 / (3 + 2).
    figures = gate_figures(QUERY, CE, LABEL, POSITIVE_CE, CEFilterSpec(threshold=0.9, margin=0.1))
    assert figures == GateFigures(positives=4, negatives=5, dropped_positives=3, dropped_negatives=2)
    assert figures.precision == pytest.approx(0.6) and figures.recall == pytest.approx(0.75)
    assert figures.negatives_removed == pytest.approx(0.4)
    assert figures.stats() == {"ce_gate_precision": figures.precision, "ce_gate_recall": 0.75,
                               "ce_gate_negatives_removed": figures.negatives_removed}
    assert set(figures.stats("_fold1")) == {"ce_gate_precision_fold1", "ce_gate_recall_fold1",
                                            "ce_gate_negatives_removed_fold1"}
    assert gate_open(figures, 0.5) and gate_open(figures, 0.6) and not gate_open(figures, 0.61)

    # The threshold rule alone drops only the negative at 3.0: precision 0, recall 0.
    alone = gate_figures(QUERY, CE, LABEL, POSITIVE_CE, CEFilterSpec(threshold=0.9, margin=-np.inf))
    assert (alone.dropped_positives, alone.dropped_negatives) == (0, 1)
    assert alone.precision == 0.0 and alone.recall == 0.0 and alone.negatives_removed == pytest.approx(0.2)
    assert not gate_open(alone, 0.5) and gate_open(alone, 0.0)  # 0: no gate

    # Without query 1's reference its margin rule is off: -1.0 and -1.05 stay. 2 of 4 positives, 1 of 5 negatives.
    no_reference = gate_figures(QUERY, CE, LABEL, np.array([2.0, np.nan]), CEFilterSpec(threshold=0.9, margin=0.1))
    assert (no_reference.dropped_positives, no_reference.dropped_negatives) == (2, 1)
    assert no_reference.precision == pytest.approx(2 / 3) and no_reference.recall == 0.5

    # A negative margin drops only pairs above the reference by |margin|: query 0's best positive is not dropped.
    above = gate_figures(QUERY, CE, LABEL, POSITIVE_CE, CEFilterSpec(threshold=1.0, margin=-0.5))
    assert (above.dropped_positives, above.dropped_negatives) == (0, 1)  # 3.0 >= 2.5

    # Rules that drop nothing: precision undefined (NaN), no evidence: the gate stays closed unless it is off.
    nothing = gate_figures(QUERY, CE, LABEL, POSITIVE_CE, CEFilterSpec(threshold=1.0, margin=-np.inf))
    assert math.isnan(nothing.precision) and nothing.recall == 0.0 and nothing.negatives_removed == 0.0
    assert not gate_open(nothing, 0.5) and gate_open(nothing, 0.0)
    # No labelled negative / positive: those shares are NaN.
    only_positives = gate_figures(QUERY[:3], CE[:3], LABEL[:3], POSITIVE_CE, CEFilterSpec(0.9, 0.1))
    assert math.isnan(only_positives.negatives_removed) and only_positives.precision == 1.0
    assert math.isnan(gate_figures(QUERY[3:6], CE[3:6], LABEL[3:6], POSITIVE_CE, CEFilterSpec(0.9, 0.1)).recall)
    with pytest.raises(ValueError, match="gate_figures"):
        gate_figures(QUERY, CE[:-1], LABEL, POSITIVE_CE, CEFilterSpec())


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.floats(0.05, 1.0), margin=st.floats(-2.0, 2.0))
def test_gate_figures_count_what_each_rule_drops_pair_by_pair(seed, threshold, margin):
    rng = np.random.default_rng(seed)
    num_queries, num_pairs = 4, 20
    query = rng.integers(0, num_queries, num_pairs)
    ce = rng.normal(size=num_pairs) * 2
    label = rng.integers(0, 2, num_pairs)
    positive_ce = rng.normal(size=num_queries)
    positive_ce[rng.random(num_queries) < 0.2] = np.nan
    figures = gate_figures(query, ce, label, positive_ce, CEFilterSpec(threshold, margin))
    dropped = [(1 / (1 + math.exp(-s)) > threshold and threshold < 1.0)
               or (not math.isnan(positive_ce[q]) and s >= positive_ce[q] - margin)
               for q, s in zip(query, ce, strict=True)]
    assert figures.dropped_positives == sum(d for d, y in zip(dropped, label, strict=True) if y == 1)
    assert figures.dropped_negatives == sum(d for d, y in zip(dropped, label, strict=True) if y == 0)
    assert (figures.positives, figures.negatives) == (int((label == 1).sum()), int((label == 0).sum()))


def test_removal_precision_recall_hand_case():
    before = np.array([[10, 11, 12, -1], [20, 21, 22, 23]])
    after = np.array([[11, -1, -1, -1], [23, 20, -1, -1]])  # re-ordered, packed
    # Removed: 10, 12 (query 0), 21, 22 (query 1). Known true matches: 10 (query 0), 21 and 22 (query 1).
    precision, recall = removal_precision_recall(before, after, np.array([[10, -1], [21, 22]]))
    assert precision == pytest.approx(3 / 4) and recall == 1.0
    # Query 0's match 11 was kept; query 1 has none: nothing removed was a match.
    precision, recall = removal_precision_recall(before, after, np.array([[11, -1], [-1, -1]]))
    assert precision == 0.0 and recall == 0.0
    # Nothing removed: precision undefined; no match in the pools: recall undefined.
    precision, recall = removal_precision_recall(before, before, np.array([[99, -1], [-1, -1]]))
    assert math.isnan(precision) and math.isnan(recall)


def test_ce_filter_drop_unscored_keeps_only_what_the_ce_scored():
    pool = Pool(indices=np.array([[5, 6, 7, 8, -1]], np.int32), dense=np.zeros((1, 5), np.float32),
                lexical=np.zeros((1, 5), np.float32), fused=np.zeros((1, 5), np.float32),
                positive=np.ones(1, np.float32))
    scores = np.array([[0.0, np.nan, 5.0, np.nan, np.nan]], np.float32)  # 6, 8 never scored; 7 above the positive
    spec = CEFilterSpec(threshold=1.0, margin=0.1)
    kept, counts = ce_filter(pool, scores, np.array([1.0], np.float32), spec)
    np.testing.assert_array_equal(kept.indices, [[5, 6, 8, -1, -1]])  # unscored entries kept, by default
    assert counts == {"removed_threshold": 0, "removed_margin": 1, "kept": 3}
    scored, counts = ce_filter(pool, scores, np.array([1.0], np.float32), spec, drop_unscored=True)
    np.testing.assert_array_equal(scored.indices, [[5, -1, -1, -1, -1]])
    assert counts == {"removed_threshold": 0, "removed_margin": 1, "kept": 1, "removed_unscored": 2}
    assert scored.ce[0, 0] == 0.0 and np.all(scored.ce[0, 1:] == -np.inf)
