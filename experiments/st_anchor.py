"""The practitioner's recipe, as the anchor the recommended recipe must beat (issue 25): sentence-transformers'
MultipleNegativesRankingLoss (MNRL) with 5 negatives per pair from its `mine_hard_negatives` (over the whole corpus),
batch 32 (no duplicate texts in a batch), lr 5e-5, E epochs, on a dataset's whole train split; then evaluated
EXACTLY as the project's own runs: the saved model goes through `hnm eval --model` (same split, whole corpus, exact
search, the same metrics and per-query ranks for `hnm_jax.stats`' paired bootstrap). As a check of that path, the
torch model's own embeddings of the split are saved and scored with the project's metric code (`torch_dense`).

    make .venv-peers/.installed     # torch (CPU) + sentence-transformers[train], beside .venv: never a core dependency
    .venv-peers/bin/python -m experiments.st_anchor --data abt_buy --epochs 2 --seed 0
        # -> results/st_anchor/abt_buy-e2-s0.json (skipped when it exists; --force reruns)

Everything else is sentence-transformers' defaults (mining: sampling "top" from rank 0, no score filter; trainer:
linear decay, no warmup), as a practitioner would run it; the JSON records every setting and version.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hnm_jax.atomic_write import write_text
from hnm_jax.data.beir import load_beir, resolve_dataset
from hnm_jax.metrics import retrieval_metrics
from hnm_jax.models.pretrained import resolve_model_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "st_anchor"


def train_pairs(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(anchors, positives, corpus texts): one (query, relevant doc) pair per train qrel, and the whole corpus."""
    data = load_beir(root, "train")
    anchors, positives = [], []
    for query_row, rows in zip(data.split.query_rows, data.split.positives, strict=True):
        for doc_row in rows[rows >= 0]:
            anchors.append(data.queries.texts[query_row])
            positives.append(data.corpus.texts[doc_row])
    return anchors, positives, list(data.corpus.texts)


def train_st(model_dir: Path, root: Path, epochs: int, seed: int, negatives: int, batch_size: int,
             learning_rate: float, out: Path) -> dict[str, Any]:
    """Mines `negatives` per pair with `mine_hard_negatives`, trains MNRL for `epochs`, saves the model to `out`."""
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers
    from sentence_transformers.util import mine_hard_negatives
    from transformers import set_seed

    set_seed(seed)
    model = SentenceTransformer(str(model_dir), device="cpu")
    anchors, positives, corpus = train_pairs(root)
    start = time.perf_counter()
    mined = mine_hard_negatives(datasets.Dataset.from_dict({"anchor": anchors, "positive": positives}), model,
                                corpus=corpus, num_negatives=negatives, output_format="n-tuple", verbose=False)
    mine_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, batch_sampler=BatchSamplers.NO_DUPLICATES, seed=seed, logging_steps=5,
            save_strategy="no", report_to=[], use_cpu=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=mined,
                                             loss=MultipleNegativesRankingLoss(model))
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
    model.save(str(out))
    return {"train_pairs": len(anchors), "mined_rows": len(mined), "columns": mined.column_names,
            "steps": trainer.state.global_step, "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
            "mine_s": round(mine_s, 1), "train_s": round(train_s, 1)}


def torch_dense(model_dir: Path, root: Path, split: str) -> dict[str, Any]:
    """The trained torch model's own embeddings of `split`'s queries and the whole corpus, searched exactly and
    scored with `hnm_jax.metrics.retrieval_metrics`: the check that `hnm eval` evaluated this model."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    data = load_beir(root, split)
    queries = [data.queries.texts[r] for r in data.split.query_rows]
    doc_emb = model.encode(list(data.corpus.texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    query_emb = model.encode(queries, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    np.savez_compressed(model_dir / f"embeddings_{split}.npz", query=query_emb, doc=doc_emb)
    ranked = np.argsort(-(query_emb @ doc_emb.T), axis=1, kind="stable")[:, :10]
    metrics = retrieval_metrics(ranked, data.split.positives)
    return {name: float(value) for name, value in metrics.items()}


def hnm_eval(model_dir: Path, data: str, split: str, output: Path) -> dict[str, Any]:
    """`hnm eval --model` on the saved model (token lengths from the data, as the project's runs): its metrics."""
    command = [sys.executable, "-m", "hnm_jax.main", "eval", "--model", str(model_dir), "--data", data,
               "--split", split, "--max-length", "0", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"hnm eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(output.read_text())


def run(data: str, epochs: int, seed: int, *, model: str = "all-MiniLM-L6-v2", split: str = "test",
        negatives: int = 5, batch_size: int = 32, learning_rate: float = 5e-5, keep_model: Path | None = None
        ) -> dict[str, Any]:
    """One anchor run: train, evaluate with `hnm eval`, check with the torch embeddings; the JSON-ready record."""
    import sentence_transformers
    import torch
    import transformers

    root = resolve_dataset(data)
    load_before, start = os.getloadavg(), time.time()
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "model"
        trained = train_st(resolve_model_dir(model), root, epochs, seed, negatives, batch_size, learning_rate,
                           model_dir)
        eval_start = time.perf_counter()
        metrics = hnm_eval(model_dir, str(root), split, Path(scratch) / "eval.json")
        check = torch_dense(model_dir, root, split)
        eval_s = time.perf_counter() - eval_start
    return {"recipe": "sentence-transformers MNRL + mine_hard_negatives", "data": data, "split": split,
            "epochs": epochs, "seed": seed, "model": model, "negatives": negatives, "batch_size": batch_size,
            "learning_rate": learning_rate, "mining": {"num_negatives": negatives, "sampling_strategy": "top",
                                                       "range_min": 0, "corpus": "whole corpus"},
            **trained, "eval_s": round(eval_s, 1), "wall_s": round(time.time() - start, 1),
            "load_before": load_before, "load_after": os.getloadavg(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "sentence_transformers": sentence_transformers.__version__,
                         "transformers": transformers.__version__},
            "torch_dense": check, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="benchmark name or BEIR folder")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="packaged name or sentence-transformers folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--out", help="the run's JSON (default: results/st_anchor/<data>-e<E>-s<seed>.json)")
    parser.add_argument("--force", action="store_true", help="rerun when the JSON exists")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else RESULTS / f"{Path(args.data).name}-e{args.epochs}-s{args.seed}.json"
    if out.exists() and not args.force:
        print(f"{out}: exists (--force reruns)")
        return 0
    if not args.out:
        RESULTS.mkdir(parents=True, exist_ok=True)
    if not out.parent.is_dir():
        parser.error(f"--out: {out.parent} is not a folder")
    record = run(args.data, args.epochs, args.seed, model=args.model, split=args.split, negatives=args.negatives,
                 batch_size=args.batch_size, learning_rate=args.learning_rate)
    write_text(out, json.dumps(record, indent=1) + "\n")
    dense = record["metrics"]["retrievers"]["dense"]
    print(f"{out}: accuracy@1 {dense['accuracy@1']:.4f} (hnm eval, dense), {record['torch_dense']['accuracy@1']:.4f} "
          f"(torch embeddings), mrr@10 {dense['mrr@10']:.4f}, {record['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
