"""Verdicts on the recipe's nine claims from paired per-query statistics: run JSONs -> results/REPRODUCTION.md.

    python experiments/reproduce.py                          # the tuned runs (python experiments/ablate.py --tune)
    python experiments/reproduce.py --runs-dir results/runs  # the untuned ablation runs

No training. A claim is one or more contrasts between arms (configs): A − B, or a weighted sum of arms. Each is measured
per item, paired by seed and item id, on every dataset where all its arms ran: test queries (accuracy@1 under ONE
deployed pipeline for every arm, ablate.DEPLOYED_RETRIEVER's per-query ranks; every evaluation records them over the
same exact dense index) or labelled near-duplicate pairs (pairwise accuracy); a metric with no per-item list
(near_duplicate_cosine: one number per run) is shown per seed, not judged. Its items are pooled over the seeds and
datasets (hnm_jax.stats.stratified_cluster_bootstrap: strata = datasets, clusters = query ids) and judged by
hnm_jax.stats.decide with the one-sided p Holm-adjusted over the claim's contrasts (per-dataset rows: over the claim's
per-dataset rows). A claim "fails (...)" when one of its contrasts fails, "holds" when all hold, else
"inconclusive (MDE X points)" (X: the largest MDE of its inconclusive contrasts; a point = 0.01 of accuracy), "not
measured" without paired data. Per-dataset figures are in the details. results/reproduce_early_training.png backs the
curriculum claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ablate import (
    BOOTSTRAP_RESAMPLES,
    DEPLOYED_RETRIEVER,
    EQUAL_WALLCLOCK,
    MAIN_METRIC,
    SEEDS,
    TUNE_DATASETS,
    TUNED_DIR,
    PairedItems,
    Run,
    contrast_items,
    datasets_of,
    format_stat,
    load_runs,
    mean_ci,
    mean_curve,
    metric_by_seed,
    paired_difference,
    paired_values,
    pyplot,
    select,
)

from hnm_jax.stats import EffectResult, decide, holm, mcnemar, stratified_cluster_bootstrap

CLAIM_DATASETS = TUNE_DATASETS  # each claim is measured on every one of these where its arms ran (others after)
DUP_DATASET = "synthetic_dup"  # unlabelled duplicates: the true false negatives a cross-encoder filter should remove
EARLY_FRACTION = 1 / 3  # "early training": the first third of the steps
CE_COUNTS = ("refresh/ce_removed_threshold", "refresh/ce_removed_margin", "refresh/ce_kept")
# what Miner.apply_cross_encoder must log at each refresh for claim (4) on DUP_DATASET (not logged yet: see
# experiments/PLAN_issue12.md): the pool's unlabelled duplicates before the filter, and those the filter removed
DUPLICATE_COUNTS = ("refresh/pool_unlabelled_duplicates", "refresh/ce_removed_unlabelled_duplicates")
CE_ARMS = ("online_band_ce", "full")
RUN_LEVEL = ("near_duplicate_cosine",)  # metrics without a per-item list: shown per seed, never judged
BINARY = ("accuracy@1", "pairwise_accuracy")  # 0/1 per item: McNemar applies (two-arm contrasts)
RATES = ("accuracy@1", "mrr@10", "pairwise_accuracy")  # shown in points (x 100)
CURRICULUM_ARMS = ("online_band_curriculum", "online_band")  # claim (6); also the early-training figure
COLLAPSE_ARMS = ("online_band_uniformity", "online_band_hybrid_logits")  # claim (8), each against online_band
SINGLE_GAINS = ("online_band_curriculum", "online_band_ce", "online_band_hybrid_logits", "online_band_uniformity")


class Contrast(NamedTuple):
    """sum_k w_k x_k over arms (``weights``: config -> w_k) on ``metric``; the claim says its sign is ``direction``."""

    weights: dict[str, float]
    metric: str = MAIN_METRIC
    direction: int = 1
    name: str = ""  # a label for a contrast that is not A − B

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        terms = [f"{'−' if w < 0 else '+'} {'' if abs(w) == 1 else f'{abs(w):g} '}{arm}"
                 for arm, w in self.weights.items()]  # fmt: skip
        return " ".join(terms).removeprefix("+ ")


def ab(a: str, b: str, metric: str = MAIN_METRIC, direction: int = 1) -> Contrast:
    """A − B."""
    return Contrast({a: 1.0, b: -1.0}, metric, direction)


class Claim(NamedTuple):
    number: int
    text: str
    contrasts: tuple[Contrast, ...]
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Measured:
    """One contrast on one dataset, or pooled over several (``datasets``): its statistics and verdict."""

    contrast: Contrast
    datasets: tuple[str, ...]
    items: int
    clusters: int  # queries (or seeds, for a run-level metric), over the datasets
    seeds: int  # (dataset, seed) pairs
    a: float  # mean of the positively weighted side
    b: float
    diff: float  # a − b (the claimed direction is contrast.direction)
    ci: tuple[float, float]
    p: float  # one-sided sign-flip p for "no gain in the claimed direction", unadjusted
    mcnemar_p: float | None
    mde: float
    verdict: str
    result: EffectResult | None = None  # in the claimed direction
    p_holm: float = math.nan  # p, Holm-adjusted over the contrast's family (`decide_family`)


@dataclasses.dataclass(frozen=True)
class Finding:
    """A claim, its pooled contrasts (the verdict's evidence), the per-dataset figures, the verdict, the runs that
    are missing, the command that makes its runs and a details section."""

    claim: Claim
    pooled: list[Measured]
    per_dataset: list[Measured]
    verdict: str
    missing: list[str]
    command: str
    details: str = ""


# ----------------------------------------------------------------------------------------- measuring


def items_of(runs: Sequence[Mapping], dataset: str, contrast: Contrast) -> PairedItems:
    """The contrast's paired items on one dataset (ablate.contrast_items with DEPLOYED_RETRIEVER's ranks)."""
    if contrast.metric in RUN_LEVEL:
        raise ValueError(f"{contrast.metric} has one number per run: it is shown per seed, not judged")
    return contrast_items(runs, dataset, contrast.weights, contrast.metric, DEPLOYED_RETRIEVER)


def measure(contrast: Contrast, parts: Sequence[tuple[str, PairedItems]]) -> Measured:
    """Statistics of the items of ``parts`` ((dataset, items), pooled: strata = datasets, clusters = query ids),
    with the verdict on the unadjusted p (`decide_family` adjusts it)."""
    parts = [(d, it) for d, it in parts if it.a.size]
    datasets = tuple(d for d, _ in parts)
    if not parts:
        nan = math.nan
        return Measured(contrast, (), 0, 0, 0, nan, nan, nan, (nan, nan), nan, None, nan, "not measured")
    a, b = np.concatenate([it.a for _, it in parts]), np.concatenate([it.b for _, it in parts])
    strata = np.asarray([d for d, it in parts for _ in it.clusters], dtype=object)
    clusters = np.asarray([str(c) for _, it in parts for c in it.clusters], dtype=object)
    result = stratified_cluster_bootstrap(contrast.direction * (a - b), strata, clusters, BOOTSTRAP_RESAMPLES, seed=0)
    binary = contrast.metric in BINARY and len(contrast.weights) == 2
    ci = tuple(sorted((contrast.direction * result.ci_low, contrast.direction * result.ci_high)))
    decision = decide(result, result.p_no_gain)
    return Measured(contrast, datasets, int(a.size), result.num_clusters, sum(len(it.seeds) for _, it in parts),
                    float(a.mean()), float(b.mean()), contrast.direction * result.effect, ci, result.p_no_gain,
                    mcnemar(a, b).p if binary else None, decision.mde, decision.label, result, result.p_no_gain)  # fmt: skip


def decide_family(measured: Sequence[Measured]) -> list[Measured]:
    """The family's verdicts (`hnm_jax.stats.decide`) on their one-sided p Holm-adjusted over the measured ones."""
    done = [i for i, m in enumerate(measured) if m.result is not None]
    adjusted = holm([measured[i].p for i in done])
    out = list(measured)
    for i, p in zip(done, adjusted, strict=True):
        out[i] = dataclasses.replace(measured[i], p_holm=float(p), verdict=decide(measured[i].result, p).label)
    return out


def claim_datasets(runs: Sequence[Mapping], contrast: Contrast) -> list[str]:
    """CLAIM_DATASETS, then any other dataset, on which every arm of the contrast has a run."""
    have = [{r["dataset"] for r in runs if r["config"] == arm} for arm in contrast.weights]
    both = set.intersection(*have) if have else set()
    return [d for d in CLAIM_DATASETS if d in both] + sorted(both - set(CLAIM_DATASETS))


def _scaled(metric: str, value: float, signed: bool = False) -> str:
    """Points (x 100, 1 decimal) for RATES, else 3 decimals."""
    if math.isnan(value):
        return "-"
    scale, digits = (100, 1) if metric in RATES else (1, 3)
    value = round(scale * value, digits) + 0.0  # no "-0.0"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mde_text(mde: float) -> str:
    return f"{100 * mde:.1f} points"


def claim_verdict(measured: Sequence[Measured]) -> str:
    """The first "fails (...)" of its contrasts; "holds" if every contrast holds; "inconclusive (MDE X points)" with
    X the largest MDE of the inconclusive contrasts; "inconclusive (not measured: ...)" when the only gaps are
    unmeasured contrasts; "not measured" when none was measured."""
    verdicts = [m.verdict for m in measured]
    if all(v == "not measured" for v in verdicts):
        return "not measured"
    failed = [v for v in verdicts if v.startswith("fails")]
    if failed:
        return failed[0]
    if all(v == "holds" for v in verdicts):
        return "holds"
    mdes = [m.mde for m in measured if m.verdict.startswith("inconclusive") and not math.isnan(m.mde)]
    if mdes:
        return f"inconclusive (MDE {_mde_text(max(mdes))})"
    return "inconclusive (not measured: " + ", ".join(m.contrast.label for m in measured
                                                      if m.verdict == "not measured") + ")"  # fmt: skip


def missing_runs(runs: Sequence[Mapping], configs: Sequence[str], datasets: Sequence[str] = CLAIM_DATASETS,
                 seeds: Sequence[int] = SEEDS) -> list[str]:  # fmt: skip
    """The runs of ``configs`` x ``datasets`` x ``seeds`` that have no run JSON, as "<config>-<dataset>-{1,2}"."""
    have = {Run(r["config"], r["dataset"], r["seed"]) for r in runs}
    out = []
    for d in datasets:
        for c in configs:
            lacking = [str(s) for s in seeds if Run(c, d, s) not in have]
            if lacking:
                out.append(f"{c}-{d}-" + (lacking[0] if len(lacking) == 1 else "{" + ",".join(lacking) + "}"))
    return out


def arms_of(claim: Claim) -> list[str]:
    return list(dict.fromkeys(arm for c in claim.contrasts for arm in c.weights))


def command_for(runs: Sequence[Mapping], claim: Claim, datasets: Sequence[str]) -> str:
    """The experiments/ablate.py command that makes the claim's runs on ``datasets`` (CLAIM_DATASETS when none):
    with --tune when the runs found are tuned ones (or none are found)."""
    arms = arms_of(claim)
    tuned = any("overrides" in r for r in runs if r["config"] in arms) or not runs
    return (f"python experiments/ablate.py {'--tune ' if tuned else ''}--runs "
            f"{','.join(datasets or CLAIM_DATASETS)}:{','.join(arms)}")


# ----------------------------------------------------------------------------------------- the nine claims


def mining_arms(runs: Sequence[Mapping]) -> tuple[str, str]:
    """(arm mining from the hybrid pipeline, arm mining from the dense index alone) for claim (7): the tuned suite's
    online_band (mining with the deployed retriever, forced to hybrid) and online_band_dense_mining
    (mining.retriever=dense) when the latter has runs; else the untuned online_band_hybrid_retriever (retriever.mode
    hybrid) and online_band (dense)."""
    if any(r["config"] == "online_band_dense_mining" for r in runs):
        return "online_band", "online_band_dense_mining"
    return "online_band_hybrid_retriever", "online_band"


def claims(runs: Sequence[Mapping]) -> list[Claim]:
    """The nine claims, in the recipe's order (claim (7)'s arms and the retriever gain of (5): `mining_arms`)."""
    hybrid, dense = mining_arms(runs)
    margin, band = "online_band_margin", "online_band"
    weights: dict[str, float] = {}
    for arm, w in ((margin, 1.0), (band, -1.0), (hybrid, -1.0), (dense, 1.0)):  # an arm may come twice: add up
        weights[arm] = weights.get(arm, 0.0) + w
    retriever_gain = Contrast({arm: w for arm, w in weights.items() if w}, MAIN_METRIC, 1,
                              f"({margin} − {band}) − ({hybrid} − {dense})")  # fmt: skip
    collapse = [ab(arm, band, "pairwise_accuracy") for arm in COLLAPSE_ARMS]
    return [
        Claim(1, "Mined negatives beat random negatives and in-batch negatives only",
              (ab(band, "random"), ab(band, "in_batch"))),
        Claim(2, "Online mining beats offline (stale) mining", (ab(band, "offline"),)),
        Claim(3, "A semi-hard band beats the hardest negatives", (ab(band, "online_hardest"),)),
        Claim(4, "Cross-encoder filtering of the pool helps (and removes the true false negatives of the duplicate "
              "variant)", (ab("online_band_ce", band),)),
        Claim(5, "The hardness-growing margin helps, and is the largest single gain",
              (ab(margin, band), *(ab(margin, arm) for arm in SINGLE_GAINS), retriever_gain),
              "Each single component is added to online_band; the margin's gain beats another's when margin − other "
              "> 0 (both gains are over online_band). The retriever's gain is that of mining from the hybrid "
              "pipeline over the dense index alone (claim (7))."),
        Claim(6, "The easy-to-hard curriculum helps", (ab(*CURRICULUM_ARMS),)),
        Claim(7, "Mining from the live lexical + dense pipeline beats mining from the dense index alone (the same "
              "deployed retriever)", (ab(hybrid, dense),)),
        Claim(8, "The uniformity regularizer and hybrid logits reduce near-duplicate collapse (pairwise accuracy up, "
              "near_duplicate_cosine down)", tuple(collapse),
              "No arm turns L2 normalization off (model.normalize = False would), so its share of this claim is "
              "not measured. near_duplicate_cosine (mean cosine of a positive with its labelled near-duplicates) is "
              "one number per run: shown per seed below, not judged (three seeds cannot carry a verdict)."),
        Claim(9, "The combination beats random negatives, offline mining and the hardest negatives",
              (ab("full", "random"), ab("full", "offline"), ab("full", "online_hardest"))),
    ]  # fmt: skip


def find(runs: Sequence[Mapping], claim: Claim) -> Finding:
    """Measures each contrast per dataset and pooled, and the claim's verdict (`claim_verdict`)."""
    pooled, per_dataset, measured_datasets = [], [], []
    for contrast in claim.contrasts:
        parts = [(d, items_of(runs, d, contrast)) for d in claim_datasets(runs, contrast)]
        per_dataset += [measure(contrast, [part]) for part in parts if part[1].a.size]
        pooled.append(measure(contrast, parts))
        measured_datasets += pooled[-1].datasets
    pooled, per_dataset = decide_family(pooled), decide_family(per_dataset)
    datasets = list(dict.fromkeys(measured_datasets))
    return Finding(claim, pooled, per_dataset, claim_verdict(pooled), missing_runs(runs, arms_of(claim)),
                   command_for(runs, claim, datasets))  # fmt: skip


def _curve_dict(run: Mapping, key: str) -> dict[int, float]:
    """step -> value of one of a run's curves."""
    return {int(s): float(v) for s, v in run.get("curves", {}).get(key, [])}


def _separation(run: Mapping) -> dict[int, float]:
    """positive_score − hardest_negative_score per step (at or below 0: the hardest negative caught up)."""
    return paired_values(_curve_dict(run, "train/positive_score"), _curve_dict(run, "train/hardest_negative_score"))


def _first_refresh(run: Mapping) -> dict[int, float]:
    """refresh/pool_score_mean at the first refresh after step 0 (the model after its first epoch)."""
    series = {s: v for s, v in _curve_dict(run, "refresh/pool_score_mean").items() if s > 0}
    return {min(series): series[min(series)]} if series else {}


class Indicator(NamedTuple):
    """An early-training collapse indicator: a series per run, its direction, and whether the verdict uses it."""

    name: str
    series: Callable[[Mapping], dict[int, float]]
    higher_is_better: bool
    judged: bool
    plotted: Callable[[Mapping], dict[int, float]] | None = None  # the curve to plot, if not ``series``


COLLAPSE_INDICATORS = (
    Indicator("early train/loss", lambda r: _curve_dict(r, "train/loss"), False, False),
    Indicator("early train/in_batch_accuracy", lambda r: _curve_dict(r, "train/in_batch_accuracy"), True, True),
    Indicator("early train/positive_score − train/hardest_negative_score", _separation, True, True),
    Indicator("refresh/pool_score_mean after epoch 1", _first_refresh, False, True,
              lambda r: _curve_dict(r, "refresh/pool_score_mean")),
)


def early_mean(series: Mapping[int, float], fraction: float = EARLY_FRACTION) -> float:
    """Mean of a step -> value series over its first ``fraction`` of steps (at least its first point); NaN if empty."""
    if not series:
        return math.nan
    steps = sorted(series)
    cut = steps[-1] * fraction
    early = [series[s] for s in steps if s <= cut] or [series[steps[0]]]
    return sum(early) / len(early)


def _early_by_seed(runs: Sequence[Mapping], dataset: str, config: str,
                   series: Callable[[Mapping], dict[int, float]]) -> dict[int, float]:  # fmt: skip
    out = {r["seed"]: early_mean(series(r)) for r in select(runs, dataset, config)}
    return {s: v for s, v in out.items() if not math.isnan(v)}


def _signed_stat(stat: tuple[float, float, int]) -> str:
    """"+0.012 ± 0.010 (n=3)" of a seed-paired difference."""
    return f"{format_stat(stat, signed=True, mark_n1=False)} (n={stat[2]})"


def early_training_details(runs: Sequence[Mapping], figure: str) -> str:
    """Claim (6)'s details: the early-training collapse indicators, paired by seed (shown, not judged)."""
    curriculum, plain = CURRICULUM_ARMS
    lines = []
    for d in claim_datasets(runs, ab(curriculum, plain)):
        for indicator in COLLAPSE_INDICATORS:
            # ordered so that a positive difference favours the curriculum
            a, b = (curriculum, plain) if indicator.higher_is_better else (plain, curriculum)
            stat = paired_difference(_early_by_seed(runs, d, a, indicator.series),
                                     _early_by_seed(runs, d, b, indicator.series))  # fmt: skip
            if stat[2]:
                lines.append(f"- {a} − {b}, {indicator.name}, **{d}**: {_signed_stat(stat)}")
    return "\n".join([
        "Early training (shown, not judged): the first third of the logged steps of each run (at least its first "
        "logged point), averaged per run, then paired by seed (mean ± 95% CI half-width); each comparison is "
        "ordered so that a positive difference favours the curriculum. A collapsing encoder scores everything "
        "alike: in-batch accuracy falls, the hardest negative catches up with the positive, and the pool mined at a "
        "refresh scores higher. The first two are measured on each run's own batch, whose explicit negatives the "
        "curriculum makes easier early on, so they favour it by construction; the refresh's pool score does not.",
        "", *(lines or ["- no seed-paired curves"]), "", f"![early training]({figure})"])  # fmt: skip


def _ce_totals(run: Mapping, keys: Sequence[str] = CE_COUNTS) -> dict[str, float] | None:
    """Totals of a run's per-refresh counts ``keys`` over its refreshes; None when none is logged."""
    curves = run.get("curves", {})
    if not any(k in curves for k in keys):
        return None
    return {k: sum(v for _, v in curves.get(k, [])) for k in keys}


def ce_details(runs: Sequence[Mapping]) -> tuple[str, str | None]:
    """Claim (4)'s details, and a verdict that overrides the paired one (None: no override): "fails" when
    online_band_ce's filter removed nothing at all, or, on DUP_DATASET, none of the unlabelled duplicates in its
    pools (with DUPLICATE_COUNTS logged)."""
    lines = ["Pool entries the cross-encoder filter removed (summed over a run's refreshes, mean ± 95% CI over seeds):",
             "", "| arm | dataset | n | removed by threshold | removed by margin | kept | removed fraction |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    override, removed_by_arm = None, {arm: [] for arm in CE_ARMS}
    for arm in CE_ARMS:
        for d in sorted({r["dataset"] for r in runs if r["config"] == arm}):
            totals = [t for t in (_ce_totals(r) for r in select(runs, d, arm)) if t is not None]
            if not totals:
                continue
            removed = [t[CE_COUNTS[0]] + t[CE_COUNTS[1]] for t in totals]
            removed_by_arm[arm] += removed
            fraction = mean_ci(r / (r + t[CE_COUNTS[2]]) if r + t[CE_COUNTS[2]] else math.nan
                               for r, t in zip(removed, totals, strict=True))  # fmt: skip
            lines.append(f"| {arm} | {d} | {len(totals)} | " + " | ".join(
                format_stat(mean_ci(t[k] for t in totals), digits=1) for k in CE_COUNTS) + f" | {format_stat(fraction)} |")  # fmt: skip
    if not any(removed_by_arm.values()):
        lines = ["No cross-encoder filter counts (refresh/ce_*) in the runs' curves."]
    elif removed_by_arm[CE_ARMS[0]] and sum(removed_by_arm[CE_ARMS[0]]) == 0:
        override = "fails (the cross-encoder removed nothing)"
    dup = [(r["seed"], t) for r in select(runs, DUP_DATASET, CE_ARMS[0])
           if (t := _ce_totals(r, DUPLICATE_COUNTS)) is not None]  # fmt: skip
    lines += ["", f"True false negatives on {DUP_DATASET} (a task's unlabelled duplicate record is a correct match "
              "that the qrels do not list): "]  # fmt: skip
    if dup:
        in_pools, removed = (sum(t[k] for _, t in dup) for k in DUPLICATE_COUNTS)
        share = f"{removed / in_pools:.1%}" if in_pools else "-"
        lines[-1] += (f"{CE_ARMS[0]}'s pools held {in_pools:.0f} of them over {len(dup)} runs' refreshes; the filter "
                      f"removed {removed:.0f} ({share}).")  # fmt: skip
        if in_pools and not removed:
            override = f"fails (removed none of the {in_pools:.0f} unlabelled duplicates in its pools)"
    else:
        lines[-1] += (f"not logged. Miner.apply_cross_encoder (hnm_jax/mining/miner.py) must log, at each refresh, "
                      f"`{DUPLICATE_COUNTS[0]}` (pool entries that are their query's unlabelled duplicate, "
                      "hnm_jax.data.synthetic.read_unlabelled_duplicates) and "
                      f"`{DUPLICATE_COUNTS[1]}` (those the filter removed); see experiments/PLAN_issue12.md.")  # fmt: skip
    return "\n".join(lines), override


def mined_from(runs: Sequence[Mapping], config: str) -> set[str]:
    """The retrievers an arm's runs mined from: the "mining_retriever" a run's eval JSON records (mining.retriever,
    or retriever.mode when unset; also read from the top level of a run JSON); for runs older than that key, its
    metrics["retriever"] (retriever.mode then set mining and deployment alike)."""

    def one(run: Mapping) -> str | None:
        for where in (run, run["metrics"]):
            if "mining_retriever" in where:
                return where["mining_retriever"]
        return run["metrics"].get("retriever")

    return {one(r) for r in runs if r["config"] == config} - {None}


def wallclock_details(runs: Sequence[Mapping]) -> str:
    """Claim (9)'s details: the equal wall-clock arm against full and against in_batch (shown, not judged)."""
    label, arm, reference = EQUAL_WALLCLOCK
    lines = []
    for contrast in (ab(reference, label), ab(label, arm)):
        m = measure(contrast, [(d, items_of(runs, d, contrast)) for d in claim_datasets(runs, contrast)])
        if m.items:
            lines.append(f"- {contrast.label} ({m.contrast.metric}; {', '.join(m.datasets)}): {_effect(m)}, "
                         f"one-sided p {_pvalue(m.p)}, MDE {_scaled(m.contrast.metric, m.mde)}: {m.verdict}")  # fmt: skip
    if not lines:
        return ""
    return "\n".join([f"At equal wall-clock (shown, not judged): `{label}` trains {arm}'s tuned point for as many "
                      f"epochs as fit {reference}'s mean test wall-clock.", "", *lines])  # fmt: skip


def cosine_details(runs: Sequence[Mapping]) -> str:
    """Claim (8)'s near_duplicate_cosine (one number per run): online_band − arm per dataset, paired by seed
    (mean ± 95% t half-width over the seeds; shown, not judged)."""
    lines = []
    for arm in COLLAPSE_ARMS:
        for d in claim_datasets(runs, ab(arm, "online_band")):
            stat = paired_difference(metric_by_seed(runs, d, "online_band", RUN_LEVEL[0]),
                                     metric_by_seed(runs, d, arm, RUN_LEVEL[0]))  # fmt: skip
            if stat[2]:
                lines.append(f"- online_band − {arm}, {RUN_LEVEL[0]}, **{d}**: {_signed_stat(stat)}")
    return "\n".join([f"{RUN_LEVEL[0]} (shown, not judged; positive: the arm lowers it), paired by seed:", "",
                      *(lines or ["- no seed-paired runs"])])  # fmt: skip


def findings(runs: Sequence[Mapping], figure: str) -> list[Finding]:
    """Every claim's finding, with its details (claims (4), (6), (7), (8), (9) have their own)."""
    out = []
    for claim in claims(runs):
        found = find(runs, claim)
        details, override = [claim.note], None
        if claim.number == 4:
            text, override = ce_details(runs)
            details.append(text)
        elif claim.number == 6:
            details.append(early_training_details(runs, figure))
        elif claim.number == 7:
            hybrid, dense = list(claim.contrasts[0].weights)
            same = mined_from(runs, hybrid) & mined_from(runs, dense)
            details.append(f"Arms: {hybrid} mined from {', '.join(sorted(mined_from(runs, hybrid))) or '-'}, {dense} "
                           f"from {', '.join(sorted(mined_from(runs, dense))) or '-'}; both are compared on the "
                           f"{DEPLOYED_RETRIEVER} retriever's ranks.")  # fmt: skip
            if same:
                override = f"not measured (both arms mined from the {', '.join(sorted(same))} retriever)"
        elif claim.number == 8:
            details.append(cosine_details(runs))
        elif claim.number == 9:
            details.append(wallclock_details(runs))
        if override and found.verdict != "not measured":
            found = dataclasses.replace(found, verdict=override)
        out.append(dataclasses.replace(found, details="\n\n".join(d for d in details if d)))
    return out


# ----------------------------------------------------------------------------------------- outputs


def plot_early_training(runs: Sequence[Mapping], out: Path) -> Path:
    """Each collapse indicator over training, mean over seeds, curriculum vs no curriculum; early window shaded."""
    plt = pyplot()
    a, b = CURRICULUM_ARMS
    datasets = [d for d in datasets_of(runs) if select(runs, d, a) or select(runs, d, b)] or ["no runs"]
    panels = [(i.name, i.plotted or i.series) for i in COLLAPSE_INDICATORS]
    fig, axes = plt.subplots(len(datasets), len(panels), figsize=(5 * len(panels), 3.6 * len(datasets)),
                             squeeze=False)  # fmt: skip
    for row, d in zip(axes, datasets, strict=True):
        group_of = {config: select(runs, d, config) for config in (a, b)}
        last = max((max(_curve_dict(r, "train/loss"), default=0) for g in group_of.values() for r in g), default=0)
        for ax, (name, values) in zip(row, panels, strict=True):
            for config, color in ((a, "tab:blue"), (b, "tab:orange")):
                curves = [{"curves": {name: sorted(values(r).items())}} for r in group_of[config]]
                steps, means = mean_curve(curves, name)
                if steps:
                    ax.plot(steps, means, "-o", color=color, markersize=3,
                            label=f"{config} (n={len(group_of[config])})")  # fmt: skip
            if last:
                ax.axvspan(0, last * EARLY_FRACTION, color="grey", alpha=0.15, label="early (first third)")
                ax.legend(fontsize=7)
            ax.set_title(f"{d}: {name.removeprefix('early ')}", fontsize=9)
            ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _pvalue(p: float | None) -> str:
    return "-" if p is None or math.isnan(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _effect(m: Measured) -> str:
    """"+3.1 [+1.2, +5.0]" (points for RATES)."""
    if math.isnan(m.diff):
        return "-"
    metric = m.contrast.metric
    return f"{_scaled(metric, m.diff, True)} [{_scaled(metric, m.ci[0], True)}, {_scaled(metric, m.ci[1], True)}]"


def reproduction_markdown(found: Sequence[Finding], command: str, runs_dir: str, num_runs: int) -> str:
    """results/REPRODUCTION.md: one row per claim, then a details section per claim."""
    out = [f"Made with: `{command}`", "", "# Reproduction of the recipe's claims", "",
           f"From {runs_dir}/*.json ({num_runs} training runs; each row's command makes its runs). Each claim is one "
           "or more contrasts between arms, measured per item and paired by seed and item id: test queries "
           f"(accuracy@1 of the {DEPLOYED_RETRIEVER} retriever for every arm: the same deployed pipeline, over the "
           "same exact dense index) or labelled near-duplicate pairs (pairwise accuracy); items are pooled over "
           "the seeds and datasets where all the contrast's arms ran (near_duplicate_cosine, one figure per run, is "
           "shown per seed in the details, not judged). Effect: the query-weighted mean with a 95% percentile CI "
           f"from a bootstrap ({BOOTSTRAP_RESAMPLES} resamples) stratified by dataset that resamples query clusters "
           "(each with its seeds); p: one-sided p of \"no gain\" from a sign-flip test over the same clusters, "
           "Holm-adjusted over the claim's contrasts; MDE: the smallest true gain that one-sided test (level 0.05) "
           "detects at 80% power (2.49 × the bootstrap SE). Rates in points (0.01 of accuracy). Verdict per "
           "contrast (hnm_jax.stats.decide, in the claimed direction): holds = Holm p < 0.05; fails = significantly "
           "negative (unadjusted one-sided p < 0.05) or the CI's upper bound is below 1 point; else inconclusive. A "
           "claim fails when one contrast fails, holds when all hold; inconclusive shows the largest MDE of its "
           "inconclusive contrasts. Per-dataset figures are in the details (Holm over the claim's per-dataset "
           "rows).", "",
           "| # | claim | verdict | contrast (metric) | effect [95% CI] | p (Holm) | MDE | datasets (items) | command |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in found:
        cells = [[], [], [], [], []]
        for m in f.pooled:
            cells[0].append(f"{m.contrast.label} ({m.contrast.metric}{', lower is better' * (m.contrast.direction < 0)})")
            cells[1].append(_effect(m))
            cells[2].append(_pvalue(m.p_holm))
            cells[3].append(_scaled(m.contrast.metric, m.mde))
            cells[4].append(f"{', '.join(m.datasets)} ({m.clusters} queries, {m.items} items)"
                            if m.items else "-")  # fmt: skip
        out.append(f"| {f.claim.number} | {f.claim.text} | {f.verdict} | " + " | ".join("<br>".join(c) for c in cells)
                   + f" | `{f.command}` |")  # fmt: skip
    out += ["", "## Details", ""]
    for f in found:
        out += [f"### ({f.claim.number}) {f.claim.text}", "", f"Verdict: **{f.verdict}**. Runs: `{f.command}`.", "",
                "| contrast | metric | datasets | seeds | items (clusters) | A | B | effect [95% CI] | p (Holm) | McNemar p "
                "| MDE | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        several = {d for m in f.per_dataset for d in m.datasets}
        for m in [*f.pooled, *(f.per_dataset if len(several) > 1 else [])]:  # one dataset: pooled = per dataset
            metric = m.contrast.metric
            where = ("pooled: " if len(m.datasets) > 1 else "") + (", ".join(m.datasets) or "-")
            out.append(f"| {m.contrast.label} | {metric} | {where} | {m.seeds} | {m.items} ({m.clusters}) | "
                       f"{_scaled(metric, m.a)} | {_scaled(metric, m.b)} | {_effect(m)} | {_pvalue(m.p_holm)} | "
                       f"{_pvalue(m.mcnemar_p)} | {_scaled(metric, m.mde)} | {m.verdict} |")  # fmt: skip
        out += ["", f"Missing runs: {', '.join(f.missing)}." if f.missing else "Missing runs: none.", ""]
        if f.details:
            out += [f.details, ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=str(TUNED_DIR), help="run JSONs (default: the tuned suite's)")
    parser.add_argument("--results", default=str(Path(TUNED_DIR).parent), help="where REPRODUCTION.md and its figure go")
    args = parser.parse_args(argv)
    command = " ".join(["python experiments/reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    runs = load_runs(Path(args.runs_dir))
    figure = plot_early_training(runs, results / "reproduce_early_training.png")
    found = findings(runs, figure.name)
    out = results / "REPRODUCTION.md"
    out.write_text(reproduction_markdown(found, command, args.runs_dir, len(runs)))
    for f in found:
        print(f"({f.claim.number}) {f.verdict:<48} {f.claim.text}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
