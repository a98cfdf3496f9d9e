"""Cross-encoder guided mining: the CrossEncoder model, HF export/load, CE losses and train step, CE filter."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy
from flax import nnx
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from hnm_jax.data.tokenize import bucketed_batches
from hnm_jax.losses import ce_accuracy, ce_binary_loss, ce_listwise_loss
from hnm_jax.mining.negatives import CEFilterSpec, Pool, ce_filter, cross_fit_folds, guide_mask
from hnm_jax.models.encoder import BertConfig, BertEncoder, CrossEncoder
from hnm_jax.models.hf_weights import load_hf_weights
from hnm_jax.models.pretrained import (
    load_cross_encoder,
    load_encoder,
    random_cross_encoder,
    random_encoder,
    resolve_model_dir,
)
from hnm_jax.training.ce_step import CE_BATCH_KEYS, create_train_state, jit_ce_train_step

QUERIES = ["acme camera ac-101 black", "zenith speaker", "orbit router or-7 (white)", "nova monitor 27 inch",
           "apex keyboard", "lumen headphones lu-3 red", "vertex charger", "pulse tablet 10"]
DOCS = ["acme camera ac-101 black price: 10.99", "zenith speaker ze-200 white " * 3, "orbit router",
        "nova monitor 27 inch no-104 silver price: 13.99 " * 6, "apex keyboard ap-105 pro",
        "lumen headphones lu-3 red " * 10, "vertex charger ve-107", "pulse tablet pu-108 black price: 17.99 " * 2]


@pytest.fixture(scope="module")
def tokenizer():
    """The all-MiniLM-L6-v2 tokenizer (the packaged model; skipped when it is not installed)."""
    from transformers import AutoTokenizer

    try:
        folder = resolve_model_dir("all-MiniLM-L6-v2")
    except OSError as err:
        pytest.skip(str(err))
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def config():
    return BertConfig.tiny()  # MiniLM's vocabulary (30522), hidden 32


def forward_fn(graphdef):
    @jax.jit
    def forward(state, ids, mask, types, dropout_rng=None):
        return nnx.merge(graphdef, state)(ids, mask, types, dropout_rng=dropout_rng)

    return forward


def head_by_hand(module, hidden: np.ndarray) -> np.ndarray:
    """The HF classification head in numpy on encoder hidden states [B, L, H]: classifier(tanh(pooler(h_cls)))."""
    h_cls = np.asarray(hidden, np.float64)[:, 0]
    pooled = np.tanh(h_cls @ np.asarray(module.pooler.kernel.get_value(), np.float64)
                     + np.asarray(module.pooler.bias.get_value(), np.float64))
    return (pooled @ np.asarray(module.classifier.kernel.get_value(), np.float64)
            + np.asarray(module.classifier.bias.get_value(), np.float64))[:, 0]


def pair_batch(seed: int = 0, batch: int = 3, length: int = 12):
    """ids [B, L] `[CLS] a [SEP] b [SEP]` then padding; mask; token types (1 on the second segment)."""
    rng = np.random.default_rng(seed)
    lengths = np.linspace(length, 5, batch).astype(int)
    ids, types = np.zeros((batch, length), np.int32), np.zeros((batch, length), np.int32)
    for i, n in enumerate(lengths):
        split = n // 2
        ids[i, :n] = [101, *rng.integers(1000, 2000, split - 2), 102, *rng.integers(1000, 2000, n - split - 1), 102]
        types[i, split:n] = 1
    return ids, (np.arange(length)[None] < lengths[:, None]).astype(np.int32), types


# ---------------------------------------------------------------- the model


def test_cross_encoder_forward_shapes_dropout_and_determinism(config):
    graphdef, state = nnx.split(CrossEncoder(config, rngs=nnx.Rngs(0)))
    forward = forward_fn(graphdef)
    ids, mask, types = pair_batch()
    out = forward(state, ids, mask, types)
    assert out.shape == (3,) and out.dtype == jnp.float32
    module = nnx.merge(graphdef, state)
    np.testing.assert_allclose(out, head_by_hand(module, module.encoder(ids, mask, types)), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out, forward(state, ids, mask, types))  # no key: deterministic
    _, same_seed = nnx.split(CrossEncoder(config, rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(out, forward(same_seed, ids, mask, types))  # same seed: same params

    key = jax.random.key(1)
    dropped = forward(state, ids, mask, types, key)
    assert np.abs(np.asarray(dropped - out)).max() > 1e-6  # dropout active
    np.testing.assert_array_equal(dropped, forward(state, ids, mask, types, key))

    # Padding columns change nothing; token types do (they are the query/document segments).
    wide = forward(state, *(np.pad(a, ((0, 0), (0, 4))) for a in (ids, mask, types)))
    np.testing.assert_allclose(wide, out, atol=1e-6)
    assert np.abs(np.asarray(forward(state, ids, mask, np.zeros_like(types)) - out)).max() > 1e-6


@pytest.mark.slow
def test_score_bucketed_compiles_once_per_bucket_and_matches_direct(config, tokenizer):
    model = random_cross_encoder(config, tokenizer, seed=0, max_length=64)
    tokens, types = model.tokenize(QUERIES, DOCS)
    buckets = {length for _, length in bucketed_batches(tokens.lengths, 4, 64)}
    assert len(buckets) == 2

    scores = model.score(QUERIES, DOCS, batch_size=4)
    assert scores.shape == (8,) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores, model.score_tokens(tokens, types, batch_size=4, show_progress=True))
    assert getattr(model._score_fn, "_cache_size", lambda: len(buckets))() == len(buckets)  # jax private API

    direct = model.module()(tokens.input_ids, tokens.attention_mask(), types)  # one batch at full width
    np.testing.assert_allclose(scores, direct, atol=1e-5)

    other = random_cross_encoder(config, tokenizer, seed=1, max_length=64)
    np.testing.assert_array_equal(model.score_tokens(tokens, types, 4, state=other.state),
                                  other.score_tokens(tokens, types, 4))
    assert getattr(model._score_fn, "_cache_size", lambda: len(buckets))() == len(buckets)  # no recompile

    if jax.device_count() >= 4:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        sharding = NamedSharding(Mesh(np.array(jax.devices()[:4]), ("data",)), PartitionSpec("data"))
        np.testing.assert_allclose(model.score_tokens(tokens, types, 4, sharding=sharding), scores, atol=1e-6)
    with pytest.raises(ValueError, match="token_type_ids"):
        model.score_tokens(tokens, types[:, :10])


# ---------------------------------------------------------------- HF export and loading


def test_export_reload_gives_identical_scores(config, tokenizer, tmp_path):
    model = random_cross_encoder(config, tokenizer, seed=3, max_length=64)
    model.export(tmp_path / "ce")
    hf_config = json.loads((tmp_path / "ce" / "config.json").read_text())
    assert hf_config["architectures"] == ["BertForSequenceClassification"] and hf_config["num_labels"] == 1
    tensors = safetensors.numpy.load_file(str(tmp_path / "ce" / "model.safetensors"))
    assert tensors["classifier.weight"].shape == (1, config.hidden_size) and tensors["classifier.bias"].shape == (1,)
    assert tensors["bert.pooler.dense.weight"].shape == (config.hidden_size, config.hidden_size)
    assert all(k.startswith("bert.") for k in tensors if not k.startswith("classifier."))
    assert (tmp_path / "ce" / "vocab.txt").exists() or (tmp_path / "ce" / "tokenizer.json").exists()

    reloaded = load_cross_encoder(str(tmp_path / "ce"), max_length=64)
    assert reloaded.fresh_head == ()
    np.testing.assert_array_equal(reloaded.score(QUERIES, DOCS, 4), model.score(QUERIES, DOCS, 4))

    # `state` exports other params (e.g. a training loop's current ones).
    other = random_cross_encoder(config, tokenizer, seed=4, max_length=64)
    model.export(tmp_path / "other", state=other.state)
    np.testing.assert_array_equal(load_cross_encoder(str(tmp_path / "other"), max_length=64).score(QUERIES, DOCS, 4),
                                  other.score(QUERIES, DOCS, 4))


def test_bi_encoder_weights_load_into_cross_encoder(config, tokenizer, tmp_path):
    bi = random_encoder(config, tokenizer, seed=5)
    bi.export(tmp_path / "bi")  # a BertModel folder: no pooler, no classifier
    ce = load_cross_encoder(str(tmp_path / "bi"), max_length=64, seed=7)
    assert ce.fresh_head == ("pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias")
    loaded = nnx.state(ce.module().encoder)
    for (path, a), (_, b) in zip(nnx.to_flat_state(bi.state), nnx.to_flat_state(loaded), strict=True):
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))
    # the scores are the bi-encoder's hidden states through the seeded head
    tokens, types = ce.tokenize(QUERIES, DOCS)
    hidden = bi.module()(tokens.input_ids, tokens.attention_mask(), types)
    np.testing.assert_allclose(ce.score(QUERIES, DOCS, 4), head_by_hand(ce.module(), hidden), rtol=1e-4, atol=1e-5)
    # The head comes from the seed, deterministically.
    again = load_cross_encoder(str(tmp_path / "bi"), max_length=64, seed=7)
    np.testing.assert_array_equal(again.score(QUERIES, DOCS, 4), ce.score(QUERIES, DOCS, 4))

    # A plain BertEncoder still loads a cross-encoder export (head ignored), and returns no fresh keys.
    random_cross_encoder(config, tokenizer, seed=1).export(tmp_path / "ce")
    encoder = nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(0)))
    assert load_hf_weights(encoder, tmp_path / "ce" / "model.safetensors") == []
    # An abstract head has no initialisation to keep: the head keys are reported missing.
    abstract = nnx.eval_shape(lambda: CrossEncoder(config, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="missing: classifier.weight"):
        load_hf_weights(abstract, tmp_path / "bi" / "model.safetensors")


def test_load_rejects_a_multi_label_classifier(config, tokenizer, tmp_path):
    random_cross_encoder(config, tokenizer, seed=1).export(tmp_path / "ce")
    path = tmp_path / "ce" / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(path))
    tensors["classifier.weight"] = np.zeros((2, config.hidden_size), np.float32)
    tensors["classifier.bias"] = np.zeros((2,), np.float32)
    safetensors.numpy.save_file(tensors, str(path))
    with pytest.raises(ValueError, match=r"shape mismatch: classifier.weight: file \(2, 32\)"):
        load_cross_encoder(str(tmp_path / "ce"))


@pytest.mark.slow
@pytest.mark.pretrained
def test_minilm_bi_encoder_weights_into_cross_encoder():
    bi = load_encoder("all-MiniLM-L6-v2", max_length=64)
    ce = load_cross_encoder("all-MiniLM-L6-v2", max_length=64)
    assert ce.fresh_head == ("classifier.weight", "classifier.bias")  # MiniLM ships a pooler, no classifier
    tokens, types = ce.tokenize(QUERIES[:2], DOCS[:2])
    ids, mask = tokens.input_ids, tokens.attention_mask()
    hidden_bi = bi.module()(ids, mask, types)
    hidden_ce = ce.module().encoder(ids, mask, types)
    np.testing.assert_array_equal(hidden_bi, hidden_ce)
    scores = ce.score(QUERIES, DOCS, batch_size=4)
    assert scores.shape == (8,) and np.all(np.isfinite(scores))


# ---------------------------------------------------------------- losses and the train step


def np_listwise(logits, valid):
    rows = []
    for row, v in zip(logits, valid, strict=True):
        if v[0]:
            kept = row[v]
            rows.append(-row[0] + np.log(np.sum(np.exp(kept - kept.max()))) + kept.max())
    return np.mean(rows) if rows else 0.0


def np_binary(logits, valid):
    terms = []
    for i, j in zip(*np.nonzero(valid), strict=True):
        p = 1 / (1 + np.exp(-logits[i, j]))
        terms.append(-np.log(p) if j == 0 else -np.log(1 - p))
    return np.mean(terms) if terms else 0.0


LOGITS = np.array([[2.0, 0.5, -1.0, 3.0], [0.1, 0.2, 0.3, 0.4], [1.0, -2.0, 0.0, 0.5]], np.float64)
VALID = np.array([[True, True, False, True], [True, False, False, False], [False, True, True, False]])


@pytest.mark.parametrize("loss, reference", [(ce_listwise_loss, np_listwise), (ce_binary_loss, np_binary)])
def test_ce_losses_match_numpy_and_mask_gradients(loss, reference):
    jitted = jax.jit(loss)
    np.testing.assert_allclose(jitted(LOGITS.astype(np.float32), VALID), reference(LOGITS, VALID), rtol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(3):
        logits = rng.normal(size=(4, 5)) * 3
        valid = rng.random((4, 5)) < 0.7
        valid[0, 0] = True
        np.testing.assert_allclose(jitted(logits.astype(np.float32), valid), reference(logits, valid), rtol=1e-5)

    # Masked entries: exactly zero gradient, even when they hold inf / NaN.
    poisoned = np.where(VALID, LOGITS, np.array([np.inf, np.nan, -np.inf, np.nan])[None, :]).astype(np.float32)
    grads = jax.jit(jax.grad(loss))(poisoned, VALID)
    assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[~VALID] == 0.0)
    np.testing.assert_allclose(jitted(poisoned, VALID), reference(LOGITS, VALID), rtol=1e-5)
    check_grads(lambda x: loss(x, VALID), (LOGITS,), order=2, modes=["rev"])
    assert float(loss(np.zeros((2, 3), np.float32), np.zeros((2, 3), bool))) == 0.0  # all padding: 0, not NaN


def test_ce_accuracy_is_strict():
    logits = np.array([[2.0, 1.0, 5.0], [1.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 9.0, 9.0]], np.float32)
    valid = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 1, 1]], bool)
    assert float(ce_accuracy(logits, valid)) == pytest.approx(2 / 3)  # row 1 ties (miss), row 3 is padding


def test_ce_train_step_metrics_match_numpy_on_the_pre_step_logits(config):
    b, c, length = 2, 3, 12
    ids, mask, types = pair_batch(seed=1, batch=b * c, length=length)
    valid = np.array([[1, 1, 1], [1, 1, 0]], bool)
    batch = {"input_ids": ids.reshape(b, c, length), "attention_mask": mask.reshape(b, c, length),
             "token_type_ids": types.reshape(b, c, length), "valid": valid}
    graphdef, params = nnx.split(CrossEncoder(config, rngs=nnx.Rngs(0)))
    logits = np.asarray(forward_fn(graphdef)(params, ids, mask, types), np.float64).reshape(b, c)
    before = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(params)]  # the step donates its state
    lr = 0.5
    state = create_train_state(graphdef, params, optax.sgd(lr), seed=0)
    new_state, metrics = jit_ce_train_step(optax.sgd(lr), "listwise", dropout=False)(state, batch)
    assert int(new_state.step) == 1
    assert float(metrics["loss"]) == pytest.approx(np_listwise(logits, valid), rel=1e-5)
    hits = [all(row[0] > row[j] for j in range(1, c) if v[j]) for row, v in zip(logits, valid, strict=True)]
    assert float(metrics["accuracy"]) == pytest.approx(np.mean(hits))
    assert float(metrics["positive_logit"]) == pytest.approx(logits[:, 0].mean(), rel=1e-5, abs=1e-6)
    assert float(metrics["negative_logit"]) == pytest.approx(logits[:, 1:][valid[:, 1:]].mean(), rel=1e-5, abs=1e-6)
    # plain SGD: the update is -lr * gradient, so its norm gives the gradient norm
    moved = [np.asarray(new, np.float64) - old for old, new in
             zip(before, jax.tree.leaves(new_state.params), strict=True)]
    step_norm = np.sqrt(sum(float(np.sum(d * d)) for d in moved)) / lr
    assert step_norm > 0 and float(metrics["grad_norm"]) == pytest.approx(step_norm, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["listwise", "binary"])
def test_ce_train_step_lowers_the_loss(config, loss_name):
    b, c, length = 2, 3, 12
    ids, mask, types = pair_batch(seed=1, batch=b * c, length=length)
    batch = {"input_ids": ids.reshape(b, c, length), "attention_mask": mask.reshape(b, c, length),
             "token_type_ids": types.reshape(b, c, length), "valid": np.array([[1, 1, 1], [1, 1, 0]], bool)}
    assert set(batch) == set(CE_BATCH_KEYS)
    graphdef, params = nnx.split(CrossEncoder(config, rngs=nnx.Rngs(0)))
    tx = optax.adam(1e-2)
    state = create_train_state(graphdef, params, tx, seed=0)
    step = jit_ce_train_step(tx, loss_name, dropout=False)
    losses = []
    for _ in range(6):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        assert 0.0 <= float(metrics["accuracy"]) <= 1.0 and np.isfinite(float(metrics["grad_norm"]))
    assert int(state.step) == 6
    assert losses[-1] < losses[0] - 0.02 and losses[-1] == min(losses), losses
    assert float(metrics["positive_logit"]) > float(metrics["negative_logit"])

    if loss_name == "listwise":  # one more compile: check once that the dropout path runs
        dropped = jit_ce_train_step(tx, loss_name, dropout=True)(state, batch)[1]
        assert np.isfinite(float(dropped["loss"]))
    with pytest.raises(ValueError, match="listwise"):
        jit_ce_train_step(tx, "hinge", dropout=False)


# ---------------------------------------------------------------- CE filter and guide mask


def planted_pool() -> tuple[Pool, np.ndarray, np.ndarray]:
    """2 queries x 6 slots. Query 0's positive scores 2.0; its pool holds a planted duplicate of the positive
    (doc 11, CE 2.0, sigmoid 0.88 < 0.9 -> margin rule), a near-duplicate at 1.95 (margin), a likely positive
    at 3.0 (sigmoid 0.95 -> threshold) and two true negatives. Query 1's positive scores -1.0; a candidate at
    2.5 (threshold; also above the positive) and one at -1.05 (margin), a negative at -3.0, an empty slot."""
    indices = np.array([[11, 4, 7, 12, 5, 13], [20, 21, 22, 23, -1, -1]], np.int32)
    ce = np.array([[2.0, 0.5, 3.0, 1.95, -1.0, 1.5], [2.5, -1.05, -3.0, -2.0, np.nan, np.nan]], np.float32)
    dense = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.9, 0.8, 0.7, 0.6, -np.inf, -np.inf]], np.float32)
    pool = Pool(indices=indices, dense=dense, lexical=dense * 10, fused=dense + 1,
                positive=np.array([0.95, 0.9], np.float32))
    return pool, ce, np.array([2.0, -1.0], np.float32)


def test_ce_filter_removes_planted_duplicates_with_the_right_counts():
    pool, ce, positive_ce = planted_pool()
    filtered, counts = ce_filter(pool, ce, positive_ce, CEFilterSpec(threshold=0.9, margin=0.1))
    assert counts == {"removed_threshold": 2, "removed_margin": 3, "kept": 5}
    np.testing.assert_array_equal(filtered.indices, [[4, 5, 13, -1, -1, -1], [22, 23, -1, -1, -1, -1]])
    empty = [-np.inf] * 3
    np.testing.assert_array_equal(filtered.dense, np.float32([[0.8, 0.5, 0.4, *empty], [0.7, 0.6, -np.inf, *empty]]))
    np.testing.assert_array_equal(filtered.lexical[filtered.indices >= 0], [8, 5, 4, 7, 6])
    np.testing.assert_array_equal(filtered.fused[filtered.indices >= 0], np.float32([1.8, 1.5, 1.4, 1.7, 1.6]))
    np.testing.assert_array_equal(filtered.ce, [[0.5, -1.0, 1.5] + [-np.inf] * 3, [-3.0, -2.0] + [-np.inf] * 4])
    np.testing.assert_array_equal(filtered.positive, pool.positive)
    assert 11 not in filtered.indices  # the planted exact duplicate (CE == the positive's) is gone

    # Rules off one at a time.
    _, only_threshold = ce_filter(pool, ce, positive_ce, CEFilterSpec(threshold=0.9, margin=-np.inf))
    assert only_threshold == {"removed_threshold": 2, "removed_margin": 0, "kept": 8}
    _, only_margin = ce_filter(pool, ce, positive_ce, CEFilterSpec(threshold=1.0, margin=0.1))
    assert only_margin == {"removed_threshold": 0, "removed_margin": 5, "kept": 5}  # 3.0 and 2.5 are >= pos - 0.1
    _, nothing = ce_filter(pool, ce, positive_ce, CEFilterSpec(threshold=1.0, margin=-np.inf))
    assert nothing == {"removed_threshold": 0, "removed_margin": 0, "kept": 10}
    # A NaN positive score switches the margin rule off for that query.
    _, no_positive = ce_filter(pool, ce, np.array([np.nan, -1.0], np.float32), CEFilterSpec(0.9, 0.1))
    assert no_positive == {"removed_threshold": 2, "removed_margin": 1, "kept": 7}


def test_ce_filter_keeps_unscored_entries_and_never_prefers_them():
    pool, ce, positive_ce = planted_pool()
    unscored = ce.copy()
    unscored[0, 2] = np.nan  # the threshold-removed 3.0 is now unknown: kept, after the scored top
    filtered, counts = ce_filter(pool, unscored, positive_ce, CEFilterSpec(threshold=0.9, margin=0.1, prefer_top=2))
    assert counts == {"removed_threshold": 1, "removed_margin": 3, "kept": 6}
    np.testing.assert_array_equal(filtered.indices[0, :4], [13, 4, 7, 5])  # CE 1.5, 0.5 first; then pool order
    assert np.isnan(filtered.ce[0, 2])


def test_ce_filter_prefer_top_reranks_by_ce():
    pool, ce, positive_ce = planted_pool()
    filtered, _ = ce_filter(pool, ce, positive_ce, CEFilterSpec(threshold=0.9, margin=0.1, prefer_top=1))
    np.testing.assert_array_equal(filtered.indices, [[13, 4, 5, -1, -1, -1], [23, 22, -1, -1, -1, -1]])
    full, _ = ce_filter(pool, ce, positive_ce, CEFilterSpec(threshold=0.9, margin=0.1, prefer_top=6))
    np.testing.assert_array_equal(full.ce[:, :3], [[1.5, 0.5, -1.0], [-2.0, -3.0, -np.inf]])


def test_pool_ce_field_is_optional():
    pool, ce, positive_ce = planted_pool()
    assert pool.ce is None and "ce" not in pool.arrays()
    assert pool.take(np.array([1])).ce is None
    filtered, _ = ce_filter(pool, ce, positive_ce, CEFilterSpec())
    sub = filtered.take(np.array([1]))
    np.testing.assert_array_equal(sub.ce, filtered.ce[1:])
    restored = Pool(**filtered.arrays())
    np.testing.assert_array_equal(restored.ce, filtered.ce)


def test_ce_filter_errors():
    pool, ce, positive_ce = planted_pool()
    with pytest.raises(ValueError, match="ce_scores must be"):
        ce_filter(pool, ce[:, :3], positive_ce, CEFilterSpec())
    bad = ce.copy()
    bad[0, 2] = np.inf
    with pytest.raises(ValueError, match="infinite CE score"):
        ce_filter(pool, bad, positive_ce, CEFilterSpec())
    with pytest.raises(ValueError, match="threshold"):
        CEFilterSpec(threshold=0.0)
    with pytest.raises(ValueError, match="prefer_top"):
        CEFilterSpec(prefer_top=-1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.floats(0.05, 1.0), margin=st.floats(-2.0, 2.0),
       prefer_top=st.integers(0, 4))
@example(seed=0, threshold=1.0, margin=-2.220446049250313e-16, prefer_top=0)  # a margin below float32 resolution
def test_ce_filter_only_drops_pool_entries_that_match_a_rule(seed, threshold, margin, prefer_top):
    rng = np.random.default_rng(seed)
    q, m = 3, 7
    indices = rng.permutation(40)[: q * m].reshape(q, m).astype(np.int32) + 10  # positives are docs 0..2
    indices[rng.random((q, m)) < 0.2] = -1
    dense = rng.random((q, m)).astype(np.float32)
    pool = Pool(indices=indices, dense=dense, lexical=dense, fused=dense, positive=np.ones(q, np.float32))
    positive_ce = rng.normal(size=q).astype(np.float32)
    ce = rng.normal(size=(q, m)).astype(np.float32) * 2
    ce[:, 0] = positive_ce  # a planted duplicate of each query's positive
    spec = CEFilterSpec(threshold, margin, prefer_top)
    filtered, counts = ce_filter(pool, ce, positive_ce, spec)
    for row in range(q):
        valid = indices[row] >= 0
        scores = ce[row].astype(np.float64)  # the rules hold in exact arithmetic, not in float32 rounding
        likely = (1 / (1 + np.exp(-scores)) > threshold) | (scores >= np.float64(positive_ce[row]) - margin)
        expected = set(indices[row][valid & ~likely])
        got = filtered.indices[row][filtered.indices[row] >= 0]
        assert set(got) == expected and len(got) == len(expected)
        assert np.all(filtered.indices[row][len(got):] == -1)  # packed left
        if indices[row, 0] >= 0 and margin >= 0:
            assert indices[row, 0] not in got  # the planted duplicate always goes
        if prefer_top == 0:  # pool order kept
            assert list(got) == [i for i in indices[row] if i in expected]
    assert counts["kept"] == int((filtered.indices >= 0).sum())
    assert counts["kept"] + counts["removed_threshold"] + counts["removed_margin"] == int((indices >= 0).sum())
    assert not np.isin(filtered.indices, [0, 1, 2]).any()  # never a labelled positive


def test_ce_filter_removes_an_identical_text_scored_by_a_real_cross_encoder(config, tokenizer):
    """Identical text scores exactly as the positive (any CE, trained or not): the margin rule drops it."""
    model = random_cross_encoder(config, tokenizer, seed=0, max_length=64)
    query, positive = QUERIES[0], DOCS[0]
    pool_docs = [positive, DOCS[1], DOCS[2], positive.upper()]  # an exact twin, two others, a case-variant twin
    scores = model.score([query] * 5, [positive, *pool_docs], batch_size=8)
    pool = Pool(indices=np.array([[50, 51, 52, 53]], np.int32), dense=np.zeros((1, 4), np.float32),
                lexical=np.zeros((1, 4), np.float32), fused=np.zeros((1, 4), np.float32),
                positive=np.ones(1, np.float32))
    filtered, counts = ce_filter(pool, scores[None, 1:], scores[:1], CEFilterSpec(threshold=1.0, margin=1e-6))
    assert scores[1] == scores[0] and scores[4] == scores[0]  # the uncased tokenizer makes both twins identical
    others_kept = [doc for doc, s in zip([51, 52], scores[2:4], strict=True) if s < scores[0] - 1e-6]
    np.testing.assert_array_equal(filtered.indices[0, : len(others_kept)], others_kept)
    assert 50 not in filtered.indices and 53 not in filtered.indices
    assert counts == {"removed_threshold": 0, "removed_margin": 4 - len(others_kept), "kept": len(others_kept)}


def test_guide_mask_hand_case_keeps_own_positives():
    # B = 2 queries, C = 4 columns: [pos_0, pos_1, neg_0, neg_1]; own positives at (0, 0) and (1, 1).
    scores = np.array([[1.0, 0.95, 3.0, -2.0], [0.0, -1.0, -1.05, np.nan]], np.float32)
    positive_ce = np.diagonal(scores)
    mask = guide_mask(scores, positive_ce, CEFilterSpec(threshold=0.9, margin=0.1))
    # (0, 1): 0.95 >= 1.0 - 0.1 (margin); (0, 2): sigmoid(3) = 0.95 > 0.9; (1, 0): 0.0 >= -1.1; (1, 2): -1.05 >=
    # -1.1; (1, 3) NaN: unscored, kept. The diagonal is its own positive: kept although it meets the margin rule.
    np.testing.assert_array_equal(mask, [[True, False, False, True], [False, True, False, True]])
    off = guide_mask(scores, positive_ce, CEFilterSpec(threshold=1.0, margin=-np.inf))
    assert off.all()
    with pytest.raises(ValueError, match="guide_mask"):
        guide_mask(scores[:, :1], positive_ce, CEFilterSpec())


# ---------------------------------------------------------------- cross-fitting (the gate: tests/test_ce_gate.py)


@pytest.mark.parametrize("num_queries", [2, 7, 36])
def test_cross_fit_folds_are_two_seeded_halves(num_queries):
    folds = cross_fit_folds(num_queries, seed=0)
    assert folds.shape == (num_queries,) and folds.dtype == np.int32
    assert set(folds.tolist()) == {0, 1}
    assert int((folds == 0).sum()) == num_queries // 2 and int((folds == 1).sum()) == num_queries - num_queries // 2
    np.testing.assert_array_equal(folds, cross_fit_folds(num_queries, seed=0))  # deterministic in the seed


def test_cross_fit_folds_depend_on_the_seed():
    assert not np.array_equal(cross_fit_folds(36, seed=0), cross_fit_folds(36, seed=1))
    with pytest.raises(ValueError, match="at least 2"):
        cross_fit_folds(1, seed=0)

