"""The mining engine inside training: deterministic refresh, one trace across a moving band, a resumed run
reuses the checkpointed pool, and empty negative slots stay NaN-free."""

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import pytest
from conftest import make_tiny_batch, params_of, tiny_config

from hnm_jax import sharding
from hnm_jax.config import spec_from_config
from hnm_jax.data import batches
from hnm_jax.data.beir import load_beir
from hnm_jax.data.tokenize import tokenize_texts
from hnm_jax.mining.dense_index import DenseIndex
from hnm_jax.mining.lexical import LexicalIndex
from hnm_jax.mining.retriever import Retriever, hybrid_beta
from hnm_jax.mining.schedules import band_at, band_mask
from hnm_jax.models.loading import build_encoder
from hnm_jax.training import miner, train
from hnm_jax.training.batches import BatchBuilder
from hnm_jax.training.checkpointing import Checkpointer
from hnm_jax.training.miner import MinerState
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import contrastive_loss, create_train_state, jit_train_step

ONLINE = "configs/ablations/online_band_margin_curriculum_hybrid.py"


def make_context(tiny_beir, config_file=ONLINE, **overrides):
    spec = spec_from_config(tiny_config(tiny_beir, config_file, **overrides))
    data = load_beir(tiny_beir, "train")
    total = spec.train.max_steps or spec.train.num_epochs * batches.steps_per_epoch(len(data.split),
                                                                                      spec.train.batch_size)
    spec = dataclasses.replace(spec, band=spec.band.for_run(total))  # as train_and_evaluate does
    encoder = build_encoder(spec.model, spec.seed)
    doc_tokens = tokenize_texts(encoder.tokenizer, data.corpus.texts, spec.data.doc_max_length)
    query_tokens = tokenize_texts(encoder.tokenizer, [data.queries.texts[r] for r in data.split.query_rows],
                                  spec.data.query_max_length)
    mesh = sharding.make_mesh()
    texts = [data.queries.texts[r] for r in data.split.query_rows]
    context = miner.new_context(spec, encoder, data.corpus.texts, texts, data.split, query_tokens, doc_tokens,
                                sharding.batch_sharding(mesh))
    return context, encoder, data


def refreshed(context, params, step=0):
    """The state of a first refresh at `step` and its statistics."""
    return miner.refresh(context, MinerState(), params, step)


def test_refresh_is_deterministic_and_excludes_positives(tiny_beir):
    context, encoder, data = make_context(tiny_beir)
    first, stats = refreshed(context, encoder.state)
    second = refreshed(make_context(tiny_beir)[0], encoder.state)[0]
    for name, value in first.pool.arrays().items():
        np.testing.assert_array_equal(value, second.pool.arrays()[name], err_msg=name)
    for q, positives in enumerate(data.split.positives):
        assert not set(first.pool.indices[q]) & set(positives[positives >= 0])
    assert first.pool_step == 0 and MinerState().pool is None  # a new state; the empty one is unchanged
    assert {"encode_s", "build_s", "search_s", "band_kept_fraction", "false_negative_suspects"} <= set(stats)


def test_mining_retriever_is_set_apart_from_the_deployed_one(tiny_beir):
    """mining.retriever picks what mines the pool, with BM25 built when it needs it; retriever.mode is only deployed."""
    online_band = "configs/ablations/online_band.py"  # deploys dense, no hybrid logits
    context, encoder, data = make_context(tiny_beir, online_band, mining__retriever="lexical")
    assert context.lexical is not None  # BM25 for mining, although the deployed retriever is dense
    lexical = refreshed(context, encoder.state)[0]
    assert lexical.retriever.spec.mode == "lexical"
    valid = lexical.pool.indices >= 0
    assert valid.any() and np.isfinite(lexical.pool.lexical[valid]).all()
    np.testing.assert_array_equal(lexical.pool.fused, lexical.pool.lexical)  # ranked by BM25 alone
    # with the dense scores the band selects on: each kept pair's query . doc embedding
    query_emb = miner.encode_queries(context, encoder.state).astype(np.float64)
    rows, cols = np.nonzero(valid)
    by_hand = np.einsum("nd,nd->n", query_emb[rows], lexical.doc_emb[lexical.pool.indices[rows, cols]])
    np.testing.assert_allclose(lexical.pool.dense[rows, cols], by_hand, rtol=1e-4, atol=1e-5)
    context = make_context(tiny_beir, online_band, retriever__mode="hybrid", mining__retriever="dense")[0]
    assert context.lexical is None  # hybrid is only deployed: mining needs no BM25
    dense = refreshed(context, encoder.state)[0]
    assert dense.retriever.spec.mode == "dense" and np.isnan(dense.pool.lexical[dense.pool.indices >= 0]).all()
    context = make_context(tiny_beir, online_band, retriever__mode="hybrid")[0]  # "": the deployed retriever
    default = refreshed(context, encoder.state)[0]
    assert default.retriever.spec.mode == "hybrid" and context.lexical is not None


def test_online_candidates_requery_with_current_params(tiny_beir):
    context, encoder, _ = make_context(tiny_beir)
    state = refreshed(context, encoder.state)[0]
    rows = np.arange(4)
    same = miner.candidates(context, state, rows, encoder.state, step=0)  # refreshed at this step: the pool itself
    np.testing.assert_array_equal(same.pool.indices, state.pool.indices[rows])
    moved = jax.tree.map(lambda p: p * 1.5, encoder.state)
    fresh = miner.candidates(context, state, rows, moved, step=1)  # later step: re-encoded queries, re-queried index
    assert not np.allclose(fresh.pool.dense, state.pool.dense[rows])


@pytest.mark.slow
def test_one_trace_while_the_band_moves(tiny_beir):
    spec = spec_from_config(tiny_config(tiny_beir, ONLINE))
    encoder, batch = make_tiny_batch(tiny_beir)
    b = batch["pos_doc"].shape[0]
    batch.update(lexical=np.zeros((b, b * 3), np.float32), lexical_lo=np.zeros(b, np.float32),
                 lexical_span=np.ones(b, np.float32), hybrid_beta=np.full(b, 0.3, np.float32))
    mesh = sharding.make_mesh()
    tx = make_optimizer(spec.train, 10)
    state = create_train_state(encoder.graphdef, encoder.state, tx, 0)
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    step_fn = jit_train_step(tx, spec.loss, spec.band.for_run(10), encoder.pooling, False, state_sharding,
                             sharding.batch_sharding(mesh))  # the curriculum spans 7 of a 10-step run
    state = jax.device_put(state, state_sharding)
    bands = []
    for _ in range(4):
        state, metrics = step_fn(state, sharding.to_global(batch, mesh))
        bands.append((float(metrics["band_lo"]), float(metrics["band_hi"])))
    assert step_fn._cache_size() == 1
    assert bands[0] < bands[1] < bands[2] < bands[3]  # the curriculum moved the band every step


@pytest.mark.slow
def test_empty_negative_slots_give_finite_loss_and_gradients(tiny_beir):
    spec = spec_from_config(tiny_config(tiny_beir))
    encoder, batch = make_tiny_batch(tiny_beir)
    batch["neg_doc"][:, 1] = -1
    batch["neg_mask"][:, 1] = 0
    loss, grads = jax.value_and_grad(
        lambda p: contrastive_loss(p, encoder.graphdef, batch, spec.loss, encoder.pooling, None)[0])(encoder.state)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # an empty slot counts for nothing: the same loss as the batch without that slot
    without = {k: v[:, :1] if k.startswith("neg_") else v for k, v in batch.items()}
    reference = contrastive_loss(encoder.state, encoder.graphdef, without, spec.loss, encoder.pooling, None)[0]
    assert float(loss) == pytest.approx(float(reference), rel=1e-5)


def make_builder(tiny_beir, config_file, **overrides):
    context, encoder, data = make_context(tiny_beir, config_file, **overrides)
    spec = context.spec
    query_tokens = tokenize_texts(encoder.tokenizer, data.queries.texts, spec.data.query_max_length)
    steps = batches.steps_per_epoch(len(data.split), spec.train.batch_size)
    return BatchBuilder(spec, context, query_tokens, context.doc_tokens, steps), encoder


@pytest.mark.parametrize("config_file", ["configs/ablations/offline.py", ONLINE])
def test_next_batch_is_built_ahead_unless_it_needs_the_step_params(tiny_beir, config_file, monkeypatch):
    builder, encoder = make_builder(tiny_beir, config_file)
    context = builder.context
    assert miner.reads_params(context, MinerState())  # no pool yet: the first step's batch waits for the refresh
    state = refreshed(context, encoder.state)[0]
    online = config_file == ONLINE
    assert miner.reads_params(context, state) == online
    with ThreadPoolExecutor(max_workers=1) as worker:  # as the train loop prefetches: in a background thread
        ahead = worker.submit(builder.start, 1, state).result()
    assert (ahead.batch is None) == online  # online: negatives wait for the params of the step they feed
    seen, candidates = [], miner.candidates

    def spy(context, state, rows, params, step):
        seen.append(params)
        return candidates(context, state, rows, params, step)

    monkeypatch.setattr(miner, "candidates", spy)
    moved = jax.tree.map(lambda p: p * 1.5, encoder.state)
    batch = builder.finish(ahead, moved, state)
    assert [p is moved for p in seen] == ([True] if online else [])  # online: re-queried with finish()'s params
    again = builder.start(1, state)  # the same step built in the main thread: the same batch
    for key, value in builder.finish(again, moved, state).items():
        np.testing.assert_array_equal(value, batch[key], err_msg=key)


def test_batch_carries_n_negatives_and_the_deployed_fusion_of_its_queries(tiny_beir):
    """A band arm's batch has N negatives per query (refilled), and with hybrid logits each query's fusion
    coefficients are those the deployed hybrid retriever computes for it (built here independently)."""
    builder, encoder = make_builder(tiny_beir, ONLINE)
    context, spec = builder.context, builder.context.spec
    assert spec.mining.band_refill and not spec.mining.band_in_step and spec.loss.hybrid_logits
    state = refreshed(context, encoder.state)[0]
    inputs = builder.start(0, state)
    batch = builder.finish(inputs, encoder.state, state)
    assert (batch["neg_doc"] >= 0).all() and batch["neg_doc"].shape[1] == spec.mining.num_negatives
    pool = state.pool.take(inputs.rows)
    in_band = np.asarray(band_mask(pool.dense, pool.positive, band_at(0, spec.band), spec.band.mode))
    assert (in_band.sum(axis=1) < spec.mining.num_negatives).any()  # the start band alone would leave slots empty
    query_emb = miner.encode_queries(context, encoder.state)[inputs.rows]  # the refresh's query embeddings
    deployed = Retriever(dataclasses.replace(spec.retriever, mode="hybrid"), DenseIndex.build(state.doc_emb),
                         LexicalIndex.build(list(context.doc_texts)))
    expected = deployed.fusion_coefficients(query_emb, [context.query_texts[r] for r in inputs.rows],
                                            min(100, context.num_docs))
    np.testing.assert_allclose(batch["lexical_lo"], expected.lexical_lo, rtol=1e-5)
    np.testing.assert_allclose(batch["lexical_span"], expected.lexical_span, rtol=1e-5)
    np.testing.assert_allclose(batch["hybrid_beta"], hybrid_beta(expected, spec.retriever), rtol=1e-4)
    columns = np.concatenate([inputs.pos_doc, batch["neg_doc"].reshape(-1)])
    texts = [context.query_texts[r] for r in inputs.rows]
    np.testing.assert_array_equal(batch["lexical"], deployed.lexical.score_pairs(
        texts, np.broadcast_to(columns, (len(texts), len(columns)))))


class Crash(RuntimeError):
    pass


@pytest.mark.slow
def test_resumed_run_reuses_the_checkpointed_pool(tiny_beir, tmp_path, monkeypatch):
    overrides = dict(train__max_steps=4, train__checkpoint_every=2)
    config = tiny_config(tiny_beir, "configs/ablations/offline.py", **overrides)
    real_save, real_refresh = Checkpointer.save, miner.refresh
    refreshes = []

    def save_then_crash(self, state, position, pool=None):
        real_save(self, state, position, pool)
        if position["step"] == 2:
            raise Crash("killed after the checkpoint at step 2")

    def counting_refresh(context, state, params, step):
        refreshes.append(step)
        return real_refresh(context, state, params, step)

    monkeypatch.setattr(miner, "refresh", counting_refresh)
    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(Crash):
        train.train_and_evaluate(config, tmp_path / "crashed")
    monkeypatch.setattr(Checkpointer, "save", real_save)
    train.train_and_evaluate(config, tmp_path / "crashed")
    assert refreshes == [0]  # mined once; the rerun restored the pool instead of re-mining
    train.train_and_evaluate(config, tmp_path / "straight")
    logged = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    refresh = [line for line in logged if "refresh/encode_s" in line]
    histogram = [line["refresh/pool_dense_scores"] for line in logged if "refresh/pool_dense_scores" in line]
    assert len(refresh) == 1 and {"refresh/build_s", "refresh/search_s"} <= set(refresh[0])
    assert len(histogram) == 1 and sum(histogram[0]["counts"]) > 0 and len(histogram[0]["edges"]) == 21
    assert all("train/index_staleness_steps" in line for line in logged if "train/loss" in line)
    for resumed, straight in zip(params_of(tmp_path / "crashed"), params_of(tmp_path / "straight"), strict=True):
        np.testing.assert_allclose(resumed, straight, atol=1e-6, rtol=0)
