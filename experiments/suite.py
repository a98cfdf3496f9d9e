"""The reproduction suite of experiments/PROTOCOL.md: one resumable run per (arm, dataset, fold), in one process.

    python -m experiments.suite --tier 1 --dry-run     # the plan and its estimated cost from finished runs
    python -m experiments.suite --tier 1               # tier-1 arms x 3 datasets x 5 folds -> results/cv/*.json
    python -m experiments.suite --confirmation         # full fine-tuning on abt_buy's 5 folds (reported beside)
    python -m experiments.suite --pilot freeze         # PROTOCOL section 7 on abt_buy fold 0's inner dev
    python -m experiments.suite --pilot lr:5e-5,1e-4 --freeze-layers 4 --epochs 2

A run writes <runs-dir>/<name>.json (its metrics with per-query ranks and per-pair outcomes, curves, wall-clock,
machine load, commit) once it has finished; a run whose JSON exists is skipped, and a killed run resumes from its
workdir's checkpoint. Runs share one process, so the tokenizer, the model files and every compiled program are
loaded once (the persistent compilation cache serves the later arms' compiles).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("abt_buy", "amazon_google", "walmart_amazon_dirty")
NUM_FOLDS = 5
TIERS = {
    1: ("in_batch", "random", "offline", "online_hardest", "online_band", "full_bi"),
    2: ("online_band_margin", "online_band_curriculum", "online_band_dense_mining", "online_band_uniformity",
        "online_band_hybrid_logits"),
    3: ("online_band", "online_band_ce", "online_hardest", "online_hardest_oracle"),  # claim 4, on SYNTHETIC_DUP
}  # fmt: skip
SYNTHETIC_DUP = "synthetic_dup"  # claim 4: hnm_jax.data.synthetic size "ablation_dup", duplicates known
SYNTHETIC_DUP_SIZE = "ablation_dup"
CONFIRMATION_ARMS = ("in_batch", "random", "online_hardest", "online_band")
CONFIRMATION_TAG = "fullft"
ZERO_SHOT = "zero_shot"
ZERO_SHOT_MODEL = "all-MiniLM-L6-v2"
PILOT_DATASET, PILOT_FOLD, PILOT_SPLIT = "abt_buy", 0, "dev"
PILOT_FREEZE = (0, 3, 4, 5)
PILOT_FREEZE_EPOCHS = 3  # the freeze pilot ran before section 8 set the suite's epochs (at 3, lr 5e-5)
PILOT_FREEZE_ARMS = ("in_batch", "online_hardest")
PILOT_LR_ARMS = ("in_batch", "full_bi", "online_hardest")  # lr by the first two; online_hardest: the criterion
# PROTOCOL.md sections 1, 3 and 8: every arm of the suite runs with these; the
# arms' files set N = 2 explicit negatives from a pool of 30 (configs/ablations/__init__.py; in_batch: none).
PROTOCOL = {"seed": 0, "data.folds": NUM_FOLDS, "data.fold_seed": 0, "data.fold_dev_fraction": 0.1,
            "train.num_epochs": 2, "train.batch_size": 32, "train.learning_rate": 5e-5, "retriever.mode": "hybrid",
            "eval.search": "exact", "index.exact_threshold": 10_000_000, "model.freeze_layers": 4}  # fmt: skip
CURVE_PREFIXES = ("train/", "refresh/")


class Run(NamedTuple):
    """One trained (or zero-shot) model, evaluated on `eval_split` of fold `fold` of `dataset`."""

    arm: str
    dataset: str
    fold: int
    overrides: tuple[tuple[str, Any], ...] = ()  # on top of PROTOCOL
    tag: str = ""
    eval_split: str = "test"

    @property
    def name(self) -> str:
        tag = f"-{self.tag}" if self.tag else ""
        split = "" if self.eval_split == "test" else f"-{self.eval_split}"
        return f"{self.arm}{tag}-{self.dataset}-f{self.fold}{split}"


def plan_tier(tier: int, datasets: Sequence[str] = DATASETS, folds: Sequence[int] = range(NUM_FOLDS),
              overrides: Mapping[str, Any] | None = None) -> list[Run]:  # fmt: skip
    """The tier's arms on every (dataset, fold), a dataset's folds together, zero-shot first (tier 3: synthetic_dup
    only)."""
    items = tuple((overrides or {}).items())
    datasets = (SYNTHETIC_DUP,) if tier == 3 else datasets
    return [Run(arm, d, f, items) for d in datasets for f in folds for arm in (ZERO_SHOT, *TIERS[tier])]


def plan_confirmation(folds: Sequence[int] = range(NUM_FOLDS)) -> list[Run]:
    """in_batch, random, online_hardest and online_band with full fine-tuning on abt_buy's folds."""
    items = (("model.freeze_layers", 0),)
    return [Run(arm, "abt_buy", f, items, CONFIRMATION_TAG) for f in folds for arm in CONFIRMATION_ARMS]


def plan_pilot(kind: str, freeze_layers: int | None = None, epochs: int | None = None) -> list[Run]:
    """PROTOCOL section 7: "freeze" (K in PILOT_FREEZE) or "lr:a,b" (at `freeze_layers` and `epochs`, default
    PROTOCOL's), on fold 0's inner dev."""
    base = Run(ZERO_SHOT, PILOT_DATASET, PILOT_FOLD, eval_split=PILOT_SPLIT)
    if kind == "freeze":
        return [base, *(Run(arm, PILOT_DATASET, PILOT_FOLD,
                            (("model.freeze_layers", k), ("train.num_epochs", PILOT_FREEZE_EPOCHS)), f"k{k}", PILOT_SPLIT)
                        for k in PILOT_FREEZE for arm in PILOT_FREEZE_ARMS)]  # fmt: skip
    if kind.startswith("lr:") and freeze_layers is not None:
        rates = [float(x) for x in kind[3:].split(",")]
        epochs = epochs or PROTOCOL["train.num_epochs"]
        return [base, *(Run(arm, PILOT_DATASET, PILOT_FOLD, (("model.freeze_layers", freeze_layers),
                                                             ("train.learning_rate", lr), ("train.num_epochs", epochs)),
                            f"k{freeze_layers}-e{epochs}-lr{lr:g}", PILOT_SPLIT)
                        for lr in rates for arm in PILOT_LR_ARMS)]  # fmt: skip
    raise ValueError(f"--pilot {kind!r}: expected 'freeze' or 'lr:RATE,RATE' with --freeze-layers")


def set_key(config, key: str, value: Any) -> None:
    """config.<a.b.c> = value; an unknown key or a wrong type fails as ml_collections does."""
    *sections, leaf = key.split(".")
    for name in [*sections, leaf]:
        if not hasattr(config, name):
            raise KeyError(f"unknown config key {key!r}")
        if name != leaf:
            config = getattr(config, name)
    setattr(config, leaf, value)


def synthetic_dup_root(workdirs: Path) -> Path:
    """<workdirs>/datasets/synthetic_dup: the synthetic benchmark with known unlabelled duplicates, written once."""
    from hnm_jax.atomic_write import atomic_path
    from hnm_jax.data.synthetic import SIZES, generate, write_beir

    root = Path(workdirs).resolve() / "datasets" / SYNTHETIC_DUP
    if not root.is_dir():
        with atomic_path(root) as tmp:
            write_beir(generate(SIZES[SYNTHETIC_DUP_SIZE]), tmp)
    return root


def run_config(run: Run, workdirs: Path = REPO / "workdirs" / "cv"):
    """The arm's config file with PROTOCOL, the run's dataset, fold and split, and its overrides."""
    config = importlib.import_module(f"configs.ablations.{run.arm}").get_config()
    data = ({"data.path": str(synthetic_dup_root(workdirs))} if run.dataset == SYNTHETIC_DUP
            else {"data.name": run.dataset})  # fmt: skip
    for key, value in {**PROTOCOL, **data, "data.fold": run.fold,
                       "data.eval_split": run.eval_split, **dict(run.overrides)}.items():  # fmt: skip
        set_key(config, key, value)
    return config


def read_curves(metrics_jsonl: Path) -> dict[str, list[list[float]]]:
    """{key: [[step, value], ...]} of the numeric train/ and refresh/ entries of a metrics.jsonl (last value wins)."""
    by_key: dict[str, dict[int, float]] = {}
    for line in Path(metrics_jsonl).read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith(CURVE_PREFIXES) and isinstance(value, int | float) and not isinstance(value, bool):
                by_key.setdefault(key, {})[int(row["step"])] = float(value)
    return {key: [[s, v] for s, v in sorted(points.items())] for key, points in sorted(by_key.items())}


def commit() -> str:
    """HEAD of the checkout the suite runs from, '+dirty' when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True)  # fmt: skip
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def dumps_run(result: Mapping[str, Any]) -> str:
    """One top-level key per line (per-query lists stay on one line each: small files, readable diffs)."""
    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in result.items()) + "\n}\n"


def execute(run: Run, workdirs: Path) -> dict[str, Any]:
    """Trains (resuming from the workdir's checkpoint) or, for ZERO_SHOT, only evaluates; returns the run record."""
    from hnm_jax.training.train import train_and_evaluate

    config = run_config(run if run.arm != ZERO_SHOT else run._replace(arm="in_batch"), workdirs)
    load_before, start = os.getloadavg(), time.time()
    if run.arm == ZERO_SHOT:
        metrics = zero_shot_metrics(config)
        curves = {}
    else:
        workdir = Path(workdirs) / run.name
        metrics = train_and_evaluate(config, workdir)
        curves = read_curves(workdir / "metrics.jsonl")
    return {"arm": run.arm, "dataset": run.dataset, "fold": run.fold, "tag": run.tag, "eval_split": run.eval_split,
            "overrides": {**PROTOCOL, **dict(run.overrides)} if run.arm != ZERO_SHOT else {},
            "wall_s": time.time() - start, "load_before": load_before, "load_after": os.getloadavg(),
            "commit": commit(), "metrics": metrics, "curves": curves}  # fmt: skip


def zero_shot_metrics(config) -> dict[str, Any]:
    """The untrained packaged model on the run's fold and split, through the same `evaluate` as trained runs."""
    from hnm_jax import sharding
    from hnm_jax.config import dataset_root, spec_from_config
    from hnm_jax.data.beir import load_texts
    from hnm_jax.evaluate import evaluate
    from hnm_jax.models.pretrained import load_encoder

    config.model.name = ZERO_SHOT_MODEL
    spec = spec_from_config(config)
    root, corpus, queries = load_texts(dataset_root(spec.data))
    return evaluate(spec, load_encoder(ZERO_SHOT_MODEL), (root, corpus, queries), spec.data.eval_split,
                    sharding=sharding.batch_sharding(sharding.make_mesh()))


def run_jobs(jobs: Sequence[tuple[Path, Callable[[], dict[str, Any]]]]) -> list[str]:
    """Runs each (JSON path, job) whose JSON does not exist yet, in order: `job()` trains and evaluates, and its run
    record is written to the path once finished. Returns the names of the jobs that failed."""
    from tqdm.auto import tqdm

    from hnm_jax.atomic_write import write_text
    from hnm_jax.compile_stats import enable_compilation_cache

    enable_compilation_cache()
    failed = []
    for path, job in tqdm([(p, j) for p, j in jobs if not Path(p).exists()], desc="runs", unit="run",
                          dynamic_ncols=True):  # fmt: skip
        try:
            result = job()
        except Exception as error:  # one broken run must not stop the night's other runs
            tqdm.write(f"== {Path(path).stem} failed: {type(error).__name__}: {error}")
            failed.append(Path(path).stem)
            continue
        write_text(Path(path), dumps_run(result))
        tqdm.write(f"== {Path(path).stem}: dense accuracy@1 "
                   f"{result['metrics']['retrievers']['dense']['accuracy@1']:.4f}, {result['wall_s'] / 60:.1f} min")
    return failed


def run_plan(runs: Sequence[Run], runs_dir: Path, workdirs: Path, max_runs: int | None = None) -> list[str]:
    """Runs what has no JSON in `runs_dir` yet, in order; returns the names of the runs that failed."""
    todo = [r for r in runs if not (Path(runs_dir) / f"{r.name}.json").exists()][:max_runs]
    return run_jobs([(Path(runs_dir) / f"{r.name}.json", functools.partial(execute, r, workdirs)) for r in todo])


def estimate_s(runs: Sequence[Run], runs_dir: Path) -> tuple[float, int]:
    """(seconds left, runs left): each missing run at the mean wall-clock of finished runs of its arm and dataset
    (else of its arm, else of every finished run)."""
    finished = [json.loads(p.read_text()) for p in Path(runs_dir).glob("*.json")]
    done = {p.stem for p in Path(runs_dir).glob("*.json")}

    def mean(rows: list[dict]) -> float | None:
        return sum(r["wall_s"] for r in rows) / len(rows) if rows else None

    left = [r for r in runs if r.name not in done]
    total = 0.0
    for run in left:
        same = [r for r in finished if r["arm"] == run.arm and r.get("tag", "") == run.tag]
        guess = mean([r for r in same if r["dataset"] == run.dataset]) or mean(same) or mean(finished) or 0.0
        total += guess
    return total, len(left)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", type=int, action="append", choices=sorted(TIERS), default=[])
    parser.add_argument("--confirmation", action="store_true", help="full fine-tuning on abt_buy's folds")
    parser.add_argument("--pilot", help="'freeze' or 'lr:RATE,RATE' (PROTOCOL section 7)")
    parser.add_argument("--freeze-layers", type=int, help="the pilots' K for --pilot lr:...")
    parser.add_argument("--epochs", type=int, help="the pilots' epochs for --pilot lr:... (default PROTOCOL's)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(NUM_FOLDS)))
    parser.add_argument("--runs-dir", type=Path, help="default results/cv (results/cv_pilot with --pilot)")
    parser.add_argument("--workdirs", type=Path, default=REPO / "workdirs" / "cv")
    parser.add_argument("--max-runs", type=int, help="stop after this many runs (a session's share)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost only")
    args = parser.parse_args(argv)
    try:
        runs = [*(r for t in args.tier for r in plan_tier(t, args.datasets, args.folds)),
                *(plan_confirmation(args.folds) if args.confirmation else []),
                *(plan_pilot(args.pilot, args.freeze_layers, args.epochs) if args.pilot else [])]  # fmt: skip
    except ValueError as error:
        parser.error(str(error))
    if not runs:
        parser.error("nothing to run: give --tier, --confirmation or --pilot")
    runs = list(dict.fromkeys(runs))
    runs_dir = args.runs_dir or REPO / "results" / ("cv_pilot" if args.pilot else "cv")
    seconds, left = estimate_s(runs, runs_dir)
    print(f"{len(runs)} runs, {left} to do, ~{seconds / 3600:.1f} h by finished runs' wall-clock -> {runs_dir}")
    if args.dry_run:
        print("\n".join(r.name for r in runs))
        return 0
    failed = run_plan(runs, runs_dir, args.workdirs, args.max_runs)
    print(f"failed: {', '.join(failed)}" if failed else "every run finished")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
