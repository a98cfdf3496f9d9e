"""BM25 on a hand-checkable corpus, score_pairs vs search, save/load, per-query normalization."""

import math

import numpy as np
import pytest

from hnm_jax.mining.lexical import LexicalIndex, normalize_per_query, tokenize

CORPUS = [
    "acme camera black",
    "acme camera XJ-900 black",
    "zenith speaker white",
    "acme speaker black",
    "orbit router silver",
]


def bm25_reference(query, docs, k1=1.5, b=0.75):
    """Lucene BM25 by hand: sum_t idf(t) * tf / (tf + k1 (1 - b + b |d| / avgdl))."""
    toks = [tokenize(d) for d in docs]
    avgdl = sum(map(len, toks)) / len(toks)
    n = len(docs)
    out = []
    for d in toks:
        s = 0.0
        for t in tokenize(query):
            df = sum(t in dd for dd in toks)
            if df == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = d.count(t)
            s += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return np.array(out)


def test_tokenizer_keeps_codes():
    assert tokenize("Acme XJ-900b, (Black)") == ["acme", "xj", "900b", "black"]


def test_rare_token_ranks_first_and_scores_match_formula():
    index = LexicalIndex.build(CORPUS)
    idx, scores = index.search(["XJ-900 camera", "acme black", "nothing matches"], k=4)
    assert idx.dtype == np.int32 and scores.dtype == np.float32 and idx.shape == (3, 4)
    assert idx[0, 0] == 1  # the only doc with the rare code
    assert idx[0, 1] == 0  # shares "camera"
    assert list(idx[0, 2:]) == [-1, -1] and np.all(scores[0, 2:] == -np.inf)  # no other doc matches
    ref = bm25_reference("acme black", CORPUS)
    expected_order = np.lexsort((np.arange(5), -ref))[:3]
    assert ref[expected_order[-1]] > 0 and np.sum(ref > 0) == 3  # doc 2 shares no token
    np.testing.assert_array_equal(idx[1], [*expected_order, -1])
    np.testing.assert_allclose(scores[1, :3], ref[expected_order], rtol=1e-5)
    assert np.all(idx[2] == -1) and np.all(scores[2] == -np.inf)
    assert np.all(np.diff(scores[:2, :2], axis=1) <= 0)


def test_score_pairs_consistent_with_search():
    index = LexicalIndex.build(CORPUS)
    queries = ["acme camera", "speaker white", "router"]
    idx, scores = index.search(queries, k=5)
    pairs = index.score_pairs(queries, idx)
    valid = idx >= 0
    np.testing.assert_array_equal(pairs[valid], scores[valid])
    assert np.all(pairs[~valid] == -np.inf)
    # docs outside the result list score 0 (no shared token)
    assert index.score_pairs(["router"], np.array([[0, 4, -1]])).tolist() == [[0.0, scores[2, 0], -np.inf]]


def test_save_load_round_trip(tmp_path):
    index = LexicalIndex.build(CORPUS, k1=1.2, b=0.5)
    index.save(tmp_path / "bm25")
    loaded = LexicalIndex.load(tmp_path / "bm25")
    assert (loaded.k1, loaded.b, len(loaded)) == (1.2, 0.5, 5)
    queries = ["acme camera black", "zenith", "xj 900"]
    for a, b in zip(index.search(queries, 3), loaded.search(queries, 3), strict=True):
        np.testing.assert_array_equal(a, b)


def test_normalize_per_query():
    scores = np.array(
        [[2.0, 4.0, 3.0, -np.inf], [5.0, 5.0, -np.inf, -np.inf], [-np.inf] * 4, [1.0, 0.0, 0.5, 0.25]],
        np.float32,
    )
    got = normalize_per_query(scores)
    expected = np.array([[0.0, 1.0, 0.5, -np.inf], [0.0, 0.0, -np.inf, -np.inf], [-np.inf] * 4, [1.0, 0.0, 0.5, 0.25]])
    np.testing.assert_allclose(got, expected)


def test_empty_corpus_rejected():
    with pytest.raises(ValueError, match="empty"):
        LexicalIndex.build([])


def test_codes_tokens_join_adjacent_tokens_holding_a_digit():
    assert tokenize("HT-Z510 black") == ["ht", "z510", "black"]
    assert tokenize("HT-Z510 black", "codes") == ["ht", "z510", "black", "htz510", "z510black"]
    assert tokenize("acme camera black", "codes") == ["acme", "camera", "black"]  # no digit, nothing joined
    with pytest.raises(ValueError, match="unknown lexical tokens 'chars'"):
        tokenize("x", "chars")


def test_codes_index_matches_a_code_written_apart_and_survives_save_load(tmp_path):
    corpus = ["samsung ht-z510 home theater", "samsung ht-tz515 home theater", "canon powershot sd790 is camera"]
    words, codes = LexicalIndex.build(corpus), LexicalIndex.build(corpus, tokens="codes")
    assert words.scores("htz510")[0] == 0 and codes.scores("htz510")[0] > 0  # only codes sees the joined code
    assert np.argmax(codes.scores("canon sd790is")) == 2 and codes.scores("canon sd790is")[2] > words.scores(
        "canon sd790is")[2]  # fmt: skip
    codes.save(tmp_path / "codes")
    loaded = LexicalIndex.load(tmp_path / "codes")
    assert loaded.tokens == "codes"
    np.testing.assert_array_equal(loaded.scores("htz510"), codes.scores("htz510"))
