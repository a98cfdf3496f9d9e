"""BM25 lexical retrieval (bm25s, Lucene variant) and per-query score normalization.

Tokenizer: lowercase, split on non-word characters (``re.findall(r"\\w+", text.lower())``), no stopwords
and no stemming, so product codes and model numbers survive as tokens ("XJ-900b" -> ["xj", "900b"]). With
tokens="codes" each adjacent pair of them that holds a digit is also indexed joined ("xj900b"), so a code written
apart in one record matches it written together in another ("HT-Z510" and "htz510", "sd790 is" and "sd790is").

BM25 (Lucene):
    score(q, d) = sum_{t in q} idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
summed over the query's tokens (a repeated token counts again),
with idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5)) > 0, so a doc sharing no token with the query
scores exactly 0. ``search`` returns only docs with a positive score (other slots: -1 / -inf).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import bm25s

_TOKEN_RE = re.compile(r"\w+")
_DIGIT_RE = re.compile(r"\d")
_FORMAT_VERSION = 1
TOKENIZERS = ("words", "codes")  # retriever.lexical_tokens


def _bm25s():
    """The bm25s module, imported on first use: importing it runs a JAX computation, which starts the JAX
    backend, and `jax.distributed.initialize` (multi-process runs) must come before that."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG when imported
    return bm25s


def tokenize(text: str, tokens: str = "words") -> list[str]:
    """Lowercase word tokens, re.findall(r"\\w+", text.lower()); tokens="codes" appends each adjacent pair of them
    joined where the pair holds a digit ("HT-Z510 black" -> ["ht", "z510", "black", "htz510", "z510black"])."""
    words = _TOKEN_RE.findall(text.lower())
    if tokens == "words":
        return words
    if tokens != "codes":
        raise ValueError(f"unknown lexical tokens {tokens!r}; expected one of {list(TOKENIZERS)}")
    return words + [a + b for a, b in itertools.pairwise(words) if _DIGIT_RE.search(a + b)]


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a [N] score vector with positive scores only: (indices int32 [k], scores float32 [k]).

    Sorted by (score desc, index asc); slots beyond the positive-scored docs are -1 / -inf.
    """
    out_i = np.full(k, -1, np.int32)
    out_s = np.full(k, -np.inf, np.float32)
    hits = np.flatnonzero(scores > 0)
    if hits.size == 0 or k == 0:
        return out_i, out_s
    hit_scores = scores[hits]
    if hits.size > k:
        # keep everything tied with the k-th score so the index tie-break below is exact
        kth = np.partition(hit_scores, hits.size - k)[hits.size - k]
        keep = hit_scores >= kth
        hits, hit_scores = hits[keep], hit_scores[keep]
    order = np.lexsort((hits, -hit_scores))[:k]
    out_i[: order.size] = hits[order]
    out_s[: order.size] = hit_scores[order]
    return out_i, out_s


class LexicalIndex:
    """BM25 over a fixed corpus; rows are corpus positions (same order as the texts given to build)."""

    def __init__(self, bm25: bm25s.BM25, num_docs: int, tokens: str = "words"):
        self._bm25 = bm25
        self._num_docs = num_docs
        self.tokens = tokens  # `tokenize`'s tokens, for the corpus and every query

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 1.5, b: float = 0.75, tokens: str = "words") -> LexicalIndex:
        """Index ``texts`` (one string per corpus row) with BM25 parameters k1, b over `tokenize(text, tokens)`."""
        if len(texts) == 0:
            raise ValueError("LexicalIndex.build: the corpus is empty")
        bm25 = _bm25s().BM25(k1=k1, b=b, method="lucene")
        bm25.index([tokenize(t, tokens) for t in texts], show_progress=False)
        return cls(bm25, len(texts), tokens)

    def __len__(self) -> int:
        return self._num_docs

    @property
    def k1(self) -> float:
        return float(self._bm25.k1)

    @property
    def b(self) -> float:
        return float(self._bm25.b)

    def scores(self, query_text: str) -> np.ndarray:
        """BM25 score of every doc for one query: float32 [N] (0 for docs sharing no token)."""
        vocab = self._bm25.vocab_dict
        ids = [vocab[t] for t in tokenize(query_text, self.tokens) if t in vocab]
        if not ids:
            return np.zeros(self._num_docs, np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(ids), np.float32)

    def search(self, query_texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k docs per query: (indices int32 [Q, k], scores float32 [Q, k]), best first.

        Ties are broken by the lower row; only docs with a positive score are returned, the remaining
        slots are -1 / -inf.
        """
        out_i = np.full((len(query_texts), k), -1, np.int32)
        out_s = np.full((len(query_texts), k), -np.inf, np.float32)
        for row, text in enumerate(query_texts):
            out_i[row], out_s[row] = top_k_rows(self.scores(text), k)
        return out_i, out_s

    def score_pairs(self, query_texts: Sequence[str], doc_indices: np.ndarray) -> np.ndarray:
        """BM25 score of given docs: doc_indices int [Q, M] (-1 = none) -> float32 [Q, M] (-1 -> -inf)."""
        doc_indices = np.asarray(doc_indices)
        if doc_indices.ndim != 2 or doc_indices.shape[0] != len(query_texts):
            raise ValueError(f"doc_indices must be [Q={len(query_texts)}, M], got shape {doc_indices.shape}")
        if doc_indices.size and doc_indices.max() >= self._num_docs:
            raise ValueError(f"doc index {doc_indices.max()} out of range for {self._num_docs} docs")
        out = np.full(doc_indices.shape, -np.inf, np.float32)
        for row, text in enumerate(query_texts):
            idx = doc_indices[row]
            valid = idx >= 0
            if valid.any():
                out[row, valid] = self.scores(text)[idx[valid]]
        return out

    def save(self, directory: Path) -> None:
        """Write the bm25s index and lexical_index.json under ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(directory / "bm25s"), show_progress=False)
        meta = {"format": _FORMAT_VERSION, "num_docs": self._num_docs, "tokenizer": _TOKEN_RE.pattern,
                "tokens": self.tokens}
        (directory / "lexical_index.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        """Inverse of save."""
        directory = Path(directory)
        meta_path = directory / "lexical_index.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no lexical index saved here (expected lexical_index.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT_VERSION or meta.get("tokenizer") != _TOKEN_RE.pattern:
            raise ValueError(f"{meta_path}: saved with another format/tokenizer ({meta}); rebuild the index")
        bm25 = _bm25s().BM25.load(str(directory / "bm25s"), show_progress=False, verbosity=0)
        return cls(bm25, int(meta["num_docs"]), meta.get("tokens", "words"))


def minmax_range(x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, span) of each row over its `valid` entries: [Q, M] -> [Q] and [Q] in x's dtype.

    lo = min of the row's valid entries, span = max - min; a row without a valid entry has lo = 0, span = 0.
    """
    lo = np.min(np.where(valid, x, np.inf), axis=-1)
    hi = np.max(np.where(valid, x, -np.inf), axis=-1)
    finite = np.isfinite(lo) & np.isfinite(hi)
    return np.where(finite, lo, 0.0).astype(x.dtype), np.where(finite, hi - lo, 0.0).astype(x.dtype)


def minmax_apply(x, lo, span):
    """x' = clip((x - lo) / span, 0, 1) per row, 0 where span <= 0: x [Q, M], lo and span [Q] -> [Q, M].

    The normalization of `minmax_rows` with given per-row constants. Numpy in -> numpy out, jax in -> jax out (so
    a jitted step applies the retriever's normalization as it is). Non-finite x: -inf -> 0, +inf -> 1.
    """
    import jax
    import jax.numpy as jnp

    xp = jnp if any(isinstance(a, jax.Array) for a in (x, lo, span)) else np
    lo, span = xp.asarray(lo)[..., None], xp.asarray(span)[..., None]
    out = (x - lo) / xp.where(span > 0, span, xp.ones_like(span))
    return xp.where(span > 0, xp.clip(out, 0.0, 1.0), xp.zeros_like(out))


def minmax_rows(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Min-max normalization of each row over its `valid` entries: [Q, M] -> [Q, M] in [0, 1], in x's dtype.

    x' = (x - min_row) / (max_row - min_row) over the row's valid entries (`minmax_range`, `minmax_apply`); invalid
    entries and the entries of rows whose valid entries are all equal -> 0. The one min-max of the package
    (retriever fusion, hybrid logits, `normalize_per_query`).
    """
    lo, span = minmax_range(x, valid)
    return np.where(valid, minmax_apply(np.where(valid, x, 0.0), lo, span), 0.0).astype(x.dtype)


def normalize_per_query(scores: np.ndarray) -> np.ndarray:
    """`minmax_rows` over the finite entries, float32; non-finite entries (-inf for missing slots, NaN) are kept."""
    scores = np.asarray(scores, np.float32)
    finite = np.isfinite(scores)
    return np.where(finite, minmax_rows(scores, finite), scores)
