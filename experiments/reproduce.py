"""Checks each claim of the recipe against the ablation runs: results/runs/*.json -> results/REPRODUCTION.md.

    python experiments/reproduce.py      # no training: the runs come from `python experiments/ablate.py --plan claims`

Every comparison is A − B paired by seed (the seeds both runs have), as mean ± 95% CI half-width (Student t,
n − 1 dof) with n pairs; the loaders and statistics are those of experiments/ablate.py. A claim's verdict:
"holds" when every measured CI lies above 0, "does not hold" when one lies below 0, "inconclusive (CI includes
0)" otherwise (n=1 has no CI), "not measured (missing runs: ...)" when nothing could be paired. The figure
results/reproduce_early_training.png backs the curriculum claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from ablate import (
    CLAIM_DATASETS,
    MAIN_METRIC,
    PER_TYPE_PREFIX,
    REPO,
    SEEDS,
    Run,
    Stat,
    datasets_of,
    format_stat,
    load_runs,
    mean_ci,
    mean_curve,
    metric_by_seed,
    paired_difference,
    paired_values,
    perturbation_types,
    pyplot,
    select,
)

SYNTHETIC = CLAIM_DATASETS[0]
EARLY_FRACTION = 1 / 3  # "early training": the first third of the steps
ZERO = 1e-9  # a CI bound within this of 0 counts as touching 0 (float noise of equal metrics)
CE_COUNTS = ("refresh/ce_removed_threshold", "refresh/ce_removed_margin", "refresh/ce_kept")
SINGLE_TOKEN = "single_token"


@dataclasses.dataclass(frozen=True)
class Measured:
    """One paired comparison on one dataset."""

    what: str  # "online_band − online_hardest, accuracy@1"
    dataset: str
    stat: Stat


@dataclasses.dataclass(frozen=True)
class Finding:
    """A claim, what was measured for it (the verdict's evidence), its verdict and an optional details section."""

    claim: str
    measured: list[Measured]
    verdict: str
    details: str = ""


# ----------------------------------------------------------------------------------------- verdicts


def classify(stat: Stat) -> str:
    """Where a difference's 95% CI lies: "CI > 0", "CI < 0", "CI includes 0", "no CI" (n=1) or "not measured"."""
    mean, half, n = stat
    if n == 0:
        return "not measured"
    if n == 1 or math.isnan(half):
        return "no CI"
    if mean - half > ZERO:
        return "CI > 0"
    if mean + half < -ZERO:
        return "CI < 0"
    return "CI includes 0"


def verdict(differences: Sequence[Stat], missing: Sequence[str] = ()) -> str:
    """The verdict on a claim whose comparisons ``differences`` (A − B, (mean, half, n)) should all be > 0."""
    kinds = [classify(d) for d in differences if d[2] > 0]
    if not kinds:
        return f"not measured (missing runs: {', '.join(missing) or 'all'})"
    note = f"; missing runs: {', '.join(missing)}" if missing else ""
    if "CI < 0" in kinds:
        return "does not hold" + note
    if all(k == "CI > 0" for k in kinds):
        return "holds" + note
    if all(k == "no CI" for k in kinds):
        return "inconclusive (n=1, no CI)" + note
    return "inconclusive (CI includes 0)" + note


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


def _datasets(runs: Sequence[Mapping], a: str, b: str) -> list[str]:
    """CLAIM_DATASETS, then any other dataset where both configs have runs."""
    both = {r["dataset"] for r in runs if r["config"] == a} & {r["dataset"] for r in runs if r["config"] == b}
    return list(dict.fromkeys([*CLAIM_DATASETS, *datasets_of({"dataset": d} for d in both)]))


def compare(runs: Sequence[Mapping], a: str, b: str, metric: str = MAIN_METRIC,
            datasets: Sequence[str] | None = None) -> list[Measured]:  # fmt: skip
    """a − b on ``metric``, paired by seed, per dataset (those with no pair give n=0)."""
    return [Measured(f"{a} − {b}, {metric}", d,
                     paired_difference(metric_by_seed(runs, d, a, metric), metric_by_seed(runs, d, b, metric)))
            for d in (datasets if datasets is not None else _datasets(runs, a, b))]  # fmt: skip


def _finding(claim: str, measured: list[Measured], missing: list[str], details: str = "") -> Finding:
    return Finding(claim, measured, verdict([m.stat for m in measured], missing), details)


def _value(stat: Stat) -> str:
    """"+0.012 ± 0.010 (n=3; CI > 0)"."""
    return f"{format_stat(stat, signed=True, mark_n1=False)} (n={stat[2]}; {classify(stat)})"


def _line(m: Measured) -> str:
    return f"{m.what}, **{m.dataset}**: {_value(m.stat)}"


def _diff_table(rows: Sequence[tuple[str, Sequence[Measured]]], columns: Sequence[str]) -> str:
    """Markdown table: one row per (label, measured per column)."""
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, measured in rows:
        lines.append(f"| {label} | " + " | ".join(_value(m.stat) for m in measured) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- claims


def semi_hard_beats_hardest(runs: Sequence[Mapping]) -> Finding:
    configs = ("online_band", "online_hardest")
    return _finding("Semi-hard negatives (a band below the positive) beat the hardest negatives",
                    compare(runs, *configs), missing_runs(runs, configs))  # fmt: skip


def online_beats_offline(runs: Sequence[Mapping]) -> Finding:
    measured = [m for a in ("online_band", "full") for m in compare(runs, a, "offline")]
    return _finding("Online mining (index refreshed every epoch) beats offline mining (mined once)",
                    measured, missing_runs(runs, ("online_band", "full", "offline")))  # fmt: skip


def combination_beats_parts(runs: Sequence[Mapping]) -> Finding:
    measured = [m for b in ("random", "offline", "online_hardest") for m in compare(runs, "full", b)]
    return _finding("The combination beats random negatives, purely offline mining and aggressively hard negatives",
                    measured, missing_runs(runs, ("full", "random", "offline", "online_hardest")))  # fmt: skip


def margin_helps_near_duplicates(runs: Sequence[Mapping]) -> Finding:
    """Margin − no margin on pairwise accuracy, and on (pairwise gain − accuracy@1 gain) per seed."""
    a, b = "online_band_margin", "online_band"
    pairwise = compare(runs, a, b, "pairwise_accuracy")
    accuracy = compare(runs, a, b, MAIN_METRIC)
    most = []
    for d in _datasets(runs, a, b):
        gain = {metric: paired_values(metric_by_seed(runs, d, a, metric), metric_by_seed(runs, d, b, metric))
                for metric in ("pairwise_accuracy", MAIN_METRIC)}  # fmt: skip
        most.append(Measured(f"({a} − {b}) on pairwise_accuracy minus on {MAIN_METRIC}", d,
                             paired_difference(gain["pairwise_accuracy"], gain[MAIN_METRIC])))  # fmt: skip
    types = perturbation_types(r["metrics"] for r in select(runs, SYNTHETIC, a) + select(runs, SYNTHETIC, b))
    details = ["Gains of the margin loss (online_band_margin − online_band), paired by seed:", "",
               _diff_table([(d, [pairwise[i], accuracy[i]]) for i, d in enumerate(_datasets(runs, a, b))],
                           ["pairwise_accuracy (near-duplicates)", MAIN_METRIC])]  # fmt: skip
    if types:
        per_type = [compare(runs, a, b, PER_TYPE_PREFIX + t, [SYNTHETIC])[0] for t in types]
        details += ["", f"On {SYNTHETIC}, per perturbation type (pairwise_accuracy/<type>):", "",
                    _diff_table([(SYNTHETIC, per_type)], types)]  # fmt: skip
    return _finding("The hardness-adaptive margin loss helps most on near-duplicates", pairwise + most,
                    missing_runs(runs, (a, b)), "\n".join(details))  # fmt: skip


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


def curriculum_prevents_collapse(runs: Sequence[Mapping], figure: str) -> Finding:
    curriculum, plain = "online_band_margin_curriculum", "online_band_margin"
    judged, shown = [], []
    for d in _datasets(runs, curriculum, plain):
        for indicator in COLLAPSE_INDICATORS:
            # ordered so that a positive difference favours the curriculum
            a, b = (curriculum, plain) if indicator.higher_is_better else (plain, curriculum)
            stat = paired_difference(_early_by_seed(runs, d, a, indicator.series),
                                     _early_by_seed(runs, d, b, indicator.series))  # fmt: skip
            (judged if indicator.judged else shown).append(Measured(f"{a} − {b}, {indicator.name}", d, stat))
    details = "\n".join([
        "Early training = the first third of the logged steps of each run (at least its first logged point), "
        "averaged per run, then paired by seed; each comparison is ordered so that a positive difference favours "
        "the curriculum. A collapsing encoder scores everything alike: in-batch accuracy falls, the hardest "
        "negative catches up with the positive, and the pool of nearest records mined at a refresh scores higher. "
        "The first two are measured on each run's own batch, whose explicit negatives the curriculum makes easier "
        "early on, so they favour it by construction; the refresh's pool score (nearest records over the whole "
        "corpus, whatever the negatives) does not, but is only logged after the first epoch (half of a 2-epoch "
        "run). The loss is shown, not judged (easier negatives lower it by construction):", "",
        *[f"- {_line(m)}" for m in shown], "",
        f"![early training]({figure})"])  # fmt: skip
    return _finding("The easy-to-hard curriculum prevents early collapse", judged,
                    missing_runs(runs, (curriculum, plain)), details)  # fmt: skip


def _ce_totals(run: Mapping) -> dict[str, float] | None:
    """Totals of the cross-encoder filter's counts over a run's refreshes; None when not logged."""
    curves = run.get("curves", {})
    if not any(k in curves for k in CE_COUNTS):
        return None
    return {k: sum(v for _, v in curves.get(k, [])) for k in CE_COUNTS}


def ce_filter_removes_false_negatives(runs: Sequence[Mapping]) -> Finding:
    a, b = "full", "online_band_margin_curriculum_hybrid"
    measured = compare(runs, a, b)
    lines = ["Pool entries the cross-encoder filter removed (summed over a run's refreshes, mean over seeds):", "",
             "| dataset | n | removed by threshold | removed by margin | kept | removed fraction |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    removed_any = []
    for d in datasets_of(r for r in runs if r["config"] == a):
        totals = [t for t in (_ce_totals(r) for r in select(runs, d, a)) if t is not None]
        if not totals:
            continue
        means = {k: mean_ci(t[k] for t in totals) for k in CE_COUNTS}
        removed = [t[CE_COUNTS[0]] + t[CE_COUNTS[1]] for t in totals]
        fraction = mean_ci(r / (r + t[CE_COUNTS[2]]) if r + t[CE_COUNTS[2]] else math.nan
                           for r, t in zip(removed, totals, strict=True))  # fmt: skip
        removed_any.append(sum(removed) > 0)
        lines.append(f"| {d} | {len(totals)} | " + " | ".join(format_stat(means[k], digits=1) for k in CE_COUNTS)
                     + f" | {format_stat(fraction)} |")  # fmt: skip
    if not removed_any:
        lines = ["No cross-encoder filter counts (refresh/ce_*) in the `full` runs' curves."]
    lines += ["", f"On {SYNTHETIC} every query has exactly one correct record (hnm_jax/data/synthetic.py), so every "
              "removal there is a true negative removed, not a false negative. Effect on accuracy: "
              f"`{a} − {b}` ({b} is the same recipe without the cross-encoder)."]  # fmt: skip
    found = _finding("Cross-encoder filtering removes false negatives (and that helps)", measured,
                     missing_runs(runs, (a, b)), "\n".join(lines))  # fmt: skip
    if removed_any and not any(removed_any):
        found = dataclasses.replace(found, verdict="does not hold (the cross-encoder removed nothing)")
    return found


def hybrid_helps_single_token(runs: Sequence[Mapping]) -> Finding:
    a, b = "online_band_margin_curriculum_hybrid", "online_band_margin_curriculum"
    measured = compare(runs, a, b, PER_TYPE_PREFIX + SINGLE_TOKEN, [SYNTHETIC])
    types = perturbation_types(r["metrics"] for r in select(runs, SYNTHETIC, a) + select(runs, SYNTHETIC, b))
    details = [f"`{a} − {b}` on {SYNTHETIC}, paired by seed (the hybrid switch also adds hybrid logits and a "
               "uniformity regularizer to the loss; see configs/ablations/__init__.py):", ""]  # fmt: skip
    metrics = [PER_TYPE_PREFIX + t for t in types] + ["pairwise_accuracy", MAIN_METRIC]
    details.append(_diff_table([(SYNTHETIC, [compare(runs, a, b, m, [SYNTHETIC])[0] for m in metrics])], metrics))
    return _finding("The hybrid lexical signal helps on single-token differences", measured,
                    missing_runs(runs, (a, b), [SYNTHETIC]), "\n".join(details))  # fmt: skip


def findings(runs: Sequence[Mapping], figure: str) -> list[Finding]:
    """Every claim, in the recipe's order."""
    return [semi_hard_beats_hardest(runs), online_beats_offline(runs), combination_beats_parts(runs),
            margin_helps_near_duplicates(runs), curriculum_prevents_collapse(runs, figure),
            ce_filter_removes_false_negatives(runs), hybrid_helps_single_token(runs)]  # fmt: skip


# ----------------------------------------------------------------------------------------- outputs


def plot_early_training(runs: Sequence[Mapping], out: Path) -> Path:
    """Each collapse indicator over training, mean over seeds, curriculum vs no curriculum; early window shaded."""
    plt = pyplot()
    a, b = "online_band_margin_curriculum", "online_band_margin"
    datasets = [d for d in _datasets(runs, a, b) if select(runs, d, a) or select(runs, d, b)] or [SYNTHETIC]
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


def reproduction_markdown(found: Sequence[Finding], command: str, num_runs: int) -> str:
    """results/REPRODUCTION.md: one row per claim, then a details section per claim."""
    out = [f"Made with: `{command}`", "", "# Reproduction of the recipe's claims", "",
           f"From results/runs/*.json ({num_runs} training runs; `python experiments/ablate.py --plan claims` makes "
           "the runs the claims need). Each comparison is A − B paired by seed: mean ± 95% CI half-width (Student t, "
           "n − 1 dof), n = number of seed pairs. Verdict: *holds* when every measured CI lies above 0, *does not "
           "hold* when one lies below 0, *inconclusive* otherwise; *not measured* when nothing could be paired. "
           "Accuracy is test accuracy@1 over the whole corpus.", "",
           "| claim | measured (A − B) | verdict |", "|---|---|---|"]  # fmt: skip
    for f in found:
        measured = "<br>".join(_line(m) for m in f.measured if m.stat[2] > 0) or "-"
        short = f.verdict.split("; missing runs")[0] + (" (some runs missing, see below)" if "; missing" in f.verdict
                                                       else "")  # fmt: skip
        out.append(f"| {f.claim} | {measured} | {short} |")
    out += ["", "## Details", ""]
    for f in found:
        out += [f"### {f.claim}", "", f"Verdict: {f.verdict}.", "", *[f"- {_line(m)}" for m in f.measured], ""]
        if f.details:
            out += [f.details, ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=str(REPO / "results" / "runs"))
    parser.add_argument("--results", default=str(REPO / "results"), help="where REPRODUCTION.md and its figure go")
    args = parser.parse_args(argv)
    command = " ".join(["python experiments/reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    runs = load_runs(Path(args.runs_dir))
    figure = plot_early_training(runs, results / "reproduce_early_training.png")
    found = findings(runs, figure.name)
    out = results / "REPRODUCTION.md"
    out.write_text(reproduction_markdown(found, command, len(runs)))
    for f in found:
        print(f"{f.verdict:<40} {f.claim}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
