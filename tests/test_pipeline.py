"""mining/pipeline.py: ONE mining pipeline. `hnm mine` and the miner's refresh run the same `mine_pool` and get the
same pool (with and without the cross-encoder stage); the miner, `hnm mine` and evaluation build their retrievers
with the same `build_retriever`; the CE pair scoring and the @10 padding exist once."""

import dataclasses

import numpy as np
import pytest
from conftest import tiny_config

from hnm_jax import evaluate as evaluate_module
from hnm_jax import mine as export
from hnm_jax.config import spec_from_config
from hnm_jax.data.beir import load_beir
from hnm_jax.mine import mine_to_rows, mining_spec
from hnm_jax.mining import pipeline
from hnm_jax.models.loading import build_cross_encoder, build_encoder
from hnm_jax.training import miner as miner_module
from hnm_jax.training.miner import MinerState, make_context, with_judges

POOL = 6
STACK = "configs/ablations/full_stack.py"  # every mechanism at once, the cross-encoder included


class Spy:
    """Wraps a pipeline function; records what each call returned."""

    def __init__(self, function):
        self.function, self.results = function, []

    def __call__(self, *args, **kwargs):
        result = self.function(*args, **kwargs)
        self.results.append(result)
        return result


def spy_on(monkeypatch, name: str, *modules) -> Spy:
    spy = Spy(getattr(pipeline, name))
    for module in modules:
        assert getattr(module, name) is spy.function  # the caller imports the pipeline's own function
        monkeypatch.setattr(module, name, spy)
    return spy


def setup(root, tmp_path):
    """One spec (the full stack, tiny, mined once: hardest, N = the whole pool), one encoder, the train split."""
    spec = mining_spec(spec_from_config(tiny_config(root, STACK, ce__threshold=0.9, ce__margin=0.05,
                                                    ce__rescore_top=4, ce__cross_fit=False)),
                       strategy="hardest", num_negatives=POOL, pool_size=POOL, retriever="hybrid")
    beir = load_beir(root, "train")
    encoder = build_encoder(spec.model, spec.seed)
    context = make_context(spec, tmp_path / "run", encoder, beir.corpus, beir.queries, beir.split,
                           batch_sharding=None)[0]
    return spec, beir, encoder, context


@pytest.mark.parametrize("with_ce", [False, True])
def test_hnm_mine_and_the_refresh_mine_the_same_pool(tiny_beir, tmp_path, monkeypatch, with_ce):
    spy = spy_on(monkeypatch, "mine_pool", export, miner_module)
    scorer = spy_on(monkeypatch, "PairScorer", export, miner_module)
    spec, beir, encoder, context = setup(tiny_beir, tmp_path)
    ce = build_cross_encoder(spec.model, spec.ce.source, spec.seed) if with_ce else None
    if ce is not None:
        context = with_judges(context, [ce])  # tiny_beir has no labelled dev pairs: no gate, the CE filters
    state = miner_module.refresh(context, MinerState(), encoder.state, 0)[0]
    rows = mine_to_rows(spec, encoder, beir.corpus, beir.queries, beir.split, cross_encoder=ce, scores="columns",
                        keep_incomplete=True, show_progress=False)

    assert len(spy.results) == 2  # the refresh's mine_pool, then hnm mine's
    refreshed, exported = state.pool, spy.results[1].pool
    np.testing.assert_array_equal(exported.indices, refreshed.indices)
    for column in ("dense", "lexical", "fused", "positive"):
        np.testing.assert_allclose(getattr(exported, column), getattr(refreshed, column), atol=1e-5, rtol=0)
    if ce is None:
        assert len(scorer.results) == 0 and exported.ce is None and refreshed.ce is None
    else:
        assert len(scorer.results) >= 2  # the refresh's and hnm mine's pair scoring: one class
        assert (exported.indices < 0).any()  # the filter dropped some, the same in both
        np.testing.assert_allclose(exported.ce, refreshed.ce, atol=1e-5, rtol=0)
        assert scorer.results[-1].cache == state.ce_scores  # the same pairs scored, the same logits

    # the rows are that pool: hardest with N = pool size takes it in order, one row per (query, positive)
    pair_query, _ = np.nonzero(beir.split.positives >= 0)
    assert len(rows) == len(pair_query)
    for row, q in zip(rows, pair_query, strict=True):
        docs = refreshed.indices[q]
        assert [row[f"negative_{i}"] for i in range(1, POOL + 1)] == [
            beir.corpus.texts[d] if d >= 0 else None for d in docs]
        dense = [row[f"negative_{i}_score"] for i in range(1, POOL + 1)]
        expected = [float(s) if d >= 0 else None for d, s in zip(docs, refreshed.dense[q], strict=True)]
        assert [s is None for s in dense] == [s is None for s in expected]
        np.testing.assert_allclose([s for s in dense if s is not None], [s for s in expected if s is not None],
                                   atol=1e-5)
        if ce is not None:
            logits = [row[f"negative_{i}_ce_score"] for i in range(1, POOL + 1)]
            np.testing.assert_allclose([np.nan if s is None else s for s in logits],
                                       np.where(docs >= 0, refreshed.ce[q], np.nan), atol=1e-5)


def test_evaluate_and_the_miner_build_their_retriever_with_the_pipeline(tiny_beir, tmp_path, monkeypatch):
    spy = spy_on(monkeypatch, "build_retriever", evaluate_module, miner_module, export)
    spec, beir, encoder, context = setup(tiny_beir, tmp_path)
    state = miner_module.refresh(context, MinerState(), encoder.state, 0)[0]
    assert spy.results[0] is state.retriever
    assert spec.loss.hybrid_logits and len(spy.results) == 2 and spy.results[1] is state.fusion  # full_stack.py's
    spec = dataclasses.replace(spec, retriever=dataclasses.replace(spec.retriever, mode="hybrid"))
    metrics = evaluate_module.evaluate(spec, encoder, (tiny_beir, beir.corpus, beir.queries), "train",
                                       show_progress=False)
    assert len(spy.results) == 3
    # the same corpus and encoder: evaluation's retriever holds the Miner's corpus embeddings
    evaluated, mined = spy.results[2], state.retriever
    assert evaluated.dense.is_exact and mined.dense.is_exact and len(evaluated.dense) == len(mined.dense)
    np.testing.assert_allclose(evaluated.dense.embeddings, mined.dense.embeddings, atol=1e-5)
    assert metrics["retriever"] == "hybrid" and set(metrics["retrievers"]) == {"dense", "hybrid"}


def test_at_least_10_pads_to_the_metric_depth_once():
    ranked = np.arange(6).reshape(2, 3)
    padded = pipeline.at_least_10(ranked)
    assert padded.shape == (2, 10) and (padded[:, 3:] == -1).all() and (padded[:, :3] == ranked).all()
    assert pipeline.at_least_10(np.zeros((1, 12), int)).shape == (1, 12)
    assert not hasattr(evaluate_module, "_at_least_10")
