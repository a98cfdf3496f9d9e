"""Dense maximum-inner-product search: exact jitted top-k for small corpora, ScaNN for large ones.

Host side. Both paths share one contract: ``search(queries [Q, D], k) -> (indices int32 [Q, k],
scores float32 [Q, k])`` by inner product, best first, ties broken by the lower corpus row, and slots
past the corpus size padded with index -1 and score -inf. ScaNN results are re-scored exactly against
the stored embeddings, so every returned score is the exact dot product.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

QUERY_CHUNK = 1024  # queries per jitted call; smaller batches are padded to a power of two (>= 8)
_MIN_QUERY_BUCKET = 8
MIN_SCANN_DOCS = 256  # ScaNN needs enough docs to train its quantizer; smaller corpora are always exact
_PAD_INDEX = np.iinfo(np.int32).max  # sentinel index of empty slots inside the jitted merge


@dataclasses.dataclass(frozen=True)
class IndexSpec:
    """How to index a corpus. Zeros mean "choose from the corpus size N".

    exact_threshold: corpora with fewer docs use exact top-k; at/above it, ScaNN (never below
      MIN_SCANN_DOCS docs).
    num_leaves: ScaNN partitions (auto: round(sqrt(N)), at most N // 50).
    leaves_to_search: partitions probed per query (auto: 5% of the leaves, at least 12).
    reorder: candidates re-scored exactly after the quantized pass (auto: max(10 * k, 100) per search).
    dims_per_block, anisotropic_threshold: ScaNN asymmetric-hashing settings.
    The ScaNN settings (spherical k-means tree, anisotropic threshold 0.2) assume unit-norm embeddings,
    which is what the bi-encoder produces; other vectors are still searched by inner product, less well.
    """

    exact_threshold: int = 20_000
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder: int = 0
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


@functools.partial(jax.jit, static_argnames=("k",))
def _chunked_top_k(queries: jax.Array, corpus: jax.Array, num_docs: jax.Array, k: int):
    """Top-k inner products of each query against a chunked corpus, with a running merge.

    queries [Qc, D]; corpus [C, Cc, D] (zero-padded past ``num_docs`` rows); returns (scores [Qc, k],
    indices [Qc, k]) with empty slots (-inf, _PAD_INDEX). Memory is O(Qc * (Cc + k)).
    jax.lax.top_k keeps the lower position first among equal values, and the running buffer (earlier,
    lower rows) precedes each new chunk in the merge, so ties resolve to the lower corpus row.
    """
    num_chunks, chunk, _ = corpus.shape
    kc = min(k, chunk)
    q = queries.shape[0]
    init = (jnp.full((q, k), -jnp.inf, jnp.float32), jnp.full((q, k), _PAD_INDEX, jnp.int32))

    def body(i, carry):
        best_s, best_i = carry
        scores = jnp.matmul(queries, corpus[i].T, precision=jax.lax.Precision.HIGHEST)
        rows = i * chunk + jnp.arange(chunk, dtype=jnp.int32)
        scores = jnp.where(rows[None, :] < num_docs, scores.astype(jnp.float32), -jnp.inf)
        s, j = jax.lax.top_k(scores, kc)
        all_s = jnp.concatenate([best_s, s], axis=1)
        all_i = jnp.concatenate([best_i, rows[j]], axis=1)
        top_s, pos = jax.lax.top_k(all_s, k)
        return top_s, jnp.take_along_axis(all_i, pos, axis=1)

    return jax.lax.fori_loop(0, num_chunks, body, init)


def _chunk_corpus(corpus: np.ndarray, chunk_size: int) -> tuple[jax.Array, int]:
    """[N, D] -> device array [C, Cc, D], zero-padded; Cc = min(chunk_size, next_pow2(N))."""
    n, d = corpus.shape
    chunk = max(1, min(int(chunk_size), _next_pow2(n)))
    num_chunks = max(1, math.ceil(n / chunk))
    padded = np.zeros((num_chunks * chunk, d), np.float32)
    padded[:n] = corpus
    return jnp.asarray(padded.reshape(num_chunks, chunk, d)), n


def _search_chunked(queries: np.ndarray, corpus_chunks: jax.Array, num_docs: int, k: int):
    """Run _chunked_top_k over fixed-shape query chunks; map empty slots to (-1, -inf)."""
    queries = np.asarray(queries, np.float32)
    num_q = queries.shape[0]
    out_i = np.full((num_q, k), -1, np.int32)
    out_s = np.full((num_q, k), -np.inf, np.float32)
    if num_q == 0 or k == 0:
        return out_i, out_s
    n_docs = jnp.int32(num_docs)
    start = 0
    while start < num_q:
        size = min(QUERY_CHUNK, num_q - start)
        bucket = min(QUERY_CHUNK, max(_MIN_QUERY_BUCKET, _next_pow2(size)))
        block = np.zeros((bucket, queries.shape[1]), np.float32)
        block[:size] = queries[start : start + size]
        s, i = _chunked_top_k(jnp.asarray(block), corpus_chunks, n_docs, k)
        s, i = np.asarray(s)[:size], np.asarray(i)[:size]
        empty = (i == _PAD_INDEX) | ~np.isfinite(s)
        out_i[start : start + size] = np.where(empty, -1, i)
        out_s[start : start + size] = np.where(empty, -np.inf, s)
        start += size
    return out_i, out_s


def exact_top_k(
    queries: np.ndarray, corpus: np.ndarray, k: int, chunk_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product.

    queries [Q, D], corpus [N, D] -> (indices int32 [Q, k], scores float32 [Q, k]), scores[q, j] =
    <queries[q], corpus[indices[q, j]]>, sorted descending, ties by lower index; k > N pads with -1/-inf.
    The corpus is scanned in chunks of ``chunk_size`` rows (memory ~ queries x chunk) and queries in
    chunks of QUERY_CHUNK, padded to power-of-two shapes so only a few shapes ever compile.
    """
    corpus = np.asarray(corpus, np.float32)
    if corpus.ndim != 2 or np.ndim(queries) != 2 or np.shape(queries)[1] != corpus.shape[1]:
        raise ValueError(f"expected queries [Q, D] and corpus [N, D], got {np.shape(queries)}, {corpus.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if corpus.shape[0] == 0:
        q = np.shape(queries)[0]
        return np.full((q, k), -1, np.int32), np.full((q, k), -np.inf, np.float32)
    chunks, n = _chunk_corpus(corpus, chunk_size)
    return _search_chunked(queries, chunks, n, k)


def score_pairs(queries: np.ndarray, embeddings: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Exact dot products of each query with given corpus rows.

    queries [Q, D], embeddings [N, D], indices int [Q, M] (-1 = none) -> float32 [Q, M];
    out[q, m] = <queries[q], embeddings[indices[q, m]]>, -inf where indices == -1.
    Computed in row blocks so the gathered [rows, M, D] tensor stays small.
    """
    queries = np.asarray(queries, np.float32)
    indices = np.asarray(indices)
    out = np.full(indices.shape, -np.inf, np.float32)
    if indices.size == 0:
        return out
    rows_per_block = max(1, (1 << 22) // max(1, indices.shape[1] * embeddings.shape[1]))
    for start in range(0, indices.shape[0], rows_per_block):
        idx = indices[start : start + rows_per_block]
        docs = embeddings[np.maximum(idx, 0)]  # [r, M, D]
        s = np.einsum("rd,rmd->rm", queries[start : start + rows_per_block], docs, dtype=np.float32)
        out[start : start + rows_per_block] = np.where(idx >= 0, s, -np.inf)
    return out


def sort_by_score(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (score desc, index asc), invalid (-1 / non-finite) last, keep k (pad -1/-inf)."""
    indices = np.asarray(indices, np.int32)
    scores = np.asarray(scores, np.float32)
    valid = (indices >= 0) & np.isfinite(scores)
    key_s = np.where(valid, -scores.astype(np.float64), np.inf)
    key_i = np.where(valid, indices, np.iinfo(np.int32).max)
    order = np.lexsort((key_i, key_s), axis=-1)[:, :k]
    out_i = np.take_along_axis(np.where(valid, indices, -1), order, axis=1)
    out_s = np.take_along_axis(np.where(valid, scores, -np.inf), order, axis=1).astype(np.float32)
    pad = k - out_i.shape[1]
    if pad > 0:
        out_i = np.pad(out_i, ((0, 0), (0, pad)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, pad)), constant_values=-np.inf)
    return out_i.astype(np.int32), out_s


def scann_params(n: int, spec: IndexSpec) -> dict[str, int]:
    """ScaNN tree sizes for N docs: leaves ~ sqrt(N), probe 5% of them, train on ~100 docs per leaf."""
    leaves = spec.num_leaves or int(max(1, min(n // 50, round(math.sqrt(n)))))
    to_search = spec.leaves_to_search or max(12, math.ceil(0.05 * leaves))
    return {
        "num_leaves": leaves,
        "leaves_to_search": min(leaves, to_search),
        "training_sample_size": min(n, max(10_000, 100 * leaves)),
    }


class DenseIndex:
    """MIPS index over [N, D] float32 embeddings: exact below ``spec.exact_threshold`` docs, else ScaNN."""

    def __init__(self, embeddings: np.ndarray, spec: IndexSpec, searcher=None, exact_chunks=None):
        self._embeddings = embeddings
        self._spec = spec
        self._searcher = searcher
        self._exact_chunks = exact_chunks

    @classmethod
    def build(cls, embeddings: np.ndarray, spec: IndexSpec = IndexSpec()) -> DenseIndex:
        """Index embeddings [N, D] (unit-norm expected for the ScaNN quantizer settings)."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], got shape {emb.shape}")
        if emb.shape[0] < max(spec.exact_threshold, MIN_SCANN_DOCS):
            chunks, _ = _chunk_corpus(emb, 4096)
            return cls(emb, spec, exact_chunks=chunks)
        return cls(emb, spec, searcher=cls._build_scann(emb, spec))

    @staticmethod
    def _build_scann(emb: np.ndarray, spec: IndexSpec):
        import scann  # local import: heavy, and only needed on the large-corpus path

        p = scann_params(emb.shape[0], spec)
        sample = p["training_sample_size"]
        builder = scann.scann_ops_pybind.builder(emb, 10, "dot_product")
        builder = builder.tree(p["num_leaves"], p["leaves_to_search"], training_sample_size=sample, spherical=True)
        builder = builder.score_ah(
            spec.dims_per_block,
            anisotropic_quantization_threshold=spec.anisotropic_threshold,
            training_sample_size=sample,
        )
        builder = builder.reorder(spec.reorder or 100)
        return builder.build()

    @property
    def is_exact(self) -> bool:
        return self._searcher is None

    @property
    def embeddings(self) -> np.ndarray:
        """The [N, D] float32 matrix the index was built from."""
        return self._embeddings

    @property
    def spec(self) -> IndexSpec:
        return self._spec

    def __len__(self) -> int:
        return self._embeddings.shape[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (indices int32 [Q, k], scores float32 [Q, k]); see exact_top_k."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self._embeddings.shape[1]:
            raise ValueError(f"queries must be [Q, {self._embeddings.shape[1]}], got {queries.shape}")
        if self.is_exact:
            return _search_chunked(queries, self._exact_chunks, len(self), k)
        num_q, n = queries.shape[0], len(self)
        if num_q == 0 or k == 0:
            return np.full((num_q, k), -1, np.int32), np.full((num_q, k), -np.inf, np.float32)
        k_eff = min(k, n)
        idx, dist = self._searcher.search_batched_parallel(
            queries, final_num_neighbors=k_eff, pre_reorder_num_neighbors=self.reorder(k)
        )
        # ScaNN pads rows it cannot fill (fewer docs in the probed leaves than k) with index 0, score NaN
        idx = np.where(np.isnan(dist), -1, np.asarray(idx, np.int64)).astype(np.int32).reshape(num_q, -1)
        scores = score_pairs(queries, self._embeddings, idx)
        return sort_by_score(idx, scores, k)

    def reorder(self, k: int) -> int:
        """Candidates a ScaNN top-k search re-scores exactly: index.reorder, or auto max(10 * k, 100); >= k."""
        k_eff = min(k, len(self))
        return max(self._spec.reorder or max(10 * k_eff, 100), k_eff)

    def score_pairs(self, queries: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Exact dot products [Q, M] of queries [Q, D] with corpus rows indices [Q, M] (-1 -> -inf)."""
        return score_pairs(queries, self._embeddings, indices)

    def save(self, directory: Path) -> None:
        """Write embeddings.npy, spec.json and (ScaNN path) the serialized searcher under ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "embeddings.npy", self._embeddings)
        meta = {"spec": dataclasses.asdict(self._spec), "is_exact": self.is_exact}
        (directory / "dense_index.json").write_text(json.dumps(meta, indent=2))
        if not self.is_exact:
            scann_dir = directory / "scann"
            scann_dir.mkdir(exist_ok=True)
            self._searcher.serialize(str(scann_dir), relative_path=True)

    @classmethod
    def load(cls, directory: Path) -> DenseIndex:
        """Inverse of save."""
        directory = Path(directory)
        meta_path = directory / "dense_index.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no dense index saved here (expected dense_index.json)")
        meta = json.loads(meta_path.read_text())
        spec = IndexSpec(**meta["spec"])
        emb = np.load(directory / "embeddings.npy")
        if meta["is_exact"]:
            chunks, _ = _chunk_corpus(emb, 4096)
            return cls(emb, spec, exact_chunks=chunks)
        import scann

        searcher = scann.scann_ops_pybind.load_searcher(str(directory / "scann"))
        return cls(emb, spec, searcher=searcher)
