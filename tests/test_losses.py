"""Losses against hand-computed numpy, gradient checks, and masks."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from hnm_jax.losses import (
    additive_margins,
    candidate_mask,
    in_batch_accuracy,
    infonce_loss,
    known_positive_columns,
    margin_diagnostics,
    margin_loss,
    uniformity_loss,
)


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


def numpy_margin(scores, mask, margin, alpha, relative, frozen=None):
    """Loop reference; `frozen` (default: scores) is what the hardness margin is computed from (stop_gradient)."""
    frozen = scores if frozen is None else frozen
    total = 0.0
    for i in range(scores.shape[0]):
        acc, count = 0.0, 0
        for j in range(scores.shape[1]):
            if j == i or not mask[i, j]:
                continue
            h = frozen[i, j] - frozen[i, i] if relative else frozen[i, j]
            acc += max(0.0, margin + alpha * h - (scores[i, i] - scores[i, j]))
            count += 1
        total += acc / max(1, count)
    return total / scores.shape[0]


def margin_case(seed):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-1, 1, size=(4, 12)).astype(np.float32)
    mask = rng.random((4, 12)) > 0.3
    mask[np.arange(4), np.arange(4)] = True
    mask[3, :] = False  # query 3 has no negatives: contributes 0, not NaN
    mask[3, 3] = True
    return scores, mask


def test_margin_loss_matches_numpy():
    scores, mask = margin_case(2)
    jitted = jax.jit(margin_loss, static_argnums=(2, 3, 4))
    for alpha in (0.0, 0.5):
        for relative in (False, True):
            got = jitted(scores, mask, 0.2, alpha, relative)
            assert got.dtype == jnp.float32 and got.shape == ()
            np.testing.assert_allclose(got, numpy_margin(scores, mask, 0.2, alpha, relative), rtol=1e-5,
                                       err_msg=f"alpha={alpha} relative={relative}")
    # relative may also be traced
    got = jax.jit(margin_loss)(scores, mask, 0.2, 0.5, True)
    np.testing.assert_allclose(got, numpy_margin(scores, mask, 0.2, 0.5, True), rtol=1e-5)


def test_margin_loss_gradient_hand_derived_and_masked_zero():
    scores, mask = margin_case(3)
    scores[~mask] = np.nan  # masked entries may hold anything, they must not leak NaN
    b, c = scores.shape
    for alpha, relative in ((0.0, False), (0.5, False), (0.5, True)):
        grad = np.asarray(jax.jit(jax.grad(margin_loss), static_argnums=(2, 3, 4))(
            jnp.asarray(scores), jnp.asarray(mask), 0.2, alpha, relative))
        expected = np.zeros((b, c))
        for i in range(b):
            negs = [j for j in range(c) if j != i and mask[i, j]]
            for j in negs:
                h = scores[i, j] - scores[i, i] if relative else scores[i, j]
                hinge = 0.2 + alpha * h - (scores[i, i] - scores[i, j])
                assert abs(hinge) > 1e-3, "pick inputs away from the kink"
                if hinge > 0:
                    expected[i, j] += 1.0 / (len(negs) * b)
                    expected[i, i] -= 1.0 / (len(negs) * b)
        np.testing.assert_allclose(grad, expected, atol=1e-6)
        assert np.all(grad[~mask] == 0.0)
        assert np.all(np.isfinite(grad))


def test_margin_loss_gradient_finite_differences():
    scores, mask = margin_case(2)
    base = scores.astype(np.float64)
    eps = 1e-3
    for alpha, relative in ((0.0, False), (0.5, False), (0.5, True)):
        grad = np.asarray(jax.grad(margin_loss)(jnp.asarray(scores), jnp.asarray(mask), 0.2, alpha, relative))
        fd = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            up, down = base.copy(), base.copy()
            up[idx] += eps
            down[idx] -= eps
            # the margin is a target: differentiate with it frozen at the unperturbed scores
            fd[idx] = (numpy_margin(up, mask, 0.2, alpha, relative, frozen=base)
                       - numpy_margin(down, mask, 0.2, alpha, relative, frozen=base)) / (2 * eps)
        np.testing.assert_allclose(grad, fd, atol=1e-4, err_msg=f"alpha={alpha} relative={relative}")


def test_margin_loss_zero_when_well_separated():
    scores = jnp.array([[0.9, 0.1, -0.5, 0.0], [0.0, 0.8, 0.2, -0.3]])
    assert float(margin_loss(scores, jnp.ones((2, 4), bool), 0.2, 0.5, True)) == 0.0


def numpy_uniformity(x, valid, t):
    values = [np.exp(-t * np.sum((x[a] - x[b]) ** 2))
              for a in range(len(x)) for b in range(a + 1, len(x)) if valid[a] and valid[b]]
    return np.log(np.mean(values))


def unit_rows(rng, m, d):
    x = rng.normal(size=(m, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_uniformity_matches_numpy_and_ignores_invalid_rows():
    rng = np.random.default_rng(4)
    x = unit_rows(rng, 7, 5)
    valid = np.array([True, True, False, True, True, False, True])
    got = jax.jit(uniformity_loss, static_argnums=2)(x, valid, 2.0)
    np.testing.assert_allclose(got, numpy_uniformity(x, valid, 2.0), rtol=1e-5)
    assert float(got) < 0.0
    moved = x.copy()
    moved[[2, 5]] = x[0]  # invalid rows may hold anything
    np.testing.assert_allclose(uniformity_loss(moved, valid, 2.0), got, rtol=1e-6)
    grad = np.asarray(jax.grad(uniformity_loss)(jnp.asarray(x), jnp.asarray(valid)))
    assert np.all(grad[~valid] == 0.0) and np.all(np.isfinite(grad))
    check_grads(lambda e: uniformity_loss(e, jnp.asarray(valid)), (jnp.asarray(x),), order=1, modes=["rev"],
                eps=1e-2, atol=1e-2, rtol=1e-2)


def test_uniformity_collapsed_is_zero_and_degenerate_cases():
    x = np.tile(unit_rows(np.random.default_rng(5), 1, 4), (5, 1))
    np.testing.assert_allclose(uniformity_loss(x, np.ones(5, bool)), 0.0, atol=1e-6)
    spread = np.eye(4, dtype=np.float32)  # orthonormal: every squared distance is 2
    np.testing.assert_allclose(uniformity_loss(spread, np.ones(4, bool), 2.0), -4.0, rtol=1e-6)
    one_valid = np.array([True, False, False, False])
    assert float(uniformity_loss(spread, one_valid)) == 0.0


def test_known_positive_columns_hand_case():
    # the columns of test_candidate_mask_hand_case: d5, d6, d7 | d6, d9, d5
    got = np.asarray(known_positive_columns(jnp.array([5, 6, 7]), jnp.array([[6], [9], [5]]),
                                            jnp.array([[5, -1], [6, 9], [7, -1]])))
    np.testing.assert_array_equal(got, [[1, 0, 0, 0, 0, 1], [0, 1, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0]])


def numpy_additive_infonce(scores, mask, t, m0, alpha):
    """InfoNCE where every negative's score is raised by max(0, m0 + alpha * (s_neg - s_pos)), by hand."""
    total = 0.0
    for i in range(scores.shape[0]):
        logits = []
        for j in range(scores.shape[1]):
            if not mask[i, j]:
                continue
            margin = 0.0 if j == i else max(0.0, m0 + alpha * (scores[i, j] - scores[i, i]))
            logits.append((scores[i, j] + margin) / t)
        total += -scores[i, i] / t + np.log(np.sum(np.exp(logits)))
    return total / scores.shape[0]


def test_additive_margin_infonce_matches_numpy():
    rng = np.random.default_rng(3)
    scores = rng.uniform(-1, 1, size=(4, 12)).astype(np.float32)
    mask = rng.random((4, 12)) > 0.3
    mask[np.arange(4), np.arange(4)] = True
    for m0, alpha in ((0.1, 0.0), (0.1, 0.5), (0.0, 1.0)):
        margins = additive_margins(jnp.asarray(scores), m0, alpha, relative=True)
        got = jax.jit(infonce_loss, static_argnums=2)(jnp.asarray(scores), jnp.asarray(mask), 0.05, margins)
        np.testing.assert_allclose(float(got), numpy_additive_infonce(scores, mask, 0.05, m0, alpha), rtol=1e-5)
        assert np.all(np.diagonal(np.asarray(margins)) == 0)


def test_additive_margin_grows_with_hardness_and_raises_the_loss():
    scores = jnp.array([[0.8, 0.2, 0.7, 0.9]], jnp.float32)  # negatives 0.2 (easy), 0.7 (hard), 0.9 (an error)
    margins = np.asarray(additive_margins(scores, 0.1, 0.5, relative=True))[0]
    np.testing.assert_allclose(margins, [0.0, max(0.0, 0.1 - 0.3), 0.1 - 0.05, 0.1 + 0.05], atol=1e-6)
    mask = jnp.ones((1, 4), bool)
    assert float(infonce_loss(scores, mask, 0.05, jnp.asarray(margins))) > float(infonce_loss(scores, mask, 0.05))


def test_additive_margin_gradients_check():
    rng = np.random.default_rng(4)
    scores = jnp.asarray(rng.uniform(-1, 1, size=(3, 9)), jnp.float64 if jax.config.x64_enabled else jnp.float32)
    mask = jnp.asarray(rng.random((3, 9)) > 0.2).at[jnp.arange(3), jnp.arange(3)].set(True)

    margins = additive_margins(scores, 0.2, 0.3, relative=True)  # a target: stop-gradient, so held fixed here

    def loss(s):
        return infonce_loss(s, mask, 0.5, margins)

    check_grads(loss, (scores,), order=1, modes=("rev",), atol=5e-2, rtol=5e-2)


def test_margin_diagnostics_zero_without_margin_and_positive_with_it():
    rng = np.random.default_rng(5)
    scores = jnp.asarray(rng.uniform(-0.2, 0.9, size=(4, 12)), jnp.float32)
    mask = jnp.ones((4, 12), bool)
    none = margin_diagnostics(scores, mask, jnp.zeros((4, 12)), 0.05)
    assert float(none["margin_active_fraction"]) == 0 and float(none["margin_grad_share"]) == 0
    some = margin_diagnostics(scores, mask, additive_margins(scores, 0.1, 0.5, relative=True), 0.05)
    assert 0 < float(some["margin_active_fraction"]) <= 1
    assert float(some["margin_grad_share"]) > 0.01 and float(some["margin_loss_delta"]) > 0
