"""model.freeze_layers: the frozen trunk (embeddings + lowest K blocks) cached on the host, the top blocks trained.

Expectations: the plain, unfrozen encoder (freeze_layers = 0, tokens in) gives the same loss, embeddings and top-layer
gradients without dropout (freezing changes no forward value, and a gradient of a top-layer parameter never depends on
whether the layers below it learn); with dropout, the uncached frozen model (tokens in, same dropout key) does.
"""

import json

import jax
import numpy as np
import pytest
from conftest import params_of, tiny_config

from hnm_jax import sharding
from hnm_jax.config import ConfigError, spec_from_config
from hnm_jax.data import batches
from hnm_jax.data.beir import load_beir
from hnm_jax.data.tokenize import tokenize_texts
from hnm_jax.mining.negatives import Candidates, SelectSpec, random_negatives
from hnm_jax.models import pretrained
from hnm_jax.models.encoder import HiddenStates, is_frozen, split_frozen
from hnm_jax.models.loading import build_encoder, with_frozen_trunk
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import contrastive_loss, create_train_state, encode_pair_batch, jit_train_step
from hnm_jax.training.train import train_and_evaluate

K = 1  # of the tiny model's 2 layers


def frozen_setup(tiny_beir, num_negatives: int, freeze_layers: int = K):
    """(plain encoder, frozen encoder, token batch, hidden-state batch) of one tiny training batch with N negatives."""
    data = load_beir(tiny_beir, "train")
    encoder = build_encoder(spec_from_config(tiny_config(tiny_beir)).model, seed=0)
    frozen = with_frozen_trunk(encoder, freeze_layers)
    doc_tokens = tokenize_texts(encoder.tokenizer, data.corpus.texts, 32)
    query_tokens = tokenize_texts(encoder.tokenizer, data.queries.texts, 16)
    rng = batches.step_rng(0, 0, 0)
    rows = batches.batch_rows(0, 0, 0, len(data.split), 8)
    pos = batches.sample_positives(data.split.positives[rows], rng)
    candidates = Candidates(data.split.positives[rows], len(data.corpus), None, (-1.0, 1.0), "absolute")
    neg = random_negatives(candidates, SelectSpec(num_negatives), rng)
    if num_negatives:
        neg[0, -1] = -1  # an empty slot
    canonical = batches.canonical_rows(data.corpus.texts)
    tokens = batches.make_batch(rows, data.split, query_tokens, doc_tokens, pos, neg, canonical)
    hidden = batches.make_batch(rows, data.split, frozen.cache_trunk(query_tokens, 8),
                                frozen.cache_trunk(doc_tokens, 8), pos, neg, canonical)
    return encoder, frozen, tokens, hidden


def max_diff(a, b) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)),
                                                                     initial=0.0)), a, b)))


@pytest.mark.parametrize("num_negatives", [0, 2])
def test_cached_path_equals_the_uncached_model_in_loss_gradients_and_embeddings(tiny_beir, num_negatives):
    encoder, frozen, tokens, hidden = frozen_setup(tiny_beir, num_negatives)
    length = tokens["pos_ids"].shape[1]
    assert "query_ids" not in hidden and hidden["neg_hidden"].shape == (8, num_negatives, length, 32)
    assert hidden["query_hidden"].shape == (*tokens["query_ids"].shape, 32)
    loss_spec = spec_from_config(tiny_config(tiny_beir)).loss

    def run(model, batch):
        loss = lambda p: contrastive_loss(p, model.graphdef, batch, loss_spec, model.pooling, None)[0]  # noqa: E731
        embed = lambda p: encode_pair_batch(model.graphdef, p, batch, model.pooling, None)  # noqa: E731
        return jax.device_get((*jax.jit(jax.value_and_grad(loss))(model.state), jax.jit(embed)(model.state)))

    loss_ref, grads_ref, emb_ref = run(encoder, tokens)  # nothing frozen, tokens in
    loss_cached, grads_cached, emb_cached = run(frozen, hidden)
    assert abs(float(loss_ref) - float(loss_cached)) <= 1e-5
    assert max_diff(emb_ref, emb_cached) <= 1e-5
    frozen_ref, trainable_ref = split_frozen(grads_ref, K)
    frozen_cached, trainable_cached = split_frozen(grads_cached, K)
    assert max_diff(trainable_ref, trainable_cached) <= 1e-5
    assert max(abs(float(np.max(np.abs(g)))) for g in jax.tree.leaves(trainable_cached)) > 0
    assert all(not np.any(g) for g in jax.tree.leaves(frozen_cached))  # the trunk's parameters get nothing
    assert any(np.any(g) for g in jax.tree.leaves(frozen_ref))


def run_steps(model, batch, spec, steps: int = 3):
    """`steps` jitted train steps (dropout on) of `model` on `batch`; (losses, final params, opt_state leaves)."""
    mesh = sharding.make_mesh()
    tx = make_optimizer(spec.train, 10, freeze_layers=model.freeze_layers)
    params = jax.device_get(model.state)  # a copy: the step donates its state
    state, state_sharding = sharding.put_replicated(create_train_state(model.graphdef, params, tx, 0), mesh)
    step = jit_train_step(tx, spec.loss, None, model.pooling, True, state_sharding, sharding.batch_sharding(mesh))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, sharding.to_global(batch, mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), jax.tree.leaves(state.opt_state)


@pytest.mark.slow
@pytest.mark.parametrize("num_negatives", [0, 2])
def test_training_keeps_the_frozen_params_bit_identical_and_matches_the_uncached_path(tiny_beir, num_negatives):
    encoder, frozen, tokens, hidden = frozen_setup(tiny_beir, num_negatives)
    spec = spec_from_config(tiny_config(tiny_beir, train__warmup_fraction=0.0))
    losses, params, opt_leaves = run_steps(frozen, hidden, spec)
    uncached_losses, uncached_params, _ = run_steps(frozen, tokens, spec)  # frozen model, tokens in, same dropout
    np.testing.assert_allclose(losses, uncached_losses, atol=1e-5)
    assert max_diff(params, uncached_params) <= 1e-5
    initial_frozen, initial_top = split_frozen(jax.device_get(frozen.state), K)
    trained_frozen, trained_top = split_frozen(params, K)
    for before, after in zip(jax.tree.leaves(initial_frozen), jax.tree.leaves(trained_frozen), strict=True):
        np.testing.assert_array_equal(before, after)
        assert before.tobytes() == after.tobytes()
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(initial_top), jax.tree.leaves(trained_top),
                                                        strict=True))
    assert len(opt_leaves) < len(jax.tree.leaves(run_steps(encoder, tokens, spec, steps=0)[2]))  # no Adam moments
    assert len(set(losses)) == len(losses)  # the top layers learn


def test_hidden_states_view_and_take_by_hand():
    hidden = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    states = HiddenStates(hidden, np.array([1, 3, 2, 2], np.int32))
    view = states.subset(np.array([3, 1]))
    assert len(view) == 2 and view.max_length == 3 and view.hidden is hidden  # a view: nothing copied
    x, mask = view.take(np.array([1, 0, 1]), 2)
    np.testing.assert_array_equal(x, hidden[[1, 3, 1], :2])
    np.testing.assert_array_equal(mask, [[1, 1], [1, 1], [1, 1]])
    x, mask = states.take(np.zeros(0, np.int64), 3)  # no explicit negatives
    assert x.shape == (0, 3, 2) and mask.shape == (0, 3)
    with pytest.raises(ValueError, match="length"):
        states.take(np.array([0]), 4)


def test_is_frozen_names_the_embeddings_and_the_lowest_blocks():
    assert is_frozen(("embeddings", "word_embeddings", "embedding"), 1)
    assert is_frozen(("layers", 0, "output", "kernel"), 1)
    assert not is_frozen(("layers", 1, "output", "kernel"), 1)
    assert not is_frozen(("embeddings", "layer_norm", "scale"), 0)


def test_trunk_cache_file_is_reused_memory_mapped_and_keyed_on_the_frozen_params(tiny_beir, tmp_path, monkeypatch):
    _, frozen, _, _ = frozen_setup(tiny_beir, 0)
    tokens = tokenize_texts(frozen.tokenizer, ["acme camera AC-101 black", "zenith router", "nova tablet"], 64)
    in_memory = frozen.cache_trunk(tokens, 8)
    monkeypatch.setattr(pretrained, "HIDDEN_IN_MEMORY_BYTES", 0)
    on_disk = frozen.cache_trunk(tokens, 8, cache_dir=tmp_path)
    assert isinstance(on_disk.hidden, np.memmap) and len(list(tmp_path.glob("hidden-*.npy"))) == 1
    np.testing.assert_array_equal(on_disk.hidden, in_memory.hidden)
    assert tokens.lengths.max() <= 16 and np.all(np.any(in_memory.hidden[:, :16], axis=-1))
    assert not np.any(in_memory.hidden[:, 16:])  # computed at the batch's bucket length (16), zeros beyond
    monkeypatch.setattr(pretrained, "run_bucketed", lambda *a, **k: pytest.fail("recomputed a cached trunk"))
    again = frozen.cache_trunk(tokens, 8, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.hidden, in_memory.hidden)
    monkeypatch.undo()
    other = jax.tree.map(lambda x: x + 1.0, frozen.state)  # other frozen params: another file
    frozen.cache_trunk(tokens, 8, state=other, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("hidden-*.npy"))) == 2
    assert frozen.cache_trunk(tokens, 8) is not tokens and build_encoder(
        spec_from_config(tiny_config(tiny_beir)).model, 0).cache_trunk(tokens, 8) is tokens  # K = 0: no trunk


def test_freeze_layers_out_of_range_is_a_one_line_error_naming_the_key(tiny_beir):
    for value in (-1, 3):  # the tiny model has 2 layers
        with pytest.raises(ConfigError, match=r"^model\.freeze_layers: must be in \[0, 2\]") as error:
            spec_from_config(tiny_config(tiny_beir, model__freeze_layers=value))
        assert "\n" not in str(error.value)
    encoder = build_encoder(spec_from_config(tiny_config(tiny_beir)).model, 0)
    with pytest.raises(ConfigError, match=r"^model\.freeze_layers: must be in \[0, 2\] \(the layers of random"):
        with_frozen_trunk(encoder, 3)
    spec_from_config(tiny_config(tiny_beir, model__freeze_layers=2))  # every layer frozen: allowed


@pytest.mark.slow
@pytest.mark.parametrize("config_file", ["configs/ablations/online_band.py", "configs/ablations/in_batch.py"])
def test_train_and_evaluate_smoke_with_a_frozen_trunk(tiny_beir, tmp_path, config_file):
    """An online-mined (refreshes, per-step re-queries) and an in-batch-only (N = 0) run with freeze_layers = 1: the
    trunk's states are cached in the workdir, the frozen params of the checkpoint are the initial ones."""
    config = tiny_config(tiny_beir, config_file, model__freeze_layers=K, train__max_steps=3)
    metrics = train_and_evaluate(config, tmp_path)
    assert 0.0 <= metrics["accuracy@1"] <= 1.0
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "train/loss" in row]
    assert len(steps) == 3 and all(np.isfinite(row["train/loss"]) and row["train/grad_norm"] > 0 for row in steps)
    assert len(list((tmp_path / "cache").glob("hidden-*.npy"))) >= 2  # corpus and queries (+ eval texts)
    spec = spec_from_config(config)
    initial = jax.device_get(build_encoder(spec.model, spec.seed).state)
    flags = jax.tree.leaves(jax.tree_util.tree_map_with_path(lambda path, _: is_frozen(path, K), initial))
    for frozen_leaf, before, after in zip(flags, jax.tree.leaves(initial), params_of(tmp_path), strict=True):
        assert np.array_equal(before, after) == frozen_leaf
