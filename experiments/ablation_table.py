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


def plot_accuracy(results: dict[str, list[dict]], out: Path) -> None:
    """One bar chart per dataset: test accuracy@1 of each config (zero-shot first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.5), squeeze=False)
    for ax, (dataset, rows) in zip(axes[0], results.items(), strict=True):
        names = [r["config"] for r in rows]
        values = [r["metrics"]["accuracy@1"] for r in rows]
        ax.barh(range(len(rows)), values, color=["grey"] + ["tab:blue"] * (len(rows) - 1))
        ax.set_yticks(range(len(rows)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(min(values) - 0.05, 1.0)
        ax.set_xlabel("test accuracy@1")
        ax.set_title(dataset)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_curriculum(metrics_jsonl: Path, out: Path) -> None:
    """The band of the curriculum and the cosine of the chosen negatives over training (one run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "train/band_lo" in r]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r["train/band_lo"] for r in rows], label="band lo (x positive cosine)")
    ax.plot(steps, [r["train/band_hi"] for r in rows], label="band hi (x positive cosine)")
    ax.plot(steps, [r["train/explicit_negative_score"] for r in rows], label="chosen negatives: mean cosine")
    ax.plot(steps, [r["train/positive_score"] for r in rows], label="positives: mean cosine")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.set_title(metrics_jsonl.parent.name)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


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
    out_dir = Path(args.out).parent
    plot_accuracy(results, out_dir / "ablation_accuracy.png")
    curriculum = Path(args.workdirs) / f"online_band_margin_curriculum-{plan[0][0]}-{args.seed}" / "metrics.jsonl"
    if curriculum.exists():
        plot_curriculum(curriculum, out_dir / "curriculum_band.png")
    print(table(results))


if __name__ == "__main__":
    main()
