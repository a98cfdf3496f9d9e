"""Tokenizer -> fixed-width int32 arrays, an on-disk cache per text set, and length buckets.

Texts are tokenized once (truncated at `max_length`, never padded by the tokenizer) into a
`TokenizedTexts` of `[N, max_length]` ids plus per-row lengths. Batches are later cut to a bucket
length from `LENGTH_BUCKETS` (`ACCELERATOR_LENGTH_BUCKETS` on GPU/TPU, see `length_buckets`), so a jitted
encoder compiles at most once per bucket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tqdm

from hnm_jax.atomic_write import atomic_path

LENGTH_BUCKETS: tuple[int, ...] = (16, 32, 48, 64, 128, 256, 512)  # 48: records here are ~20-60 tokens
# GPU/TPU: a compile costs seconds to a minute there while padding a short batch costs little, so fewer buckets
# (each run compiles one program per bucket below its width, plus the width itself).
ACCELERATOR_LENGTH_BUCKETS: tuple[int, ...] = (32, 64, 128, 256, 512)
CHUNK_SIZE = 4096  # texts per tokenizer call: bounds the memory of the Python token lists
_CACHE_VERSION = b"hnm_jax.tokenize.v1"


@dataclasses.dataclass(frozen=True)
class TokenizedTexts:
    """Token ids of N texts, right-padded with `pad_id` to a common width.

    input_ids: [N, max_length] int32, `pad_id` beyond each row's length.
    lengths: [N] int32, real tokens per row including [CLS]/[SEP].
    """

    input_ids: np.ndarray
    lengths: np.ndarray
    pad_id: int = 0
    batch_key: ClassVar[str] = "ids"  # batches carry them as *_ids (a frozen trunk's HiddenStates: *_hidden)

    def __post_init__(self) -> None:
        if self.input_ids.ndim != 2 or self.lengths.shape != self.input_ids.shape[:1]:
            raise ValueError(
                f"TokenizedTexts: expected input_ids [N, L] and lengths [N], got {self.input_ids.shape} "
                f"and {self.lengths.shape}"
            )

    @property
    def max_length(self) -> int:
        """Width L of `input_ids`."""
        return int(self.input_ids.shape[1])

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def _check_length(self, length: int | None) -> int:
        length = self.max_length if length is None else int(length)
        if not 0 < length <= self.max_length:
            raise ValueError(f"length must be in [1, {self.max_length}], got {length}")
        return length

    def attention_mask(self, length: int | None = None) -> np.ndarray:
        """[N, length] int32 mask, 1 where position < lengths (length defaults to max_length)."""
        length = self._check_length(length)
        return (np.arange(length)[None, :] < self.lengths[:, None]).astype(np.int32)

    def subset(self, rows: np.ndarray) -> TokenizedTexts:
        """The texts at `rows` ([R]), as their own TokenizedTexts."""
        rows = np.asarray(rows)
        return TokenizedTexts(self.input_ids[rows], self.lengths[rows], self.pad_id)

    def take(self, rows: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids [R, length], mask [R, length]) for `rows`, cut to `length` columns."""
        length = self._check_length(length)
        rows = np.asarray(rows)
        ids = self.input_ids[rows, :length]
        mask = (np.arange(length)[None, :] < self.lengths[rows][:, None]).astype(np.int32)
        return ids, mask


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def _fill(rows: list[list[int]], out: np.ndarray, start: int) -> np.ndarray:
    """Writes ragged `rows` into out[start:start+len(rows)]; returns their lengths [len(rows)]."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    for i, row in enumerate(rows):
        out[start + i, : len(row)] = row
    return lengths


def _tokenizer_fingerprint(tokenizer: Any) -> bytes:
    """Bytes that change whenever the tokenizer would produce different ids."""
    parts = [type(tokenizer).__qualname__, str(getattr(tokenizer, "truncation_side", "right"))]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizer: vocab + normalizer + post-processor, all in one JSON
        # less truncation and padding: per-call settings (each call sets its own), not the tokenizer's
        settings = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        parts.append(json.dumps(settings, sort_keys=True))
    else:
        parts.append(str(getattr(tokenizer, "name_or_path", "")))
        parts.append(repr(sorted(tokenizer.get_vocab().items())))
    return "\0".join(parts).encode("utf-8")


def _cache_key(tokenizer: Any, texts: Sequence[str], max_length: int) -> str:
    digest = hashlib.sha256()
    digest.update(_CACHE_VERSION)
    digest.update(_tokenizer_fingerprint(tokenizer))
    digest.update(f"\0max_length={max_length}\0n={len(texts)}\0".encode())
    for text in texts:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def tokenize_texts(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
    memory_budget_bytes: int | None = None,
) -> TokenizedTexts:
    """Tokenizes `texts` with truncation at `max_length` -> TokenizedTexts [N, max_length].

    Ids are identical to `tokenizer(texts, truncation=True, max_length=max_length)`. With `cache_dir`,
    the arrays are stored as `tokens-<sha256>.npz` (key: tokenizer, max_length, every text) and reused.
    When the [N, max_length] int32 ids would exceed `memory_budget_bytes`, they are streamed chunk by chunk
    into a memory-mapped `.npy` in `cache_dir` instead, and `input_ids` is that read-only memory map.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
    texts = list(texts)
    if memory_budget_bytes is not None and len(texts) * max_length * 4 > memory_budget_bytes:
        if cache_dir is None:
            raise ValueError("a tokenized corpus over the memory budget streams to disk: cache_dir is required")
        return _tokenize_to_memmap(tokenizer, texts, max_length, Path(cache_dir), show_progress)
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"tokens-{_cache_key(tokenizer, texts, max_length)}.npz"
        if cache_path.exists():
            with np.load(cache_path) as data:
                return TokenizedTexts(data["input_ids"], data["lengths"], int(data["pad_id"]))

    pad_id = _pad_id(tokenizer)
    input_ids = np.full((len(texts), max_length), pad_id, dtype=np.int32)
    lengths = np.zeros((len(texts),), dtype=np.int32)
    with tqdm.tqdm(total=len(texts), disable=not show_progress, desc="tokenize", unit="text") as bar:
        for start in range(0, len(texts), CHUNK_SIZE):
            chunk = texts[start : start + CHUNK_SIZE]
            encoded = tokenizer(
                chunk,
                truncation=True,
                max_length=max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            lengths[start : start + len(chunk)] = _fill(encoded["input_ids"], input_ids, start)
            bar.update(len(chunk))

    tokens = TokenizedTexts(input_ids, lengths, pad_id)
    if cache_path is not None:
        # Own temporary names: the processes of a multi-process run may write the same cache at once.
        with atomic_path(cache_path, unique=True) as tmp, open(tmp, "wb") as f:
            np.savez(f, input_ids=input_ids, lengths=lengths, pad_id=np.int64(pad_id))
    return tokens


def _tokenize_to_memmap(tokenizer: Any, texts: list[str], max_length: int, cache_dir: Path,
                        show_progress: bool) -> TokenizedTexts:
    """tokenize_texts for corpora over the memory budget: ids live in `tokens-<key>.ids.npy` (memory-mapped)."""
    key = _cache_key(tokenizer, texts, max_length)
    ids_path, lengths_path = cache_dir / f"tokens-{key}.ids.npy", cache_dir / f"tokens-{key}.lengths.npy"
    pad_id = _pad_id(tokenizer)
    if not (ids_path.exists() and lengths_path.exists()):
        # Own temporary names: the processes of a multi-process run may write the same cache at once.
        with atomic_path(ids_path, unique=True) as tmp:
            ids = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(len(texts), max_length))
            lengths = np.zeros((len(texts),), dtype=np.int32)
            with tqdm.tqdm(total=len(texts), disable=not show_progress, desc="tokenize (to disk)",
                           unit="text") as bar:
                for start in range(0, len(texts), CHUNK_SIZE):
                    chunk = texts[start : start + CHUNK_SIZE]
                    encoded = tokenizer(chunk, truncation=True, max_length=max_length, return_attention_mask=False,
                                        return_token_type_ids=False)
                    block = np.full((len(chunk), max_length), pad_id, dtype=np.int32)
                    lengths[start : start + len(chunk)] = _fill(encoded["input_ids"], block, 0)
                    ids[start : start + len(chunk)] = block
                    bar.update(len(chunk))
            ids.flush()
            del ids
            with atomic_path(lengths_path, unique=True) as lengths_tmp, open(lengths_tmp, "wb") as f:
                np.save(f, lengths)
    return TokenizedTexts(np.load(ids_path, mmap_mode="r"), np.load(lengths_path), pad_id)


def tokenize_pairs(
    tokenizer: Any, first: Sequence[str], second: Sequence[str], max_length: int
) -> tuple[TokenizedTexts, np.ndarray]:
    """Tokenizes text pairs `[CLS] a [SEP] b [SEP]` (for a cross-encoder).

    Returns (tokens [N, max_length], token_type_ids [N, max_length] int32, 0 on padding).
    Truncation is the tokenizer's default ('longest_first') at `max_length`.
    """
    first, second = list(first), list(second)
    if len(first) != len(second):
        raise ValueError(f"tokenize_pairs: {len(first)} first texts but {len(second)} second texts")
    pad_id = _pad_id(tokenizer)
    input_ids = np.full((len(first), max_length), pad_id, dtype=np.int32)
    type_ids = np.zeros((len(first), max_length), dtype=np.int32)
    lengths = np.zeros((len(first),), dtype=np.int32)
    for start in range(0, len(first), CHUNK_SIZE):
        stop = start + CHUNK_SIZE
        encoded = tokenizer(
            first[start:stop],
            second[start:stop],
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=True,
        )
        lengths[start : start + len(encoded["input_ids"])] = _fill(encoded["input_ids"], input_ids, start)
        _fill(encoded["token_type_ids"], type_ids, start)
    return TokenizedTexts(input_ids, lengths, pad_id), type_ids


def length_buckets(platform: str) -> tuple[int, ...]:
    """The bucket set for a JAX platform name: LENGTH_BUCKETS on "cpu", ACCELERATOR_LENGTH_BUCKETS elsewhere."""
    return LENGTH_BUCKETS if platform == "cpu" else ACCELERATOR_LENGTH_BUCKETS


def bucket_length(length: int, max_length: int, buckets: tuple[int, ...] = LENGTH_BUCKETS) -> int:
    """Smallest bucket in `buckets` >= `length`, capped at `max_length` (always allowed)."""
    if not 0 <= length <= max_length:
        raise ValueError(f"length {length} is outside [0, max_length={max_length}]")
    for bucket in buckets:
        if bucket >= length:
            return min(bucket, max_length)
    return max_length


def bucketed_batches(lengths: np.ndarray, batch_size: int, max_length: int,
                     buckets: tuple[int, ...] = LENGTH_BUCKETS) -> list[tuple[np.ndarray, int]]:
    """Length-sorted batches: [(row indices [<= batch_size], padded length)], deterministic.

    Rows are sorted by length (stable) and cut into consecutive batches of `batch_size` rows; each
    batch's padded length is `bucket_length` of its longest row (in `buckets`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batches.append((rows, bucket_length(int(lengths[rows].max()), max_length, buckets)))
    return batches
