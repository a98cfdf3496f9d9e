"""Dropout masks of one MiniLM training forward: JAX's threefry lowering on CPU vs the encoder's unrolled hash.

    python experiments/bench_dropout.py --out results/bench_dropout.json

The encoder cuts every dropout mask of a forward pass from one draw of 16-bit random words (`DropoutMasks`).
`jax.random.bits` lowers threefry2x32 on CPU as a while loop over its 5 groups of 4 rounds, each iteration writing
the whole state to memory; `random_bits16` (hnm_jax/models/encoder.py) computes the same bits with the 20 rounds
unrolled, which XLA fuses into the kernel that reads them. Here both draw the masks of MiniLM's sites (embeddings,
then per layer the attention probabilities [3B, 12, L, L] and two hidden [3B, L, 384]; 3 texts an example) and
apply them to a float32 array of that size (inverted dropout at rate 0.1), under `jax.jit`, CPU.

Per round and setting the two contenders run alternately (`--calls` timed calls each after one warm-up); the JSON
has every median, whether the two give the same output (they must: same bits), the count of while loops in each
optimized HLO, and `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
from bench_dense import median_ms, summarize

from hnm_jax.models.encoder import drop_threshold, keep_probability, random_bits16

HIDDEN, HEADS, LAYERS, RATE = 384, 12, 6, 0.1
SETTINGS = [(32, 32), (64, 64)]


def mask_elements(batch: int, length: int) -> int:
    """Dropout mask elements of one MiniLM forward over 3 * batch texts of `length` tokens."""
    rows = 3 * batch
    return rows * length * HIDDEN + LAYERS * (rows * HEADS * length * length + 2 * rows * length * HIDDEN)


def dropout_fn(unrolled: bool):
    """x [N] -> x with the masks of one draw applied (inverted dropout at RATE)."""
    def apply(key: jax.Array, x: jax.Array) -> jax.Array:
        bits = random_bits16(key, x.size) if unrolled else jax.random.bits(key, x.shape, jnp.uint16)
        return jnp.where(bits >= drop_threshold(RATE), x / keep_probability(RATE), 0.0)

    return jax.jit(apply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", default="results/bench_dropout.json")
    args = parser.parse_args()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    result = {"uptime_before": uptime(), "calls": args.calls, "jax": jax.__version__, "rows": []}
    contenders = {"jax.random.bits": dropout_fn(False), "random_bits16": dropout_fn(True)}
    key = jax.random.PRNGKey(0)
    inputs = {(b, length): jnp.ones((mask_elements(b, length),), jnp.float32) for b, length in SETTINGS}
    for (b, length), x in inputs.items():
        outputs = {name: fn(key, x) for name, fn in contenders.items()}
        for name, fn in contenders.items():
            hlo = fn.lower(key, x).compile().as_text()
            result["rows"].append({"setting": f"{b}x{length}", "contender": name, "elements": x.size,
                                   "while_loops": hlo.count(" while("),
                                   "same_output": bool(jnp.array_equal(outputs[name], outputs["jax.random.bits"]))})
    for round_ in range(args.rounds):
        for (b, length), x in inputs.items():
            for name, fn in contenders.items():
                result["rows"].append({"round": round_, "setting": f"{b}x{length}", "contender": name,
                                       "median_ms": median_ms(fn, (key, x), args.calls)})
    result["uptime_after"] = uptime()
    result["summary"] = summarize(result["rows"], "jax.random.bits", "random_bits16", 2)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
