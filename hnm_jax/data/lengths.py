"""Token widths from the data: training, mining, evaluation and cross-encoder lengths that cover the records.

A length key set to 0 ("auto") becomes the width that covers `data.length_coverage` (default 95%) of the
dataset's records on that side (queries, documents), rounded up to a multiple of 8 and capped at
`data.max_length_cap`. Widths are measured once at load on the untruncated token counts and logged; a width
(auto or set by hand) that truncates more than 5% of a side's records is reported once, with the numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ROUND_TO = 8  # widths are multiples of 8 (friendly to the length buckets and to accelerators)
MIN_WIDTH = 8
TRUNCATION_WARNING = 0.05  # a side with more than this share of truncated records is reported
CHUNK = 4096


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """[N] int32 untruncated token counts of `texts`, [CLS] and [SEP] included."""
    lengths = np.zeros(len(texts), np.int32)
    texts = list(texts)
    for start in range(0, len(texts), CHUNK):
        encoded = tokenizer(texts[start:start + CHUNK], truncation=False, return_attention_mask=False,
                            return_token_type_ids=False, verbose=False)
        lengths[start:start + CHUNK] = [len(ids) for ids in encoded["input_ids"]]
    return lengths


def covering_width(lengths: np.ndarray, coverage: float, cap: int) -> int:
    """Smallest multiple of ROUND_TO covering `coverage` of `lengths` (nearest-rank percentile), at most `cap`.

    lengths [N] token counts; coverage in (0, 1]; cap >= MIN_WIDTH. An empty side gets MIN_WIDTH.
    """
    if len(lengths) == 0:
        return MIN_WIDTH
    needed = int(np.sort(lengths)[max(math.ceil(coverage * len(lengths)) - 1, 0)])  # nearest-rank percentile
    return int(min(cap, max(MIN_WIDTH, ROUND_TO * math.ceil(needed / ROUND_TO))))


def truncated_share(lengths: np.ndarray, width: int) -> float:
    """Share of records longer than `width` tokens."""
    return float(np.mean(lengths > width)) if len(lengths) else 0.0


@dataclasses.dataclass(frozen=True)
class SideLengths:
    """Token-length statistics of one side of a dataset and the width chosen for it."""

    side: str
    count: int
    p50: float
    p95: float
    max: int
    width: int
    truncated: float  # share of records longer than `width`

    def describe(self) -> str:
        return (f"{self.side}: {self.count} records, tokens p50 {self.p50:.0f} p95 {self.p95:.0f} max {self.max}; "
                f"width {self.width} truncates {100 * self.truncated:.1f}%")


def side_lengths(side: str, lengths: np.ndarray, width: int) -> SideLengths:
    p50, p95 = (float(np.percentile(lengths, q)) for q in (50, 95)) if len(lengths) else (0.0, 0.0)
    return SideLengths(side, len(lengths), p50, p95, int(lengths.max(initial=0)), int(width),
                       truncated_share(lengths, width))


def resolve_lengths(spec: Any, tokenizer: Any, corpus_texts: Sequence[str],
                    query_texts: Sequence[str]) -> tuple[Any, dict[str, SideLengths]]:
    """`spec` (an ExperimentSpec) with every auto (0) length replaced by the width measured on the data.

    data.query_max_length <- queries; data.doc_max_length <- documents; eval.max_length <- the wider of the two
    (evaluation encodes both sides at one width; length buckets trim the padding); ce.max_length <- the sum of
    the two (a `[CLS] query [SEP] doc [SEP]` pair), each capped at data.max_length_cap. Returns the new spec and
    the statistics per width ("query", "doc", "eval", "ce"), and logs them; truncation above 5% is a warning.
    """
    data = spec.data
    coverage, cap = data.length_coverage, data.max_length_cap
    queries, docs = token_lengths(tokenizer, query_texts), token_lengths(tokenizer, corpus_texts)
    auto_q, auto_d = covering_width(queries, coverage, cap), covering_width(docs, coverage, cap)
    query_width = data.query_max_length or auto_q
    doc_width = data.doc_max_length or auto_d
    eval_width = spec.eval.max_length or max(auto_q, auto_d)
    ce_width = spec.ce.source.max_length or min(cap, auto_q + auto_d)  # both widths are multiples of 8; so is the sum
    pairs = queries + docs[np.arange(len(queries)) % len(docs)] - 1 if len(docs) else queries  # one pair per query
    stats = {
        "query": side_lengths("queries (training)", queries, query_width),
        "doc": side_lengths("documents (training and mining)", docs, doc_width),
        "eval_query": side_lengths("queries (evaluation)", queries, eval_width),
        "eval_doc": side_lengths("documents (evaluation)", docs, eval_width),
        "ce": side_lengths("cross-encoder pairs (one sampled per query)", pairs, ce_width),
    }
    for item in stats.values():
        if item.truncated > TRUNCATION_WARNING:
            log.warning("lengths: %s (over 5%%; raise the length key or data.max_length_cap)", item.describe())
        else:
            log.info("lengths: %s", item.describe())
    resolved = dataclasses.replace(
        spec,
        data=dataclasses.replace(data, query_max_length=query_width, doc_max_length=doc_width),
        eval=dataclasses.replace(spec.eval, max_length=eval_width),
        ce=spec.ce.replace(max_length=ce_width),
    )
    return resolved, stats


def lengths_summary(stats: dict[str, SideLengths]) -> dict[str, float]:
    """Flat metrics of `resolve_lengths`' statistics, for the run's logs: {"<name>/<field>": value}."""
    return {f"{name}/{field}": float(getattr(item, field)) for name, item in stats.items()
            for field in ("p50", "p95", "width", "truncated")}
