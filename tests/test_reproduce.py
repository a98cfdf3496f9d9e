"""Tests for experiments/reproduce.py: the nine claims' verdicts from hand-made per-query data (no training)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from conftest import fake_curves, load_experiment, per_query_metrics, write_run

reproduce = load_experiment("reproduce")

NAN = math.nan
QUERIES = [f"q{i:02d}" for i in range(60)]
# arm -> the queries it ranks first (the others at rank 2), the same under each of 3 seeds
CORRECT = {"online_band": range(40), "random": range(20), "in_batch": range(20),
           "offline": range(52),  # (2) fails: offline beats online on 12 queries, never the reverse
           "online_hardest": [*range(35), 40],  # (3) inconclusive: online_band alone right on 5, hardest alone on 1
           "online_band_ce": range(50), "online_band_margin": range(60), "online_band_curriculum": range(50),
           "online_band_hybrid_logits": range(40), "online_band_uniformity": range(40),
           "online_band_dense_mining": range(37),  # (7) inconclusive: online_band alone right on 3
           "full": range(60)}  # fmt: skip
PAIRS_RIGHT = {"online_band": 10, "online_band_uniformity": 25, "online_band_hybrid_logits": 25}  # of 30 pairs
COSINE = {"online_band": 0.8, "online_band_uniformity": 0.6, "online_band_hybrid_logits": 0.7}
EXPECTED = {1: "holds", 2: "fails", 3: "inconclusive", 4: "holds", 5: "holds", 6: "holds", 7: "inconclusive",
            8: "holds", 9: "holds"}  # fmt: skip


def claim_metrics(config: str, seed: int) -> dict:
    right = set(CORRECT[config])
    ranks = {q: 1 if i in right else 2 for i, q in enumerate(QUERIES)}
    pairs = None
    if config in PAIRS_RIGHT:
        pairs = {(q, f"n{i}"): int(i < PAIRS_RIGHT[config]) for i, q in enumerate(QUERIES[:30])}
    metrics = per_query_metrics(0.8, ranks, pairs, "dense" if config == "online_band_dense_mining" else "hybrid")
    if config in COSINE:
        metrics["near_duplicate_cosine"] = COSINE[config] + 0.01 * seed
    return metrics


def write_claim_runs(runs_dir: Path, dataset: str = "abt_buy", **curves_of) -> None:
    for config in CORRECT:
        for seed in range(3):
            curves = curves_of.get(config, fake_curves(0.01 * seed, band=True))
            write_run(runs_dir, config, dataset, seed, 0.8, metrics=claim_metrics(config, seed), curves=curves,
                      overrides={"retriever.mode": "hybrid"})  # fmt: skip


def table_rows(text: str) -> dict[int, list[str]]:
    """Claim number -> the cells of its row in REPRODUCTION.md's table."""
    rows = [line for line in text.splitlines() if line[:4] in {f"| {n} " for n in range(1, 10)}]
    return {int(row.split(" | ")[0][2:]): row.split(" | ") for row in rows}


def test_nine_claims_from_hand_made_per_query_data(tmp_path):
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    write_claim_runs(runs_dir)
    assert reproduce.main(["--runs-dir", str(runs_dir), "--results", str(results)]) == 0
    text = (results / "REPRODUCTION.md").read_text()
    assert text.startswith(f"Made with: `python experiments/reproduce.py --runs-dir {runs_dir} --results {results}`")
    rows = table_rows(text)
    assert sorted(rows) == list(range(1, 10))
    assert {n: row[2].split(" (")[0] for n, row in rows.items()} == EXPECTED
    # (1): 20 of 60 queries right for online_band only, under each seed: +33.3 points
    assert rows[1][3] == "online_band − random (accuracy@1)<br>online_band − in_batch (accuracy@1)"
    assert rows[1][4].startswith("+33.3 [") and rows[1][7] == "<br>".join(["abt_buy (60 queries, 180 items)"] * 2)
    assert rows[1][8] == "`python experiments/ablate.py --tune --runs abt_buy:online_band,random,in_batch` |"
    assert rows[2][4].startswith("-20.0 [")
    # (3): 60 query clusters of 3 seeds with sums +3 (5 of them), -3 (1), 0 (54): a bootstrap resample of 60 clusters
    # has effect* = 3 (X+ - X-) / 180, (X+, X-, X0) ~ Multinomial(60, (5, 1, 54) / 60), so its exact SD is
    # 3 sqrt(60 (6/60 - (4/60)^2)) / 180 and the MDE (one-sided 0.05, 80% power) is (1.6449 + 0.8416) x SD
    se = 3 * math.sqrt(60 * (6 / 60 - (4 / 60) ** 2)) / 180
    mde = (1.6448536 + 0.8416212) * se  # 0.0992: 9.9 points, up to the 10,000 resamples' Monte Carlo error
    assert rows[3][2].startswith("inconclusive (MDE ") and rows[3][2].endswith(" points)")
    assert float(rows[3][2].split("MDE ")[1].split(" ")[0]) == pytest.approx(100 * mde, rel=0.03)
    assert rows[3][4].startswith("+6.7 [")
    # (3)'s p: a sign flip of the 6 nonzero clusters, P(5 or 6 of 6 positive) = 7/64 (the only contrast: no Holm)
    assert float(rows[3][5]) == pytest.approx(7 / 64, abs=0.01)
    assert rows[2][2] == "fails (significantly negative)"
    # (5): the retriever's gain is (margin − band) − (band − dense): +20 − 3 = 17 queries
    assert "(online_band_margin − online_band) − (online_band − online_band_dense_mining) (accuracy@1)" in rows[5][3]
    assert rows[5][4].split("<br>")[-1].startswith("+28.3 [")
    # (7): compared on the hybrid ranks (the dense run's rank_dense would be all wrong): +3 queries
    assert rows[7][4].startswith("+5.0 [")
    # (8): pairwise accuracy per pair (+15 of 30) judged; near_duplicate_cosine (one number per run) only shown
    assert rows[8][3].split("<br>") == ["online_band_uniformity − online_band (pairwise_accuracy)",
                                        "online_band_hybrid_logits − online_band (pairwise_accuracy)"]  # fmt: skip
    assert rows[8][4].split("<br>")[0].startswith("+50.0 [")
    assert "- online_band − online_band_uniformity, near_duplicate_cosine, **abt_buy**: +0.200 ± 0.000 (n=3)" in text
    assert "### (4) Cross-encoder filtering" in text and "not logged. Miner.apply_cross_encoder" in text
    assert "![early training](reproduce_early_training.png)" in text and "Missing runs: " in text
    assert (results / "reproduce_early_training.png").stat().st_size > 1000


def test_claims_pool_datasets_and_keep_per_dataset_rows(tmp_path):
    write_claim_runs(tmp_path, "abt_buy")
    write_claim_runs(tmp_path, "synthetic_power")
    found = {f.claim.number: f for f in reproduce.findings(reproduce.load_runs(tmp_path), "fig.png")}
    pooled = found[1].pooled[0]
    assert pooled.datasets == ("abt_buy", "synthetic_power") and pooled.clusters == 120 and pooled.items == 360
    assert [m.datasets for m in found[1].per_dataset[:2]] == [("abt_buy",), ("synthetic_power",)]
    assert found[1].command.endswith("--runs abt_buy,synthetic_power:online_band,random,in_batch")
    single, pooled = found[3].per_dataset[0], found[3].pooled[0]
    # pooled: 12 nonzero clusters, 10 of them +3: sign-flip p = P(X >= 10), X ~ Bin(12, 1/2) = 79/4096
    assert single.verdict.startswith("inconclusive") and pooled.verdict == "holds"  # twice the queries
    assert pooled.p_holm == pooled.p == pytest.approx(79 / 4096, abs=0.005)
    assert pooled.mde == pytest.approx(single.mde / math.sqrt(2), rel=0.03)  # the same strata, twice the queries


@pytest.mark.parametrize(
    "verdicts, expected",
    [
        (["holds", "holds"], "holds"),
        (["holds", "fails (significantly negative)"], "fails (significantly negative)"),
        (["inconclusive (MDE 5.0 points)", "fails (no gain ≥ 1 point)"], "fails (no gain ≥ 1 point)"),
        (["holds", "inconclusive (MDE 5.0 points)", "inconclusive (MDE 7.0 points)"], "inconclusive (MDE 7.0 points)"),
        (["holds", "not measured"], "inconclusive (not measured: c1)"),
        (["not measured", "not measured"], "not measured"),
    ],
)
def test_claim_verdict(verdicts, expected):
    measured = [reproduce.Measured(reproduce.Contrast({"a": 1.0, "b": -1.0}, name=f"c{i}"), (), 0, 0, 0, NAN, NAN,
                                   NAN, (NAN, NAN), NAN, None,
                                   float(v.split("MDE ")[1].split(" ")[0]) / 100 if "MDE" in v else NAN, v)
                for i, v in enumerate(verdicts)]  # fmt: skip
    assert reproduce.claim_verdict(measured) == expected


def test_claim_fails_with_its_first_failing_contrast():
    rate = reproduce.Measured(reproduce.ab("a", "b"), (), 1, 1, 1, 0, 0, 0, (0, 0), 0.5, None, 0.062,
                              "inconclusive (MDE 6.2 points)")  # fmt: skip
    failed = [dataclasses.replace(rate, verdict=v) for v in ("fails (no gain ≥ 1 point)",
                                                            "fails (significantly negative)")]  # fmt: skip
    assert reproduce.claim_verdict([rate, *failed]) == "fails (no gain ≥ 1 point)"
    assert reproduce.claim_verdict([rate, dataclasses.replace(rate, mde=0.02)]) == "inconclusive (MDE 6.2 points)"


def test_ce_filter_checks(tmp_path):
    removed_nothing = {"refresh/ce_removed_threshold": [[0, 0.0]], "refresh/ce_removed_margin": [[0, 0.0]],
                       "refresh/ce_kept": [[0, 100.0]]}  # fmt: skip
    write_claim_runs(tmp_path / "a", online_band_ce=removed_nothing)
    found = reproduce.findings(reproduce.load_runs(tmp_path / "a"), "fig.png")[3]
    assert found.verdict == "fails (the cross-encoder removed nothing)"
    counts = removed_nothing | {"refresh/ce_removed_margin": [[0, 4.0], [10, 2.0]]}
    for removed, verdict in ((0.0, "fails (removed none of the 36 unlabelled duplicates in its pools)"),
                             (3.0, "holds")):  # fmt: skip
        dup = counts | {"refresh/pool_unlabelled_duplicates": [[0, 8.0], [10, 4.0]],
                        "refresh/ce_removed_unlabelled_duplicates": [[0, removed], [10, 0.0]]}  # fmt: skip
        runs_dir = tmp_path / f"dup{removed}"
        write_claim_runs(runs_dir, "synthetic_dup", online_band_ce=dup)
        found = reproduce.findings(reproduce.load_runs(runs_dir), "fig.png")[3]
        assert found.verdict == verdict
    assert "pools held 36 of them over 3 runs' refreshes; the filter removed 9 (25.0%)" in found.details
    row = "| online_band_ce | synthetic_dup | 3 | 0.0 ± 0.0 | 6.0 ± 0.0 | 100.0 ± 0.0 | 0.057 ± 0.000 |"  # 6 / 106
    assert row in found.details


def test_claim7_needs_two_mining_retrievers(tmp_path):
    write_claim_runs(tmp_path)
    runs = reproduce.load_runs(tmp_path)
    assert reproduce.mining_arms(runs) == ("online_band", "online_band_dense_mining")
    for r in runs:
        if r["config"] == "online_band_dense_mining":
            r["metrics"]["retriever"] = "hybrid"  # as if it had been forced to the hybrid pipeline too
    found = reproduce.findings(runs, "fig.png")[6]
    assert found.verdict == "not measured (both arms mined from the hybrid retriever)"
    untuned = [r for r in runs if r["config"] != "online_band_dense_mining"]
    assert reproduce.mining_arms(untuned) == ("online_band_hybrid_retriever", "online_band")
    # eval JSONs record the mining retriever (mining.retriever): it wins over the deployed one, at either level
    for r in runs:
        if r["config"] in ("online_band", "online_band_dense_mining"):
            r["metrics"]["mining_retriever"] = "dense" if r["config"] == "online_band_dense_mining" else "hybrid"
    assert reproduce.mined_from(runs, "online_band_dense_mining") == {"dense"}
    assert reproduce.findings(runs, "fig.png")[6].verdict.startswith("inconclusive")
    band = [r for r in runs if r["config"] == "online_band"]
    band[0]["mining_retriever"] = "lexical"  # a run JSON's own top-level record comes first
    assert reproduce.mined_from(band, "online_band") == {"lexical", "hybrid"}
    for r in runs:
        if r["config"] == "online_band_dense_mining":
            r["metrics"]["mining_retriever"] = "hybrid"
    assert reproduce.findings(runs, "fig.png")[6].verdict == "not measured (both arms mined from the hybrid retriever)"


def test_early_mean():
    assert reproduce.early_mean({10: 1.0, 20: 3.0, 30: 5.0, 60: 9.0}) == 2.0  # steps <= 20
    assert reproduce.early_mean({30: 4.0, 60: 9.0}) == 4.0  # nothing in the first third: the first point
    assert math.isnan(reproduce.early_mean({}))


def test_missing_runs():
    runs = [{"config": "a", "dataset": "x", "seed": 1}]
    assert reproduce.missing_runs(runs, ["a", "b"], ["x"], [0, 1, 2]) == ["a-x-{0,2}", "b-x-{0,1,2}"]
    assert reproduce.missing_runs(runs, ["a"], ["x"], [0, 1]) == ["a-x-0"]


def test_renders_with_no_runs(tmp_path):
    assert reproduce.main(["--runs-dir", str(tmp_path / "none"), "--results", str(tmp_path / "results")]) == 0
    text = (tmp_path / "results" / "REPRODUCTION.md").read_text()
    assert [row[2] for row in table_rows(text).values()] == ["not measured"] * 9
    assert "--tune --runs abt_buy,amazon_google,walmart_amazon,synthetic_power,synthetic_dup:full,random," in text


def test_equal_wallclock_is_shown_with_claim_9(tmp_path):
    write_claim_runs(tmp_path)
    for seed in range(3):
        ranks = {q: 1 if i < 30 else 2 for i, q in enumerate(QUERIES)}
        write_run(tmp_path, "in_batch_wallclock_full", "abt_buy", seed, 0.8, metrics=per_query_metrics(0.8, ranks))
    details = reproduce.findings(reproduce.load_runs(tmp_path), "fig.png")[8].details
    assert "At equal wall-clock (shown, not judged)" in details
    assert "- full − in_batch_wallclock_full (accuracy@1; abt_buy): +50.0 [" in details  # 60 vs 30 of 60 queries
    assert "- in_batch_wallclock_full − in_batch (accuracy@1; abt_buy): +16.7 [" in details  # 30 vs 20
