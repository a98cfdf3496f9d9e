"""Dense index benchmark: exact jitted top-k vs ScaNN on clustered vectors with near-duplicates, as JSON.

    python -m benchmarks.bench_index --sizes 20000,50000,100000 --dim 384 --out results/bench_index.json

Data: unit vectors, 1000 cluster centres; each doc = centre + noise (|noise| ~ |centre|), 20% of the docs
are near-copies of another doc (|noise| ~ 0.05); queries = a random doc + noise (|noise| ~ 0.5).
Per size (each in a fresh process, so peak RSS is per size): build seconds, exact and ScaNN queries/s
on the same queries (after a warm-up pass that also compiles; median of --repeats timed passes;
exact and ScaNN passes interleaved so load from other processes hits both alike),
ScaNN recall@10 against exact, speedup, peak RSS. Then a refresh-cost line for --refresh-docs docs:
encode (a tiny random BERT on synthetic token ids), ScaNN build, and the mining search
(--refresh-queries queries, k=100).

    python -m benchmarks.bench_index --rss --rss-sizes 20000,50000,100000 --out results/bench_index_rss.json

--rss measures only the bounded-memory corpus encoding: per size, in a fresh process, N synthetic product
texts are tokenized in chunks (streamed to a memory-mapped file: --rss-budget-mb) and encoded in
length-bucketed batches by a random BERT (--rss-hidden, --rss-layers), after a warm-up that compiles every
bucket. Reported: RSS before (baseline), peak RSS of the tokenize + encode pass (VmHWM, reset after the
warm-up), their difference, the size of the [N, hidden] float32 embedding matrix it should track, and the
least-squares growth per document across the sizes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered_vectors(
    n: int,
    dim: int,
    num_queries: int,
    seed: int = 0,
    num_clusters: int = 1000,
    dup_fraction: float = 0.2,
    noise: float = 1.0,
    dup_noise: float = 0.05,
    query_noise: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Corpus [n, dim] and queries [num_queries, dim], float32 unit vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(dim)
    centres = rng.standard_normal((num_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    base = n - int(n * dup_fraction)
    docs = centres[rng.integers(0, num_clusters, base)]
    docs += noise * scale * rng.standard_normal((base, dim), dtype=np.float32)
    copies = docs[rng.integers(0, base, n - base)]
    copies += dup_noise * scale * rng.standard_normal(copies.shape, dtype=np.float32)
    corpus = np.concatenate([docs, copies])
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[rng.integers(0, n, num_queries)]
    queries = queries + query_noise * scale * rng.standard_normal(queries.shape, dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return corpus.astype(np.float32), queries.astype(np.float32)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if platform.system() == "Darwin" else rss / 1024


def interleaved_qps(searches: dict, queries: np.ndarray, k: int, repeats: int) -> tuple[dict, dict]:
    """Queries/s of each search fn: one warm-up pass each (compiles), then ``repeats`` rounds that time
    every fn once, in turn, so a load change on a shared machine hits all of them alike; the median of
    each fn's passes is reported. Returns (qps by name, last results by name)."""
    results = {name: search(queries, k) for name, search in searches.items()}
    times: dict = {name: [] for name in searches}
    for _ in range(repeats):
        for name, search in searches.items():
            t0 = time.perf_counter()
            results[name] = search(queries, k)
            times[name].append(time.perf_counter() - t0)
    return {name: len(queries) / statistics.median(t) for name, t in times.items()}, results


def bench_size(n: int, dim: int, num_queries: int, k: int, repeats: int, seed: int) -> dict:
    """Exact vs ScaNN at one corpus size (run in a fresh process)."""
    from hnm_jax.mining.dense_index import DenseIndex, IndexSpec, scann_params

    corpus, queries = clustered_vectors(n, dim, num_queries, seed=seed)
    t0 = time.perf_counter()
    exact = DenseIndex.build(corpus, IndexSpec(exact_threshold=n + 1))
    exact_build = time.perf_counter() - t0

    spec = IndexSpec(exact_threshold=0)
    t0 = time.perf_counter()
    approx = DenseIndex.build(corpus, spec)
    scann_build = time.perf_counter() - t0
    qps, results = interleaved_qps({"exact": exact.search, "scann": approx.search}, queries, k, repeats)
    exact_qps, scann_qps = qps["exact"], qps["scann"]
    exact_idx, scann_idx = results["exact"][0], results["scann"][0]
    hits = [len(set(a) & set(b)) for a, b in zip(scann_idx, exact_idx, strict=True)]
    return {
        "docs": n,
        "dim": dim,
        "queries": num_queries,
        "k": k,
        "exact_build_s": round(exact_build, 3),
        "exact_qps": round(exact_qps, 1),
        "scann_build_s": round(scann_build, 2),
        "scann_qps": round(scann_qps, 1),
        "speedup": round(scann_qps / exact_qps, 2),
        f"scann_recall_at_{k}": round(float(np.mean(hits)) / k, 4),
        "scann_top1_agreement": round(float(np.mean(scann_idx[:, 0] == exact_idx[:, 0])), 4),
        "scann_params": scann_params(n, spec),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def bench_refresh(n: int, dim: int, num_queries: int, seed: int, encode_length: int) -> dict:
    """Seconds of one mining refresh at n docs: encode (tiny random BERT), ScaNN build, search k=100."""
    from hnm_jax.mining.dense_index import DenseIndex, IndexSpec

    out: dict = {"docs": n, "dim": dim, "search_queries": num_queries, "search_k": 100}
    try:
        from hnm_jax.data.tokenize import TokenizedTexts
        from hnm_jax.models.encoder import BertConfig
        from hnm_jax.models.pretrained import random_encoder

        encoder = random_encoder(BertConfig.tiny(), tokenizer=None)
        rng = np.random.default_rng(seed)
        lengths = rng.integers(8, encode_length + 1, n).astype(np.int32)
        ids = rng.integers(1000, 30000, (n, encode_length)).astype(np.int32)
        ids[np.arange(encode_length)[None, :] >= lengths[:, None]] = 0
        tokens = TokenizedTexts(input_ids=ids, lengths=lengths, pad_id=0)
        encoder.encode_tokens(TokenizedTexts(ids[:1024], lengths[:1024], 0), batch_size=256)  # compile
        t0 = time.perf_counter()
        encoder.encode_tokens(tokens, batch_size=256)
        out["encode_s"] = round(time.perf_counter() - t0, 2)
        out["encode_model"] = (
            f"random BertConfig.tiny() (hidden 32, 2 layers), synthetic ids, max length {encode_length}"
        )
    except (ImportError, AttributeError, TypeError) as err:
        out["encode_s"] = None
        out["encode_model"] = f"not measured: {type(err).__name__}: {err}"

    corpus, queries = clustered_vectors(n, dim, num_queries, seed=seed)
    t0 = time.perf_counter()
    index = DenseIndex.build(corpus, IndexSpec())
    out["build_s"] = round(time.perf_counter() - t0, 2)
    out["index"] = "exact" if index.is_exact else "scann"
    index.search(queries[:256], 100)
    t0 = time.perf_counter()
    index.search(queries, 100)
    out["search_s"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


BRANDS = ("acme", "zenith", "orbit", "nova", "apex", "lumen", "vertex", "pulse", "sonic", "terra")
ITEMS = ("camera", "speaker", "router", "monitor", "keyboard", "headphones", "charger", "tablet", "lens", "drive")
WORDS = ("black", "white", "silver", "wireless", "portable", "compact", "pro", "mini", "4k", "usb-c", "bluetooth",
         "stereo", "hd", "noise-cancelling", "refurbished", "kit", "bundle", "edition", "gen", "ultra")


def synthetic_texts(n: int, seed: int) -> list[str]:
    """n short product records ("brand item CODE-123 w1 .. wk price: p"), k in 0..12 (~10-35 tokens)."""
    rng = np.random.default_rng(seed)
    brand, item = rng.integers(0, len(BRANDS), n), rng.integers(0, len(ITEMS), n)
    codes, prices, extra = rng.integers(100, 100_000, n), rng.integers(5, 2000, n), rng.integers(0, 13, n)
    words = rng.integers(0, len(WORDS), (n, 12))
    return [f"{BRANDS[brand[i]]} {ITEMS[item[i]]} {BRANDS[brand[i]][:2].upper()}-{codes[i]} "
            + " ".join(WORDS[w] for w in words[i, : extra[i]]) + f" price: {prices[i]}.99" for i in range(n)]


def _proc_status_mb(field: str) -> float:
    """A `kB` line of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile) in MiB."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1)) / 1024


def bench_rss(n: int, hidden: int, layers: int, max_length: int, batch_size: int, budget_mb: float,
              seed: int) -> dict:
    """Peak RSS of tokenizing + encoding n synthetic texts (run in a fresh process; Linux /proc only)."""
    import gc

    from transformers import AutoTokenizer

    from hnm_jax.data.tokenize import LENGTH_BUCKETS, TokenizedTexts, tokenize_texts
    from hnm_jax.models.encoder import BertConfig
    from hnm_jax.models.pretrained import random_encoder, resolve_model_dir

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_layers=layers,
                        num_heads=max(1, hidden // 64), intermediate_size=hidden)
    encoder = random_encoder(config, tokenizer, seed=seed, max_length=max_length)
    buckets = [b for b in LENGTH_BUCKETS if b < max_length] + [max_length]
    lengths = np.repeat(buckets, batch_size).astype(np.int32)  # one batch per bucket: all compiled before the pass
    encoder.encode_tokens(TokenizedTexts(np.full((len(lengths), max_length), 1000, np.int32), lengths), batch_size)
    gc.collect()
    baseline = _proc_status_mb("VmRSS")
    try:  # "5" resets VmHWM to the current RSS, so the peak below is that of the pass itself
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        texts = synthetic_texts(n, seed)
        texts_mb = (sys.getsizeof(texts) + sum(sys.getsizeof(t) for t in texts)) / 2**20
        tokens = tokenize_texts(tokenizer, texts, max_length, cache_dir=cache,
                                memory_budget_bytes=int(budget_mb * 2**20) if budget_mb > 0 else None)
        t1 = time.perf_counter()
        emb = encoder.encode_tokens(tokens, batch_size)
        t2 = time.perf_counter()
        peak, anon, file_backed = (_proc_status_mb(k) for k in ("VmHWM", "RssAnon", "RssFile"))
        streamed = isinstance(tokens.input_ids, np.memmap)
    assert emb.shape == (n, hidden)
    matrix_mb = n * hidden * 4 / 2**20
    return {
        "docs": n,
        "hidden": hidden,
        "mean_tokens": round(float(np.mean(tokens.lengths)), 1),
        "tokens_streamed_to_disk": streamed,
        "embedding_matrix_mb": round(matrix_mb, 1),
        "token_ids_mb": round(n * max_length * 4 / 2**20, 1),
        "texts_mb": round(texts_mb, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_over_baseline_mb": round(peak - baseline, 1),
        "rss_anon_mb_at_end": round(anon, 1),
        "rss_file_mb_at_end": round(file_backed, 1),
        "peak_reset_after_warmup": hwm_reset,
        "tokenize_s": round(t1 - t0, 1),
        "encode_s": round(t2 - t1, 1),
        "texts_per_s": round(n / (t2 - t0), 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def rss_scaling(args: argparse.Namespace) -> dict:
    """bench_rss at every --rss-sizes in a fresh process each, plus the growth per document between the ends."""
    rows = []
    for n in (int(s) for s in args.rss_sizes.split(",") if s):
        rows.append(in_fresh_process(bench_rss, n, args.rss_hidden, args.rss_layers, args.rss_max_length,
                                     args.rss_batch_size, args.rss_budget_mb, args.seed))
        print(json.dumps(rows[-1]), flush=True)
    summary: dict = {"matrix_bytes_per_doc": args.rss_hidden * 4}
    if len(rows) > 1:  # least-squares slopes over the sizes: what each extra document costs at the peak
        docs = [r["docs"] for r in rows]
        for key in ("peak_rss_mb", "peak_over_baseline_mb", "texts_mb"):
            slope = np.polyfit(docs, [r[key] * 2**20 for r in rows], 1)[0]
            summary[f"{key.removesuffix('_mb')}_bytes_per_doc"] = round(float(slope), 1)
    return {"model": f"random BERT, hidden {args.rss_hidden}, {args.rss_layers} layer(s), intermediate "
                     f"{args.rss_hidden}, tokenizer all-MiniLM-L6-v2", "sizes": rows, "summary": summary}


def in_fresh_process(fn, *args):
    """Run fn(*args) in a new (spawned) process so its peak RSS and compile caches are its own."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_index", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,50000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=4096, help="queries per timed pass")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    parser.add_argument("--refresh-docs", type=int, default=100_000, help="0 skips the refresh-cost line")
    parser.add_argument("--refresh-queries", type=int, default=20_000)
    parser.add_argument("--encode-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default results/bench_index.json (--rss: "
                                                    "results/bench_index_rss.json)")
    parser.add_argument("--rss", action="store_true", help="only the peak-RSS scaling of corpus encoding")
    parser.add_argument("--rss-sizes", default="20000,50000,100000")
    parser.add_argument("--rss-hidden", type=int, default=384, help="embedding width D of the random encoder")
    parser.add_argument("--rss-layers", type=int, default=1)
    parser.add_argument("--rss-max-length", type=int, default=64)
    parser.add_argument("--rss-batch-size", type=int, default=256)
    parser.add_argument("--rss-budget-mb", type=float, default=1.0,
                        help="token ids over this stream to a memory-mapped file (0: never)")
    args = parser.parse_args()

    import jax
    import scann

    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "jax_backend": jax.default_backend(),
            "scann": getattr(scann, "__version__", "unknown"),
        },
        "args": vars(args),
        "sizes": [],
    }
    out = Path(args.out or ("results/bench_index_rss.json" if args.rss else "results/bench_index.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.rss:
        results.update(rss_scaling(args))
        out.write_text(json.dumps(results, indent=2))
        print(f"wrote {out}")
        return
    for n in (int(s) for s in args.sizes.split(",") if s):
        row = in_fresh_process(bench_size, n, args.dim, args.queries, args.k, args.repeats, args.seed)
        results["sizes"].append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps(results, indent=2))
    if args.refresh_docs:
        refresh = in_fresh_process(
            bench_refresh, args.refresh_docs, args.dim, args.refresh_queries, args.seed, args.encode_length
        )
        results["refresh"] = refresh
        print(json.dumps(refresh), flush=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
