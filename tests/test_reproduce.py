"""Tests for experiments/reproduce.py: the verdict logic and the report on fake run JSONs (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_ablate import _load, fake_curves, write_run

reproduce = _load("reproduce")

NAN = math.nan


@pytest.mark.parametrize(
    "differences, missing, expected",
    [
        ([(0.02, 0.01, 3)], [], "holds"),
        ([(0.02, 0.01, 3), (0.05, 0.01, 2)], [], "holds"),
        ([(0.02, 0.01, 3), (-0.03, 0.01, 3)], [], "does not hold"),
        ([(0.02, 0.03, 3)], [], "inconclusive (CI includes 0)"),
        ([(0.02, 0.02, 3)], [], "inconclusive (CI includes 0)"),  # CI touching 0 is not above it
        ([(0.02, 0.01, 3), (0.01, NAN, 1)], [], "inconclusive (CI includes 0)"),
        ([(0.02, NAN, 1)], [], "inconclusive (n=1, no CI)"),
        ([(NAN, NAN, 0)], ["full-abt_buy-{0,1,2}"], "not measured (missing runs: full-abt_buy-{0,1,2})"),
        ([], ["a-x-0"], "not measured (missing runs: a-x-0)"),
        ([(0.02, 0.01, 3), (NAN, NAN, 0)], ["b-synthetic-{0,1,2}"], "holds; missing runs: b-synthetic-{0,1,2}"),
    ],
)
def test_verdict(differences, missing, expected):
    assert reproduce.verdict(differences, missing) == expected


def test_classify_and_missing_runs():
    assert [reproduce.classify(s) for s in [(0.1, 0.05, 3), (-0.1, 0.05, 3), (0.0, 0.1, 3), (0.1, NAN, 1),
                                            (NAN, NAN, 0)]] == ["CI > 0", "CI < 0", "CI includes 0", "no CI",
                                                                "not measured"]  # fmt: skip
    runs = [{"config": "a", "dataset": "x", "seed": 1}]
    assert reproduce.missing_runs(runs, ["a", "b"], ["x"], [0, 1, 2]) == ["a-x-{0,2}", "b-x-{0,1,2}"]
    assert reproduce.missing_runs(runs, ["a"], ["x"], [0, 1]) == ["a-x-0"]


def test_early_mean():
    assert reproduce.early_mean({10: 1.0, 20: 3.0, 30: 5.0, 60: 9.0}) == 2.0  # steps <= 20
    assert reproduce.early_mean({30: 4.0, 60: 9.0}) == 4.0  # nothing in the first third: the first point
    assert math.isnan(reproduce.early_mean({}))


ACC = {"random": 0.80, "online_hardest": 0.82, "online_band": 0.85, "online_band_margin": 0.85,
       "online_band_margin_curriculum": 0.86, "online_band_margin_curriculum_hybrid": 0.87, "full": 0.88,
       "offline": 0.87, "in_batch": 0.80}  # fmt: skip
SEED_NOISE = (0.0, 0.004, -0.003)  # the same for every config: paired differences are constant


def write_claim_runs(runs_dir: Path, ce_removed: float = 5.0) -> None:
    for dataset in ("synthetic", "abt_buy"):
        for config, acc in ACC.items():
            for seed, noise in enumerate(SEED_NOISE):
                shift = 0.01 * seed - (0.05 if config == "online_band_margin_curriculum" else 0.0)
                curves = fake_curves(shift, band=True)
                if config == "full":
                    curves |= {"refresh/ce_removed_threshold": [[0, ce_removed], [15, 1.0 * (ce_removed > 0)]],
                               "refresh/ce_removed_margin": [[0, 2.0 * (ce_removed > 0)], [15, 0.0]],
                               "refresh/ce_kept": [[0, 100.0], [15, 90.0]]}  # fmt: skip
                write_run(runs_dir, config, dataset, seed, acc + noise, curves=curves)


def test_renders_on_fake_runs(tmp_path):
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    write_claim_runs(runs_dir)
    assert reproduce.main(["--runs-dir", str(runs_dir), "--results", str(results)]) == 0
    text = (results / "REPRODUCTION.md").read_text()
    assert text.startswith(f"Made with: `python experiments/reproduce.py --runs-dir {runs_dir} --results {results}`")
    verdicts = {row.split(" | ")[0][2:]: row.split(" | ")[-1][:-2] for row in text.splitlines()
                if row.startswith("| ") and not row.startswith(("| claim", "| dataset", "| |", "| synthetic",
                                                                 "| abt_buy"))}  # fmt: skip
    assert list(verdicts.values()) == ["holds", "does not hold", "holds", "inconclusive (CI includes 0)", "holds",
                                       "holds", "holds"]  # fmt: skip
    assert "online_band − online_hardest, accuracy@1, **abt_buy**: +0.030 ± 0.000 (n=3; CI > 0)" in text
    assert "| synthetic | 3 | 6.0 ± 0.0 | 2.0 ± 0.0 | 190.0 ± 0.0 | 0.040 ± 0.000 |" in text  # summed over refreshes
    assert "pairwise_accuracy/single_token" in text and "![early training](reproduce_early_training.png)" in text
    assert (results / "reproduce_early_training.png").stat().st_size > 1000


def test_ce_filter_that_removes_nothing_does_not_hold(tmp_path):
    write_claim_runs(tmp_path, ce_removed=0.0)
    found = reproduce.ce_filter_removes_false_negatives(reproduce.load_runs(tmp_path))
    assert found.verdict == "does not hold (the cross-encoder removed nothing)"


def test_renders_with_no_runs(tmp_path):
    assert reproduce.main(["--runs-dir", str(tmp_path / "none"), "--results", str(tmp_path / "results")]) == 0
    text = (tmp_path / "results" / "REPRODUCTION.md").read_text()
    assert text.count("| not measured (missing runs: ") == 7
