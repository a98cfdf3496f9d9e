"""The in-step band of the train step: which columns it may mask."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hnm_jax.train_step import apply_step_band, own_negative_columns


def test_own_negative_columns_hand_case():
    # B = 2 queries, N = 2: columns [p0, p1, n00, n01, n10, n11]
    got = np.asarray(own_negative_columns(2, 2))
    np.testing.assert_array_equal(got, [[0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]])
    assert not np.asarray(own_negative_columns(3, 0)).any()  # in-batch only: no explicit columns


@settings(max_examples=40, deadline=None)
@given(b=st.sampled_from([2, 4]), n=st.sampled_from([1, 3]), lo=st.floats(-0.6, 0.0), hi=st.floats(0.0, 0.4),
       seed=st.integers(0, 2**16))
def test_step_band_masks_only_the_querys_own_negatives(b, n, lo, hi, seed):
    rng = np.random.default_rng(seed)
    dense = rng.uniform(-1, 1, (b, b * (1 + n))).astype(np.float32)
    mask = rng.random((b, b * (1 + n))) > 0.2
    mask[np.arange(b), np.arange(b)] = True  # the positive
    new, own, kept = (np.asarray(x) for x in apply_step_band(dense, mask, (lo, hi), "gap", n))
    cols = np.arange(b * (1 + n))
    owner = np.where(cols >= b, (cols - b) // n, -1)
    own_by_hand = (owner[None, :] == np.arange(b)[:, None]) & mask
    np.testing.assert_array_equal(own, own_by_hand)
    untouched = ~own_by_hand
    np.testing.assert_array_equal(new[untouched], mask[untouched])  # in-batch and others' negatives never change
    pos = np.diagonal(dense)[:, None]
    in_band = (dense >= pos + np.float32(lo)) & (dense <= pos + np.float32(hi))
    np.testing.assert_array_equal(new[own_by_hand], in_band[own_by_hand])
    np.testing.assert_array_equal(kept, own_by_hand & in_band)
    assert new[np.arange(b), np.arange(b)].all()
