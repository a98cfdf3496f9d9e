"""Dense layers over [B, L, in] vs over the flattened [B * L, in]: XLA:CPU time and copies of forward + backward.

    python experiments/bench_dense.py --out results/bench_dense.json

`nnx.Linear` on a [B, L, in] input is a dot_general whose weight gradient contracts two axes (B and L). XLA:CPU
canonicalises that dot by transposing the activations into a [in, B * L] copy before the GEMM. The encoder's
`dense` (hnm_jax/models/encoder.py) flattens the leading axes first: the same GEMMs, and a weight gradient that
contracts one axis, which the GEMM reads in place. This measures one transformer feed-forward block at MiniLM's
widths (hidden 384, intermediate 1536, plus a 384 x 384 projection of the block's input, as q/k/v are): forward,
exact-erf GELU, and the gradient of every weight, under `jax.jit(jax.grad(...))`, float32, random weights.

Rows: 3 texts an example (query, positive, negative) at batch x length 32 x 32 and 64 x 64, i.e. 3,072 and
12,288 token rows. Per round and shape the two contenders run alternately (`--calls` timed calls each after one
warm-up); the JSON has every median, the count of transposing copies in each optimized HLO (2-D copies and
loop fusions whose shape has the token axis second), and `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnm_jax.models.encoder import dense

HIDDEN, INTERMEDIATE = 384, 1536
SETTINGS = [(32, 32), (64, 64)]


class Block(nnx.Module):
    """A 384 x 384 projection of x and the GELU feed-forward of x, summed: [.., 384] -> [.., 384]."""

    def __init__(self, rngs: nnx.Rngs):
        self.projection = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)
        self.intermediate = nnx.Linear(HIDDEN, INTERMEDIATE, rngs=rngs)
        self.output = nnx.Linear(INTERMEDIATE, HIDDEN, rngs=rngs)


def loss_fn(flatten: bool):
    """sum(tanh(block(x))) with every Linear called on x as given (3-D) or through `dense` (flattened)."""
    def apply(layer: nnx.Linear, x: jax.Array) -> jax.Array:
        return dense(layer, x) if flatten else layer(x)

    def loss(graphdef, params, x):
        block = nnx.merge(graphdef, params)
        hidden = jax.nn.gelu(apply(block.intermediate, x), approximate=False)
        return jnp.sum(jnp.tanh(apply(block.output, hidden) + apply(block.projection, x)))

    return loss


def transposing_copies(hlo: str, tokens: int) -> int:
    """Instructions of the ENTRY computation that write a [features, tokens] array (a transposed activation)."""
    entry = hlo[hlo.index("\nENTRY"):]
    return len(re.findall(rf"= f32\[\d+,{tokens}\]\{{1,0\}} (?:fusion|copy|transpose)\(", entry))


def median_ms(fn, args: tuple, calls: int) -> float:
    """Median milliseconds of `calls` blocking calls fn(*args), after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def summarize(rows: list[dict], baseline: str, contender: str, digits: int) -> dict:
    """Per setting: the median over rounds of each contender's median_ms, and baseline / contender (the speedup)."""
    summary = {}
    for setting in dict.fromkeys(r["setting"] for r in rows if "round" in r):
        medians = {c: statistics.median(r["median_ms"] for r in rows
                                        if r.get("setting") == setting and r.get("contender") == c and "round" in r)
                   for c in (baseline, contender)}
        summary[setting] = {**{f"{c}_ms": round(m, 1) for c, m in medians.items()},
                            "speedup": round(medians[baseline] / medians[contender], digits)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", default="results/bench_dense.json")
    args = parser.parse_args()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    result = {"uptime_before": uptime(), "calls": args.calls, "jax": jax.__version__, "rows": []}
    graphdef, params = nnx.split(Block(nnx.Rngs(0)))
    grads = {flatten: jax.jit(jax.grad(loss_fn(flatten), argnums=1), static_argnums=0) for flatten in (False, True)}
    rng = np.random.default_rng(0)
    inputs = {(b, length): jnp.asarray(rng.standard_normal((3 * b, length, HIDDEN)), jnp.float32)
              for b, length in SETTINGS}
    for (b, length), x in inputs.items():
        for flatten, grad in grads.items():
            hlo = grad.lower(graphdef, params, x).compile().as_text()
            result["rows"].append({"setting": f"{b}x{length}", "contender": "flattened" if flatten else "3-D",
                                   "transposing_copies": transposing_copies(hlo, 3 * b * length)})
    for round_ in range(args.rounds):
        for (b, length), x in inputs.items():
            for flatten, grad in grads.items():
                result["rows"].append({"round": round_, "setting": f"{b}x{length}",
                                       "contender": "flattened" if flatten else "3-D",
                                       "median_ms": median_ms(grad, (graphdef, params, x), args.calls)})
    result["uptime_after"] = uptime()
    result["summary"] = summarize(result["rows"], "3-D", "flattened", 3)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
