"""The shared retrieval pipeline: each mode against its index, fusion by hand, exclusion, determinism."""

import jax
import numpy as np
import pytest

from hnm_jax.mining.dense_index import DenseIndex
from hnm_jax.mining.lexical import LexicalIndex
from hnm_jax.mining.retriever import (
    FUSIONS,
    MODES,
    Retriever,
    RetrieverSpec,
    fuse_rrf,
    fuse_weighted,
    fusion_coefficients,
    hybrid_beta,
    hybrid_logits,
)

BRANDS = ["acme", "zenith", "orbit", "nova", "apex"]
ITEMS = ["camera", "speaker", "router", "monitor"]


@pytest.fixture(scope="module")
def corpus():
    """60 product titles with random unit embeddings, 12 queries (text + embedding)."""
    rng = np.random.default_rng(0)
    texts = [f"{BRANDS[i % 5]} {ITEMS[(i // 5) % 4]} model-{i} {'black' if i % 2 else 'white'}" for i in range(60)]
    emb = rng.standard_normal((60, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows = rng.integers(0, 60, 12)
    q_texts = [f"{texts[r].split()[0]} {texts[r].split()[1]} model-{r}" for r in rows]
    q_emb = emb[rows] + 0.3 * rng.standard_normal((12, 16)).astype(np.float32)
    return texts, emb, q_texts, q_emb.astype(np.float32)


@pytest.fixture(scope="module")
def indexes(corpus):
    texts, emb, _, _ = corpus
    return DenseIndex.build(emb), LexicalIndex.build(texts)


def test_dense_mode_equals_exact_search(corpus, indexes):
    _, emb, q_texts, q_emb = corpus
    dense, lexical = indexes
    got = Retriever(RetrieverSpec(mode="dense"), dense, None).retrieve(q_emb, None, k=7)
    idx, scores = dense.search(q_emb, 7)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_array_equal(got.fused, scores)
    np.testing.assert_array_equal(got.dense, scores)
    assert np.isnan(got.lexical).all()
    # with a lexical index and texts, the lexical column is filled with BM25 scores
    both = Retriever(RetrieverSpec(mode="dense"), dense, lexical).retrieve(q_emb, q_texts, k=7)
    np.testing.assert_array_equal(both.indices, idx)
    np.testing.assert_array_equal(both.lexical, lexical.score_pairs(q_texts, idx))


def test_lexical_mode_equals_bm25_search(corpus, indexes):
    _, emb, q_texts, q_emb = corpus
    dense, lexical = indexes
    got = Retriever(RetrieverSpec(mode="lexical"), None, lexical).retrieve(None, q_texts, k=9)
    idx, scores = lexical.search(q_texts, 9)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_array_equal(got.fused, scores)
    np.testing.assert_array_equal(got.lexical, scores)
    assert np.isnan(got.dense).all()
    both = Retriever(RetrieverSpec(mode="lexical"), dense, lexical).retrieve(q_emb, q_texts, k=9)
    np.testing.assert_array_equal(both.indices, idx)
    np.testing.assert_allclose(both.dense, dense.score_pairs(q_emb, idx), rtol=1e-6)


def test_hybrid_without_lexical_weight_ranks_like_dense(corpus, indexes):
    _, emb, q_texts, q_emb = corpus
    dense, lexical = indexes
    spec = RetrieverSpec(mode="hybrid", fusion="weighted", dense_weight=1.0, lexical_weight=0.0, depth=10)
    got = Retriever(spec, dense, lexical).retrieve(q_emb, q_texts, k=10)
    idx, scores = dense.search(q_emb, 10)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_allclose(got.dense, scores, rtol=1e-6)
    np.testing.assert_array_equal(got.lexical, lexical.score_pairs(q_texts, idx))
    assert np.all(np.diff(got.fused, axis=1) <= 0) and np.allclose(got.fused[:, 0], 1.0)


def test_hybrid_candidates_are_the_union_scored_by_both(corpus, indexes):
    _, emb, q_texts, q_emb = corpus
    dense, lexical = indexes
    spec = RetrieverSpec(mode="hybrid", fusion="weighted", lexical_weight=0.5, depth=6)
    got = Retriever(spec, dense, lexical).retrieve(q_emb, q_texts, k=4)
    d_idx, _ = dense.search(q_emb, 6)
    l_idx, _ = lexical.search(q_texts, 6)
    for row in range(len(q_texts)):
        union = (set(d_idx[row]) | set(l_idx[row])) - {-1}
        kept = [i for i in got.indices[row] if i >= 0]
        assert set(kept) <= union and len(kept) == min(4, len(union))
    valid = got.indices >= 0
    np.testing.assert_allclose(got.dense[valid], dense.score_pairs(q_emb, got.indices)[valid], rtol=1e-6)
    np.testing.assert_array_equal(got.lexical[valid], lexical.score_pairs(q_texts, got.indices)[valid])


def test_rrf_hand_computed():
    texts = ["red apple", "green apple", "red car", "blue sky"]
    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]], np.float32)
    spec = RetrieverSpec(mode="hybrid", fusion="rrf", dense_weight=1.0, lexical_weight=1.0, rrf_k=1, depth=4)
    retriever = Retriever(spec, DenseIndex.build(emb), LexicalIndex.build(texts))
    got = retriever.retrieve(np.array([[1.0, 0.0]], np.float32), ["red car"], k=4)
    # dense ranks 1, 2, 3, 4; BM25: doc 2 (both tokens) 1, doc 0 ("red") 2, docs 1 and 3 (score 0) tie at 3
    expected = {0: 1 / 2 + 1 / 3, 1: 1 / 3 + 1 / 4, 2: 1 / 4 + 1 / 2, 3: 1 / 5 + 1 / 4}
    assert got.indices[0].tolist() == [0, 2, 1, 3]
    np.testing.assert_allclose(got.fused[0], [expected[i] for i in (0, 2, 1, 3)], rtol=1e-6)
    np.testing.assert_allclose(got.dense[0], [1.0, 0.6, 0.8, 0.0], rtol=1e-6)
    assert got.lexical[0, 0] > 0 and got.lexical[0, 1] > got.lexical[0, 0] and got.lexical[0, 3] == 0


def test_fusions_by_hand():
    inf = np.inf
    dense = np.array([[0.9, 0.5, 0.7, -inf]])
    lexical = np.array([[0.0, 4.0, 2.0, -inf]])
    spec = RetrieverSpec(mode="hybrid", dense_weight=1.0, lexical_weight=0.5, rrf_k=10)
    # weighted: minmax dense [1, 0, 0.5], lexical [0, 1, 0.5]
    np.testing.assert_allclose(fuse_weighted(dense, lexical, spec), [[1.0, 0.5, 0.75, -inf]])
    # rrf: dense ranks 1, 3, 2; lexical ranks 3, 1, 2
    expected = [[1 / 11 + 0.5 / 13, 1 / 13 + 0.5 / 11, 1 / 12 + 0.5 / 12, -inf]]
    np.testing.assert_allclose(fuse_rrf(dense, lexical, spec), expected)
    assert set(FUSIONS) == {"weighted", "rrf"} and MODES == ("dense", "lexical", "hybrid")


@pytest.mark.parametrize("mode", MODES)
def test_exclude_removes_rows_and_keeps_the_rest_in_order(corpus, indexes, mode):
    _, emb, q_texts, q_emb = corpus
    dense, lexical = indexes
    retriever = Retriever(RetrieverSpec(mode=mode, fusion="rrf", depth=20), dense, lexical)
    full = retriever.retrieve(q_emb, q_texts, k=8)
    exclude = np.full((len(q_texts), 3), -1, np.int64)
    exclude[:, 0] = full.indices[:, 0]
    exclude[::2, 1] = full.indices[::2, 3]
    got = retriever.retrieve(q_emb, q_texts, k=5, exclude=exclude)
    for row in range(len(q_texts)):
        banned = set(exclude[row]) - {-1}
        assert not banned & set(got.indices[row].tolist())
        if mode != "hybrid":  # single source: the remaining order is unchanged
            expected = [i for i in full.indices[row] if i not in banned and i >= 0][:5]
            assert [i for i in got.indices[row] if i >= 0] == expected


def test_deterministic(corpus, indexes):
    _, emb, q_texts, q_emb = corpus
    dense, lexical = indexes
    retriever = Retriever(RetrieverSpec(mode="hybrid"), dense, lexical)
    a = retriever.retrieve(q_emb, q_texts, k=10)
    b = retriever.retrieve(q_emb, q_texts, k=10)
    for x, y in zip((a.indices, a.fused, a.dense, a.lexical), (b.indices, b.fused, b.dense, b.lexical), strict=True):
        np.testing.assert_array_equal(x, y)


def test_errors_name_the_problem(indexes):
    dense, lexical = indexes
    with pytest.raises(ValueError, match="lexical"):
        Retriever(RetrieverSpec(mode="hybrid"), dense, None)
    with pytest.raises(ValueError, match="dense"):
        Retriever(RetrieverSpec(mode="dense"), None, lexical)
    with pytest.raises(ValueError, match="hybrid"):
        RetrieverSpec(mode="sparse")
    with pytest.raises(ValueError, match="rrf"):
        RetrieverSpec(fusion="max")
    with pytest.raises(ValueError, match="query_texts"):
        Retriever(RetrieverSpec(mode="lexical"), None, lexical).retrieve(None, None, k=3)


@pytest.mark.parametrize("weights", [(1.0, 0.3), (0.5, 2.0)])
def test_train_time_hybrid_logits_rank_candidates_as_the_deployed_retriever(corpus, indexes, weights):
    """Training's hybrid logits of (query, candidate) pairs, from raw cosines and BM25 scores and the retriever's
    per-query coefficients, order each query's candidates exactly as the deployed fused score does, and are the
    affine map dense_lo + dense_span / w_d * fused of it."""
    texts, emb, q_texts, q_emb = corpus
    dense_index, lexical_index = indexes
    spec = RetrieverSpec(mode="hybrid", fusion="weighted", dense_weight=weights[0], lexical_weight=weights[1], depth=8)
    retriever = Retriever(spec, dense_index, lexical_index)
    k = 12
    deployed = retriever.retrieve(q_emb, q_texts, k=k)  # fused scores as evaluation computes them, best first
    coefficients = retriever.fusion_coefficients(q_emb, q_texts, k)
    beta = hybrid_beta(coefficients, spec)
    rows = deployed.indices
    valid = rows >= 0
    cosine = np.einsum("qd,qkd->qk", q_emb, emb[np.maximum(rows, 0)]).astype(np.float32)  # the step's dense scores
    bm25 = np.where(valid, lexical_index.score_pairs(q_texts, rows), 0.0).astype(np.float32)
    train = np.asarray(jax.jit(hybrid_logits)(cosine, bm25, coefficients.lexical_lo.astype(np.float32),
                                              coefficients.lexical_span.astype(np.float32), beta))
    assert valid.all() and np.ptp(beta) > 0  # every query has k candidates; beta differs per query
    for q in range(len(q_texts)):
        by_train = np.lexsort((rows[q], -train[q].astype(np.float64)))
        by_fused = np.lexsort((rows[q], -deployed.fused[q].astype(np.float64)))
        np.testing.assert_array_equal(by_train, by_fused)  # the same order as the deployed retriever
        np.testing.assert_array_equal(by_fused, np.arange(k))
    affine = coefficients.dense_lo[:, None] + coefficients.dense_span[:, None] / spec.dense_weight * deployed.fused
    np.testing.assert_allclose(train, affine, atol=1e-5)
    # the lexical term is the fusion's own min-max: (bm25 - lo) / span over the candidates of `retrieve`
    hand = np.where(coefficients.lexical_span[:, None] > 0,
                    np.clip((bm25 - coefficients.lexical_lo[:, None]) / coefficients.lexical_span[:, None], 0, 1), 0)
    np.testing.assert_allclose(train, cosine + beta[:, None] * hand, atol=1e-6)


def test_fusion_coefficients_are_the_fusions_min_max():
    inf = np.inf
    dense = np.array([[0.9, 0.5, 0.7, -inf], [0.2, 0.2, 0.2, 0.2]])
    lexical = np.array([[0.0, 4.0, 2.0, 9.0], [1.0, 3.0, 2.0, -inf]])
    c = fusion_coefficients(dense, lexical)  # valid: both finite
    np.testing.assert_allclose(c.dense_lo, [0.5, 0.2])
    np.testing.assert_allclose(c.dense_span, [0.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(c.lexical_lo, [0.0, 1.0])
    np.testing.assert_allclose(c.lexical_span, [4.0, 2.0])
    spec = RetrieverSpec(mode="hybrid", dense_weight=2.0, lexical_weight=0.5)
    np.testing.assert_allclose(hybrid_beta(c, spec), [0.25 * 0.4, 0.25 * 1.0], rtol=1e-6)  # span 0 -> as if 1
    with pytest.raises(ValueError, match="fusion_coefficients"):
        Retriever(RetrieverSpec(mode="dense"), DenseIndex.build(np.eye(2, dtype=np.float32)), None
                  ).fusion_coefficients(np.eye(2, dtype=np.float32), ["a", "b"], 2)


def test_a_lexical_index_of_other_tokens_is_refused(corpus, indexes):
    dense, words = indexes
    with pytest.raises(ValueError, match="lexical index has 'words' tokens but retriever.lexical_tokens is 'codes'"):
        Retriever(RetrieverSpec(mode="hybrid", lexical_tokens="codes"), dense, words)
    codes = LexicalIndex.build(corpus[0], tokens="codes")
    hits = Retriever(RetrieverSpec(mode="lexical", lexical_tokens="codes"), dense, codes).retrieve(
        corpus[3][:1], ["acme camera model0"], k=1)  # fmt: skip
    assert hits.indices[0, 0] == 0  # "model-0" written together: only the codes tokens match it
