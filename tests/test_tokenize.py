"""Tests for hnm_jax.data.tokenize: buckets, batches, TokenizedTexts, the tokenizer cache."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hnm_jax.data import tokenize
from hnm_jax.data.tokenize import (
    LENGTH_BUCKETS,
    TokenizedTexts,
    bucket_length,
    bucketed_batches,
    tokenize_pairs,
    tokenize_texts,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat"]
VOCAB += ["red", "blue", "##s", "##ing", "run", "big", "small", "house", "é", "1", "2", "."]
TEXTS = ["The cat sat on the mat.", "", "a", "dogs running 12", "big red house " * 10, "Été ?", "the cat"]


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


class CountingTokenizer:
    """Delegates to a tokenizer and counts __call__s (to see whether the cache was used)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    ("length", "max_length", "expected"),
    [
        (0, 512, 16),
        (1, 512, 16),
        (16, 512, 16),
        (17, 512, 32),
        (33, 64, 48),
        (49, 64, 64),
        (129, 512, 256),
        (300, 512, 512),
        (512, 512, 512),
        (20, 100, 32),
        (70, 100, 100),  # bucket 128 capped at max_length
        (100, 100, 100),
        (5, 8, 8),
        (600, 1024, 1024),  # beyond the largest bucket: max_length itself
    ],
)
def test_bucket_length(length, max_length, expected):
    assert bucket_length(length, max_length) == expected


def test_bucket_length_rejects_too_long():
    with pytest.raises(ValueError, match="outside"):
        bucket_length(129, 128)


def test_accelerator_buckets_are_fewer():
    assert tokenize.length_buckets("cpu") == LENGTH_BUCKETS
    gpu = tokenize.length_buckets("gpu")
    assert gpu == tokenize.ACCELERATOR_LENGTH_BUCKETS == tokenize.length_buckets("tpu")
    assert set(gpu) < set(LENGTH_BUCKETS)
    assert [bucket_length(n, 120, gpu) for n in (1, 20, 33, 64, 65, 120)] == [32, 32, 64, 64, 120, 120]
    widths = {length for _, length in bucketed_batches(np.arange(1, 121), 8, 120, gpu)}
    assert widths == {32, 64, 120}  # vs {16, 32, 48, 64, 120} with the CPU buckets


def test_bucketed_batches_hand_case():
    lengths = np.array([5, 40, 3, 17, 5, 200], dtype=np.int32)
    batches = bucketed_batches(lengths, batch_size=2, max_length=256)
    # Stable sort by length: 2 (3), 0 (5), 4 (5), 3 (17), 1 (40), 5 (200).
    assert [(rows.tolist(), length) for rows, length in batches] == [
        ([2, 0], 16),
        ([4, 3], 32),
        ([1, 5], 256),
    ]
    batches = bucketed_batches(lengths, batch_size=4, max_length=256)
    assert [(rows.tolist(), length) for rows, length in batches] == [([2, 0, 4, 3], 32), ([1, 5], 256)]
    assert bucketed_batches(np.zeros((0,), np.int32), batch_size=4, max_length=64) == []


@settings(max_examples=50, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), max_size=40),
    batch_size=st.integers(1, 9),
    max_length=st.integers(300, 600),
)
def test_bucketed_batches_properties(lengths, batch_size, max_length):
    lengths = np.asarray(lengths, dtype=np.int32)
    batches = bucketed_batches(lengths, batch_size, max_length)
    again = bucketed_batches(lengths, batch_size, max_length)
    assert [(r.tolist(), n) for r, n in batches] == [(r.tolist(), n) for r, n in again]  # deterministic
    all_rows = np.concatenate([rows for rows, _ in batches]) if batches else np.zeros((0,), int)
    np.testing.assert_array_equal(np.sort(all_rows), np.arange(len(lengths)))  # every row exactly once
    for rows, padded in batches:
        assert 1 <= len(rows) <= batch_size
        assert lengths[rows].max() <= padded <= max_length
        assert padded in LENGTH_BUCKETS or padded == max_length
    assert np.all(np.diff(lengths[all_rows]) >= 0)  # sorted by length


def test_tokenize_texts_matches_tokenizer(tokenizer):
    max_length = 12
    tokens = tokenize_texts(tokenizer, TEXTS, max_length)
    reference = tokenizer(TEXTS, truncation=True, max_length=max_length)["input_ids"]
    assert tokens.input_ids.shape == (len(TEXTS), max_length) and tokens.input_ids.dtype == np.int32
    assert tokens.lengths.dtype == np.int32 and len(tokens) == len(TEXTS) and tokens.max_length == max_length
    assert tokens.pad_id == tokenizer.pad_token_id == 0
    for row, ids in zip(tokens.input_ids, reference, strict=True):
        np.testing.assert_array_equal(row[: len(ids)], ids)
        assert np.all(row[len(ids) :] == tokens.pad_id)
    np.testing.assert_array_equal(tokens.lengths, [len(ids) for ids in reference])
    assert tokens.lengths[1] == 2  # '' -> [CLS] [SEP]
    assert tokens.lengths[4] == max_length  # truncated


def test_tokenize_texts_chunks_give_same_arrays(tokenizer, monkeypatch):
    whole = tokenize_texts(tokenizer, TEXTS, 16)
    monkeypatch.setattr(tokenize, "CHUNK_SIZE", 3)
    chunked = tokenize_texts(tokenizer, TEXTS, 16, show_progress=True)
    np.testing.assert_array_equal(whole.input_ids, chunked.input_ids)
    np.testing.assert_array_equal(whole.lengths, chunked.lengths)


def test_tokenize_texts_empty(tokenizer):
    tokens = tokenize_texts(tokenizer, [], 16)
    assert tokens.input_ids.shape == (0, 16) and len(tokens) == 0


def test_cache_round_trip(tokenizer, tmp_path):
    counting = CountingTokenizer(tokenizer)
    first = tokenize_texts(counting, TEXTS, 16, cache_dir=tmp_path)
    assert counting.calls == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("tokens-") and files[0].endswith(".npz")  # no tmp left

    second = tokenize_texts(counting, TEXTS, 16, cache_dir=tmp_path)
    assert counting.calls == 1  # read from the cache
    np.testing.assert_array_equal(first.input_ids, second.input_ids)
    np.testing.assert_array_equal(first.lengths, second.lengths)
    assert second.input_ids.dtype == np.int32 and second.pad_id == first.pad_id

    tokenize_texts(counting, TEXTS, 8, cache_dir=tmp_path)  # another max_length: another key
    tokenize_texts(counting, [*TEXTS[:-1], "the dog"], 16, cache_dir=tmp_path)  # another text: another key
    assert counting.calls == 3 and len(list(tmp_path.iterdir())) == 3


def test_cache_key_ignores_the_truncation_a_previous_call_left_on_the_tokenizer(tmp_path):
    """A fast tokenizer keeps the last call's truncation in its backend JSON; the cache key must not see it, or
    the first call of a fresh tokenizer writes under a key no later call asks for."""
    fresh = make_tokenizer(tmp_path / "tok")
    key = tokenize._cache_key(fresh, TEXTS, 16)
    fresh(TEXTS, truncation=True, max_length=8)
    assert tokenize._cache_key(fresh, TEXTS, 16) == key


def test_attention_mask_and_take():
    ids = np.array([[2, 5, 3, 0, 0, 0], [2, 5, 6, 7, 8, 3], [2, 3, 0, 0, 0, 0]], dtype=np.int32)
    tokens = TokenizedTexts(ids, np.array([3, 6, 2], dtype=np.int32))
    mask = tokens.attention_mask()
    assert mask.shape == (3, 6) and mask.dtype == np.int32
    np.testing.assert_array_equal(mask.sum(1), [3, 6, 2])
    np.testing.assert_array_equal(tokens.attention_mask(2), [[1, 1], [1, 1], [1, 1]])

    rows = np.array([2, 0])
    sub_ids, sub_mask = tokens.take(rows, 4)
    assert sub_ids.shape == sub_mask.shape == (2, 4)
    np.testing.assert_array_equal(sub_ids, [[2, 3, 0, 0], [2, 5, 3, 0]])
    np.testing.assert_array_equal(sub_mask, [[1, 1, 0, 0], [1, 1, 1, 0]])
    full_ids, full_mask = tokens.take(np.arange(3))
    np.testing.assert_array_equal(full_ids, ids)
    np.testing.assert_array_equal(full_mask, mask)
    with pytest.raises(ValueError, match="length"):
        tokens.take(rows, 7)


def test_tokenize_pairs(tokenizer):
    first, second = ["the cat", "dog", ""], ["a mat", "the big red house " * 5, "cat"]
    tokens, type_ids = tokenize_pairs(tokenizer, first, second, max_length=10)
    reference = tokenizer(first, second, truncation=True, max_length=10)
    assert tokens.input_ids.shape == type_ids.shape == (3, 10) and type_ids.dtype == np.int32
    for i, (ids, types) in enumerate(zip(reference["input_ids"], reference["token_type_ids"], strict=True)):
        np.testing.assert_array_equal(tokens.input_ids[i, : len(ids)], ids)
        np.testing.assert_array_equal(type_ids[i, : len(ids)], types)
        assert tokens.lengths[i] == len(ids) and np.all(type_ids[i, len(ids) :] == 0)
    with pytest.raises(ValueError, match="second"):
        tokenize_pairs(tokenizer, first, second[:2], max_length=10)
