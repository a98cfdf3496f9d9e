"""Tests for experiments/ablate.py: statistics, run files, plans, resumability and the report (no training)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fake_curves, fake_metrics, load_experiment, per_query_metrics, write_run

ablate = load_experiment("ablate")

T_2 = 4.302653  # t(0.975, 2)
T_1 = 12.706205  # t(0.975, 1)


ACC = {"in_batch": (0.80, 0.82, 0.81), "offline": (0.83, 0.84, 0.82), "full": (0.86, 0.88, 0.87),
       "online_band": (0.85, 0.86, 0.84), "online_band_margin_curriculum": (0.85, 0.87, 0.86)}  # fmt: skip


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Fake run JSONs: 5 configs x 3 seeds on abt_buy and synthetic, zero-shot files and a stray retriever file."""
    runs = tmp_path / "runs"
    for dataset in ("abt_buy", "synthetic"):
        for config, accs in ACC.items():
            for seed, acc in enumerate(accs):
                band = config in ("online_band", "online_band_margin_curriculum", "full")
                write_run(runs, config, dataset, seed, acc, curves=fake_curves(0.01 * seed, band=band))
        zero_shot = {"config": "zero_shot", "dataset": dataset, "metrics": fake_metrics(0.7, dataset == "synthetic")}
        ablate.write_json(runs / f"zero_shot-{dataset}.json", zero_shot)
    (runs / "retriever_dense-full-abt_buy-0.json").write_text(json.dumps(fake_metrics(0.5)))
    return runs


# ----------------------------------------------------------------------------------------- statistics


def test_mean_ci_by_hand():
    mean, half, n = ablate.mean_ci([1.0, 2.0, 3.0])  # sd 1
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(T_2 / math.sqrt(3), abs=1e-5)


def test_mean_ci_without_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # `from scipy import stats` raises ImportError
    assert ablate.t_quantile(2) == T_2
    assert ablate.t_quantile(50) == ablate.T_975[10]  # past the table: the largest dof below (conservative)
    assert ablate.mean_ci([1.0, 2.0, 3.0])[1] == pytest.approx(T_2 / math.sqrt(3), abs=1e-6)


def test_mean_ci_small_n_and_format():
    assert ablate.mean_ci([0.5])[::2] == (0.5, 1) and math.isnan(ablate.mean_ci([0.5])[1])
    assert ablate.mean_ci([])[2] == 0 and ablate.mean_ci([math.nan, 1.0])[2] == 1
    assert ablate.format_stat((0.8976, 0.0123, 3)) == "0.898 ± 0.012"
    assert ablate.format_stat((0.8976, math.nan, 1)) == "0.898 (n=1)"
    assert ablate.format_stat((0.01, 0.02, 2), signed=True) == "+0.010 ± 0.020"
    assert ablate.format_stat((math.nan, math.nan, 0)) == "-"


def test_paired_difference_pairs_by_seed_and_ignores_unpaired():
    a = {0: 0.9, 1: 0.8, 2: 0.7}
    b = {0: 0.8, 1: 0.8, 5: 0.1}
    assert ablate.paired_values(a, b) == pytest.approx({0: 0.1, 1: 0.0})
    mean, half, n = ablate.paired_difference(a, b)
    assert n == 2 and mean == pytest.approx(0.05)
    assert half == pytest.approx(T_1 * math.sqrt(0.005) / math.sqrt(2), abs=1e-6)  # sd of [0.1, 0] = sqrt(0.005)
    assert ablate.paired_difference(a, {7: 1.0})[2] == 0


# ----------------------------------------------------------------------------------------- run files


def test_read_curves(tmp_path):
    lines = [{"step": 0, "refresh/total_s": 3.0, "refresh/pool_dense_scores": {"bins": [1, 2]}},
             {"step": 10, "train/loss": 0.5, "train/epoch": 0.5, "eval_test/accuracy@1": 0.9},
             {"step": 10, "train/loss": 0.4},  # a resumed run logs step 10 again: the last value wins
             {"step": 20, "train/loss": 0.3, "train/flag": True}]  # fmt: skip
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 30, "train/lo')  # truncated line
    assert ablate.read_curves(path) == {"refresh/total_s": [[0, 3.0]], "train/epoch": [[10, 0.5]],
                                        "train/loss": [[10, 0.4], [20, 0.3]]}  # fmt: skip


def test_load_runs_skips_other_files_and_backfills_curves(runs_dir, tmp_path):
    runs = ablate.load_runs(runs_dir)
    assert len(runs) == 2 * 5 * 3 and {r["config"] for r in runs} == set(ACC)
    assert set(ablate.load_zero_shot(runs_dir)) == {"abt_buy", "synthetic"}
    write_run(runs_dir, "random", "abt_buy", 0, 0.8)  # no curves
    workdirs = tmp_path / "workdirs"
    (workdirs / "random-abt_buy-0").mkdir(parents=True)
    (workdirs / "random-abt_buy-0" / "metrics.jsonl").write_text('{"step": 10, "train/loss": 0.25}\n')
    assert ablate.backfill_curves(runs_dir, workdirs) == ["random-abt_buy-0.json"]
    backfilled = json.loads((runs_dir / "random-abt_buy-0.json").read_text())
    assert backfilled["curves"] == {"train/loss": [[10, 0.25]]} and backfilled["metrics"]["accuracy@1"] == 0.8
    assert ablate.backfill_curves(runs_dir, workdirs) == []


# ----------------------------------------------------------------------------------------- plans


def test_plans():
    assert set(ablate.PLANS["default"]) == {(d, c) for d in ("abt_buy", "synthetic") for c in ("full", "in_batch",
                                                                                              "offline")}  # fmt: skip
    assert {c for _, c in ablate.PLANS["claims"]} == set(ablate.CLAIM_CONFIGS)
    assert set(ablate.PLANS["default"]) | set(ablate.PLANS["claims"]) <= set(ablate.PLANS["all"])
    assert ("walmart_amazon", "full") in ablate.PLANS["all"]
    assert ablate.parse_runs(["abt_buy:in_batch,full", "synthetic:full", "abt_buy:full"]) == [
        ("abt_buy", "in_batch"), ("abt_buy", "full"), ("synthetic", "full")]
    assert ablate.parse_runs(["abt_buy,x:a,b"]) == [("abt_buy", "a"), ("abt_buy", "b"), ("x", "a"), ("x", "b")]
    runs = ablate.expand([("abt_buy", "a"), ("x", "b")], [0, 1])
    assert [r.name for r in runs] == ["a-abt_buy-0", "b-x-0", "a-abt_buy-1", "b-x-1"]
    assert ablate.config_path("full").name == "full.py" and ablate.config_path("offline").parent.name == "ablations"


def test_estimates_use_measured_runs_else_the_defaults():
    finished = [{"config": "offline", "dataset": "abt_buy", "seed": s, "wall_s": w, "metrics": {}}
                for s, w in ((0, 100.0), (1, 200.0))]  # fmt: skip
    finished.append({"config": "offline", "dataset": "abt_buy", "seed": 2, "wall_s": 5.0, "resumed": True,
                     "metrics": {}})  # fmt: skip
    assert ablate.estimate_wall_s(ablate.Run("offline", "abt_buy", 3), finished) == (150.0, True)
    seconds, measured = ablate.estimate_wall_s(ablate.Run("full", "synthetic", 0), finished)
    assert not measured and seconds == ablate.DEFAULT_WALL_S["synthetic"] * ablate.CONFIG_COST["full"]
    text, total = ablate.describe_plan("p", [("abt_buy", "offline")], [0, 1, 2, 3], finished, ["abt_buy"])
    assert total == 150.0 + ablate.ZERO_SHOT_WALL_S and "3 finished, 1 to run" in text


def test_synthetic_ablation_size_and_builder_config():
    from hnm_jax.data import synthetic, tfds_builders

    bench = synthetic.generate(synthetic.SIZES[ablate.SYNTHETIC_SIZE])
    assert 1000 <= len(bench.corpus) <= 3000 and len(bench.split_queries("train")) == 600
    assert ablate.SYNTHETIC_SIZE in {c.name for c in tfds_builders.SyntheticNearDup.BUILDER_CONFIGS}


def test_synthetic_dup_is_the_small_duplicate_size():
    """Claim 4 runs on synthetic_dup: SIZES["ablation_dup"] (2,350 records, fits a 2-core CPU); the 22.5k-record
    power_dup stays reachable as synthetic_power_dup."""
    from hnm_jax.data import synthetic, tfds_builders

    assert ablate.synthetic_size("synthetic_dup") == "ablation_dup" and ablate.is_synthetic("synthetic_dup")
    assert ablate.synthetic_size("synthetic_power_dup") == "power_dup"
    assert synthetic.SIZES["ablation_dup"].duplicate_share > 0
    assert "ablation_dup" in {c.name for c in tfds_builders.SyntheticNearDup.BUILDER_CONFIGS}
    assert ablate.DEFAULT_WALL_S["synthetic_dup"] == ablate.DEFAULT_WALL_S[ablate.SYNTHETIC]


def test_prepare_synthetic_exports_beir_with_perturbations(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate, "SYNTHETIC_SIZE", "tiny")  # same path as "ablation", 300 records
    root = ablate.prepare_synthetic(tmp_path)
    assert root == tmp_path.resolve() / "datasets" / "synthetic_tiny"
    assert {p.name for p in root.iterdir()} >= {"corpus.jsonl", "queries.jsonl", "qrels", "perturbations.tsv"}
    assert (tmp_path / "tfds" / "synthetic_near_dup" / "tiny").is_dir()
    assert ablate.prepare_synthetic(tmp_path) == root  # done once
    command = ablate.train_command(ablate.Run("full", "synthetic", 1), tmp_path)
    assert f"--config.data.path={root}" in command and "--config.seed=1" in command


# ----------------------------------------------------------------------------------------- running


def test_a_plan_whose_runs_exist_runs_nothing(runs_dir, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError(f"subprocess called: {args}")

    monkeypatch.setattr(subprocess, "run", no_training)
    monkeypatch.setattr(ablate, "prepare_synthetic", no_training)
    runs = ablate.expand([(d, c) for d in ("abt_buy", "synthetic") for c in ("full", "in_batch")], [0, 1, 2])
    assert ablate.run_suite(runs, tmp_path / "workdirs", runs_dir) == []


def test_missing_runs_are_trained_and_recorded(runs_dir, tmp_path, monkeypatch):
    calls = []

    def fake_run(command, check):
        calls.append(command)
        if command[3] == "eval":  # zero-shot: writes --output
            Path(command[command.index("--output") + 1]).write_text(json.dumps(fake_metrics(0.6)))
            return
        workdir = Path(command[command.index("--workdir") + 1])
        workdir.mkdir(parents=True)
        (workdir / "eval_test.json").write_text(json.dumps(fake_metrics(0.9)))
        (workdir / "metrics.jsonl").write_text('{"step": 10, "train/loss": 0.5, "train/band_lo": 0.3}\n')

    monkeypatch.setattr(subprocess, "run", fake_run)
    runs = ablate.expand([("abt_buy", "full"), ("amazon_google", "in_batch")], [0, 1])
    assert ablate.run_suite(runs, tmp_path / "workdirs", runs_dir) == []
    assert [c[3] for c in calls] == ["eval", "train", "train"]  # zero-shot amazon_google, then the 2 missing runs
    assert "--config.data.name=amazon_google" in calls[1] and str(ablate.config_path("in_batch")) in calls[1]
    result = json.loads((runs_dir / "in_batch-amazon_google-1.json").read_text())
    assert result["curves"] == {"train/band_lo": [[10, 0.3]], "train/loss": [[10, 0.5]]}
    assert result["metrics"]["accuracy@1"] == 0.9 and result["resumed"] is False
    assert json.loads((runs_dir / "zero_shot-amazon_google.json").read_text())["metrics"]["accuracy@1"] == 0.6
    assert not list(runs_dir.glob("*.tmp")) and not list(runs_dir.glob("*.metrics.json"))


# ----------------------------------------------------------------------------------------- report


def test_report_tables_and_plots(runs_dir, tmp_path):
    write_run(runs_dir, "random", "abt_buy", 0, 0.8,
              metrics=fake_metrics(0.8) | {"stages": {"retrieve": {"accuracy@1": 0.7}, "rerank": {}}})  # fmt: skip
    out = ablate.write_report(runs_dir, tmp_path / "results", "python experiments/ablate.py --report")
    text = out.read_text()
    assert "`python experiments/ablate.py --report`" in text
    abt = text[text.index("## abt_buy"):text.index("## synthetic")]
    rows = [line for line in abt.splitlines() if line.startswith("| ") and not line.startswith("| config")]
    assert rows[0].startswith("| zero_shot | - | 0.700 |")
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == ["in_batch", "random", "offline", "online_band",
                                                          "online_band_margin_curriculum", "full"]  # fmt: skip
    in_batch = ablate.mean_ci(ACC["in_batch"])
    assert f"| in_batch | 3 | {ablate.format_stat(in_batch)} |" in abt and "| random | 1 | 0.800 (n=1) |" in abt
    assert "| 2.0 min |" in abt  # mean wall of seeds 0..2: 60, 120, 180 s
    section = text[text.index("## full vs baselines"):]
    diff = ablate.mean_ci([f - b for f, b in zip(ACC["full"], ACC["in_batch"], strict=True)])
    assert f"| abt_buy | {ablate.format_stat(diff, signed=True)} | 3 |" in section
    per_type = text[text.index("## synthetic: pairwise accuracy per perturbation type"):]
    assert "| config | n | format | semantic | single_token |" in per_type
    assert "## abt_buy: pairwise" not in text
    for name in ("ablations_abt_buy.png", "ablations_synthetic.png", "ablations_curriculum.png"):
        assert (tmp_path / "results" / name).stat().st_size > 1000
    assert ablate.curriculum_dataset(ablate.load_runs(runs_dir)) == "synthetic"


def test_report_paired_section_aligns_queries_and_pools_seeds(tmp_path):
    runs = tmp_path / "runs"
    full = [{"q1": 1, "q2": 1, "q3": 1, "q4": 2}, {"q1": 1, "q2": 1, "q3": 11, "q4": 1}]
    # other query order, an extra query q5 (dropped: full lacks it)
    in_batch = [{"q4": 1, "q3": 3, "q2": 1, "q1": 2, "q5": 1}, {"q1": 2, "q2": 1, "q3": 1, "q4": 0}]
    pairs = {"full": {("q1", "d9"): 1, ("q1", "d8"): 1, ("q2", "d7"): 0},
             "in_batch": {("q2", "d7"): 0, ("q1", "d9"): 0, ("q1", "d8"): 1}}  # fmt: skip
    for seed in (0, 1):
        for config, ranks in (("full", full), ("in_batch", in_batch)):
            write_run(runs, config, "abt_buy", seed, 0.8,
                      metrics=per_query_metrics(0.8, ranks[seed], pairs[config] if seed == 0 else None))
    write_run(runs, "offline", "abt_buy", 0, 0.8)  # an older run JSON: no per_query
    assert json.loads((runs / "full-abt_buy-0.json").read_text())["metrics"]["per_pair"]["doc_ids"] == ["d9", "d8",
                                                                                                        "d7"]
    results = tmp_path / "results"
    assert ablate.main(["--report", "--runs-dir", str(runs), "--results", str(results),
                        "--workdirs", str(tmp_path / "work")]) == 0  # fmt: skip
    text = (results / "ablations.md").read_text()
    section = text[text.index("## Paired comparisons (per query, pooled over seeds)"):]
    section = section[section.index("### abt_buy"):]
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in section.splitlines()
            if line.startswith("| full")}  # fmt: skip
    assert set(rows) == {("full − in_batch", m) for m in ("accuracy@1", "MRR@10", "pairwise acc.")}
    # accuracy@1 over (seed, query): full 1 1 1 0 | 1 1 0 1 = 6/8; in_batch 0 1 0 1 | 0 1 1 0 = 4/8
    # discordant: full only (s0 q1, s0 q3, s1 q1, s1 q4) = 4, in_batch only (s0 q4, s1 q3) = 2 -> p = 44/64
    # per-query sums of differences 2, 0, 0, 0 (2 items each): a bootstrap resample of the 4 queries draws q1 c ~
    # Bin(4, 1/4) times, effect* = 2c / 8, so SD = sqrt(4 x 1/4 x 3/4) / 4 and MDE = (1.6449 + 0.8416) x SD = 0.538
    acc = rows[("full − in_batch", "accuracy@1")]
    assert "| 0 1 | 8 (4) | 0.750 | 0.500 | +0.250 [+0.000, +0.750] | 0.688 (4 : 2) | " in acc
    mde = (1.6448536 + 0.8416212) * math.sqrt(4 * 0.25 * 0.75) / 4
    cells = [c.strip() for c in acc.split("|")]
    assert float(cells[-3]) == pytest.approx(mde, rel=0.03)
    # the sign flip of q1 alone: p = 1/2 -> not holds; the CI reaches +0.750 -> inconclusive
    assert cells[-2] == f"inconclusive (MDE {100 * float(cells[-3]):.1f} points)"
    # MRR@10: full (1 + 1 + 1 + 1/2 + 1 + 1 + 0 + 1) / 8; in_batch (1/2 + 1 + 1/3 + 1 + 1/2 + 1 + 1 + 0) / 8
    mrr_full, mrr_in_batch = 6.5 / 8, (3 + 1 / 3 + 2) / 8
    assert (f"| 0 1 | 8 (4) | {mrr_full:.3f} | {mrr_in_batch:.3f} | {mrr_full - mrr_in_batch:+.3f} ["
            in rows[("full − in_batch", "MRR@10")])  # fmt: skip
    assert "| - |" in rows[("full − in_batch", "MRR@10")]  # no McNemar for reciprocal ranks
    # pairwise: seed 0 only (seed 1 has no per_pair), pairs aligned by (query, doc): 2/3 vs 1/3
    assert "| 0 | 3 (2) | 0.667 | 0.333 | +0.333 [" in rows[("full − in_batch", "pairwise acc.")]
    assert "| 1.000 (1 : 0) |" in rows[("full − in_batch", "pairwise acc.")]
    assert "Skipped (run JSON without `per_query`, older than per-query ranks): offline-abt_buy-0." in section
    assert "offline" not in "".join(rows.values())  # offline has no per-item data: no row


def test_paired_items_use_the_rerank_stage_and_shared_seeds():
    metrics = per_query_metrics(0.8, {"a": 3, "b": 1}) | {"retriever": "dense"}
    metrics["per_query"]["rank_rerank"] = [1, 2]
    assert ablate.deployed_ranks(metrics) == {"a": 1, "b": 2}
    assert ablate.deployed_ranks(fake_metrics(0.8)) is None
    runs = [{"config": c, "dataset": "d", "seed": s, "metrics": per_query_metrics(0.8, {"a": r, "b": 1})}
            for c, s, r in (("x", 0, 1), ("x", 1, 2), ("y", 1, 3), ("y", 2, 1))]  # fmt: skip
    items = ablate.paired_items(runs, "d", "x", "y", "mrr@10")
    assert items.seeds == [1] and items.a.tolist() == [0.5, 1.0] and items.b.tolist() == [1 / 3, 1.0]
    assert items.clusters.tolist() == ["a", "b"]
    assert ablate.comparison_pairs(["in_batch", "offline", "online_band", "full"]) == [
        ("full", "in_batch"), ("full", "offline"), ("full", "online_band"), ("offline", "in_batch"),
        ("online_band", "in_batch"), ("online_band", "offline")]  # fmt: skip


# ----------------------------------------------------------------------------------------- the tuned suite


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections loading config files
def test_every_grid_has_the_same_budget_and_every_point_validates():
    from absl import flags
    from ml_collections import config_flags

    from hnm_jax.config import spec_from_config

    assert set(ablate.TUNED_CONFIGS) <= set(ablate.GRIDS)
    assert {len(ablate.grid_points(c, d)) for c in ablate.GRIDS for d in ablate.TUNE_DATASETS} == {8}
    assert {p["train.num_epochs"] for p in ablate.grid_points("full", "synthetic_power")} == {1, 2}
    for config in ablate.GRIDS:
        for point in ablate.grid_points(config, "abt_buy"):
            overrides = ablate.arm_overrides(config, point, "dev")
            command = ablate.train_command(ablate.Run(config, "abt_buy", 0), Path("/w"), overrides)
            argv = command[command.index("--config"):command.index("--workdir")]
            flag_values = flags.FlagValues()
            config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                            sys_argv=["hnm train", *argv])  # as hnm_jax/main.py
            flag_values(["hnm train", *argv])
            parsed = flag_values.config
            for key, value in overrides.items():
                section, name = key.split(".")
                assert parsed[section][name] == value, (config, key)
            assert parsed.retriever.mode == "hybrid"  # every arm deploys the same pipeline, no exception
            spec = spec_from_config(parsed)  # raises on a bad value
            assert spec.mining_retriever.mode == ("dense" if config == "online_band_dense_mining" else "hybrid")
            assert parsed.eval.search == "exact" and parsed.data.eval_split == "dev"
    assert ablate.point_tag({"train.learning_rate": 2e-5, "train.num_epochs": 2, "band.lo": -0.5}) == (
        "learning_rate2e-05_num_epochs2_lo-0.5")


class FakeRunner:
    """Stands in for run_training: records each call and writes the run JSON as run_training would."""

    def __init__(self, dev_metrics=None, wall_s=None, fail=()):
        self.calls, self.dev_metrics, self.wall_s, self.fail = [], dev_metrics, wall_s, fail

    def __call__(self, run, workdirs, runs_dir, overrides, split, workdir, out, extra=None):
        self.calls.append((run, dict(overrides), split, Path(workdir), Path(out), extra))
        tag = ablate.point_tag(ablate.point_of(run.config, overrides))
        if tag in self.fail:
            raise subprocess.CalledProcessError(1, "hnm train")
        metrics = self.dev_metrics(tag) if split == "dev" and self.dev_metrics else fake_metrics(0.8)
        wall = self.wall_s(run.config, split, overrides) if self.wall_s else 60.0
        result = {"config": run.config, "dataset": run.dataset, "seed": run.seed, "wall_s": wall, "resumed": False,
                  "split": split, "overrides": dict(overrides), "metrics": metrics} | (extra or {})  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        ablate.write_json(out, result)
        return result


def test_tuning_picks_the_best_dev_point_and_runs_test_once(tmp_path):
    config = "online_band_dense_mining"  # chosen on its evaluation's hybrid figures, not the top-level ones
    points = ablate.grid_points(config, "abt_buy")
    tags = [ablate.point_tag(p) for p in points]
    best, tied = tags[5], tags[2]  # same hybrid accuracy@1, best has the higher MRR@10

    def dev_metrics(tag):
        acc, mrr = (0.85, 0.90) if tag == best else (0.85, 0.89) if tag == tied else (0.80, 0.95)
        top = 0.99 if tag == tags[0] else 0.5  # the dense (top-level) figures would pick tags[0]
        return per_query_metrics(top, {"q1": 1}) | {"retrievers": {"hybrid": {"accuracy@1": acc, "mrr@10": mrr}}}

    runner, runs_dir, workdirs = FakeRunner(dev_metrics), tmp_path / "tuned", tmp_path / "w"
    arm = ablate.tune_arm(config, "abt_buy", [0, 1], workdirs, runs_dir, runner)
    assert arm.chosen == points[5] and arm.failed == []
    dev, test = runner.calls[:8], runner.calls[8:]
    assert [c[2] for c in dev] == ["dev"] * 8 and [c[2] for c in test] == ["test", "test"]
    for (run, overrides, _, workdir, out, _), tag in zip(dev, tags, strict=True):
        assert run == ablate.Run(config, "abt_buy", ablate.TUNE_SEED)
        assert overrides["data.eval_split"] == "dev" and overrides["retriever.mode"] == "hybrid"
        assert overrides["eval.search"] == "exact" and overrides["train.log_every"] == 1
        assert out == runs_dir / "dev" / f"{config}-abt_buy-0-{tag}.json" and workdir.parent == workdirs / "tune"
    for seed, (run, overrides, _, workdir, out, extra) in enumerate(test):
        assert run.seed == seed and overrides == ablate.arm_overrides(config, points[5], "test")
        assert out == runs_dir / f"{config}-abt_buy-{seed}.json" and workdir.name == f"{run.name}-{best}"
        assert extra["tuning"]["chosen"] == best and extra["tuning"]["dev_accuracy@1"] == 0.85
    assert json.loads((runs_dir / f"{config}-abt_buy-1.json").read_text())["tuning"]["grid_points"] == 8
    dev_json = json.loads((runs_dir / "dev" / f"{config}-abt_buy-0-{best}.json").read_text())
    assert "per_query" not in dev_json["metrics"] and dev_json["metrics"]["retrievers"]["hybrid"]["mrr@10"] == 0.90
    # resumable: nothing is run again
    again = FakeRunner(dev_metrics)
    assert ablate.tune_arm(config, "abt_buy", [0, 1], workdirs, runs_dir, again).chosen == points[5]
    assert again.calls == []
    # the report: the chosen point, its dev figures, the grid range
    out = ablate.write_report(runs_dir, tmp_path / "results", "python experiments/ablate.py --tune --report")
    text = out.read_text()
    assert f"| abt_buy | {config} | 8 / 8 | `{best}` | 0.850 / 0.900 | 0.800-0.850 | 0 1 |" in text


def test_a_failed_grid_point_chooses_nothing(tmp_path):
    tags = [ablate.point_tag(p) for p in ablate.grid_points("in_batch", "abt_buy")]
    runner = FakeRunner(fail={tags[3]})
    arm = ablate.tune_arm("in_batch", "abt_buy", [0], tmp_path / "w", tmp_path / "tuned", runner)
    assert arm.chosen is None and arm.failed == [f"in_batch-abt_buy-0-{tags[3]}"]
    assert [c[2] for c in runner.calls] == ["dev"] * 8  # no test run on a partial grid


def test_equal_wallclock_epochs_by_hand(tmp_path):
    # in_batch: 200 s for 2 epochs, 320 s for 4 -> 60 s an epoch + 80 s; full takes 800 s -> (800 - 80) / 60 = 12
    assert ablate.epoch_cost([(2, 200.0), (4, 320.0), (2, 200.0), (4, 320.0)]) == pytest.approx((80.0, 60.0))
    assert ablate.equal_wallclock_epochs(800.0, 80.0, 60.0) == 12
    assert ablate.equal_wallclock_epochs(799.0, 80.0, 60.0) == 11 and ablate.equal_wallclock_epochs(50.0, 80, 60) == 1
    assert ablate.epoch_cost([(2, 200.0), (2, 220.0)]) == (0.0, 105.0)  # one epochs value: wall / epochs
    assert ablate.epoch_cost([(2, 300.0), (4, 280.0)]) == (0.0, 110.0)  # slope <= 0 (noise): mean(150, 70)

    def wall_s(config, split, overrides):
        return 800.0 if config == "full" else 80.0 + 60.0 * overrides["train.num_epochs"]

    runner, runs_dir = FakeRunner(wall_s=wall_s), tmp_path / "tuned"
    plan = [("abt_buy", "in_batch"), ("abt_buy", "full")]
    assert ablate.tune_suite(plan, [0], tmp_path / "w", runs_dir, runner) == []
    run, overrides, split, _, out, extra = runner.calls[-1]
    assert len(runner.calls) == 8 + 1 + 8 + 1 + 1 and run == ablate.Run("in_batch", "abt_buy", 0) and split == "test"
    assert overrides["train.num_epochs"] == 12 and extra["wallclock"]["target_s"] == 800.0
    assert out == runs_dir / "in_batch_wallclock_full-abt_buy-0.json"
    result = json.loads(out.read_text())
    assert result["config"] == "in_batch_wallclock_full" and result["recipe"] == "in_batch"
    assert ablate.tune_suite(plan, [0], tmp_path / "w", runs_dir, FakeRunner(wall_s=wall_s)) == []  # all done
    text = ablate.write_report(runs_dir, tmp_path / "results", "x").read_text()
    assert "- in_batch_wallclock_full-abt_buy-0: 12 epochs for full's 13.3 min (overhead 80 s + 60 s an epoch" in text


def test_tune_plan_estimate_and_dry_run(tmp_path, capsys):
    # in_batch on abt_buy (cpu): 90 + 0.4 x 210 x epochs; 4 points at 2 epochs, 4 at 4, 3 test runs at 3
    text, seconds = ablate.describe_tune_plan([("abt_buy", "in_batch")], [0, 1, 2], tmp_path)
    assert seconds == pytest.approx(4 * 258.0 + 4 * 426.0 + 3 * 342.0)
    assert "abt_buy         in_batch" in text
    runs_dir = tmp_path / "tuned"
    assert ablate.main(["--tune", "--dry-run", "--runs", "abt_buy:in_batch,full", "--runs-dir", str(runs_dir)]) == 0
    assert "in_batch_wallclock_full" in capsys.readouterr().out and not list(runs_dir.iterdir())
    with pytest.raises(SystemExit, match="no grid for online_band_hybrid_retriever"):
        ablate.tune_suite([("abt_buy", "online_band_hybrid_retriever")], [0], tmp_path, tmp_path, FakeRunner())


def test_saturation_step_on_a_hand_curve():
    curves = {"train/in_batch_accuracy": [[1, 0.5], [2, 0.9], [3, 0.96], [4, 0.93], [30, 0.99]],
              "train/loss": [[1, 1.0], [30, 0.1]]}  # fmt: skip
    run = {"config": "in_batch", "dataset": "abt_buy", "seed": 0, "metrics": {}, "curves": curves}
    assert ablate.saturation(run) == ablate.Saturation(3, 30, False, 0.99)
    late = {**run, "seed": 1, "curves": {"train/in_batch_accuracy": [[10, 0.98], [36, 0.99]]}}
    assert ablate.saturation(late) == ablate.Saturation(10, 36, True, 0.99)
    never = {**run, "seed": 2, "curves": {"train/in_batch_accuracy": [[10, 0.9], [40, 0.95]]}}  # 0.95 is not above
    assert ablate.saturation(never) == ablate.Saturation(None, 40, False, 0.95)
    assert ablate.saturation({**run, "curves": {}}) is None
    lines = ablate.saturation_section([run, late, never])
    assert "Saturated within the first 10% of the run: 1 of 3 runs." in lines  # step 3 of 30
    assert "| in_batch-abt_buy-0 | 3 | 30 | 0.10 |" in lines
    assert "| in_batch-abt_buy-1 | 10 (first log) | 36 | 0.28 |" in lines
    assert "| in_batch-abt_buy-2 | never (max 0.950) | 40 | - |" in lines
    dev = {**run, "overrides": ablate.arm_overrides("in_batch", {"train.learning_rate": 1e-5}, "dev")}
    assert "| in_batch-abt_buy-0 (dev: learning_rate1e-05) | 3 | 30 | 0.10 |" in ablate.saturation_section([], [dev])


def test_contrast_items_weights_several_configs():
    runs = [{"config": c, "dataset": "d", "seed": 0, "metrics": per_query_metrics(0.8, ranks)}
            for c, ranks in (("m", {"a": 1, "b": 1, "c": 2}), ("band", {"a": 1, "b": 2, "c": 2}),
                             ("dense", {"a": 2, "b": 2, "c": 1}))]  # fmt: skip
    items = ablate.contrast_items(runs, "d", {"m": 1, "band": -2, "dense": 1}, "accuracy@1", "hybrid")
    # (m - band) - (band - dense) per query: a: 1 - 2 + 0, b: 1 - 0 + 0, c: 0 - 0 + 1
    assert (items.a - items.b).tolist() == [-1.0, 1.0, 1.0] and items.seeds == [0]
    dense = ablate.paired_items(runs, "d", "m", "band", "accuracy@1", retriever="dense")  # the decoy: all rank 5
    assert dense.a.tolist() == [0.0, 0.0, 0.0]


def test_slim_copy_keeps_what_resuming_needs(tmp_path):
    runs = tmp_path / "tuned"
    full = {"config": "x", "dataset": "d", "seed": 0, "wall_s": 9.0, "overrides": {"train.num_epochs": 2},
            "metrics": per_query_metrics(0.8, {"q1": 1}, {("q1", "d1"): 1}), "curves": fake_curves()}  # fmt: skip
    runs.mkdir()
    ablate.write_json(runs / "x-d-0.json", full)
    (runs / "dev").mkdir()
    ablate.write_json(runs / "dev" / "x-d-0-tag.json", full)
    assert ablate.main(["--runs-dir", str(runs), "--slim-copy", str(tmp_path / "slim")]) == 0
    for name in ("x-d-0.json", "dev/x-d-0-tag.json"):
        copy = json.loads((tmp_path / "slim" / name).read_text())
        assert copy["curves"] == {} and copy["metrics"] == fake_metrics(0.8) | {"retriever": "hybrid"}
        assert ablate.finished_result(tmp_path / "slim" / name, {"train.num_epochs": 2}) == copy
