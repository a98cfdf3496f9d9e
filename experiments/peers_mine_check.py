"""`hnm mine`'s files in another trainer: sentence-transformers' SentenceTransformerTrainer reads them with `datasets`
and trains on them with MultipleNegativesRankingLoss (MNRL), as written (no column renamed or dropped).

    make .venv-peers/.installed      # torch (CPU) + sentence-transformers[train], beside .venv: never a core dependency
    .venv-peers/bin/python -m experiments.peers_mine_check [--data abt_buy --negatives 3 --steps 5]

For each format (JSONL, Parquet): `hnm mine --model all-MiniLM-L6-v2 --data DATA --split train` writes the file;
`datasets.load_dataset("json" | "parquet", data_files=...)` reads it; the trainer fine-tunes all-MiniLM-L6-v2 on it
with MNRL for --steps steps (batch 16, logging every step). The columns are (query, positive, negative_1..N) and the
`score` list, which the trainer's collator takes as the label column and MNRL ignores. Passes when every logged loss
is finite. Writes results/peers_mine_check.json: versions, the commands, each file's rows and columns as `datasets`
typed them, and the per-step losses.
"""

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mine(data: str, negatives: int, output: Path) -> tuple[list[str], str, float]:
    """Runs `hnm mine` into `output` (format from its suffix); (command, its summary line, seconds)."""
    command = [sys.executable, "-m", "hnm_jax.main", "mine", "--model", "all-MiniLM-L6-v2", "--data", data,
               "--split", "train", "--num-negatives", str(negatives), "--output", str(output)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"hnm mine failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = next(line for line in done.stdout.splitlines() if line.startswith("hnm mine:"))
    return ["hnm", *command[3:]], summary, time.perf_counter() - start


def train_on(path: Path, fmt: str, steps: int, seed: int) -> dict:
    """Loads `path` with `datasets` and runs the sentence-transformers trainer with MNRL for `steps` steps."""
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from hnm_jax.models.pretrained import resolve_model_dir

    dataset = datasets.load_dataset(fmt, data_files=str(path), split="train")
    model = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu")
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=16, learning_rate=2e-5, logging_steps=1,
            save_strategy="no", report_to=[], seed=seed, use_cpu=True, dataloader_drop_last=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                             loss=MultipleNegativesRankingLoss(model))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"rows": len(dataset), "columns": {name: str(feature) for name, feature in dataset.features.items()},
            "steps": trainer.state.global_step, "losses": losses,
            "all_finite": bool(losses) and all(math.isfinite(x) for x in losses), "train_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="abt_buy", help="benchmark name or BEIR folder")
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "results" / "peers_mine_check.json"))
    args = parser.parse_args()

    import datasets
    import sentence_transformers
    import torch
    import transformers

    record = {"command": " ".join([".venv-peers/bin/python -m experiments.peers_mine_check", *sys.argv[1:]]),
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "sentence_transformers": sentence_transformers.__version__,
                           "transformers": transformers.__version__, "datasets": datasets.__version__},
              "data": args.data, "negatives": args.negatives, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix in (("json", ".jsonl"), ("parquet", ".parquet")):
            path = Path(tmp) / f"negatives{suffix}"
            command, summary, mine_s = mine(args.data, args.negatives, path)
            result = train_on(path, fmt, args.steps, args.seed)
            record["formats"][suffix.lstrip(".")] = {"mine": " ".join(command).replace(tmp, "$TMP"),
                                                     "mine_summary": summary.replace(tmp, "$TMP"),
                                                     "mine_s": round(mine_s, 1), **result}
            print(f"{suffix}: {result['rows']} rows, columns {list(result['columns'])}; {result['steps']} MNRL steps, "
                  f"losses {[round(x, 4) for x in result['losses']]}", flush=True)
    jsonl, parquet = record["formats"]["jsonl"], record["formats"]["parquet"]
    record["same_losses_both_formats"] = jsonl["losses"] == parquet["losses"]  # the same rows, the same seed
    record["passed"] = all(r["all_finite"] and r["steps"] == args.steps for r in (jsonl, parquet))
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'passed' if record['passed'] else 'FAILED'}: {args.out}")
    sys.exit(0 if record["passed"] else 1)


if __name__ == "__main__":
    main()
