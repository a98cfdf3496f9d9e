"""The train step: the in-step band (which columns it may mask), mixed precision and the dropout PRNG."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from hnm_jax.config import load_config_file, spec_from_config
from hnm_jax.mining.schedules import BandSpec
from hnm_jax.models.encoder import BertConfig, BertEncoder, PoolingSpec
from hnm_jax.training.checkpointing import Checkpointer
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import (
    apply_step_band,
    create_train_state,
    explicit_negatives,
    own_negative_columns,
    resolve_rng_impl,
    step_key,
    train_step,
)


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


def test_explicit_negatives_hand_case():
    # B = 2, N = 2: columns [p0=d1, p1=d2, n00=d3, n01=-1, n10=d1 (q0's positive, a repeat), n11=d5]
    batch = {"pos_doc": jnp.array([1, 2]), "neg_doc": jnp.array([[3, -1], [1, 5]]),
             "query_positives": jnp.array([[1, -1], [2, 5]])}  # q1 also knows d5 as a positive
    got = np.asarray(explicit_negatives(batch))
    # q0: n00 (d3) kept, n01 empty; q1: n10 (d1 repeats column 0, still q1's negative there) kept, n11 a positive
    np.testing.assert_array_equal(got, [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]])
    in_band = np.ones((2, 6), bool)
    in_band[1, 4] = False
    np.testing.assert_array_equal(np.asarray(explicit_negatives(batch, jnp.asarray(in_band))),
                                  [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    guided = dict(batch, guide=jnp.asarray(~np.eye(2, 6, 2, dtype=bool)))  # the CE masks q0's column 2
    assert not np.asarray(explicit_negatives(guided))[0].any()


# ---------------------------------------------------------------- mixed precision and the dropout PRNG

B, L, N, VOCAB_SIZE = 8, 16, 2, 100


def tiny_batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def ids(rows):
        return rng.integers(5, VOCAB_SIZE, size=(rows, L)).astype(np.int32)

    def mask(rows):  # right padding, 3..L real tokens
        return (np.arange(L)[None] < rng.integers(3, L + 1, size=rows)[:, None]).astype(np.int32)

    return {"query_ids": ids(B), "query_mask": mask(B), "pos_ids": ids(B), "pos_mask": mask(B),
            "neg_ids": ids(B * N).reshape(B, N, L), "neg_mask": mask(B * N).reshape(B, N, L),
            "pos_doc": np.arange(B, dtype=np.int32), "neg_doc": (B + np.arange(B * N, dtype=np.int32)).reshape(B, N),
            "query_positives": np.arange(B, dtype=np.int32)[:, None]}


def run_steps(dtype, attention="einsum", dropout=False, rng_impl="threefry", steps=5, seed=0, band_spec=None,
              band_in_step=True, batch=None, metrics_out=None):
    """Losses of `steps` jitted train steps of a tiny model (2 layers, hidden 32) on one batch, and the state."""
    spec = spec_from_config(load_config_file("configs/base.py:tiny"))
    tx = make_optimizer(spec.train, 100)
    model = BertEncoder(BertConfig.tiny(vocab_size=VOCAB_SIZE), rngs=nnx.Rngs(0), dtype=jnp.dtype(dtype),
                        attention=attention)
    graphdef, params = nnx.split(model)
    state = create_train_state(graphdef, params, tx, seed)
    step = jax.jit(lambda s, b: train_step(s, b, tx=tx, loss_spec=spec.loss, band_spec=band_spec,
                                           pooling=PoolingSpec(), dropout=dropout, rng_impl=rng_impl,
                                           band_in_step=band_in_step))
    batch, losses = tiny_batch() if batch is None else batch, []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        if metrics_out is not None:
            metrics_out.append(jax.device_get(metrics))
    return np.asarray(losses), state


def test_band_logged_and_every_explicit_negative_trained_on_without_the_in_step_band():
    # a band no fresh score can meet (the positive's score + 5 .. + 6): in the step it masks every explicit negative;
    # out of it (the refilled arm) all N per query are trained on, and the band's edges are logged either way
    band = BandSpec(lo=5.0, hi=6.0, mode="gap")
    batch = tiny_batch()
    batch["neg_doc"][0, 1] = -1  # one empty slot: query 0 has N - 1 negatives
    batch["neg_mask"][0, 1] = 0
    out, masked = [], []
    run_steps("float32", steps=1, band_spec=band, band_in_step=False, batch=batch, metrics_out=out)
    run_steps("float32", steps=1, band_spec=band, band_in_step=True, batch=batch, metrics_out=masked)
    assert float(out[0]["band_lo"]) == 5.0 and float(out[0]["band_hi"]) == 6.0
    assert float(masked[0]["band_lo"]) == 5.0
    assert float(out[0]["explicit_negatives_per_query"]) == pytest.approx((B * N - 1) / B)
    assert float(masked[0]["explicit_negatives_per_query"]) == 0.0 and "band_kept_per_query" in masked[0]
    assert "band_kept_per_query" not in out[0]
    assert out[0]["explicit_negative_gap"] != 0.0 and masked[0]["explicit_negative_gap"] == 0.0
    assert out[0]["loss"] != masked[0]["loss"]  # the explicit negatives count in the loss only without the band
    plain = []
    run_steps("float32", steps=1, batch=batch, metrics_out=plain)  # no band: the same negatives, no band metrics
    assert "band_lo" not in plain[0] and plain[0]["loss"] == pytest.approx(out[0]["loss"], rel=1e-6)
    assert plain[0]["explicit_negatives_per_query"] == out[0]["explicit_negatives_per_query"]
    full = []
    run_steps("float32", steps=1, metrics_out=full)  # every slot filled: N per query, gap = s_pos - s_neg on average
    assert float(full[0]["explicit_negatives_per_query"]) == N
    assert float(full[0]["explicit_negative_gap"]) == pytest.approx(
        float(full[0]["positive_score"] - full[0]["explicit_negative_score"]), abs=1e-5)


@pytest.mark.slow
def test_bf16_and_f32_losses_agree():
    """bf16 compute (f32 params, optimizer state, softmax, pooling and loss) tracks f32 over 5 steps.

    Tolerance 0.02 on a loss of ~3.5 (~0.5%): bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op); measured
    here, the losses differ by at most ~0.005 with either attention path.
    """
    f32, state32 = run_steps("float32")
    for attention in ("einsum", "xla"):
        bf16, state16 = run_steps("bfloat16", attention)
        assert np.all(np.isfinite(bf16))
        np.testing.assert_allclose(bf16, f32, atol=0.02)
        assert bf16[-1] < bf16[0] and f32[-1] < f32[0]  # both learn
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves((state16.params, state16.opt_state))
                   if jnp.issubdtype(leaf.dtype, jnp.floating))


def test_resolve_rng_impl():
    assert resolve_rng_impl("auto", "cpu") == "threefry"
    assert resolve_rng_impl("auto", "gpu") == "rbg"
    assert resolve_rng_impl("unsafe_rbg", "cpu") == "unsafe_rbg"
    with pytest.raises(ValueError, match="rng_impl must be one of"):
        resolve_rng_impl("philox")


def test_step_key_threefry_is_the_old_fold_in_and_others_are_typed_keys():
    rng = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(step_key(rng, jnp.int32(3)), jax.random.fold_in(rng, 3))  # bit-for-bit as before
    for impl in ("rbg", "unsafe_rbg"):
        key = step_key(rng, jnp.int32(3), impl)
        assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl=impl))
        np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(step_key(rng, jnp.int32(3), impl)))
        assert not np.array_equal(jax.random.key_data(key), jax.random.key_data(step_key(rng, jnp.int32(4), impl)))


@pytest.mark.slow
@pytest.mark.parametrize("rng_impl", ["rbg", "unsafe_rbg"])
def test_dropout_with_rbg_is_deterministic_and_checkpoints_restore(rng_impl, tmp_path):
    threefry, _ = run_steps("float32", dropout=True, steps=3)
    losses, state = run_steps("float32", dropout=True, rng_impl=rng_impl, steps=3)
    again, _ = run_steps("float32", dropout=True, rng_impl=rng_impl, steps=3)
    np.testing.assert_array_equal(losses, again)  # same seed, same masks
    assert np.all(np.isfinite(losses)) and np.abs(losses - threefry).max() > 1e-4  # other masks than threefry's
    no_dropout, _ = run_steps("float32", steps=3)
    assert np.abs(losses - no_dropout).max() > 1e-4  # dropout is on
    # The state keeps the raw threefry key whatever the PRNG: a checkpoint restores under any rng_impl.
    assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=1)
    try:
        checkpointer.save(state, position={"step": 3})
        template = state.replace(rng=jax.random.PRNGKey(123))
        restored, position, _ = checkpointer.restore(template)
    finally:
        checkpointer.close()
    assert position["step"] == 3
    np.testing.assert_array_equal(restored.rng, state.rng)
