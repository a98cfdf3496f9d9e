"""Losses against hand-computed numpy, gradient checks, and masks."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from hnm_jax.losses import candidate_mask, in_batch_accuracy, infonce_loss


def numpy_infonce(scores, mask, t):
    total = 0.0
    for i in range(scores.shape[0]):
        kept = scores[i][mask[i]] / t
        total += -scores[i, i] / t + np.log(np.sum(np.exp(kept)))
    return total / scores.shape[0]


def test_infonce_matches_numpy():
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, size=(4, 12)).astype(np.float32)
    mask = rng.random((4, 12)) > 0.3
    mask[np.arange(4), np.arange(4)] = True
    got = jax.jit(infonce_loss, static_argnums=2)(scores, mask, 0.1)
    np.testing.assert_allclose(got, numpy_infonce(scores, mask, 0.1), rtol=1e-5)


def test_infonce_all_masked_but_positive_is_zero():
    scores = jnp.array([[0.3, 0.9], [0.1, 0.2]])
    mask = jnp.eye(2, dtype=bool)
    assert float(infonce_loss(scores, mask, 0.05)) == 0.0


def test_infonce_gradients_check_and_masked_entries_get_none():
    rng = np.random.default_rng(1)
    scores = jnp.asarray(rng.uniform(-1, 1, size=(3, 9)))
    mask = jnp.asarray(rng.random((3, 9)) > 0.4) | jnp.eye(3, 9, dtype=bool)
    loss = lambda s: infonce_loss(s, mask, 0.5)
    check_grads(loss, (scores,), order=2, modes=["rev"], eps=1e-3)
    grad = jax.grad(loss)(scores)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0.0)
    assert np.all(np.asarray(grad)[np.asarray(mask)] != 0.0)


def test_candidate_mask_hand_case():
    # 3 queries, 1 negative each. Columns: pos d5, d6, d7 | negs d6 (dup of q1's positive), d9, d5.
    pos = jnp.array([5, 6, 7])
    neg = jnp.array([[6], [9], [5]])
    query_positives = jnp.array([[5, -1], [6, 9], [7, -1]])  # q1 also knows d9 as positive
    mask = np.asarray(candidate_mask(pos, neg, query_positives))
    expected = np.array([
        # d5    d6     d7     d6dup  d9     d5dup
        [True, True, True, False, True, False],   # q0: own d5; dup columns dropped
        [True, True, True, False, False, False],  # q1: d6 own (col 1), d9 is its known positive
        [True, True, True, False, True, False],   # q2: own d7 (col 2); d5 is a fine negative for q2
    ])
    np.testing.assert_array_equal(mask, expected)


def test_candidate_mask_empty_slots_and_in_batch_only():
    pos = jnp.array([1, 2])
    neg = jnp.array([[-1, 3], [-1, -1]])
    mask = np.asarray(candidate_mask(pos, neg, jnp.array([[1], [2]])))
    np.testing.assert_array_equal(mask, [[1, 1, 0, 1, 0, 0], [1, 1, 0, 1, 0, 0]])
    no_negatives = candidate_mask(pos, jnp.zeros((2, 0), jnp.int32), jnp.array([[1], [2]]))
    assert no_negatives.shape == (2, 2) and bool(jnp.all(no_negatives))


def test_in_batch_accuracy():
    scores = jnp.array([[0.9, 0.1, 0.95], [0.2, 0.8, 0.1]])
    assert float(in_batch_accuracy(scores, jnp.ones((2, 3), bool))) == 0.5
    mask = jnp.array([[True, True, False], [True, True, True]])
    assert float(in_batch_accuracy(scores, mask)) == 1.0
