"""Train-step time with a frozen trunk (model.freeze_layers = K) against full fine-tuning, all-MiniLM-L6-v2, as JSON.

    python -m benchmarks.bench_freeze --out results/bench_freeze.json

One batch of 32 queries x 64 tokens, each with its positive and one explicit negative (full-length random token
ids, dropout 0.1, the base config's optimizer). K = 0 steps take token ids through all 6 blocks; K > 0 steps take the
trunk's cached hidden states (`Encoder.cache_trunk`, computed once per text beforehand and timed apart, compiled:
the one-off cost per text) and run the top 6 - K blocks, differentiating and updating only those. Each timed step includes the
batch's host -> device transfer (9.4 MB of hidden states at K > 0, 25 kB of ids at K = 0), as in the training loop.
Rounds interleave the contenders (`--steps` timed steps each per round, after compiling and one warm-up step) so load
drifts on a shared machine hit all of them; the JSON has every step time, the medians, the speed-ups over K = 0,
and `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from hnm_jax import sharding
from hnm_jax.config import load_config_file, spec_from_config
from hnm_jax.data.tokenize import TokenizedTexts
from hnm_jax.models.loading import with_dropout, with_frozen_trunk
from hnm_jax.models.pretrained import load_encoder
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import create_train_state, jit_train_step

REPO = Path(__file__).resolve().parents[1]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def texts(rng: np.random.Generator, rows: int, length: int) -> TokenizedTexts:
    """`rows` full-length random texts ([CLS] ... [SEP])."""
    ids = rng.integers(1000, 30000, size=(rows, length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    return TokenizedTexts(ids, np.full(rows, length, np.int32))


def contender(encoder, layers: int, tokens: TokenizedTexts, batch_size: int, negatives: int, mesh) -> dict:
    """A compiled step, its state and its (global) host batch for freeze_layers = `layers`."""
    spec = spec_from_config(load_config_file(str(REPO / "configs/base.py")))
    model = with_frozen_trunk(encoder, layers)
    model.cache_trunk(tokens, batch_size, sharding=sharding.batch_sharding(mesh))  # compiles the trunk
    t0 = time.perf_counter()
    inputs = model.cache_trunk(tokens, batch_size, sharding=sharding.batch_sharding(mesh))
    cache_s = time.perf_counter() - t0
    key = inputs.batch_key
    b, n, length = batch_size, negatives, tokens.max_length
    x, mask = inputs.take(np.arange(len(tokens)))
    batch = {f"query_{key}": x[:b], "query_mask": mask[:b], f"pos_{key}": x[b:2 * b], "pos_mask": mask[b:2 * b],
             f"neg_{key}": x[2 * b:].reshape(b, n, *x.shape[1:]), "neg_mask": mask[2 * b:].reshape(b, n, length),
             "pos_doc": np.arange(b, dtype=np.int32),
             "neg_doc": (b + np.arange(b * n, dtype=np.int32)).reshape(b, n),
             "query_positives": np.arange(b, dtype=np.int32)[:, None]}
    tx = make_optimizer(spec.train, 1000, freeze_layers=layers)
    state, state_sharding = sharding.put_replicated(
        create_train_state(model.graphdef, jax.device_get(model.state), tx, 0), mesh)
    step = jit_train_step(tx, spec.loss, None, model.pooling, True, state_sharding, sharding.batch_sharding(mesh))
    t0 = time.perf_counter()
    state, metrics = step(state, sharding.to_global(batch, mesh))
    jax.block_until_ready((state, metrics))
    first_s = time.perf_counter() - t0
    state, metrics = step(state, sharding.to_global(batch, mesh))  # warm-up
    jax.block_until_ready((state, metrics))
    return {"freeze_layers": layers, "step": step, "state": state, "batch": batch, "times": [],
            "cache_trunk_s": cache_s if layers else 0.0, "first_call_s": first_s,
            "batch_bytes": int(sum(v.nbytes for v in batch.values()))}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_freeze", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--layers", default="0,3,5", help="freeze_layers of the contenders (0 = full fine-tuning)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per contender and round")
    parser.add_argument("--note", default="", help="recorded in the JSON (e.g. that the machine was shared)")
    parser.add_argument("--out", default="results/bench_freeze.json")
    args = parser.parse_args()
    result = {"uptime_before": uptime(), "model": args.model, "batch_size": args.batch_size, "length": args.length,
              "negatives": args.negatives, "rounds": args.rounds, "steps_per_round": args.steps, "note": args.note,
              "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    encoder = with_dropout(load_encoder(args.model), 0.1)
    mesh = sharding.make_mesh()
    tokens = texts(np.random.default_rng(0), args.batch_size * (2 + args.negatives), args.length)
    contenders = [contender(encoder, int(k), tokens, args.batch_size, args.negatives, mesh)
                  for k in args.layers.split(",")]
    for _ in range(args.rounds):
        for c in contenders:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                c["state"], metrics = c["step"](c["state"], sharding.to_global(c["batch"], mesh))
                jax.block_until_ready((c["state"], metrics))
                c["times"].append(time.perf_counter() - t0)
    base = statistics.median(contenders[0]["times"])
    result["rows"] = [{"freeze_layers": c["freeze_layers"], "step_s_median": statistics.median(c["times"]),
                       "speedup_vs_first": base / statistics.median(c["times"]), "step_s_all": c["times"],
                       "first_call_s": c["first_call_s"], "batch_bytes": c["batch_bytes"],
                       "cache_trunk_s": c["cache_trunk_s"],
                       "cache_trunk_s_per_text": c["cache_trunk_s"] / len(tokens)} for c in contenders]
    result["uptime_after"] = uptime()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps([{k: row[k] for k in ("freeze_layers", "step_s_median", "speedup_vs_first")}
                      for row in result["rows"]], indent=2))


if __name__ == "__main__":
    main()
