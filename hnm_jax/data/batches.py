"""Global batches of (query, positive, N negatives), deterministic in (seed, epoch, step).

Every process builds the same global batch (cheap host work) and keeps its own rows, so a run is the same
numbers on 1 or many hosts. Empty negative slots carry doc -1 and an all-zero mask; the loss masks them.
"""

import numpy as np

from hnm_jax.data.beir import Split
from hnm_jax.data.tokenize import LENGTH_BUCKETS, TokenizedTexts, bucket_length


def steps_per_epoch(num_queries: int, batch_size: int) -> int:
    """Full batches per epoch (the ragged tail is dropped; the next epoch's permutation covers it)."""
    if num_queries < batch_size:
        raise ValueError(f"train.batch_size: {batch_size} is larger than the {num_queries} training queries")
    return num_queries // batch_size


def step_rng(seed: int, epoch: int, step_in_epoch: int) -> np.random.Generator:
    """The host-side generator of one step: a pure function of (seed, epoch, step)."""
    return np.random.default_rng([seed, epoch, step_in_epoch])


def batch_rows(seed: int, epoch: int, step_in_epoch: int, num_queries: int, batch_size: int) -> np.ndarray:
    """Split rows [B] of one batch: a slice of the epoch's permutation (seeded by (seed, epoch))."""
    order = np.random.default_rng([seed, epoch]).permutation(num_queries)
    return order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]


def sample_positives(positives: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One relevant doc per query, uniformly among its positives: [B, P] (-1 padded) -> [B]."""
    counts = np.sum(positives >= 0, axis=1)
    choice = np.floor(rng.random(len(positives)) * counts).astype(np.int64)
    return positives[np.arange(len(positives)), choice].astype(np.int32)


def canonical_rows(texts: tuple[str, ...] | list[str]) -> np.ndarray:
    """[N] int32: the first corpus row with the same text as each row (exact-text twins share an id).

    Batches carry these ids, so the loss masks an exact twin of a query's positive like the positive itself
    (the benchmarks hold unlabelled exact-text twins; they cannot be negatives).
    """
    first: dict[str, int] = {}
    return np.asarray([first.setdefault(text, row) for row, text in enumerate(texts)], np.int32)


def make_batch(rows: np.ndarray, split: Split, query_tokens: TokenizedTexts, doc_tokens: TokenizedTexts,
               pos_doc: np.ndarray, neg_doc: np.ndarray, canonical: np.ndarray,
               buckets: tuple[int, ...] = LENGTH_BUCKETS) -> dict[str, np.ndarray]:
    """Token arrays and doc ids of one batch (see training/step.BATCH_KEYS for shapes).

    The query tensors are cut to Lq = `bucket_length` of the batch's longest query, the document tensors
    (positives and negatives together) to Ld = `bucket_length` of its longest document, so a run compiles its
    step for a few (Lq, Ld) pairs only; padding is masked, so the loss is that of max-length padding.
    Doc ids in the batch are canonical rows (see `canonical_rows`); -1 stays -1. Texts given as a frozen trunk's
    hidden states (`encoder.HiddenStates`, read like tokens) come as `*_hidden` [.., L, H] instead of `*_ids`.
    """
    def ids(rows_: np.ndarray) -> np.ndarray:
        return np.where(rows_ >= 0, canonical[np.maximum(rows_, 0)], -1).astype(np.int32)

    query_rows = split.query_rows[rows]
    query_length = bucket_length(int(query_tokens.lengths[query_rows].max()), query_tokens.max_length, buckets)
    docs = np.concatenate([pos_doc, neg_doc.reshape(-1)])
    length = bucket_length(int(doc_tokens.lengths[docs[docs >= 0]].max()), doc_tokens.max_length, buckets)
    query_ids, query_mask = query_tokens.take(query_rows, query_length)
    pos_ids, pos_mask = doc_tokens.take(pos_doc, length)
    b, n = neg_doc.shape
    neg_ids, neg_mask = doc_tokens.take(np.maximum(neg_doc.reshape(-1), 0), length)
    neg_mask = neg_mask * (neg_doc.reshape(-1, 1) >= 0)
    key = doc_tokens.batch_key  # "ids", or "hidden" for a frozen trunk's hidden states
    return {
        f"query_{key}": query_ids, "query_mask": query_mask,
        f"pos_{key}": pos_ids, "pos_mask": pos_mask,
        f"neg_{key}": neg_ids.reshape(b, n, *neg_ids.shape[1:]),  # explicit shape: N may be 0
        "neg_mask": neg_mask.reshape(b, n, length).astype(np.int32),
        "pos_doc": ids(pos_doc), "neg_doc": ids(neg_doc), "query_positives": ids(split.positives[rows]),
    }
