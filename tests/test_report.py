"""experiments.report: per-item metrics, pairing by query, the stopping rule, Holm over the claims, the table."""

import json

import numpy as np
import pytest

from experiments import report, suite


def fake_run(arm: str, dataset: str, fold: int, correct: dict[str, bool], tag: str = "") -> dict:
    """A run JSON with dense ranks 1 (correct) or 3, and hybrid ranks all 1 (a decoy the primary must ignore)."""
    ids = list(correct)
    return {"arm": arm, "dataset": dataset, "fold": fold, "tag": tag, "eval_split": "test", "commit": "abc",
            "metrics": {"per_query": {"query_ids": ids, "rank_dense": [1 if correct[q] else 3 for q in ids],
                                      "rank_hybrid": [1] * len(ids)}}}  # fmt: skip


def runs_of(effects: dict[str, float], n: int = 200, datasets=suite.DATASETS, tag: str = "") -> dict:
    """Every arm of `effects` on every (dataset, fold): arm accuracy = 0.7 + effect on the same queries, so the
    paired difference of two arms is known exactly."""
    rng = np.random.default_rng(0)
    runs = {}
    for dataset in datasets:
        for fold in range(suite.NUM_FOLDS):
            ids = [f"{dataset}-{fold}-q{i}" for i in range(n)]
            u = rng.random(n)
            for arm, effect in effects.items():
                correct = {q: bool(x < 0.7 + effect) for q, x in zip(ids, u, strict=True)}
                runs[(arm, tag, dataset, fold)] = fake_run(arm, dataset, fold, correct, tag)
    return runs


def test_per_item_metrics_by_hand():
    metrics = {"per_query": {"query_ids": ["a", "b", "c"], "rank_dense": [1, 4, 0], "rank_hybrid": [2, 1, 11],
                             "rank_rerank": [1, 1, 3], "near_duplicate_cosine": [0.5, None, 0.25]},
               "per_pair": {"query_ids": ["a", "a"], "doc_ids": ["x", "y"], "correct": [1, 0]}}  # fmt: skip
    assert report.per_item(metrics, "dense_accuracy@1") == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert report.per_item(metrics, "hybrid_accuracy@1") == {"a": 0.0, "b": 1.0, "c": 0.0}
    assert report.per_item(metrics, "rerank_accuracy@1") == {"a": 1.0, "b": 1.0, "c": 0.0}
    with pytest.raises(KeyError):
        report.per_item(metrics, "lexical_accuracy@1")  # no such stage in this run
    assert report.per_item(metrics, "mrr@10") == {"a": 1.0, "b": 0.25, "c": 0.0}
    assert report.per_item(metrics, "near_duplicate_cosine") == {"a": 0.5, "c": 0.25}
    assert report.per_item(metrics, "pairwise_accuracy") == {("a", "x"): 1.0, ("a", "y"): 0.0}


def test_paired_differences_are_matched_by_query_id():
    a = fake_run("in_batch", "abt_buy", 0, {"q1": True, "q2": False, "q3": False})
    b = fake_run("online_band", "abt_buy", 0, {"q3": True, "q2": True, "q1": True, "q9": True})  # other order, extra
    runs = {("in_batch", "", "abt_buy", 0): a, ("online_band", "", "abt_buy", 0): b}
    p = report.paired(runs, report.Contrast("online_band", "in_batch"), ("abt_buy",), folds=[0])
    assert p.result.n == 3 and p.result.effect == pytest.approx(2 / 3)  # q9 has no partner
    assert p.fold_differences == [pytest.approx(2 / 3)]


def test_a_claim_with_a_missing_fold_gets_no_verdict_and_counts_as_p_one():
    runs = runs_of({"in_batch": 0.0, "online_band": 0.08, "random": 0.0})
    del runs[("in_batch", "", "amazon_google", 3)]
    rows = {r["claim"].number: r for r in report.decide_all(runs)}
    assert rows[1]["verdict"].startswith("no verdict") and rows[1]["p_adjusted"] == 1.0
    assert rows[1]["primary"].missing == ["in_batch-amazon_google-f3"]
    assert all(r["verdict"].startswith("no verdict") for n, r in rows.items() if n != 1)  # no runs of their arms


def test_a_large_gain_holds_after_holm_and_an_equal_arm_does_not():
    runs = runs_of({"in_batch": 0.0, "online_band": 0.08, "offline": 0.08, "online_hardest": 0.0, "random": 0.0})
    rows = {r["claim"].number: r for r in report.decide_all(runs)}
    assert rows[1]["verdict"] == "holds" and rows[1]["primary"].result.n == 3 * 5 * 200
    assert rows[1]["primary"].sign.positive == 15  # every (dataset, fold) difference is positive
    assert rows[2]["verdict"].startswith("fails")  # band == offline: no gain of 1 point, tight CI at n = 3,000
    raw = [r["primary"].result.p_no_gain if r["primary"].result else 1.0 for r in rows.values()]
    assert rows[1]["p_adjusted"] == pytest.approx(min(1.0, 9 * min(raw)))  # Holm's smallest p: times m = 9


def test_markdown_has_nine_claims_the_confirmation_and_the_protocol_commit():
    runs = runs_of({"in_batch": 0.0, "online_band": 0.05})
    runs |= runs_of({arm: 0.0 for arm in suite.CONFIRMATION_ARMS}, datasets=("abt_buy",), tag=suite.CONFIRMATION_TAG)
    text = report.markdown(runs)
    claim_rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit() and ". " in line]
    assert len(claim_rows) == 9
    assert "experiments/PROTOCOL.md` at " in text and "uncommitted" not in text
    assert "| online_band − in_batch (dense_accuracy@1) | +0.00 [" in text  # the confirmation's equal arms


def test_splice_replaces_only_the_marked_block():
    text = "intro\n<!-- claims -->\nold table\n<!-- /claims -->\nafter\n"
    assert report.splice(text, "new\n") == "intro\n<!-- claims -->\nnew\n<!-- /claims -->\nafter\n"
    assert report.splice("no markers\n", "new\n") == "no markers\n"


def test_main_writes_the_claims_table_into_the_readme_block(tmp_path):
    runs = runs_of({"in_batch": 0.0, "online_band": 0.05})
    runs_dir = tmp_path / "cv"
    runs_dir.mkdir()
    for (arm, _, dataset, fold), run in runs.items():
        (runs_dir / f"{arm}-{dataset}-f{fold}.json").write_text(json.dumps(run))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- claims -->\nstale\n<!-- /claims -->\nend\n")
    assert report.main(["--runs-dir", str(runs_dir), "--out", str(tmp_path / "R.md"), "--readme", str(readme)]) == 0
    block = readme.read_text().split("<!-- claims -->\n")[1].split("<!-- /claims -->")[0]
    assert "stale" not in block and readme.read_text().endswith("<!-- /claims -->\nend\n")
    rows = [line for line in block.splitlines() if line[2:3].isdigit()]
    assert len(rows) == 9 and rows[0].startswith("| 1. ") and "| 15+ / 0− " in rows[0]  # claim 1: +5 points, 15 folds
    assert "| holds |" in rows[0] and all("no verdict" in row for row in rows[1:])


def test_claim4_lines_read_the_gate_and_the_duplicates_from_the_curves():
    dup = suite.SYNTHETIC_DUP
    runs = {("online_band_ce", "", dup, 0): {"curves": {"refresh/ce_gate_precision": [[0, 0.9], [22, 0.25]],
                                                        "refresh/ce_gate_recall": [[22, 1.0]],
                                                        "refresh/ce_gate_negatives_removed": [[22, 0.5]],
                                                        "refresh/ce_filter_on": [[22, 0.0]]}},
            ("online_band", "", dup, 0): {"curves": {"refresh/pool_unlabelled_duplicates": [[0, 10.0], [22, 12.0]]}},
            ("online_hardest_oracle", "", dup, 0): {"curves": {"refresh/pool_unlabelled_duplicates": [[22, 0.0]]}}}
    rows = report.claim4_lines(runs)[2:]
    assert len(rows) == suite.NUM_FOLDS
    assert rows[0] == "| 0 | 0.25 | 1.00 | 0.50 | 0 | 10 / 12 | 0 | – |"  # the last refresh's gate; no filter ran
    assert rows[1] == "| 1 | – | – | – | – | – | – | – |"
