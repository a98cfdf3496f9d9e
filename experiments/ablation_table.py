"""Runs ablation configs on benchmarks (one seed) and writes a table of test accuracy@1 and MRR@10.

    python experiments/ablation_table.py --out results/ablation_table.md \
        --runs abt_buy:in_batch,random,offline,online_hardest,online_band,online_band_margin,online_band_margin_curriculum,online_band_margin_curriculum_hybrid \
        --runs amazon_google:in_batch,online_band_margin_curriculum_hybrid \
        --runs walmart_amazon:in_batch,online_band_margin_curriculum_hybrid

Each finished run writes results/runs/<config>-<dataset>-<seed>.json (metrics + wall-clock seconds) and is
skipped when the suite is rerun; an interrupted run resumes from its checkpoint. The zero-shot model is
evaluated once per dataset (results/runs/zero_shot-<dataset>.json).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]


def run_training(config: str, dataset: str, seed: int, workdirs: Path, runs: Path) -> dict:
    out = runs / f"{config}-{dataset}-{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    workdir = workdirs / f"{config}-{dataset}-{seed}"
    command = [sys.executable, "-m", "hnm_jax.main", "train", "--config", str(REPO / f"configs/ablations/{config}.py"),
               f"--config.data.name={dataset}", f"--config.seed={seed}", "--workdir", str(workdir)]
    start = time.time()
    subprocess.run(command, check=True)
    metrics = json.loads((workdir / "eval_test.json").read_text())
    result = {"config": config, "dataset": dataset, "seed": seed, "wall_s": time.time() - start, "metrics": metrics}
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_zero_shot(dataset: str, runs: Path) -> dict:
    out = runs / f"zero_shot-{dataset}.json"
    if out.exists():
        return json.loads(out.read_text())
    metrics_path = runs / f"zero_shot-{dataset}.metrics.json"
    subprocess.run([sys.executable, "-m", "hnm_jax.main", "eval", "--model", "all-MiniLM-L6-v2", "--data", dataset,
                    "--split", "test", "--output", str(metrics_path)], check=True)
    result = {"config": "zero_shot", "dataset": dataset, "metrics": json.loads(metrics_path.read_text())}
    metrics_path.unlink()
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| dataset | config | accuracy@1 | MRR@10 | pairwise acc. | wall-clock |", "|---|---|---|---|---|---|"]
    for dataset, rows in results.items():
        for r in rows:
            m = r["metrics"]
            wall = f"{r['wall_s'] / 60:.1f} min" if "wall_s" in r else "-"
            pairwise = f"{m['pairwise_accuracy']:.3f}" if "pairwise_accuracy" in m else "-"
            lines.append(f"| {dataset} | {r['config']} | {m['accuracy@1']:.3f} | {m['mrr@10']:.3f} | {pairwise} | {wall} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", action="append", required=True, help="dataset:config1,config2,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/ablation_table.md")
    parser.add_argument("--workdirs", default="workdirs/ablations")
    args = parser.parse_args()
    runs_dir = REPO / "results" / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    plan = [(d, c) for spec in args.runs for d, cs in [spec.split(":")] for c in cs.split(",")]
    results: dict[str, list[dict]] = {}
    with tqdm(total=len(plan) + len({d for d, _ in plan}), desc="ablation suite", unit="run") as bar:
        for dataset in dict.fromkeys(d for d, _ in plan):
            results[dataset] = [run_zero_shot(dataset, runs_dir)]
            bar.update(1)
        for dataset, config in plan:
            results[dataset].append(run_training(config, dataset, args.seed, Path(args.workdirs), runs_dir))
            bar.update(1)
            Path(args.out).write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
