"""experiments.suite: the plans, the runs' configs, resuming from the JSONs that exist."""

import json

import pytest

from experiments import suite


def test_tier_plans_cover_every_dataset_fold_and_arm_once():
    runs = suite.plan_tier(1)
    assert len(runs) == len(set(runs)) == 3 * 5 * (1 + len(suite.TIERS[1]))
    assert {r.name for r in runs} >= {"online_band-walmart_amazon_dirty-f4", "zero_shot-abt_buy-f0"}
    assert set(suite.TIERS[1]).isdisjoint(suite.TIERS[2])


def test_pilot_plans_run_on_fold_zeros_dev_only():
    freeze = suite.plan_pilot("freeze")
    assert {(r.dataset, r.fold, r.eval_split) for r in freeze} == {("abt_buy", 0, "dev")}
    assert {dict(r.overrides).get("model.freeze_layers") for r in freeze[1:]} == set(suite.PILOT_FREEZE)
    lr = suite.plan_pilot("lr:5e-5,1e-4", freeze_layers=4, epochs=2)
    assert [r.name for r in lr[1:3]] == ["in_batch-k4-e2-lr5e-05-abt_buy-f0-dev",
                                         "full_bi-k4-e2-lr5e-05-abt_buy-f0-dev"]
    assert len(lr) == 1 + 2 * len(suite.PILOT_LR_ARMS) and dict(lr[-1].overrides)["train.num_epochs"] == 2
    with pytest.raises(ValueError, match="--freeze-layers"):
        suite.plan_pilot("lr:5e-5")


def test_run_config_applies_the_protocol_the_fold_and_the_overrides():
    run = suite.Run("online_band", "amazon_google", 3, (("train.learning_rate", 1e-4),), "x", "dev")
    config = suite.run_config(run)
    assert (config.data.name, config.data.folds, config.data.fold, config.data.eval_split) == (
        "amazon_google", 5, 3, "dev")
    assert config.train.learning_rate == 1e-4 and config.mining.num_negatives == 2
    assert config.mining.strategy == "band"  # the arm's own setting survives
    assert suite.run_config(suite.Run("in_batch", "abt_buy", 0)).mining.num_negatives == 0
    with pytest.raises(KeyError, match="no.such"):
        suite.set_key(config, "model.no.such", 1)


def test_existing_jsons_are_skipped_and_set_the_estimate(tmp_path):
    runs = suite.plan_tier(1, datasets=["abt_buy"], folds=[0, 1])
    done = runs[1]
    (tmp_path / f"{done.name}.json").write_text(json.dumps({"arm": done.arm, "dataset": "abt_buy", "tag": "",
                                                            "wall_s": 100.0}))  # fmt: skip
    seconds, left = suite.estimate_s(runs, tmp_path)
    assert left == len(runs) - 1 and seconds == 100.0 * (left)  # every missing run at the one finished run's time
    assert suite.run_plan([done], tmp_path, tmp_path / "w") == []  # nothing to do: nothing runs, nothing fails


def test_dry_run_prints_the_plan(capsys, tmp_path):
    assert suite.main(["--tier", "2", "--datasets", "abt_buy", "--folds", "0", "--dry-run",
                       "--runs-dir", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "6 runs, 6 to do" in out and "online_band_margin-abt_buy-f0" in out


def test_every_planned_run_has_a_valid_config(tmp_path):
    """Each arm's file with the PROTOCOL and the pilots' overrides passes every check that needs no data."""
    from hnm_jax.config import spec_from_config

    plans = [*(r for t in suite.TIERS for r in suite.plan_tier(t, folds=[0])), *suite.plan_confirmation([0]),
             *suite.plan_pilot("freeze"), *suite.plan_pilot("lr:5e-5,1e-4", freeze_layers=4)]  # fmt: skip
    for run in plans:
        if run.arm != suite.ZERO_SHOT:
            spec = spec_from_config(suite.run_config(run, tmp_path))
            assert spec.data.folds == suite.NUM_FOLDS and spec.retriever.mode == "hybrid", run.name


def test_run_jobs_writes_finished_runs_skips_existing_ones_and_survives_a_failure(tmp_path):
    record = {"wall_s": 60.0, "metrics": {"retrievers": {"dense": {"accuracy@1": 0.5}}}}
    (tmp_path / "old.json").write_text("{}")
    calls = []

    def broken():
        raise RuntimeError("boom")

    def never():
        calls.append("old")
        return record

    failed = suite.run_jobs([(tmp_path / "old.json", never), (tmp_path / "bad.json", broken),
                             (tmp_path / "good.json", lambda: record)])  # fmt: skip
    assert failed == ["bad"] and calls == []
    assert json.loads((tmp_path / "good.json").read_text()) == record
    assert not (tmp_path / "bad.json").exists() and (tmp_path / "old.json").read_text() == "{}"
