"""GEMM throughput of XLA:CPU vs torch at the train step's matmul shapes: is the CPU gap in the matmuls?

    python experiments/bench_gemm.py --out results/bench_gemm.json                  # JAX only
    .venv-peers/bin/python experiments/bench_gemm.py --out results/bench_gemm.json  # JAX and torch, interleaved

Shapes [M, K] x [K, N] of MiniLM (hidden 384, intermediate 1536) at batch 32 x length 32 with 3 texts an example
(M = 3,072 token rows): the q/k/v/output projections, the two feed-forward matmuls, and a weight gradient
(K = tokens). float32, 20 calls each after one warm-up, in the order jax, torch per shape and round; `uptime`
before and after. Appends nothing: writes one JSON object.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

SHAPES = [(3072, 384, 384), (3072, 384, 1536), (3072, 1536, 384), (384, 3072, 1536)]
CALLS = 20


def gflops(run, m: int, k: int, n: int) -> float:
    """GFLOP/s of `run()` (one [m, k] x [k, n] product, blocking) over CALLS calls."""
    run()
    start = time.perf_counter()
    for _ in range(CALLS):
        run()
    return 2 * m * k * n * CALLS / (time.perf_counter() - start) / 1e9


def jax_run(a: np.ndarray, b: np.ndarray):
    x, y = jax.numpy.asarray(a), jax.numpy.asarray(b)
    matmul = jax.jit(lambda p, q: p @ q)
    return lambda: matmul(x, y).block_until_ready()


def torch_run(a: np.ndarray, b: np.ndarray):
    import torch

    x, y = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: x @ y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="results/bench_gemm.json")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401

        contenders = {"jax": jax_run, "torch": torch_run}
    except ImportError:
        contenders = {"jax": jax_run}
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    result = {"uptime_before": uptime(), "calls": CALLS, "rows": []}
    rng = np.random.default_rng(0)
    for round_ in range(args.rounds):
        for m, k, n in SHAPES:
            a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
            for name, make in contenders.items():
                result["rows"].append({"round": round_, "shape": [m, k, n], "contender": name,
                                       "gflops": round(gflops(make(a, b), m, k, n), 1)})
                print(json.dumps(result["rows"][-1]))
    result["uptime_after"] = uptime()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
