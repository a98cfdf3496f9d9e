"""Training examples/s and encoding sentences/s of hnm_jax vs sentence-transformers and a hand-written torch loop.

    make bench-peers      # creates .venv-peers (pip install -e .[dev,peers]) and runs this module
    .venv-peers/bin/python -m benchmarks.bench_vs_peers [--rounds 3 --steps 4 --train 32x32,64x64 --encode 32,64]

One model (all-MiniLM-L6-v2, float32, CPU), the same data for everyone: abt_buy training queries, each with its
positive and one random corpus negative, in one fixed order; batch i is the same examples for every contender.
Training contenders, each alone in its own (spawned) process, as users run one framework at a time, and timed in turn,
A B C then C B A, while the others wait idle (with torch installed, transformers imports it in every process, but
only the torch contenders run it):
  hnm_jax      the project's jitted train step (`jit_train_step`) on `batches.make_batch` batches (length buckets)
  st_trainer   SentenceTransformerTrainer + MultipleNegativesRankingLoss on (anchor, positive, negative) columns
  torch_loop   AutoModel + mean pooling + the same InfoNCE (scale 20) + AdamW, tokenizing each batch
A round runs batches 0..K of each contender and times batches 1..K, each step including its own batch building
(the trainer: between consecutive on_step_end callbacks). Round 0 is warm-up (hnm_jax compiles each length-bucket
shape there) and is not reported. Each round also records its process's user and system CPU seconds and minor page
faults: a 64x64 hnm_jax step maps ~4 GB of fresh pages, and in one process with torch (`--in-process`, the setup
before 2026-12-02) it paid 2-3x the system time for them after torch's steps had run. Encoding, in this process:
`Encoder.encode` vs `SentenceTransformer.encode` at batch 256 on 2,048 texts (8 full batches), tokenization included,
alternated the same way; on CPU `Encoder.encode` computes each batch of 256 in calls of `CPU_ROWS_PER_DEVICE` rows
(hnm_jax/models/pretrained.py), which stay in cache.

Writes results/bench_vs_peers.json (every timing, medians, ratios, load averages) and results/bench_vs_peers.md.
Targets (issue #5): training >= 2.5x st_trainer and >= 1.3x torch_loop at 32x32 and 64x64; encoding >= 1.2x.
"""

import argparse
import functools
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hnm_jax import sharding
from hnm_jax.config import load_config_file, spec_from_config
from hnm_jax.data import batches
from hnm_jax.data.beir import BeirData, load_beir, resolve_dataset
from hnm_jax.data.tokenize import tokenize_texts
from hnm_jax.mining.negatives import Candidates, SelectSpec, random_negatives
from hnm_jax.models.pretrained import Encoder, load_encoder, resolve_model_dir
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import create_train_state, jit_train_step

REPO = Path(__file__).resolve().parents[1]
SCALE = 20.0  # InfoNCE scale = 1 / temperature: MNRL's default, the project's loss.temperature 0.05
LEARNING_RATE = 2e-5
ENCODE_TEXTS = 2048
TARGETS = {"train_vs_st_trainer": 2.5, "train_vs_torch_loop": 1.3, "encode_vs_sentence_transformers": 1.2}

CONTENDERS = ("hnm_jax", "st_trainer", "torch_loop")
SPAWN = multiprocessing.get_context("spawn")  # fresh interpreters: each contender's process runs only its framework

StepFn = Callable[[int], None]  # runs training batch i (blocking until its update is done)


class Examples:
    """The benchmark's training examples: (query, positive, negative) rows of a BEIR split in one fixed order.

    rows [E] split rows; pos_doc [E], neg_doc [E] corpus rows; texts of each column as lists.
    """

    def __init__(self, data: BeirData, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.data = data
        self.rows = rng.permutation(len(data.split))
        positives = data.split.positives[self.rows]
        self.pos_doc = positives[:, 0].astype(np.int32)
        candidates = Candidates(positives, len(data.corpus), None, (-1.0, 1.0), False)
        self.neg_doc = random_negatives(candidates, SelectSpec(num_negatives=1), rng)[:, 0]
        if np.any(self.neg_doc < 0):
            raise RuntimeError("a query's random negative kept hitting its positives; change --seed")
        texts = data.corpus.texts
        self.anchors = [data.queries.texts[r] for r in data.split.query_rows[self.rows]]
        self.positives = [texts[d] for d in self.pos_doc]
        self.negatives = [texts[d] for d in self.neg_doc]

    def batch(self, i: int, batch_size: int) -> slice:
        """Examples of training batch i (batches cycle through the examples)."""
        count = len(self.rows) // batch_size
        start = (i % count) * batch_size
        return slice(start, start + batch_size)


def padded_tokens(examples: Examples, lengths: dict[str, np.ndarray], batch: slice, contender: str,
                  max_length: int) -> int:
    """Token positions per example that `contender` computes for one batch (padding included)."""
    longest = {k: int(np.minimum(v[batch], max_length).max()) for k, v in lengths.items()}
    if contender == "st_trainer":  # each column padded to its own longest text
        return longest["anchor"] + longest["positive"] + longest["negative"]
    if contender == "torch_loop":  # queries, then positives + negatives in one tensor
        return longest["anchor"] + 2 * max(longest["positive"], longest["negative"])
    raise ValueError(contender)


def hnm_trainer(examples: Examples, model: str, batch_size: int, max_length: int) -> tuple[StepFn, Callable]:
    """(step(i), padded tokens per example of batch i) for the project's jitted train step."""
    encoder = load_encoder(model)
    config = load_config_file(str(REPO / "configs/base.py"))
    config.train.batch_size, config.train.learning_rate = batch_size, LEARNING_RATE
    config.data.query_max_length = config.data.doc_max_length = max_length
    spec = spec_from_config(config)
    data = examples.data
    query_tokens = tokenize_texts(encoder.tokenizer, data.queries.texts, max_length)
    doc_tokens = tokenize_texts(encoder.tokenizer, data.corpus.texts, max_length)
    canonical = batches.canonical_rows(data.corpus.texts)
    mesh = sharding.make_mesh()
    tx = make_optimizer(spec.train, total_steps=100_000)
    state = create_train_state(encoder.graphdef, encoder.state, tx, spec.seed)
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    holder = {"state": jax.device_put(state, state_sharding)}
    step_fn = jit_train_step(tx, spec.loss, None, encoder.pooling, spec.model.dropout > 0, state_sharding,
                             sharding.batch_sharding(mesh))

    def make(i: int) -> dict[str, np.ndarray]:
        part = examples.batch(i, batch_size)
        return batches.make_batch(examples.rows[part], data.split, query_tokens, doc_tokens, examples.pos_doc[part],
                                  examples.neg_doc[part, None], canonical)

    def step(i: int) -> None:
        holder["state"], metrics = step_fn(holder["state"], sharding.to_global(make(i), mesh))
        jax.block_until_ready(metrics["loss"])

    def tokens(i: int) -> int:
        batch = make(i)
        return batch["query_ids"].shape[1] + 2 * batch["pos_ids"].shape[1]

    return step, tokens


def torch_trainer(examples: Examples, model: str, batch_size: int, max_length: int) -> StepFn:
    """step(i) of a minimal torch loop: tokenize, two forward passes, InfoNCE, backward, clip, AdamW."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(resolve_model_dir(model))
    tokenizer, net = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=0.01)

    def embed(texts: list[str]) -> torch.Tensor:
        inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = net(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def step(i: int) -> None:
        part = examples.batch(i, batch_size)
        queries = embed(examples.anchors[part])
        docs = embed(examples.positives[part] + examples.negatives[part])
        scores = SCALE * queries @ docs.T  # [B, 2B]: in-batch positives and every negative
        loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(queries)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def st_trainer(examples: Examples, model: str, batch_size: int, max_length: int, steps: int,
               workdir: str) -> Callable[[], list[float]]:
    """A round of the sentence-transformers trainer: runs batches 0..steps, returns the `steps` step times."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from torch.utils.data import SequentialSampler
    from transformers import PrinterCallback, TrainerCallback

    net = SentenceTransformer(str(resolve_model_dir(model)), device="cpu")
    net.max_seq_length = max_length
    count = (len(examples.rows) // batch_size) * batch_size  # whole batches, in the benchmark's order
    dataset = Dataset.from_dict({"anchor": examples.anchors[:count], "positive": examples.positives[:count],
                                 "negative": examples.negatives[:count]})

    def in_order(dataset_, batch_size, drop_last, **_):
        return DefaultBatchSampler(SequentialSampler(dataset_), batch_size=batch_size, drop_last=drop_last)

    class StepEnds(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    args = SentenceTransformerTrainingArguments(
        output_dir=workdir, per_device_train_batch_size=batch_size, max_steps=steps + 1, learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0, use_cpu=True,
        dataloader_drop_last=True, batch_sampler=in_order, save_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, seed=0)
    callback = StepEnds()
    trainer = SentenceTransformerTrainer(model=net, args=args, train_dataset=dataset,
                                         loss=MultipleNegativesRankingLoss(net, scale=SCALE), callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # its end-of-train summary line per round

    def round_() -> list[float]:
        callback.ends = []
        trainer.train()
        return np.diff(callback.ends).tolist()

    return round_


def time_steps(step: StepFn, steps: int) -> list[float]:
    """Runs batches 0..steps and returns the times of batches 1..steps (batch 0 re-enters the round)."""
    step(0)
    times = []
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    return times


def build_contender(name: str, examples: Examples, model: str, batch_size: int, max_length: int, steps: int,
                    workdir: str) -> tuple[Callable[[], list[float]], list[int] | None]:
    """(round(): the `steps` step times of one round, hnm_jax's padded tokens per example of batches 1..steps)."""
    if name == "hnm_jax":
        step, tokens = hnm_trainer(examples, model, batch_size, max_length)
        return (lambda: time_steps(step, steps)), [tokens(i) for i in range(1, steps + 1)]
    if name == "st_trainer":
        return st_trainer(examples, model, batch_size, max_length, steps, workdir), None
    if name == "torch_loop":
        torch_step = torch_trainer(examples, model, batch_size, max_length)
        return (lambda: time_steps(torch_step, steps)), None
    raise ValueError(f"unknown contender {name!r}; expected one of {CONTENDERS}")


def measured_round(run: Callable[[], list[float]]) -> dict:
    """One round's step times plus the process's CPU seconds and minor page faults over the round, and its peak
    resident memory so far (GB; a spawned process starts from its parent's peak; `in_process`: all contenders').

    The page faults show memory churn: a step that frees its buffers to the OS and maps them again next step pays
    the kernel (and a VM's host) for every page, in system time.
    """
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"step_s": times, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "max_rss_gb": after.ru_maxrss / 2**20}


def contender_process(conn: Connection, name: str, model: str, data: str, batch_size: int, max_length: int,
                      steps: int) -> None:
    """One training contender alone in its own process: builds it, sends what it is, then answers each "round"
    with `measured_round` until "stop". Errors travel back as {"error": traceback}."""
    try:
        examples = Examples(load_beir(resolve_dataset(data), "train"))
        with tempfile.TemporaryDirectory() as workdir:
            run, tokens = build_contender(name, examples, model, batch_size, max_length, steps, workdir)
            conn.send({"padded_tokens": tokens, "pid": os.getpid(), "torch_imported": "torch" in sys.modules})
            while conn.recv() == "round":
                conn.send(measured_round(run))
    except Exception:  # the parent raises it with the contender's name
        conn.send({"error": traceback.format_exc()})


def received(conn: Connection, name: str) -> dict:
    """The next message from contender `name`'s process; its traceback raised here if it failed."""
    try:
        message = conn.recv()
    except EOFError:
        raise RuntimeError(f"contender {name}'s process died without a traceback (killed, e.g. out of memory?)") from None
    if "error" in message:
        raise RuntimeError(f"contender {name} failed in its process:\n{message['error']}")
    return message


def bench_training(examples: Examples, tokenizer: Any, model: str, data: str, batch_size: int, max_length: int,
                   rounds: int, steps: int, in_process: bool = False) -> dict:
    """Rounds of the three training contenders at one (batch size, max length), A B C then C B A.

    Each contender runs in its own process (spawned, built one after another, idle while another is timed), as a
    user runs one framework at a time; `in_process` builds all three in this process instead (the old setup, where
    torch's allocations change what hnm_jax's steps pay for memory).
    """
    rounds_of: dict[str, Callable[[], dict]] = {}
    info: dict[str, dict] = {}
    processes = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in CONTENDERS:
            if in_process:
                run, tokens = build_contender(name, examples, model, batch_size, max_length, steps, workdir)
                info[name] = {"padded_tokens": tokens, "pid": os.getpid()}
                rounds_of[name] = functools.partial(measured_round, run)
                continue
            conn, child_conn = SPAWN.Pipe()
            process = SPAWN.Process(target=contender_process, daemon=True,
                                    args=(child_conn, name, model, data, batch_size, max_length, steps))
            process.start()
            processes.append((process, conn))
            info[name] = received(conn, name)
            rounds_of[name] = functools.partial(request_round, conn, name)
        measured: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
        for round_ in range(rounds + 1):  # round 0: warm-up (compiles, allocator), not reported
            for name in CONTENDERS if round_ % 2 == 0 else CONTENDERS[::-1]:
                result_ = rounds_of[name]()
                if round_:
                    measured[name].append(result_)
        for process, conn in processes:
            conn.send("stop")
            process.join(timeout=60)
    lengths = {column: tokenize_texts(tokenizer, getattr(examples, f"{column}s"), 512).lengths
               for column in ("anchor", "positive", "negative")}
    timed = range(1, steps + 1)
    result = {"batch_size": batch_size, "max_length": max_length, "isolation": "in_process" if in_process else
              "one_process_per_contender", "contenders": {}}
    for name, per_round in measured.items():
        step_s = [r["step_s"] for r in per_round]
        median = statistics.median(t for r in step_s for t in r)
        tokens = info[name]["padded_tokens"] or [
            padded_tokens(examples, lengths, examples.batch(i, batch_size), name, max_length) for i in timed]
        result["contenders"][name] = {
            "step_s_median": median, "examples_per_s": batch_size / median,
            "round_medians_s": [statistics.median(r) for r in step_s], "step_s_all": step_s,
            "sys_s_per_step": statistics.median(r["sys_s"] / (steps + 1) for r in per_round),
            "user_s_per_step": statistics.median(r["user_s"] / (steps + 1) for r in per_round),
            "minor_faults_per_step": statistics.median(r["minor_faults"] / (steps + 1) for r in per_round),
            "max_rss_gb": max(r["max_rss_gb"] for r in per_round),
            "padded_tokens_per_example_mean": float(np.mean(tokens)),
            "process": {k: v for k, v in info[name].items() if k != "padded_tokens"}}
    speed = {name: c["examples_per_s"] for name, c in result["contenders"].items()}
    result["ratios"] = {"hnm_jax/st_trainer": speed["hnm_jax"] / speed["st_trainer"],
                        "hnm_jax/torch_loop": speed["hnm_jax"] / speed["torch_loop"]}
    return result


def request_round(conn: Connection, name: str) -> dict:
    """Has contender `name`'s process run one measured round and returns its `measured_round`."""
    try:
        conn.send("round")
    except BrokenPipeError:
        raise RuntimeError(f"contender {name}'s process is gone (killed, e.g. out of memory?)") from None
    return received(conn, name)


def bench_encoding(encoder: Encoder, texts: list[str], model: str, max_length: int, rounds: int) -> dict:
    """Alternating Encoder.encode and SentenceTransformer.encode at batch 256 over `texts`."""
    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(str(resolve_model_dir(model)), device="cpu")
    st_model.max_seq_length = max_length
    contenders = {
        "hnm_jax": lambda: encoder.encode(texts, batch_size=256, max_length=max_length),
        "sentence_transformers": lambda: st_model.encode(texts, batch_size=256, convert_to_numpy=True,
                                                         show_progress_bar=False),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outputs = {}
    for round_ in range(rounds + 1):  # round 0: warm-up (hnm_jax compiles one encode per length bucket)
        for name, run in contenders.items():
            t0 = time.perf_counter()
            outputs[name] = run()
            if round_:
                times[name].append(time.perf_counter() - t0)
    result = {"batch_size": 256, "max_length": max_length, "texts": len(texts), "contenders": {},
              "max_abs_embedding_diff": float(np.max(np.abs(outputs["hnm_jax"] - outputs["sentence_transformers"])))}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        result["contenders"][name] = {"seconds_median": median, "sentences_per_s": len(texts) / median,
                                      "seconds_all": seconds}
    speed = {name: c["sentences_per_s"] for name, c in result["contenders"].items()}
    result["ratios"] = {"hnm_jax/sentence_transformers": speed["hnm_jax"] / speed["sentence_transformers"]}
    return result


def markdown(result: dict) -> str:
    """The results as two markdown tables (training, encoding) with the targets."""
    lines = [f"# hnm_jax vs peers ({result['model']}, float32, {result['cpu_count']} CPU cores)", "",
             f"Load average before {result['load_average_before']}, after {result['load_average_after']}; "
             f"{result['rounds']} rounds x {result['steps']} timed steps, medians.", "",
             "| batch x max length | hnm_jax ex/s | st_trainer ex/s | torch_loop ex/s | hnm/st (>= 2.5) | "
             "hnm/torch (>= 1.3) | padded tokens/example hnm, st, torch | system s/step hnm, st, torch | "
             "processes |", "|---|---|---|---|---|---|---|---|---|"]
    for setting in result["train"]:
        c, r = setting["contenders"], setting["ratios"]
        tokens = ", ".join(f"{c[n]['padded_tokens_per_example_mean']:.0f}" for n in CONTENDERS)
        system = ", ".join(f"{c[n]['sys_s_per_step']:.2f}" for n in CONTENDERS)
        lines.append(f"| {setting['batch_size']} x {setting['max_length']} | {c['hnm_jax']['examples_per_s']:.1f} | "
                     f"{c['st_trainer']['examples_per_s']:.1f} | {c['torch_loop']['examples_per_s']:.1f} | "
                     f"{r['hnm_jax/st_trainer']:.2f} | {r['hnm_jax/torch_loop']:.2f} | {tokens} | {system} | "
                     f"{setting['isolation'].replace('_', ' ')} |")
    lines += ["", "| encode, batch 256, max length | hnm_jax sent/s | sentence-transformers sent/s | ratio (>= 1.2) | "
              "max abs embedding diff |", "|---|---|---|---|---|"]
    for setting in result["encode"]:
        c = setting["contenders"]
        lines.append(f"| {setting['max_length']} | {c['hnm_jax']['sentences_per_s']:.1f} | "
                     f"{c['sentence_transformers']['sentences_per_s']:.1f} | "
                     f"{setting['ratios']['hnm_jax/sentence_transformers']:.2f} | "
                     f"{setting['max_abs_embedding_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_vs_peers", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--data", default="abt_buy", help="a benchmark under $HNM_DATA_DIR or a BEIR folder")
    parser.add_argument("--train", default="32x32,64x64", help="training settings, BATCHxMAX_LENGTH,...")
    parser.add_argument("--encode", default="32,64", help="encoding max lengths (batch 256)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per contender and round")
    parser.add_argument("--in-process", action="store_true",
                        help="build the training contenders in this process (default: one process each)")
    parser.add_argument("--out", default="results/bench_vs_peers.json")
    args = parser.parse_args()

    import sentence_transformers
    import torch

    root = resolve_dataset(args.data)
    data = load_beir(root, "train")
    examples = Examples(data)
    result = {"model": args.model, "data": str(args.data), "examples": len(examples.rows), "rounds": args.rounds,
              "steps": args.steps, "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "jax": jax.__version__, "torch": torch.__version__,
              "sentence_transformers": sentence_transformers.__version__, "torch_threads": torch.get_num_threads(),
              "devices": [str(d) for d in jax.devices()], "load_average_before": os.getloadavg()}
    encoder = load_encoder(args.model)
    texts = (list(data.corpus.texts) + list(data.queries.texts))[:ENCODE_TEXTS]
    result["encode"] = [bench_encoding(encoder, texts, args.model, int(length), args.rounds)
                        for length in args.encode.split(",") if length]
    result["train"] = []
    for setting in filter(None, args.train.split(",")):
        batch_size, max_length = (int(v) for v in setting.split("x"))
        result["train"].append(bench_training(examples, encoder.tokenizer, args.model, args.data, batch_size, max_length,
                                              args.rounds, args.steps, args.in_process))
    result["load_average_after"] = os.getloadavg()
    result["targets"] = TARGETS
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
