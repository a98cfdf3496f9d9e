"""Steady-state training examples/s and encoding sentences/s of all-MiniLM-L6-v2 on this machine, as JSON.

    python -m benchmarks.bench_train --out results/bench_train.json

Training: batch 32, max length 64, one explicit negative (an example = query + positive + negative).
Encoding: batch 256, max length 64. Inputs are full-length random token ids (fixed shapes, no padding savings),
timed after compilation and warm-up; the median of the timed repeats is reported.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from hnm_jax import sharding
from hnm_jax.config import load_config_file, spec_from_config
from hnm_jax.data.tokenize import TokenizedTexts
from hnm_jax.models.pretrained import load_encoder
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import create_train_state, jit_train_step

REPO = Path(__file__).resolve().parents[1]


def random_tokens(rng: np.random.Generator, rows: int, length: int) -> np.ndarray:
    ids = rng.integers(1000, 30000, size=(rows, length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids


def bench_training(encoder, batch_size: int, length: int, negatives: int, repeats: int) -> dict:
    mesh = sharding.make_mesh()
    spec = spec_from_config(load_config_file(str(REPO / "configs/base.py")))
    tx = make_optimizer(spec.train, 1000)
    replicated = sharding.replicated(mesh)
    state = create_train_state(encoder.graphdef, encoder.state, tx, 0)
    state_sharding = jax.tree.map(lambda _: replicated, state)
    state = jax.device_put(state, state_sharding)
    step = jit_train_step(tx, spec.loss, None, encoder.pooling, True, state_sharding, sharding.batch_sharding(mesh))
    rng = np.random.default_rng(0)
    ones = np.ones((batch_size, length), np.int32)
    batch = {
        "query_ids": random_tokens(rng, batch_size, length), "query_mask": ones,
        "pos_ids": random_tokens(rng, batch_size, length), "pos_mask": ones,
        "neg_ids": random_tokens(rng, batch_size * negatives, length).reshape(batch_size, negatives, length),
        "neg_mask": np.ones((batch_size, negatives, length), np.int32),
        "pos_doc": np.arange(batch_size, dtype=np.int32),
        "neg_doc": (batch_size + np.arange(batch_size * negatives, dtype=np.int32)).reshape(batch_size, negatives),
        "query_positives": np.arange(batch_size, dtype=np.int32)[:, None],
    }
    batch = sharding.to_global(batch, mesh)
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {"batch_size": batch_size, "max_length": length, "negatives": negatives, "compile_s": compile_s,
            "step_s_median": median, "step_s_all": times, "examples_per_s": batch_size / median}


def bench_encoding(encoder, batch_size: int, length: int, batches: int) -> dict:
    rng = np.random.default_rng(1)
    rows = batch_size * batches
    tokens = TokenizedTexts(input_ids=random_tokens(rng, rows, length), lengths=np.full(rows, length, np.int32))
    mesh = sharding.make_mesh()
    kwargs = dict(batch_size=batch_size, sharding=sharding.batch_sharding(mesh))
    encoder.encode_tokens(tokens, **kwargs)  # compile + warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        encoder.encode_tokens(tokens, **kwargs)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {"batch_size": batch_size, "max_length": length, "sentences": rows, "seconds_median": median,
            "sentences_per_s": rows / median}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/bench_train.json")
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    result = {
        "model": args.model,
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "encode": bench_encoding(encoder, 256, 64, 4),
        "train": bench_training(encoder, 32, 64, 1, args.repeats),  # last: the step donates the parameters
        "load_average_after": os.getloadavg(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"train_examples_per_s": result["train"]["examples_per_s"],
                      "encode_sentences_per_s": result["encode"]["sentences_per_s"]}, indent=2))


if __name__ == "__main__":
    main()
