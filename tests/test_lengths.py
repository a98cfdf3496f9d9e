"""Token widths from the data: hand cases, the resolved spec, and the truncation warning."""

import logging

import numpy as np
import pytest

from configs import base
from hnm_jax.config import spec_from_config
from hnm_jax.data.lengths import covering_width, resolve_lengths, token_lengths, truncated_share


class WordTokenizer:
    """One token per whitespace-separated word, plus [CLS] and [SEP] (like a BERT tokenizer's count)."""

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[101, *range(len(t.split())), 102] for t in texts]}


def test_covering_width_hand_cases():
    lengths = np.arange(1, 101)  # 1..100 tokens
    assert covering_width(lengths, 0.95, cap=512) == 96  # the 95th of 100 is 95 -> next multiple of 8
    assert covering_width(lengths, 1.0, cap=512) == 104
    assert covering_width(lengths, 0.95, cap=64) == 64  # capped
    assert covering_width(np.array([3, 3, 3]), 0.95, cap=512) == 8  # never below 8
    assert truncated_share(lengths, 96) == pytest.approx(0.04)


def test_token_lengths_count_special_tokens():
    np.testing.assert_array_equal(token_lengths(WordTokenizer(), ["a b c", "", "x"]), [5, 2, 3])


def test_resolve_lengths_fills_auto_keys_and_keeps_explicit_ones():
    config = base.get_config()
    spec = spec_from_config(config)
    queries = [" ".join(["w"] * n) for n in range(1, 41)]  # 3..42 tokens
    docs = [" ".join(["w"] * n) for n in range(1, 81)]  # 3..82 tokens
    resolved, stats = resolve_lengths(spec, WordTokenizer(), docs, queries)
    # the 38th of 40 query lengths is 40 tokens; the 76th of 80 document lengths is 78 -> 80
    assert resolved.data.query_max_length == covering_width(np.arange(3, 43), 0.95, 256) == 40
    assert resolved.data.doc_max_length == covering_width(np.arange(3, 83), 0.95, 256) == 80
    assert resolved.eval.max_length == 80 and resolved.ce.source.max_length == 120
    assert stats["query"].truncated <= 0.05 and stats["doc"].truncated <= 0.05
    config.data.query_max_length = 16
    explicit = resolve_lengths(spec_from_config(config), WordTokenizer(), docs, queries)[0]
    assert explicit.data.query_max_length == 16 and explicit.data.doc_max_length == 80


def test_a_width_truncating_over_5_percent_is_reported_with_the_numbers(caplog):
    config = base.get_config()
    config.data.query_max_length = 10
    queries = [" ".join(["w"] * n) for n in range(1, 41)]
    with caplog.at_level(logging.WARNING, logger="hnm_jax.data.lengths"):
        resolve_lengths(spec_from_config(config), WordTokenizer(), queries, queries)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "queries (training)" in warnings[0]
    assert "width 10 truncates 80.0%" in warnings[0]  # 32 of 40 queries have more than 10 tokens
