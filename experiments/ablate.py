"""The ablation suite: configs x datasets x seeds -> results/runs/*.json, results/ablations.md and plots.

    python experiments/ablate.py --plan default             # the core comparison, ~2 h on 2 CPU cores
    python experiments/ablate.py --plan claims              # what experiments/reproduce.py needs, ~4.1 h
    python experiments/ablate.py --plan all --dry-run       # print a plan and its estimated wall time only
    python experiments/ablate.py --runs abt_buy:in_batch,full --runs synthetic:full --seeds 0 1
    python experiments/ablate.py --report                   # rebuild table and plots from results/runs only

Plans: each is a list of (dataset, config), run with every seed (``--seeds``, default 0 1 2):

``default``
    full vs in_batch vs offline on abt_buy and synthetic. The core comparison was meant to cover
    amazon_google and walmart_amazon too, but measured costs (walmart_amazon: 440 s in_batch, 740 s online,
    its corpus has 22k records) and the cross-encoder's extra cost in ``full`` put the four datasets at
    ~5.6 h and three at ~2.7 h on this 2-core CPU (seed-0 runs of in_batch and offline already done), past
    the 2.5 h budget; abt_buy (real data) plus synthetic
    (controlled near-duplicates) is the cheapest subset that keeps both kinds of data. The other two are in
    ``all``.
``claims``
    the nine configs the claims of experiments/reproduce.py compare, on synthetic and abt_buy.
``all``
    the union, plus the core comparison on amazon_google and walmart_amazon.

Before starting, the plan is printed with its estimated wall time: per run, the mean measured ``wall_s`` of
finished runs of the same (config, dataset), else ``DEFAULT_WALL_S[dataset] * CONFIG_COST.get(config, 1)``
(both dicts below, with where their numbers come from).

Resumable: a run whose results/runs/<config>-<dataset>-<seed>.json exists is skipped; an interrupted run
resumes from the checkpoint in <workdirs>/<config>-<dataset>-<seed> (the trainer does that; such a run is
marked ``resumed`` and its ``wall_s``, which misses the earlier attempts, is not used for estimates).
Each run JSON holds {config, dataset, seed, wall_s, resumed, metrics (eval_test.json), curves}; ``curves`` are
the "train/*" and "refresh/*" series of the workdir's metrics.jsonl as {key: [[step, value], ...]}, and run
JSONs without them are backfilled from their workdir when it still exists. The zero-shot model is evaluated
once per dataset (results/runs/zero_shot-<dataset>.json).

Dataset ``synthetic`` is ``hnm_jax.data.synthetic.SIZES["ablation"]`` (2,250 records, 600 training queries,
about one abt_buy run), built once through the TFDS builder into <workdirs>/tfds and exported as a BEIR folder
(+ perturbations.tsv) to <workdirs>/datasets/synthetic_ablation, which the runs get as ``--config.data.path``.
Datasets ``synthetic_power`` (SIZES["power"]: 22,500 records, 6,000 / 2,000 / 2,000 queries), ``synthetic_dup``
(SIZES["ablation_dup"]: 2,350 records with 100 unlabelled duplicates, listed in unlabelled_duplicates.tsv; 600 / 200 /
200 queries, 120 / 40 / 40 with a duplicate: claim 4 on a 2-core CPU) and ``synthetic_power_dup`` (SIZES["power_dup"]:
synthetic_power + 1,000 unlabelled duplicates) go the same way, to <workdirs>/datasets/synthetic_<size>; no plan
includes them (``--runs`` names them).

Outputs (rebuilt from all of results/runs after every suite): results/ablations.md (per dataset, one row
per config: mean +- 95% CI over seeds; full vs baselines paired by seed; paired per-query statistics pooled over
seeds (bootstrap CI, McNemar, minimum detectable effect: hnm_jax.stats); per perturbation type on synthetic),
results/ablations_<dataset>.png and results/ablations_curriculum.png. The paired statistics compare every run under
the same deployed pipeline, DEPLOYED_RETRIEVER's per-query ranks (every evaluation records dense and hybrid ranks
over the same exact dense index), whatever its ``retriever.mode``. A section gives, per run, the first logged step at
which train/in_batch_accuracy exceeds SATURATION_ACCURACY, as a fraction of the run.

Tuned comparisons (issue 12: ``--tune``, plans ``issue12`` and ``issue12_cpu``; experiments/PLAN_issue12.md):

    python experiments/ablate.py --tune --plan issue12_cpu                  # the part that fits ~8 h of this CPU
    python experiments/ablate.py --tune --runs abt_buy:online_band,online_hardest --seeds 0 1 2
    python experiments/ablate.py --tune --plan issue12 --dry-run --device gpu   # the whole grid, GPU estimate
    python experiments/ablate.py --tune --report                            # results/tuned/ablations.md only
    python experiments/ablate.py --runs-dir results/tuned_gpu --slim-copy .gpu/state   # slim JSONs to resume elsewhere

Every run of the tuned suite has the same BUDGET overrides (deployed retriever ``retriever.mode=hybrid``, exact
search, a refresh every epoch, a log line every step); each arm runs its grid (GRIDS: learning rate x epochs x its
own knob, the same number of points for every arm) with seed TUNE_SEED and ``--config.data.eval_split=dev`` ->
<runs-dir>/dev/<config>-<dataset>-0-<tag>.json (tag: the point's overrides); the point with the best dev accuracy@1
of the deployed retriever (ties: MRR@10, then grid order) is then trained once per seed and evaluated once on test
-> <runs-dir>/<config>-<dataset>-<seed>.json (runs-dir: results/tuned). Every run JSON holds its ``overrides``; a
JSON whose overrides differ from the point's is rerun (new workdir), so the suite is resumable like the rest.
Where in_batch and full are both tuned (every seed of full finished), ``in_batch_wallclock_full`` runs in_batch's
chosen point for the epochs that fit full's mean test wall-clock (`equal_wallclock_epochs`, with in_batch's per-epoch
cost fitted on its dev runs: `epoch_cost`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hnm_jax.atomic_write import atomic_path, write_text
from hnm_jax.stats import decide, mcnemar, stratified_cluster_bootstrap

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
SYNTHETIC = "synthetic"
SYNTHETIC_SIZE = "ablation"  # hnm_jax.data.synthetic.SIZES key
# more synthetic datasets -> SIZES key: 2,000 test queries; the ablation size + unlabelled duplicates
# (unlabelled_duplicates.tsv: claim 4 on a 2-core CPU); 2,000 test queries + unlabelled duplicates
SYNTHETIC_DATASETS = {"synthetic_power": "power", "synthetic_dup": "ablation_dup", "synthetic_power_dup": "power_dup"}
ZERO_SHOT = "zero_shot"
ZERO_SHOT_MODEL = "all-MiniLM-L6-v2"

DATASET_ORDER = ("abt_buy", "amazon_google", "walmart_amazon", SYNTHETIC, *SYNTHETIC_DATASETS)
CONFIG_ORDER = ("in_batch", "in_batch_wallclock_full", "random", "offline", "online_hardest", "online_hardest_oracle",
                "online_band", "online_band_dense_mining", "online_band_margin", "online_band_curriculum", "online_band_ce",
                "online_band_hybrid_logits", "online_band_uniformity", "online_band_hybrid_retriever",
                "online_band_margin_curriculum", "online_band_margin_curriculum_hybrid", "full")  # fmt: skip
CORE_CONFIGS = ("full", "in_batch", "offline")
CLAIM_CONFIGS = ("random", "online_hardest", "online_band", "online_band_margin", "online_band_margin_curriculum",
                 "online_band_margin_curriculum_hybrid", "full", "offline", "in_batch")  # fmt: skip
CLAIM_DATASETS = (SYNTHETIC, "abt_buy")
# the pipeline every paired comparison (and the tuned suite) deploys: per_query["rank_<this>"] of every run
DEPLOYED_RETRIEVER = "hybrid"

Plan = list[tuple[str, str]]  # (dataset, config), run with every seed


def _union(*plans: Plan) -> Plan:
    return list(dict.fromkeys(pair for plan in plans for pair in plan))


PLANS: dict[str, Plan] = {
    "default": [(d, c) for d in ("abt_buy", SYNTHETIC) for c in CORE_CONFIGS],
    "claims": [(d, c) for d in CLAIM_DATASETS for c in CLAIM_CONFIGS],
}
PLANS["all"] = _union(PLANS["default"], PLANS["claims"],
                      [(d, c) for d in ("amazon_google", "walmart_amazon") for c in CORE_CONFIGS])  # fmt: skip
DEFAULT_BUDGET_S = 2.5 * 3600  # what the default plan is meant to fit on this 2-core CPU

# Seconds of one online-mining ablation run (2 epochs, batch 32, eval included), measured with seed 0 on this
# 2-core CPU with other jobs sharing it: abt_buy 190-290 s, amazon_google ~200 s, walmart_amazon ~740 s;
# synthetic (2,250 records, 600 training queries, shorter texts) is set a little above abt_buy.
DEFAULT_WALL_S = {"abt_buy": 250.0, "amazon_google": 200.0, "walmart_amazon": 750.0, SYNTHETIC: 300.0}
DEFAULT_WALL_S.update({"synthetic_power": 3000.0, "synthetic_power_dup": 3000.0,  # guess: 10x synthetic's queries
                       "synthetic_dup": 300.0})  # synthetic's size + 100 records
UNKNOWN_DATASET_WALL_S = 750.0
# Cost of a config relative to DEFAULT_WALL_S: in_batch measured 0.55-0.6x (135 / 108 / 440 s), offline 1.5x
# (380 s on abt_buy); full is a guess (not measured yet): cross-encoder training (60 steps) and re-scoring of
# the pool at every refresh add ~5-7 min on 2 cores to the online recipe.
CONFIG_COST = {"in_batch": 0.6, "random": 0.7, "offline": 1.5, "full": 2.5}
ZERO_SHOT_WALL_S = 90.0  # one `hnm eval --model` over a ~2k-record corpus (guess; not recorded before)

# ----------------------------------------------------------------------------------------- the tuned suite (issue 12)

TUNED_DIR = REPO / "results" / "tuned"
TUNE_SEED = 0  # the grid runs with this seed on dev; the chosen point then runs with every seed on test
TUNE_SPLIT = "dev"
TUNE_DATASETS = ("abt_buy", "amazon_google", "walmart_amazon", "synthetic_power", "synthetic_dup")
# Fixed for every tuned run: one deployed retriever with exact search, exact search in mining too (full.py mines
# with ScaNN at every size, the others below 20k records only; exact needs no scann package on a GPU machine), a
# refresh every epoch (the minimum mining.refresh_every_epochs allows), a log line every step (the saturation step).
# Mining uses the deployed retriever unless the arm's config sets mining.retriever: online_band mines from the hybrid
# pipeline, online_band_dense_mining (claim 7) from the dense index alone, both deploying the same pipeline.
BUDGET = {"retriever.mode": DEPLOYED_RETRIEVER, "eval.search": "exact", "index.exact_threshold": 10_000_000,
          "mining.refresh_every_epochs": 1, "train.log_every": 1}  # fmt: skip
DEV_CURVES = ("train/loss", "train/in_batch_accuracy")  # what a dev run JSON keeps of its curves
# (label, arm given more epochs, arm whose mean test wall-clock it gets)
EQUAL_WALLCLOCK = ("in_batch_wallclock_full", "in_batch", "full")

# Grids: learning rate x epochs x the arm's own knob, 8 points for every arm (the same tuning budget); an arm
# without a knob of its own spends its 2 knob points on a finer learning-rate axis. A dict value sets several keys.
LEARNING_RATES = [2e-5, 5e-5]
FINE_LEARNING_RATES = [1e-5, 2e-5, 5e-5, 1e-4]
EPOCHS = [2, 4]
TUNE_EPOCHS = {"synthetic_power": [1, 2], "synthetic_power_dup": [1, 2]}  # 188 steps an epoch (6,000 training queries)
BAND_KNOB = [{"band.lo": -0.3, "band.hi": 2.0},  # the recipe: within 0.3 below the positive, and every error above it
             {"band.lo": -0.5, "band.hi": 0.0}]  # classic semi-hard: below the positive, at most 0.5 below  # fmt: skip
MARGIN_KNOB = [{"loss.margin": 0.1, "loss.margin_alpha": 0.5},  # the recipe: m(h) = max(0, 0.1 + 0.5 h)
               {"loss.margin": 0.05, "loss.margin_alpha": 1.0}]  # steeper growth with hardness  # fmt: skip


def _grid(knob: tuple[str, list] | None = None) -> dict[str, list]:
    if knob is None:
        return {"train.learning_rate": FINE_LEARNING_RATES, "train.num_epochs": EPOCHS}
    return {"train.learning_rate": LEARNING_RATES, "train.num_epochs": EPOCHS, knob[0]: knob[1]}


GRIDS: dict[str, dict[str, list]] = {
    "in_batch": _grid(),
    "random": _grid(),
    "online_hardest": _grid(),
    "offline": _grid(("band", BAND_KNOB)),
    "online_band": _grid(("band", BAND_KNOB)),
    "online_band_dense_mining": _grid(("band", BAND_KNOB)),
    "online_band_margin": _grid(("margin", MARGIN_KNOB)),
    "online_band_curriculum": _grid(("band.curriculum_fraction", [1.0, 0.5])),
    "online_band_ce": _grid(("ce.margin", [0.1, 0.3])),
    "online_band_hybrid_logits": _grid(),  # its weights are the deployed retriever's (retriever.*): no knob
    "online_band_uniformity": _grid(("loss.uniformity_weight", [0.05, 0.2])),
    "online_band_margin_curriculum": _grid(("margin", MARGIN_KNOB)),
    "online_band_margin_curriculum_hybrid": _grid(("margin", MARGIN_KNOB)),
    "full": _grid(("margin", MARGIN_KNOB)),
}
# the arms the nine claims of experiments/reproduce.py compare
TUNED_CONFIGS = ("in_batch", "random", "offline", "online_hardest", "online_band", "online_band_dense_mining",
                 "online_band_margin", "online_band_curriculum", "online_band_ce", "online_band_hybrid_logits",
                 "online_band_uniformity", "full")  # fmt: skip
PLANS["issue12"] = [(d, c) for d in TUNE_DATASETS for c in TUNED_CONFIGS]
# what fits ~8 h of this 2-core CPU (experiments/PLAN_issue12.md): claims (1) and (3) on abt_buy, ~6.9 h
PLANS["issue12_cpu"] = [("abt_buy", c) for c in ("online_band", "online_hardest", "in_batch", "random")]

# Estimates of one tuned online_band run: (overhead_s, per_epoch_s), wall = overhead + epochs x per_epoch.
# cpu: this 2-core machine while another job shares it (abt_buy 6-11 min for 2 epochs = 36 steps; walmart_amazon's
# 22k-record corpus ~4 min a refresh and again at evaluation; synthetic_power ~10x an abt_buy epoch: 6,000 training
# queries, 22.5k records). gpu: one H200, ASSUMED (process start, compilation, tokenization and BM25 dominate; to be
# replaced by the first measured runs).
TUNE_WALL_S = {
    "cpu": {"abt_buy": (90.0, 210.0), "amazon_google": (110.0, 220.0), "walmart_amazon": (330.0, 410.0),
            "synthetic_power": (400.0, 2100.0), "synthetic_power_dup": (420.0, 2200.0), "synthetic_dup": (90.0, 220.0)},
    "gpu": {"abt_buy": (75.0, 8.0), "amazon_google": (80.0, 9.0), "walmart_amazon": (100.0, 15.0),
            "synthetic_power": (110.0, 45.0), "synthetic_power_dup": (115.0, 47.0), "synthetic_dup": (75.0, 8.0)},
}  # fmt: skip
# per-epoch cost relative to online_band: in_batch ~2.5x cheaper a step and no refresh; random encodes its negatives;
# offline refreshes once; cross-encoder arms score every pool at each refresh, and pay CE_OVERHEAD_S once (2 x 60
# CE steps, the dev check)
EPOCH_COST = {"in_batch": 0.4, "random": 0.6, "offline": 0.8, "online_band_ce": 2.2, "full": 2.3}
CE_CONFIGS = ("online_band_ce", "full")
CE_OVERHEAD_S = {"cpu": 240.0, "gpu": 40.0}

CURVE_PREFIXES = ("train/", "refresh/")
MAIN_METRIC = "accuracy@1"
TABLE_METRICS = (("accuracy@1", "accuracy@1"), ("recall@1", "recall@1"), ("mrr@10", "MRR@10"),
                 ("ndcg@10", "nDCG@10"), ("pairwise_accuracy", "pairwise acc."))  # fmt: skip
PER_TYPE_PREFIX = "pairwise_accuracy/"
PER_ITEM_KEYS = ("per_pair", "per_query")  # metrics' per-item lists (hnm_jax.evaluate.PER_ITEM_KEYS)
BASELINES = ("in_batch", "offline")

# t(0.975, dof), used when scipy is not installed; past the table, the value of the largest dof below is used
# (conservative).
T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912, 7: 2.364624,
         8: 2.306004, 9: 2.262157, 10: 2.228139}  # fmt: skip

Stat = tuple[float, float, int]  # (mean, 95% CI half-width, n)


class Run(NamedTuple):
    config: str
    dataset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.config}-{self.dataset}-{self.seed}"


# ----------------------------------------------------------------------------------------- statistics


def t_quantile(dof: int) -> float:
    """t(0.975, dof): scipy when installed, else the table T_975."""
    try:
        from scipy import stats
    except ImportError:
        return T_975[min(dof, max(T_975))]
    return float(stats.t.ppf(0.975, dof))


def mean_ci(values: Iterable[float]) -> Stat:
    """(mean, 95% CI half-width, n) of ``values`` (NaNs dropped): Student t with n-1 dof; half-width NaN if n < 2."""
    x = [float(v) for v in values if not math.isnan(float(v))]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(x) / n
    if n == 1:
        return mean, math.nan, 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    return mean, t_quantile(n - 1) * sd / math.sqrt(n), n


def paired_values(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """seed -> a[seed] - b[seed], for the seeds both have (unpaired seeds are ignored)."""
    return {seed: a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())}


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Stat:
    """mean_ci of the per-seed differences a - b (seed -> value dicts), over the seeds both have."""
    return mean_ci(paired_values(a, b).values())


def format_stat(stat: Stat, digits: int = 3, signed: bool = False, mark_n1: bool = True) -> str:
    """"0.898 ± 0.012"; n=1: "0.898 (n=1)" (or "0.898" without ``mark_n1``); n=0: "-"."""
    mean, half, n = stat
    if n == 0:
        return "-"
    value = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if n == 1:
        return f"{value} (n=1)" if mark_n1 else value
    return f"{value} ± {half:.{digits}f}"


# ----------------------------------------------------------------------------------------- run files


def is_run(result: Mapping) -> bool:
    """A training run's JSON (zero-shot and retriever-override files are not)."""
    return {"config", "dataset", "seed", "metrics"} <= result.keys() and result["config"] != ZERO_SHOT


def load_runs(runs_dir: Path) -> list[dict]:
    """Every training run JSON in ``runs_dir``, sorted by dataset, config, seed."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(runs_dir).glob("*.json"))]
    return sorted((r for r in runs if is_run(r)), key=lambda r: (_order(r["dataset"], DATASET_ORDER),
                                                                  _order(r["config"], CONFIG_ORDER), r["seed"]))


def load_zero_shot(runs_dir: Path) -> dict[str, dict]:
    """Dataset -> zero-shot result (results/runs/zero_shot-<dataset>.json)."""
    out = {}
    for path in sorted(Path(runs_dir).glob(f"{ZERO_SHOT}-*.json")):
        result = json.loads(path.read_text())
        out[result["dataset"]] = result
    return out


def _order(name: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(name) if name in order else len(order), name)


def datasets_of(runs: Iterable[Mapping]) -> list[str]:
    """Datasets of ``runs`` in DATASET_ORDER (others after, by name)."""
    return sorted({r["dataset"] for r in runs}, key=lambda d: _order(d, DATASET_ORDER))


def configs_of(runs: Iterable[Mapping], dataset: str) -> list[str]:
    """Configs run on ``dataset``, in CONFIG_ORDER (others after, by name)."""
    return sorted({r["config"] for r in runs if r["dataset"] == dataset}, key=lambda c: _order(c, CONFIG_ORDER))


def select(runs: Iterable[Mapping], dataset: str, config: str) -> list[Mapping]:
    """The runs of one (dataset, config), by seed."""
    return sorted((r for r in runs if r["dataset"] == dataset and r["config"] == config), key=lambda r: r["seed"])


def metric_by_seed(runs: Iterable[Mapping], dataset: str, config: str, metric: str) -> dict[int, float]:
    """seed -> metrics[metric] of the runs of (dataset, config) that have it."""
    return {r["seed"]: float(r["metrics"][metric]) for r in select(runs, dataset, config) if metric in r["metrics"]}


def perturbation_types(metrics: Iterable[Mapping]) -> list[str]:
    """The <type> of every ``pairwise_accuracy/<type>`` key in any of ``metrics``, sorted."""
    return sorted({k[len(PER_TYPE_PREFIX):] for m in metrics for k in m if k.startswith(PER_TYPE_PREFIX)})


def read_curves(metrics_jsonl: Path) -> dict[str, list[list[float]]]:
    """{key: [[step, value], ...]} of every numeric "train/*" and "refresh/*" entry of a metrics.jsonl.

    Steps are sorted; a step logged twice (a resumed run) keeps its last value; a truncated line is skipped.
    """
    by_key: dict[str, dict[int, float]] = {}
    for line in Path(metrics_jsonl).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or "step" not in row:
            continue
        for key, value in row.items():
            if key.startswith(CURVE_PREFIXES) and isinstance(value, int | float) and not isinstance(value, bool):
                by_key.setdefault(key, {})[int(row["step"])] = float(value)
    return {key: [[step, value] for step, value in sorted(points.items())] for key, points in sorted(by_key.items())}


def mean_curve(runs: Iterable[Mapping], key: str) -> tuple[list[int], list[float]]:
    """(steps, mean over runs) of ``curves[key]``; each step averages the runs that logged it."""
    points: dict[int, list[float]] = {}
    for r in runs:
        for step, value in r.get("curves", {}).get(key, []):
            points.setdefault(int(step), []).append(float(value))
    steps = sorted(points)
    return steps, [sum(points[s]) / len(points[s]) for s in steps]


def dumps_run(data: Mapping) -> str:
    """JSON with 2-space indents, except that each curve and each per-query / per-pair list of the metrics takes one
    line."""
    parts = []
    for key, value in data.items():
        if key == "curves" and value:
            body = "{\n" + ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()) + "\n  }"
        elif key == "metrics" and (items := [k for k in PER_ITEM_KEYS if value.get(k)]) and value.keys() - items:
            body = json.dumps({k: v for k, v in value.items() if k not in items}, indent=2).replace("\n", "\n  ")
            for name in items:  # as evaluate.dumps_metrics
                lists = ",\n".join(f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in value[name].items())
                body = body[: -len("\n  }")] + f',\n    "{name}": {{\n' + lists + "\n    }\n  }"
        else:
            body = json.dumps(value, indent=2).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_json(path: Path, data: Mapping) -> None:
    """Writes ``data`` atomically (a killed suite never leaves a half-written run file)."""
    write_text(path, dumps_run(data))


def backfill_curves(runs_dir: Path, workdirs: Path) -> list[str]:
    """Adds ``curves`` to run JSONs that lack them and whose workdir still has a metrics.jsonl; returns their names."""
    done = []
    for path in sorted(Path(runs_dir).glob("*.json")):
        result = json.loads(path.read_text())
        if not is_run(result) or "curves" in result:
            continue
        jsonl = Path(workdirs) / Run(result["config"], result["dataset"], result["seed"]).name / "metrics.jsonl"
        if jsonl.is_file():
            result["curves"] = read_curves(jsonl)
            write_json(path, result)
            done.append(path.name)
    return done


# ----------------------------------------------------------------------------------------- plans


def parse_runs(specs: Sequence[str]) -> Plan:
    """["dataset:cfg1,cfg2", "d1,d2:cfg", ...] -> [(dataset, config), ...] (several datasets: each with every config)."""
    plan: Plan = []
    for spec in specs:
        datasets, sep, configs = spec.partition(":")
        if not sep or not datasets or not configs:
            raise SystemExit(f"--runs {spec!r}: expected DATASET[,DATASET...]:CONFIG1,CONFIG2,...")
        plan.extend((d, c) for d in datasets.split(",") if d for c in configs.split(",") if c)
    return list(dict.fromkeys(plan))


def expand(plan: Plan, seeds: Sequence[int]) -> list[Run]:
    """Every run of a plan, seed by seed (each pass over the plan gives a complete set for one more seed)."""
    return [Run(config, dataset, seed) for seed in seeds for dataset, config in plan]


def estimate_wall_s(run: Run, finished: Sequence[Mapping]) -> tuple[float, bool]:
    """(seconds, measured): mean wall_s of finished, not resumed runs of the same (config, dataset), else the
    default DEFAULT_WALL_S[dataset] * CONFIG_COST[config]."""
    walls = [r["wall_s"] for r in select(finished, run.dataset, run.config) if "wall_s" in r and not r.get("resumed")]
    if walls:
        return sum(walls) / len(walls), True
    return DEFAULT_WALL_S.get(run.dataset, UNKNOWN_DATASET_WALL_S) * CONFIG_COST.get(run.config, 1.0), False


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def describe_plan(name: str, plan: Plan, seeds: Sequence[int], finished: Sequence[Mapping],
                  zero_shot_todo: Sequence[str]) -> tuple[str, float]:
    """A printable table of the plan (what is done, what is left, estimated time); returns (text, seconds left)."""
    done = {Run(r["config"], r["dataset"], r["seed"]) for r in finished}
    runs = expand(plan, seeds)
    todo = [r for r in runs if r not in done]
    lines = [f"plan {name}: {len(plan)} (dataset, config) x seeds {' '.join(map(str, seeds))} = {len(runs)} runs, "
             f"{len(runs) - len(todo)} finished, {len(todo)} to run",
             f"  {'dataset':<16}{'config':<40}{'seeds to run':<14}{'est. per run':>14}{'est.':>10}"]
    total = 0.0
    for dataset, config in plan:
        left = [r.seed for r in todo if (r.dataset, r.config) == (dataset, config)]
        per_run, measured = estimate_wall_s(Run(config, dataset, 0), finished)
        total += per_run * len(left)
        mark = "" if measured else "*"
        lines.append(f"  {dataset:<16}{config:<40}{' '.join(map(str, left)) or '-':<14}"
                     f"{per_run / 60:>12.1f}m{mark:1}{_duration(per_run * len(left)):>10}")
    lines.append("  * no finished run of this (config, dataset) yet: DEFAULT_WALL_S[dataset] x CONFIG_COST[config]")
    if zero_shot_todo:
        total += ZERO_SHOT_WALL_S * len(zero_shot_todo)
        lines.append(f"  zero-shot evaluations to run: {', '.join(zero_shot_todo)} (~{ZERO_SHOT_WALL_S / 60:.1f} min "
                     f"each)")
    lines.append(f"  estimated wall time left: {_duration(total)}")
    return "\n".join(lines), total


# ----------------------------------------------------------------------------------------- running


def config_path(config: str) -> Path:
    """configs/full.py for "full", configs/ablations/<config>.py for the others."""
    return REPO / "configs" / "full.py" if config == "full" else REPO / "configs" / "ablations" / f"{config}.py"


def is_synthetic(dataset: str) -> bool:
    return dataset == SYNTHETIC or dataset in SYNTHETIC_DATASETS


def synthetic_size(dataset: str = SYNTHETIC) -> str:
    """The hnm_jax.data.synthetic.SIZES key of a synthetic dataset."""
    return SYNTHETIC_SIZE if dataset == SYNTHETIC else SYNTHETIC_DATASETS[dataset]


def synthetic_root(workdirs: Path, dataset: str = SYNTHETIC) -> Path:
    """<workdirs>/datasets/synthetic_<size> (synthetic_ablation, ...): the BEIR folder the dataset's runs read."""
    return Path(workdirs).resolve() / "datasets" / f"{SYNTHETIC}_{synthetic_size(dataset)}"


def prepare_synthetic(workdirs: Path, dataset: str = SYNTHETIC) -> Path:
    """Builds synthetic_near_dup/<size> (TFDS, array_record) once and exports it as a BEIR folder."""
    root = synthetic_root(workdirs, dataset)
    from hnm_jax.data.synthetic import PERTURBATIONS_FILE

    if (root / PERTURBATIONS_FILE).is_file():
        return root
    from hnm_jax.data import tfds_builders

    data_dir = Path(workdirs).resolve() / "tfds"
    name = tfds_builders.prepare_synthetic(data_dir, synthetic_size(dataset))
    with atomic_path(root) as tmp:  # only a complete export gets the final name
        tfds_builders.beir_from_tfds(name, data_dir, tmp)
        if not (tmp / PERTURBATIONS_FILE).is_file():
            raise RuntimeError(f"{tmp}: the export wrote no {PERTURBATIONS_FILE}")
        shutil.rmtree(root, ignore_errors=True)
    return root


def data_source(dataset: str, workdirs: Path) -> str:
    """What `hnm` gets for a dataset: the synthetic BEIR folder, or the benchmark name."""
    return str(synthetic_root(workdirs, dataset)) if is_synthetic(dataset) else dataset


def override_text(value: object) -> str:
    """A --config.key=VALUE value: repr of floats (2e-05, -0.5), str of the rest (ints, bools, strings)."""
    return repr(value) if isinstance(value, float) else str(value)


def train_command(run: Run, workdirs: Path, overrides: Mapping[str, object] | None = None,
                  workdir: Path | None = None) -> list[str]:  # fmt: skip
    """`hnm train` for one run (the trainer resumes from the workdir's checkpoint if there is one), with
    ``--config.<key>=<value>`` for each of ``overrides``; workdir defaults to <workdirs>/<run name>."""
    key = "path" if is_synthetic(run.dataset) else "name"
    return [sys.executable, "-m", "hnm_jax.main", "train", "--config", str(config_path(run.config)),
            f"--config.data.{key}={data_source(run.dataset, workdirs)}", f"--config.seed={run.seed}",
            *(f"--config.{k}={override_text(v)}" for k, v in (overrides or {}).items()),
            "--workdir", str(Path(workdir) if workdir is not None else Path(workdirs) / run.name)]  # fmt: skip


def run_training(run: Run, workdirs: Path, runs_dir: Path, overrides: Mapping[str, object] | None = None,
                 split: str = "test", workdir: Path | None = None, out: Path | None = None,
                 extra: Mapping[str, object] | None = None) -> dict:  # fmt: skip
    """Trains (or resumes) one run and writes results/runs/<name>.json (or ``out``).

    With ``overrides`` (the tuned suite) the JSON also records ``split`` (the evaluated split: its eval_<split>.json
    is the run's metrics) and the overrides; ``extra`` keys are set last (a label's ``config``, tuning records)."""
    workdir = Path(workdir) if workdir is not None else Path(workdirs) / run.name
    resumed = (workdir / "checkpoints").exists()
    start = time.time()
    subprocess.run(train_command(run, workdirs, overrides, workdir), check=True)
    result = {"config": run.config, "dataset": run.dataset, "seed": run.seed, "wall_s": time.time() - start,
              "resumed": resumed}  # fmt: skip
    if overrides is not None:
        result |= {"split": split, "overrides": dict(overrides)}
    result |= {"metrics": json.loads((workdir / f"eval_{split}.json").read_text()),
               "curves": read_curves(workdir / "metrics.jsonl")}  # fmt: skip
    result |= extra or {}
    out = Path(out) if out is not None else Path(runs_dir) / f"{run.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    return result


def run_zero_shot(dataset: str, workdirs: Path, runs_dir: Path) -> dict:
    """Evaluates the untrained model on the test split once per dataset (results/runs/zero_shot-<dataset>.json)."""
    metrics_path = Path(runs_dir) / f"{ZERO_SHOT}-{dataset}.metrics.json"
    start = time.time()
    subprocess.run([sys.executable, "-m", "hnm_jax.main", "eval", "--model", ZERO_SHOT_MODEL,
                    "--data", data_source(dataset, workdirs), "--split", "test", "--max-length", "0",
                    "--output", str(metrics_path)],
                   check=True)  # fmt: skip
    result = {"config": ZERO_SHOT, "dataset": dataset, "wall_s": time.time() - start,
              "metrics": json.loads(metrics_path.read_text())}  # fmt: skip
    metrics_path.unlink()
    write_json(Path(runs_dir) / f"{ZERO_SHOT}-{dataset}.json", result)
    return result


def run_suite(runs: Sequence[Run], workdirs: Path, runs_dir: Path) -> list[str]:
    """Runs what is missing (zero-shot evaluations first); returns the names of the runs that failed."""
    from tqdm.auto import tqdm

    finished = load_runs(runs_dir)
    done = {Run(r["config"], r["dataset"], r["seed"]) for r in finished}
    todo = [r for r in runs if r not in done]
    zero_shot_todo = [d for d in dict.fromkeys(r.dataset for r in runs)
                      if not (Path(runs_dir) / f"{ZERO_SHOT}-{d}.json").exists()]  # fmt: skip
    for dataset in dict.fromkeys([*zero_shot_todo, *(r.dataset for r in todo)]):
        if is_synthetic(dataset):
            print(f"synthetic benchmark: {prepare_synthetic(workdirs, dataset)}", flush=True)
    left = {r: estimate_wall_s(r, finished)[0] for r in todo}
    failed = []
    total = len(runs) + len(dict.fromkeys(r.dataset for r in runs))
    with tqdm(total=total, initial=total - len(todo) - len(zero_shot_todo), desc="ablation suite", unit="run",
              dynamic_ncols=True) as bar:  # fmt: skip
        for dataset in zero_shot_todo:
            tqdm.write(f"== zero-shot {ZERO_SHOT_MODEL} on {dataset}")
            try:
                run_zero_shot(dataset, workdirs, runs_dir)
            except subprocess.CalledProcessError as error:
                tqdm.write(f"== zero-shot on {dataset} failed: {error}")
                failed.append(f"{ZERO_SHOT}-{dataset}")
            bar.update(1)
        for run in todo:
            bar.set_postfix_str(f"{run.name}; est. {_duration(sum(left.values()))} left")
            if not config_path(run.config).is_file():
                tqdm.write(f"== {run.name} skipped: no {config_path(run.config).relative_to(REPO)}")
                failed.append(run.name)
                left.pop(run)
                bar.update(1)
                continue
            tqdm.write(f"== {run.name}: {' '.join(train_command(run, workdirs))}")
            try:
                result = run_training(run, workdirs, runs_dir)
                tqdm.write(f"== {run.name}: {MAIN_METRIC} {result['metrics'][MAIN_METRIC]:.3f}, "
                           f"{result['wall_s'] / 60:.1f} min")
            except (subprocess.CalledProcessError, FileNotFoundError) as error:
                tqdm.write(f"== {run.name} failed: {error}")
                failed.append(run.name)
            left.pop(run)
            bar.update(1)
    return failed


# ----------------------------------------------------------------------------------------- running the tuned suite


def grid_points(config: str, dataset: str) -> list[dict[str, object]]:
    """The points of an arm's grid on a dataset (GRIDS[config], epochs from TUNE_EPOCHS where set), in grid order:
    each a {config key: value} dict (a dict value of the grid sets several keys at once)."""
    if config not in GRIDS:
        raise SystemExit(f"--tune: no grid for {config!r}; arms with one: {', '.join(GRIDS)}")
    grid = dict(GRIDS[config])
    if dataset in TUNE_EPOCHS:
        grid["train.num_epochs"] = TUNE_EPOCHS[dataset]
    points = []
    for combo in itertools.product(*grid.values()):
        point: dict[str, object] = {}
        for key, value in zip(grid, combo, strict=True):
            point.update(value if isinstance(value, Mapping) else {key: value})
        points.append(point)
    return points


def point_tag(point: Mapping[str, object]) -> str:
    """A file-name tag of a grid point: last component of each key + value ("learning_rate2e-05_num_epochs2_lo-0.3")."""
    return "_".join(f"{key.rsplit('.', 1)[-1]}{override_text(value)}" for key, value in point.items())


def arm_overrides(config: str, point: Mapping[str, object], split: str) -> dict[str, object]:
    """Every override of a tuned run: BUDGET, the grid point, the split. An arm's own keys (online_band_dense_mining's
    mining.retriever, ...) live in its config file, so every arm gets the same BUDGET, with no exception."""
    return {**BUDGET, **point, "data.eval_split": split}


def deployed_metric(metrics: Mapping, key: str, retriever: str = DEPLOYED_RETRIEVER) -> float:
    """metrics["retrievers"][retriever][key] when recorded (every evaluation ranks with dense and hybrid), else
    metrics[key]; NaN when neither is there."""
    value = (metrics.get("retrievers") or {}).get(retriever, {}).get(key, metrics.get(key))
    return math.nan if value is None else float(value)


def best_index(results: Sequence[Mapping]) -> int:
    """Index of the best dev result: highest accuracy@1 of the deployed retriever, ties broken by MRR@10, then by
    grid order (the first); NaN counts as the worst."""

    def key(i: int) -> tuple[float, float, int]:
        m = results[i]["metrics"]
        acc, mrr = deployed_metric(m, MAIN_METRIC), deployed_metric(m, "mrr@10")
        return (-math.inf if math.isnan(acc) else acc, -math.inf if math.isnan(mrr) else mrr, -i)

    return max(range(len(results)), key=key)


def finished_result(path: Path, overrides: Mapping[str, object]) -> dict | None:
    """The run JSON at ``path`` when it exists and was made with exactly ``overrides``; else None (to run)."""
    if not Path(path).is_file():
        return None
    result = json.loads(Path(path).read_text())
    return result if result.get("overrides") == json.loads(json.dumps(dict(overrides))) else None


def slim(result: Mapping, keep_curves: Sequence[str] = ()) -> dict:
    """A run JSON without its metrics' per-item lists and with only ``keep_curves`` of its curves."""
    out = dict(result)
    if "metrics" in out:
        out["metrics"] = {k: v for k, v in out["metrics"].items() if k not in PER_ITEM_KEYS}
    if "curves" in out:
        out["curves"] = {k: v for k, v in out["curves"].items() if k in keep_curves}
    return out


def slim_copy(runs_dir: Path, dest: Path) -> int:
    """Copies every run JSON of ``runs_dir`` and its dev/ folder to ``dest`` (same layout), `slim`: what a tuned
    suite needs to resume elsewhere (overrides, summary metrics, wall_s) at a fraction of the size. Returns the count."""
    count = 0
    for path in [*sorted(Path(runs_dir).glob("*.json")), *sorted(Path(runs_dir).glob(f"{TUNE_SPLIT}/*.json"))]:
        target = Path(dest) / path.relative_to(runs_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, slim(json.loads(path.read_text())))
        count += 1
    return count


class TunedArm(NamedTuple):
    """An arm's tuning on one dataset: its grid points, their dev results (in grid order), the chosen point (None
    until every point has a result) and the runs that failed."""

    config: str
    dataset: str
    points: list[dict]
    dev: list[dict]
    chosen: dict | None
    failed: list[str]


Runner = Callable[..., dict]  # run_training's signature


def tune_arm(config: str, dataset: str, seeds: Sequence[int], workdirs: Path, runs_dir: Path,
             runner: Runner | None = None) -> TunedArm:  # fmt: skip
    """Runs the arm's grid on dev (seed TUNE_SEED; finished points are read back), chooses the best point
    (`best_index`) once every point has a result, and runs it once per seed on test. A partial grid chooses
    nothing (every arm gets the same tuning budget)."""
    runner = runner or run_training
    workdirs, runs_dir = Path(workdirs), Path(runs_dir)
    points, dev, failed = grid_points(config, dataset), [], []
    for point in points:
        run = Run(config, dataset, TUNE_SEED)
        name = f"{run.name}-{point_tag(point)}"
        overrides = arm_overrides(config, point, TUNE_SPLIT)
        out = runs_dir / TUNE_SPLIT / f"{name}.json"
        result = finished_result(out, overrides)
        if result is None:
            workdir = workdirs / "tune" / name
            print(f"== {name} ({TUNE_SPLIT}): {' '.join(train_command(run, workdirs, overrides, workdir))}", flush=True)
            try:
                result = runner(run, workdirs, runs_dir, overrides=overrides, split=TUNE_SPLIT, workdir=workdir,
                                out=out)  # fmt: skip
            except (subprocess.CalledProcessError, FileNotFoundError) as error:
                print(f"== {name} failed: {error}", flush=True)
                failed.append(name)
                continue
            result = slim(result, keep_curves=DEV_CURVES)  # tuning reads its summary metrics only
            write_json(out, result)
        dev.append(result)
    if failed:
        return TunedArm(config, dataset, points, dev, None, failed)
    best = best_index(dev)
    chosen, tag = points[best], point_tag(points[best])
    tuning = {"split": TUNE_SPLIT, "seed": TUNE_SEED, "grid_points": len(points), "chosen": tag,
              f"{TUNE_SPLIT}_{MAIN_METRIC}": deployed_metric(dev[best]["metrics"], MAIN_METRIC),
              f"{TUNE_SPLIT}_mrr@10": deployed_metric(dev[best]["metrics"], "mrr@10")}  # fmt: skip
    overrides = arm_overrides(config, chosen, "test")
    for seed in seeds:
        run = Run(config, dataset, seed)
        out = runs_dir / f"{run.name}.json"
        if finished_result(out, overrides) is not None:
            continue
        workdir = workdirs / "tuned" / f"{run.name}-{tag}"
        print(f"== {run.name} (test, {tag}): {' '.join(train_command(run, workdirs, overrides, workdir))}", flush=True)
        try:
            runner(run, workdirs, runs_dir, overrides=overrides, split="test", workdir=workdir, out=out,
                   extra={"tuning": tuning})  # fmt: skip
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            print(f"== {run.name} failed: {error}", flush=True)
            failed.append(run.name)
    return TunedArm(config, dataset, points, dev, chosen, failed)


def epoch_cost(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(overhead_s, per_epoch_s): least-squares fit of wall_s = overhead + per_epoch x epochs to (epochs, wall_s)
    points. With one distinct epochs value, or a fitted slope <= 0 (noise), overhead 0 and per_epoch = the mean of
    wall_s / epochs (conservative: fewer epochs fit a target)."""
    epochs = np.asarray([p[0] for p in points], np.float64)
    walls = np.asarray([p[1] for p in points], np.float64)
    if len(set(epochs.tolist())) >= 2:
        slope, intercept = np.polyfit(epochs, walls, 1)
        if slope > 0:
            return float(intercept), float(slope)
    return 0.0, float(np.mean(walls / epochs))


def equal_wallclock_epochs(target_s: float, overhead_s: float, per_epoch_s: float) -> int:
    """The most whole epochs whose predicted wall-clock, overhead + epochs x per_epoch, fits in ``target_s``; at
    least 1."""
    return max(1, math.floor((target_s - overhead_s) / per_epoch_s + 1e-9))


def run_equal_wallclock(dataset: str, tuned: TunedArm, seeds: Sequence[int], workdirs: Path, runs_dir: Path,
                        runner: Runner | None = None) -> list[str]:  # fmt: skip
    """EQUAL_WALLCLOCK's arm (in_batch, ``tuned``) at its chosen point, given the epochs that fit the reference
    arm's (full) mean test wall-clock on ``dataset``, once per seed on test; recorded as <label>-<dataset>-<seed>.json.
    Runs only when the reference arm has every seed (its mean no longer moves); returns the failed runs."""
    label, arm, reference = EQUAL_WALLCLOCK
    runner = runner or run_training
    workdirs, runs_dir = Path(workdirs), Path(runs_dir)
    ref = [r for r in select(load_runs(runs_dir), dataset, reference) if r["seed"] in seeds and "wall_s" in r]
    timed = [(float(r["overrides"]["train.num_epochs"]), float(r["wall_s"])) for r in tuned.dev
             if not r.get("resumed") and "overrides" in r]  # fmt: skip
    if tuned.chosen is None or len(ref) < len(seeds) or not timed:
        return []
    walls = [r["wall_s"] for r in ref if not r.get("resumed")] or [r["wall_s"] for r in ref]  # resumed: partial
    target = sum(walls) / len(walls)
    overhead, per_epoch = epoch_cost(timed)
    point = {**tuned.chosen, "train.num_epochs": equal_wallclock_epochs(target, overhead, per_epoch)}
    overrides = arm_overrides(arm, point, "test")
    extra = {"config": label, "recipe": arm,
             "wallclock": {"reference": reference, "target_s": target, "overhead_s": overhead,
                           "per_epoch_s": per_epoch, "fitted_on": len(timed), "epochs": point["train.num_epochs"]}}  # fmt: skip
    failed = []
    for seed in seeds:
        name = f"{label}-{dataset}-{seed}"
        out = runs_dir / f"{name}.json"
        if finished_result(out, overrides) is not None:
            continue
        run, workdir = Run(arm, dataset, seed), workdirs / "tuned" / f"{name}-{point_tag(point)}"
        print(f"== {name} ({point['train.num_epochs']} epochs = {reference}'s {target / 60:.1f} min): "
              f"{' '.join(train_command(run, workdirs, overrides, workdir))}", flush=True)  # fmt: skip
        try:
            runner(run, workdirs, runs_dir, overrides=overrides, split="test", workdir=workdir, out=out, extra=extra)
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            print(f"== {name} failed: {error}", flush=True)
            failed.append(name)
    return failed


def tune_suite(plan: Plan, seeds: Sequence[int], workdirs: Path, runs_dir: Path,
               runner: Runner | None = None) -> list[str]:  # fmt: skip
    """Tunes every (dataset, config) of ``plan`` in order (`tune_arm`), then the equal wall-clock arm of every
    dataset where both its arms were tuned; returns the failed runs."""
    unknown = sorted({c for _, c in plan} - GRIDS.keys())
    if unknown:
        raise SystemExit(f"--tune: no grid for {', '.join(unknown)}; arms with one: {', '.join(GRIDS)}")
    for dataset in dict.fromkeys(d for d, _ in plan):
        if is_synthetic(dataset):
            print(f"synthetic benchmark: {prepare_synthetic(workdirs, dataset)}", flush=True)
    tuned, failed = {}, []
    for dataset, config in plan:
        arm = tune_arm(config, dataset, seeds, workdirs, runs_dir, runner)
        tuned[(config, dataset)] = arm
        failed += arm.failed
    _, arm, reference = EQUAL_WALLCLOCK
    for dataset in dict.fromkeys(d for d, _ in plan):
        if (arm, dataset) in tuned and (reference, dataset) in tuned:
            failed += run_equal_wallclock(dataset, tuned[(arm, dataset)], seeds, workdirs, runs_dir, runner)
    return failed


def tune_wall_s(config: str, dataset: str, epochs: float, device: str = "cpu") -> float:
    """Estimated wall seconds of one tuned run (TUNE_WALL_S, EPOCH_COST, CE_OVERHEAD_S)."""
    overhead, per_epoch = TUNE_WALL_S[device].get(dataset, TUNE_WALL_S[device]["abt_buy"])
    ce = CE_OVERHEAD_S[device] if config in CE_CONFIGS else 0.0
    return overhead + ce + EPOCH_COST.get(config, 1.0) * per_epoch * epochs


def describe_tune_plan(plan: Plan, seeds: Sequence[int], runs_dir: Path, device: str = "cpu") -> tuple[str, float]:
    """A printable table of a tuned plan: per (dataset, config) the dev points and test runs left and their
    estimated time (test runs at the mean of the grid's epochs; the equal wall-clock arm at the reference's
    time); returns (text, seconds left)."""
    runs_dir = Path(runs_dir)
    lines = [f"tuned plan: {len(plan)} (dataset, arm) x grid on {TUNE_SPLIT} (seed {TUNE_SEED}) + the chosen point "
             f"x seeds {' '.join(map(str, seeds))} on test; estimate for {device}",
             f"  {'dataset':<16}{'arm':<38}{'dev left':>9}{'test left':>10}{'est.':>10}"]  # fmt: skip
    total, per_dataset = 0.0, {}
    for dataset, config in plan:
        points = grid_points(config, dataset)
        dev_name = Run(config, dataset, TUNE_SEED).name
        dev_left = [p for p in points if finished_result(runs_dir / TUNE_SPLIT / f"{dev_name}-{point_tag(p)}.json",
                                                         arm_overrides(config, p, TUNE_SPLIT)) is None]  # fmt: skip
        test_left = [s for s in seeds if not (runs_dir / f"{Run(config, dataset, s).name}.json").is_file()]
        epochs = [float(p["train.num_epochs"]) for p in points]
        seconds = sum(tune_wall_s(config, dataset, p["train.num_epochs"], device) for p in dev_left)
        seconds += len(test_left) * tune_wall_s(config, dataset, sum(epochs) / len(epochs), device)
        total += seconds
        per_dataset[dataset] = per_dataset.get(dataset, 0.0) + seconds
        lines.append(f"  {dataset:<16}{config:<38}{len(dev_left):>9}{len(test_left):>10}{_duration(seconds):>10}")
    label, arm, reference = EQUAL_WALLCLOCK
    for dataset in per_dataset:
        if (dataset, arm) in plan and (dataset, reference) in plan:
            left = [s for s in seeds if not (runs_dir / f"{label}-{dataset}-{s}.json").is_file()]
            epochs = GRIDS[reference]["train.num_epochs"] if dataset not in TUNE_EPOCHS else TUNE_EPOCHS[dataset]
            seconds = len(left) * tune_wall_s(reference, dataset, sum(epochs) / len(epochs), device)
            total += seconds
            per_dataset[dataset] += seconds
            lines.append(f"  {dataset:<16}{label:<38}{'-':>9}{len(left):>10}{_duration(seconds):>10}")
    lines += [f"  {dataset}: {_duration(seconds)}" for dataset, seconds in per_dataset.items()]
    lines.append(f"  estimated wall time left ({device}, one run at a time): {_duration(total)}")
    return "\n".join(lines), total


# ----------------------------------------------------------------------------------------- report


def summary_table(runs: Sequence[Mapping], zero_shot: Mapping[str, Mapping], dataset: str) -> str:
    """One row per config (zero-shot first): n seeds, each metric as mean ± 95% CI, mean wall-clock."""
    rows = [r for r in runs if r["dataset"] == dataset]
    present = {k for r in rows for k in r["metrics"]}
    metrics = [(k, label) for k, label in TABLE_METRICS if k in present]
    lines = ["| config | n | " + " | ".join(label for _, label in metrics) + " | wall-clock |",
             "|---|---|" + "---|" * len(metrics) + "---|"]  # fmt: skip
    if dataset in zero_shot:
        m = zero_shot[dataset]["metrics"]
        cells = [f"{m[k]:.3f}" if k in m else "-" for k, _ in metrics]
        lines.append(f"| {ZERO_SHOT} | - | " + " | ".join(cells) + " | - |")
    for config in configs_of(runs, dataset):
        group = select(runs, dataset, config)
        cells = [format_stat(mean_ci(metric_by_seed(group, dataset, config, k).values())) for k, _ in metrics]
        walls = [r["wall_s"] for r in group if "wall_s" in r]
        wall = f"{sum(walls) / len(walls) / 60:.1f} min" if walls else "-"
        lines.append(f"| {config} | {len(group)} | " + " | ".join(cells) + f" | {wall} |")
    return "\n".join(lines)


def full_vs_baselines_table(runs: Sequence[Mapping]) -> str:
    """Per dataset: paired (same seed) difference of accuracy@1, full - in_batch and full - offline."""
    header = " | ".join(f"full − {b} | n" for b in BASELINES)
    lines = [f"| dataset | {header} |", "|---|" + "---|---|" * len(BASELINES)]
    for dataset in datasets_of(runs):
        full = metric_by_seed(runs, dataset, "full", MAIN_METRIC)
        if not full:
            continue
        cells = []
        for baseline in BASELINES:
            stat = paired_difference(full, metric_by_seed(runs, dataset, baseline, MAIN_METRIC))
            cells += [format_stat(stat, signed=True), str(stat[2])]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else "No `full` runs yet."


def per_type_table(runs: Sequence[Mapping], zero_shot: Mapping[str, Mapping], dataset: str) -> str:
    """pairwise_accuracy/<type> per config (mean ± 95% CI over seeds), zero-shot first; "" without such keys."""
    rows = [r for r in runs if r["dataset"] == dataset]
    zs = [zero_shot[dataset]["metrics"]] if dataset in zero_shot else []
    types = perturbation_types([r["metrics"] for r in rows] + zs)
    if not types:
        return ""
    lines = ["| config | n | " + " | ".join(types) + " |", "|---|---|" + "---|" * len(types)]
    for m in zs:
        lines.append(f"| {ZERO_SHOT} | - | " + " | ".join(f"{m.get(PER_TYPE_PREFIX + t, math.nan):.3f}"
                                                        for t in types) + " |")  # fmt: skip
    for config in configs_of(runs, dataset):
        cells = [format_stat(mean_ci(metric_by_seed(runs, dataset, config, PER_TYPE_PREFIX + t).values()))
                 for t in types]  # fmt: skip
        lines.append(f"| {config} | {len(select(runs, dataset, config))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- paired per-item statistics

PAIRED_METRICS = (("accuracy@1", "accuracy@1", True), ("mrr@10", "MRR@10", False),
                  ("pairwise_accuracy", "pairwise acc.", True))  # (key, label, binary: McNemar applies)  # fmt: skip
BOOTSTRAP_RESAMPLES = 10_000


def deployed_ranks(metrics: Mapping, retriever: str | None = None) -> dict[str, int] | None:
    """query id -> 1-based rank of its first relevant doc (0: not in the top 100) under the deployed pipeline's
    final stage: per_query["rank_rerank"] when the run re-ranks, else per_query["rank_<metrics['retriever']>"];
    with ``retriever``, per_query["rank_<retriever>"] whatever the run deployed (the same pipeline for every run).
    None when the run has no such list (run JSONs older than per-query ranks)."""
    per_query = metrics.get("per_query") or {}
    if retriever is not None:
        key = f"rank_{retriever}"
    else:
        key = "rank_rerank" if "rank_rerank" in per_query else f"rank_{metrics.get('retriever')}"
    if "query_ids" not in per_query or key not in per_query:
        return None
    return dict(zip(per_query["query_ids"], (int(r) for r in per_query[key]), strict=True))


def item_outcomes(metrics: Mapping, retriever: str | None = None) -> dict[str, dict]:
    """Per-item outcomes of one run, per PAIRED_METRICS key (a key is absent when the run lacks its lists):
    "accuracy@1": {query id: [rank == 1]}, "mrr@10": {query id: 1/rank if 1 <= rank <= 10 else 0} (ranks:
    `deployed_ranks(metrics, retriever)`), "pairwise_accuracy": {(query id, doc id): per_pair correct (0/1)}."""
    out: dict[str, dict] = {}
    ranks = deployed_ranks(metrics, retriever)
    if ranks is not None:
        out["accuracy@1"] = {q: float(r == 1) for q, r in ranks.items()}
        out["mrr@10"] = {q: 1.0 / r if 1 <= r <= 10 else 0.0 for q, r in ranks.items()}
    per_pair = metrics.get("per_pair") or {}
    if {"query_ids", "doc_ids", "correct"} <= per_pair.keys():
        out["pairwise_accuracy"] = {(q, d): float(c) for q, d, c in
                                    zip(per_pair["query_ids"], per_pair["doc_ids"], per_pair["correct"], strict=True)}
    return out


class PairedItems(NamedTuple):
    """Outcomes of two configs on the items both have, pooled over the seeds both have: [n] each."""

    a: np.ndarray
    b: np.ndarray
    clusters: np.ndarray  # [n] query id of each item (the bootstrap's resampling unit)
    seeds: list[int]


def contrast_items(runs: Sequence[Mapping], dataset: str, weights: Mapping[str, float], metric: str,
                   retriever: str | None = None) -> PairedItems:  # fmt: skip
    """Items of ``metric`` (see `item_outcomes`) for the linear contrast sum_k w_k x_k of configs' outcomes on
    ``dataset`` (``weights``: config -> w_k; {A: 1, B: -1} is A − B): for each seed every config has with per-item
    data, the items (query ids, or (query id, doc id) pairs) all of them have, aligned by id. a = sum of the
    positively weighted outcomes, b = sum of |w_k| x_k over the negative weights, so a − b is the contrast."""
    by_seed = [{r["seed"]: item_outcomes(r["metrics"], retriever).get(metric) for r in select(runs, dataset, c)}
               for c in weights]  # fmt: skip
    w = list(weights.values())
    xs, ys, clusters, seeds = [], [], [], []
    for seed in sorted(set.intersection(*(set(s) for s in by_seed))) if by_seed else ():
        outcomes = [s[seed] for s in by_seed]
        if any(o is None for o in outcomes):
            continue
        common = [k for k in outcomes[0] if all(k in o for o in outcomes[1:])]
        if common:
            seeds.append(seed)
            xs += [sum(wk * o[k] for wk, o in zip(w, outcomes, strict=True) if wk > 0) for k in common]
            ys += [sum(-wk * o[k] for wk, o in zip(w, outcomes, strict=True) if wk < 0) for k in common]
            clusters += [k[0] if isinstance(k, tuple) else k for k in common]
    return PairedItems(np.asarray(xs, np.float64), np.asarray(ys, np.float64), np.asarray(clusters, dtype=object),
                       seeds)


def paired_items(runs: Sequence[Mapping], dataset: str, a: str, b: str, metric: str,
                 retriever: str | None = None) -> PairedItems:  # fmt: skip
    """Items of ``metric`` (see `item_outcomes`) of configs a and b on ``dataset``: for each seed both have with
    per-item data, the items (query ids, or (query id, doc id) pairs) both runs have, aligned by id (a
    `contrast_items` with weights {a: 1, b: -1})."""
    return contrast_items(runs, dataset, {a: 1.0, b: -1.0}, metric, retriever)


def paired_stats(items: PairedItems, binary: bool) -> dict:
    """Effect of a − b (hnm_jax.stats.stratified_cluster_bootstrap, one stratum, clusters = query ids), McNemar
    (binary outcomes only; None otherwise) and the decision on "a > b" (hnm_jax.stats.decide with the unadjusted
    one-sided p: these tables are exploratory, not a family of claims): {"effect", "mcnemar", "mde", "decision"}."""
    effect = stratified_cluster_bootstrap(items.a - items.b, None, items.clusters, BOOTSTRAP_RESAMPLES, seed=0)
    test = mcnemar(items.a, items.b) if binary else None
    decision = decide(effect, effect.p_no_gain)
    return {"effect": effect, "mcnemar": test, "mde": decision.mde, "decision": decision}


def comparison_pairs(configs: Sequence[str]) -> list[tuple[str, str]]:
    """(A, B) to compare: full vs every other config, then every config vs in_batch and vs offline (each unordered
    pair once, the baseline second)."""
    pairs = [("full", c) for c in configs if "full" in configs and c != "full"]
    pairs += [(c, base) for base in BASELINES if base in configs for c in configs if c != base]
    seen: set[frozenset[str]] = set()
    out = []
    for pair in pairs:
        if frozenset(pair) not in seen:
            seen.add(frozenset(pair))
            out.append(pair)
    return out


def _p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def paired_table(runs: Sequence[Mapping], dataset: str, retriever: str | None = None) -> str:
    """One row per (A, B, metric) with paired items: seeds, items (queries), means, A − B [95% CI], McNemar p
    (A only : B only correct), MDE and verdict; "" when no pair has per-item data."""
    lines = ["| A − B | metric | seeds | items (queries) | A | B | A − B [95% CI] | McNemar p (A only : B only) "
             "| MDE (80%, one-sided) | verdict (A > B) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for a, b in comparison_pairs(configs_of(runs, dataset)):
        for metric, label, binary in PAIRED_METRICS:
            items = paired_items(runs, dataset, a, b, metric, retriever)
            if items.a.size == 0:
                continue
            st = paired_stats(items, binary)
            effect, test = st["effect"], st["mcnemar"]
            mc = f"{_p(test.p)} ({test.b10} : {test.b01})" if test is not None else "-"
            lines.append(f"| {a} − {b} | {label} | {' '.join(map(str, items.seeds))} | {items.a.size} "
                         f"({len(set(items.clusters))}) | {items.a.mean():.3f} | {items.b.mean():.3f} | "
                         f"{effect.effect:+.3f} [{effect.ci_low:+.3f}, {effect.ci_high:+.3f}] | {mc} | "
                         f"{st['mde']:.3f} | {st['decision']} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def paired_section(runs: Sequence[Mapping], retriever: str | None = DEPLOYED_RETRIEVER) -> list[str]:
    """The "Paired comparisons" section of ablations.md (lines): method, then per dataset a `paired_table` and the
    runs left out for lacking per-item lists. Ranks: `deployed_ranks(metrics, retriever)`."""
    deployed = (f"the {retriever} retriever's first relevant document at rank 1, for every run whatever its "
                "retriever.mode (each evaluation ranks the corpus with the dense and the hybrid retriever over the same "
                "exact dense index), so every arm deploys the same pipeline") if retriever else (
                "the deployed pipeline's first relevant document at rank 1")  # fmt: skip
    out = ["## Paired comparisons (per query, pooled over seeds)", "",
           f"Items: the test queries (accuracy@1: {deployed}; MRR@10: "
           "1/rank within the top 10, else 0) and the labelled near-duplicate pairs (pairwise acc.: the query's best "
           "positive scored strictly above the near-duplicate). A and B are paired on the seeds both ran, by query id "
           "(pairs: query id and doc id), and pooled over those seeds. A − B: difference of means with a 95% "
           f"percentile CI from a bootstrap ({BOOTSTRAP_RESAMPLES} resamples) that resamples queries, each with all "
           "its seeds and pairs. McNemar: exact two-sided binomial test on the discordant items (it treats the seeds "
           "of a query as independent, so its p is optimistic). MDE: the smallest true difference a one-sided "
           "level-0.05 test detects at 80% power (2.49 × the bootstrap SE). Verdict on A > B (hnm_jax.stats.decide, "
           "unadjusted: these comparisons are exploratory): holds = one-sided sign-flip p (query clusters) < 0.05; "
           "fails = significantly negative, or the CI's upper bound is below 1 point (0.010); else inconclusive.",
           ""]  # fmt: skip
    for dataset in datasets_of(runs):
        group = [r for r in runs if r["dataset"] == dataset]
        lacking = [Run(r["config"], dataset, r["seed"]).name for r in group
                   if deployed_ranks(r["metrics"], retriever) is None]  # fmt: skip
        no_pairs = [Run(r["config"], dataset, r["seed"]).name for r in group if "pairwise_accuracy" in r["metrics"]
                    and not r["metrics"].get("per_pair") and deployed_ranks(r["metrics"], retriever) is not None]  # fmt: skip
        table = paired_table(runs, dataset, retriever)
        out += [f"### {dataset}", ""]
        out += [table, ""] if table else ["No pair of configs with per-query data on shared seeds.", ""]
        if lacking and len(lacking) == len(group):
            out += [f"Skipped: none of the {len(group)} run JSONs has `per_query` (all older than per-query ranks).",
                    ""]  # fmt: skip
        elif lacking:
            out += [f"Skipped (run JSON without `per_query`, older than per-query ranks): {', '.join(lacking)}.", ""]
        if no_pairs:
            out += [f"No pairwise acc. items from (run JSON without `per_pair`): {', '.join(no_pairs)}.", ""]
    return out


SATURATION_KEY = "train/in_batch_accuracy"
SATURATION_ACCURACY = 0.95
SATURATION_FRACTION = 0.1  # a budget where mining can matter is not saturated within this share of the run


class Saturation(NamedTuple):
    """When a run's in-batch accuracy first exceeds SATURATION_ACCURACY."""

    step: int | None  # first logged step above the threshold; None: never
    steps: int  # the run's last logged train step
    first_logged: bool  # that step is the curve's first point (the crossing may have come earlier)
    peak: float  # the curve's highest value


def saturation(run: Mapping, threshold: float = SATURATION_ACCURACY) -> Saturation | None:
    """The first logged step at which curves["train/in_batch_accuracy"] exceeds ``threshold``, with the run's
    length (its last logged "train/*" step); None when the run has no such curve."""
    curves = run.get("curves") or {}
    curve = curves.get(SATURATION_KEY)
    if not curve:
        return None
    steps = max(int(s) for key, points in curves.items() if key.startswith("train/") for s, _ in points)
    above = [int(s) for s, v in curve if v > threshold]
    return Saturation(above[0] if above else None, steps, bool(above) and above[0] == int(curve[0][0]),
                      max(float(v) for _, v in curve))  # fmt: skip


def saturation_section(runs: Sequence[Mapping], dev_runs: Sequence[Mapping] = ()) -> list[str]:
    """The "In-batch saturation" section (lines): per run (test runs, then the tuning's dev runs), the step at which
    train/in_batch_accuracy first exceeds SATURATION_ACCURACY, as a fraction of the run."""
    out = ["## In-batch saturation", "",
           f"Per run: the first logged step at which `{SATURATION_KEY}` (share of a step's queries whose positive "
           f"outscores all its in-batch and explicit negatives) exceeds {SATURATION_ACCURACY}, as a fraction of the "
           f"run's steps. Mined negatives can only matter while it is below that: a budget where mining can matter "
           f"keeps it at or below {SATURATION_ACCURACY} through the first {SATURATION_FRACTION:.0%} of the run. "
           "\"(first log)\": already above at the first logged step, so the crossing may be earlier (the tuned "
           "suite logs every step).", ""]  # fmt: skip
    def name(r: Mapping) -> str:
        base = Run(r["config"], r["dataset"], r["seed"]).name
        return f"{base} ({TUNE_SPLIT}: {point_tag(point_of(r['config'], r['overrides']))})" if r in dev_runs else base

    rows = [(r, sat) for r in [*runs, *dev_runs] if (sat := saturation(r)) is not None]
    if not rows:
        return out + [f"No run JSON has a `{SATURATION_KEY}` curve.", ""]
    early = [r for r, sat in rows if sat.step is not None and sat.step <= SATURATION_FRACTION * sat.steps]
    out += [f"Saturated within the first {SATURATION_FRACTION:.0%} of the run: {len(early)} of {len(rows)} runs.", "",
            f"| run | first step > {SATURATION_ACCURACY} | steps | fraction of the run |", "|---|---|---|---|"]  # fmt: skip
    for r, sat in rows:
        if sat.step is None:
            out.append(f"| {name(r)} | never (max {sat.peak:.3f}) | {sat.steps} | - |")
        else:
            first = " (first log)" if sat.first_logged else ""
            out.append(f"| {name(r)} | {sat.step}{first} | {sat.steps} | {sat.step / sat.steps:.2f} |")
    return out + [""]


def load_dev_runs(dev_dir: Path) -> list[dict]:
    """Every tuning run JSON in ``dev_dir`` (<runs-dir>/dev), sorted by file name."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(dev_dir).glob("*.json"))]
    return [r for r in runs if is_run(r) and "overrides" in r]


def point_of(config: str, overrides: Mapping[str, object]) -> dict[str, object]:
    """The grid point of a tuned run's overrides (without BUDGET and the split)."""
    fixed = {**BUDGET, "data.eval_split": None}
    return {k: v for k, v in overrides.items() if k not in fixed}


def tuning_section(dev_runs: Sequence[Mapping], runs: Sequence[Mapping]) -> list[str]:
    """The "Tuning on dev" section (lines): per (dataset, arm) the grid points run, the chosen point and its dev
    figures, the dev range, the test seeds; then the equal wall-clock runs. [] without dev runs."""
    if not dev_runs:
        return []
    out = ["## Tuning on dev", "",
           f"Each arm ran its grid (experiments/ablate.py GRIDS) with seed {TUNE_SEED} on the {TUNE_SPLIT} split; the "
           f"chosen point (best {TUNE_SPLIT} accuracy@1 of the {DEPLOYED_RETRIEVER} retriever, ties: MRR@10) was then "
           "trained once per seed and evaluated once on test. Every run: " +
           ", ".join(f"`{k}={override_text(v)}`" for k, v in BUDGET.items()) + ".", "",
           f"| dataset | arm | grid points run | chosen | {TUNE_SPLIT} accuracy@1 / MRR@10 of the chosen | "
           f"{TUNE_SPLIT} accuracy@1 over the grid | test seeds |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for dataset in datasets_of(dev_runs):
        for config in configs_of(dev_runs, dataset):
            group = [r for r in dev_runs if r["dataset"] == dataset and r["config"] == config]
            expected = len(grid_points(config, dataset)) if config in GRIDS else "?"
            tested = select(runs, dataset, config)
            chosen = next((r["tuning"]["chosen"] for r in tested if "tuning" in r), None)
            best = group[best_index(group)]
            if chosen is None:
                chosen = f"({point_tag(point_of(config, best['overrides']))}, no test run yet)"
            else:
                best = next((r for r in group if point_tag(point_of(config, r["overrides"])) == chosen), best)
            accs = [deployed_metric(r["metrics"], MAIN_METRIC) for r in group]
            out.append(f"| {dataset} | {config} | {len(group)} / {expected} | `{chosen}` | "
                       f"{deployed_metric(best['metrics'], MAIN_METRIC):.3f} / "
                       f"{deployed_metric(best['metrics'], 'mrr@10'):.3f} | {min(accs):.3f}-{max(accs):.3f} | "
                       f"{' '.join(str(r['seed']) for r in tested) or '-'} |")  # fmt: skip
    label = EQUAL_WALLCLOCK[0]
    timed = [r for r in runs if r["config"] == label and "wallclock" in r]
    if timed:
        out += ["", f"Equal wall-clock: `{label}` trains {EQUAL_WALLCLOCK[1]}'s chosen point for the epochs that fit "
                f"{EQUAL_WALLCLOCK[2]}'s mean test wall-clock (wall = overhead + epochs x per-epoch, fitted on "
                f"{EQUAL_WALLCLOCK[1]}'s {TUNE_SPLIT} runs):", ""]  # fmt: skip
        for r in timed:
            w = r["wallclock"]
            out.append(f"- {Run(label, r['dataset'], r['seed']).name}: {w['epochs']} epochs for {w['reference']}'s "
                       f"{w['target_s'] / 60:.1f} min (overhead {w['overhead_s']:.0f} s + {w['per_epoch_s']:.0f} s an "
                       f"epoch, fitted on {w['fitted_on']} runs); took {r['wall_s'] / 60:.1f} min")  # fmt: skip
    return out + [""]


def ablations_markdown(runs: Sequence[Mapping], zero_shot: Mapping[str, Mapping], command: str,
                       plots: Sequence[Path] = (), dev_runs: Sequence[Mapping] = ()) -> str:
    """results/ablations.md: per-dataset tables, full vs baselines, paired comparisons, in-batch saturation, the
    tuning (with ``dev_runs``), per-perturbation-type tables."""
    datasets = datasets_of([*runs, *({"dataset": d} for d in zero_shot)])
    out = ["# Ablations", "",
           f"Made with `{command}` from results/runs/*.json ({len(runs)} training runs).", "",
           "Each cell: mean ± 95% CI half-width over seeds (Student t, n − 1 dof); n=1 shows the single value. "
           "Test split, evaluated over the whole corpus; wall-clock is the mean per run on 2 CPU cores (tokenization, "
           "index refreshes and the final evaluation included). When a run re-ranks (`stages` in its metrics), the "
           "metrics are those of the final stage.", ""]  # fmt: skip
    for dataset in datasets:
        out += [f"## {dataset}", "", summary_table(runs, zero_shot, dataset), ""]
    out += ["## full vs baselines", "",
            "Test accuracy@1, difference paired by seed (same seed for both configs; unpaired seeds are left out).",
            "", full_vs_baselines_table(runs), ""]  # fmt: skip
    out += paired_section(runs)
    out += saturation_section(runs, dev_runs)
    out += tuning_section(dev_runs, runs)
    for dataset in datasets:
        table = per_type_table(runs, zero_shot, dataset)
        if table:
            out += [f"## {dataset}: pairwise accuracy per perturbation type", "",
                    "Fraction of a query's labelled near-duplicates of each type scored below its match.", "",
                    table, ""]  # fmt: skip
    if plots:
        out += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(out)


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(runs: Sequence[Mapping], zero_shot: Mapping[str, Mapping], dataset: str, out: Path) -> Path:
    """Bar chart of test accuracy@1 per config (mean, 95% CI error bars; zero-shot in grey)."""
    plt = pyplot()
    names, means, errors, colors = [], [], [], []
    if dataset in zero_shot:
        names.append(ZERO_SHOT)
        means.append(zero_shot[dataset]["metrics"][MAIN_METRIC])
        errors.append(0.0)
        colors.append("grey")
    for config in configs_of(runs, dataset):
        mean, half, n = mean_ci(metric_by_seed(runs, dataset, config, MAIN_METRIC).values())
        if n:
            names.append(f"{config} (n={n})")
            means.append(mean)
            errors.append(0.0 if math.isnan(half) else half)
            colors.append("tab:blue")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    ax.barh(range(len(names)), means, xerr=errors, color=colors, capsize=3)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    low = min((m - e for m, e in zip(means, errors, strict=True)), default=0.0)
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.set_xlabel("test accuracy@1 (mean, 95% CI over seeds)")
    ax.set_title(dataset)
    for i, m in enumerate(means):
        ax.text(m, i, f" {m:.3f}", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


CURRICULUM_CONFIGS = ("online_band", "online_band_margin_curriculum", "full")


def curriculum_dataset(runs: Sequence[Mapping]) -> str | None:
    """The dataset for the curriculum plot: the first of CLAIM_DATASETS (then any) with curriculum curves."""
    with_curves = [r["dataset"] for r in runs if r["config"] == "online_band_margin_curriculum" and r.get("curves")]
    for dataset in (*CLAIM_DATASETS, *datasets_of(runs)):
        if dataset in with_curves:
            return dataset
    return None


def plot_curriculum(runs: Sequence[Mapping], dataset: str, out: Path) -> Path:
    """The curriculum's band and the hardness of the chosen negatives over training, mean over seeds.

    Left: band lo/hi and mean chosen-negative cosine / mean positive cosine (all as fractions of the positive's
    cosine); right: the raw cosines. One colour per config (online_band, the curriculum, and full if present).
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for config, color in zip(CURRICULUM_CONFIGS, ("tab:orange", "tab:blue", "tab:green"), strict=True):
        group = select(runs, dataset, config)
        if not any(r.get("curves") for r in group):
            continue
        label = f"{config} (n={len(group)})"
        for key, style in (("train/band_lo", "--"), ("train/band_hi", ":")):
            steps, values = mean_curve(group, key)
            if steps:
                left.plot(steps, values, style, color=color, label=f"{label}: {key.split('_')[-1]}")
        neg_steps, neg = mean_curve(group, "train/explicit_negative_score")
        pos = dict(zip(*mean_curve(group, "train/positive_score"), strict=True))
        ratio = [(s, v / pos[s]) for s, v in zip(neg_steps, neg, strict=True) if pos.get(s)]
        if ratio:
            left.plot(*zip(*ratio, strict=True), "-", color=color, label=f"{label}: negatives / positives")
        if neg_steps:
            right.plot(neg_steps, neg, "-", color=color, label=f"{label}: chosen negatives")
        if pos:
            right.plot(list(pos), list(pos.values()), ":", color=color, label=f"{label}: positives")
    left.set_title(f"{dataset}: band and chosen-negative hardness (x positive cosine)")
    right.set_title(f"{dataset}: mean cosine")
    for ax in (left, right):
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_report(runs_dir: Path, results: Path, command: str) -> Path:
    """results/ablations.md and its plots, from every run JSON in ``runs_dir``."""
    runs, zero_shot = load_runs(runs_dir), load_zero_shot(runs_dir)
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    plots = [plot_accuracy(runs, zero_shot, d, results / f"ablations_{d}.png")
             for d in datasets_of(runs) if configs_of(runs, d)]  # fmt: skip
    dataset = curriculum_dataset(runs)
    if dataset is not None:
        plots.append(plot_curriculum(runs, dataset, results / "ablations_curriculum.png"))
    out = results / "ablations.md"
    out.write_text(ablations_markdown(runs, zero_shot, command, plots, load_dev_runs(Path(runs_dir) / TUNE_SPLIT)))
    return out


# ----------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", choices=sorted(PLANS), default=None,
                        help="default: 'default' (with --tune: 'issue12')")  # fmt: skip
    parser.add_argument("--runs", action="append", default=[],
                        help="DATASET[,DATASET...]:CONFIG1,CONFIG2 (replaces --plan)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--workdirs", default=str(REPO / "workdirs" / "ablations"))
    parser.add_argument("--runs-dir", default=None, help=f"default results/runs (with --tune: {TUNED_DIR})")
    parser.add_argument("--results", default=None,
                        help="where ablations.md and the plots go (default results; with --tune: the runs dir)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimate, run nothing")
    parser.add_argument("--report", action="store_true", help="only rebuild ablations.md and the plots")
    parser.add_argument("--tune", action="store_true",
                        help="the tuned suite: each arm's grid on dev, then its best point once per seed on test")
    parser.add_argument("--device", choices=sorted(TUNE_WALL_S), default="cpu", help="--tune estimates for")
    parser.add_argument("--slim-copy", metavar="DIR",
                        help="only copy the runs dir's JSONs to DIR without per-item lists and curves (`slim_copy`)")
    args = parser.parse_args(argv)
    command = " ".join(["python experiments/ablate.py", *(sys.argv[1:] if argv is None else argv)])
    args.plan = args.plan or ("issue12" if args.tune else "default")
    args.runs_dir = args.runs_dir or str(TUNED_DIR if args.tune else REPO / "results" / "runs")
    args.results = args.results or (args.runs_dir if args.tune else str(REPO / "results"))
    runs_dir, workdirs = Path(args.runs_dir), Path(args.workdirs)
    if args.slim_copy:
        print(f"{slim_copy(runs_dir, Path(args.slim_copy))} run JSONs -> {args.slim_copy}")
        return 0
    runs_dir.mkdir(parents=True, exist_ok=True)
    for name in backfill_curves(runs_dir, workdirs):
        print(f"curves backfilled: {name}")
    failed: list[str] = []
    if args.tune and not args.report:
        plan = parse_runs(args.runs) if args.runs else PLANS[args.plan]
        text, _ = describe_tune_plan(plan, args.seeds, runs_dir, args.device)
        print(text, flush=True)
        if args.dry_run:
            return 0
        failed = tune_suite(plan, args.seeds, workdirs, runs_dir)
    elif not args.report:
        name = "--runs" if args.runs else args.plan
        plan = parse_runs(args.runs) if args.runs else PLANS[args.plan]
        runs = expand(plan, args.seeds)
        zero_shot_todo = [d for d in dict.fromkeys(d for d, _ in plan)
                          if not (runs_dir / f"{ZERO_SHOT}-{d}.json").exists()]  # fmt: skip
        text, seconds = describe_plan(name, plan, args.seeds, load_runs(runs_dir), zero_shot_todo)
        print(text, flush=True)
        if name == "default" and seconds > DEFAULT_BUDGET_S:
            print(f"  note: over the {_duration(DEFAULT_BUDGET_S)} the default plan is meant to fit")
        if args.dry_run:
            return 0
        failed = run_suite(runs, workdirs, runs_dir)
    out = write_report(runs_dir, Path(args.results), command)
    print(f"wrote {out}")
    if failed:
        print(f"failed runs (rerun the same command to retry): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
