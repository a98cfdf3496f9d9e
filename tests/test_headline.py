"""experiments.headline: the recipe's configs on the official splits, pairing recipe and anchor by (set, seed,
query), the deployed retriever against the anchor's dense search, and the headline table."""

import numpy as np
import pytest

from experiments import headline


def fake(correct_dense: dict[str, bool], correct_hybrid: dict[str, bool] | None = None, **fields) -> dict:
    """A run JSON: dense (and hybrid) rank 1 where correct, else rank 2; MRR@10 is then 1 or 0.5 per query."""
    ids = list(correct_dense)
    hybrid = correct_hybrid if correct_hybrid is not None else correct_dense
    return {"wall_s": 60.0, "epochs": 2, **fields,
            "metrics": {"per_query": {"query_ids": ids, "rank_dense": [1 if correct_dense[q] else 2 for q in ids],
                                      "rank_hybrid": [1 if hybrid[q] else 2 for q in ids]},
                        "per_pair": {"query_ids": ids, "doc_ids": ids, "correct": [1] * len(ids)}}}  # fmt: skip


def test_recipe_config_uses_the_official_splits_seed_and_split():
    module, overrides = headline.CANDIDATES["hardest_n5_e4"]
    config = headline.recipe_config(module, "amazon_google", 2, "dev", overrides)
    assert (config.data.name, config.data.folds, config.data.eval_split, config.seed) == ("amazon_google", 0, "dev", 2)
    assert (config.mining.num_negatives, config.train.num_epochs, config.model.freeze_layers) == (5, 4, 0)
    with pytest.raises(KeyError):
        headline.recipe_config(module, "abt_buy", 0, "dev", {"mining.no_such_key": 1})


def test_the_recipe_is_the_candidate_chosen_on_dev():
    module, overrides = headline.CANDIDATES[headline.CHOSEN]
    chosen = headline.recipe_config(module, "walmart_amazon", 1, "test", overrides).to_dict()
    recipe = headline.recipe_config(headline.RECIPE, "walmart_amazon", 1, "test").to_dict()
    assert recipe == chosen
    module, overrides = headline.CANDIDATES["hardest_n5_e2"]
    other = headline.recipe_config(module, "walmart_amazon", 1, "test", overrides).to_dict()
    assert recipe != other  # the comparison sees a one-key difference (train.num_epochs)


def test_compare_pairs_by_set_seed_and_query_and_uses_the_deployed_retriever():
    ids = [f"q{i}" for i in range(40)]
    # recipe: dense right on the first half, its deployed hybrid right on all; anchor: dense right on a quarter
    recipe = {("abt_buy", 0): fake({q: i < 20 for i, q in enumerate(ids)}, {q: True for q in ids},
                                   retriever="hybrid"),
              ("abt_buy", 1): fake({q: True for q in ids}, retriever="hybrid")}  # fmt: skip
    anchor = {("abt_buy", 0): fake({q: i < 10 for i, q in enumerate(ids)}, {q: True for q in ids})}  # no seed 1
    deployed = headline.compare(recipe, anchor, ("abt_buy",))
    assert deployed.n == 40 and deployed.effect == pytest.approx(0.75)  # 1 - 10/40: hybrid vs the anchor's dense
    dense = headline.compare(recipe, anchor, ("abt_buy",), dense_only=True)
    assert dense.effect == pytest.approx(0.25)  # 20/40 - 10/40
    assert headline.compare(recipe, anchor, ("amazon_google",)) is None
    # a run with a re-ranking stage deploys it: its rank_rerank is what the anchor is compared with
    recipe[("abt_buy", 0)]["metrics"]["per_query"]["rank_rerank"] = [1 if i < 30 else 2 for i in range(40)]
    assert headline.deployed_metric(recipe[("abt_buy", 0)]) == "rerank_accuracy@1"
    assert headline.compare(recipe, anchor, ("abt_buy",)).effect == pytest.approx(0.5)  # 30/40 - 10/40


def test_headline_table_states_the_goal_and_the_pooled_difference():
    rng = np.random.default_rng(0)
    recipe, anchor = {}, {}
    for dataset in headline.SETS:
        ids = [f"{dataset}-q{i}" for i in range(200)]
        for seed in (0, 1, 2):
            u = rng.random(200)
            anchor[(dataset, seed)] = fake({q: bool(x < 0.85) for q, x in zip(ids, u, strict=True)}, wall_s=600.0)
            recipe[(dataset, seed)] = fake({q: bool(x < 0.95) for q, x in zip(ids, u, strict=True)},
                                           retriever="dense", wall_s=300.0)  # fmt: skip
    table = headline.headline_markdown(recipe, anchor)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    for dataset in headline.SETS:
        cells = rows[dataset].split(" | ")
        ours, base = float(cells[3]), float(cells[4])
        assert ours - base == pytest.approx(0.10, abs=0.03)  # the same u: recipe right wherever the anchor is
        goal = max(headline.GOAL[dataset], base + headline.GOAL_OVER_ANCHOR)
        assert ("met" in cells[9]) == (ours >= goal)
        assert cells[10] == "5.0 / 10.0 min |"
    assert "n = 1800 paired" in table


def test_the_table_reads_no_verdict_before_all_of_a_sets_runs_exist():
    ids = [f"q{i}" for i in range(20)]
    recipe = {(d, s): fake({q: True for q in ids}, retriever="dense") for d in headline.SETS for s in (0, 1, 2)}
    anchor = {(d, s): fake({q: False for q in ids}) for d in headline.SETS for s in (0, 1, 2)}
    del anchor[("abt_buy", 2)]  # abt_buy's anchor has 2 of its 3 seeds; walmart_amazon's recipe lacks seed 1
    del recipe[("walmart_amazon", 1)]
    table = headline.headline_markdown(recipe, anchor)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "met" in rows["amazon_google"] and "runs under way" not in rows["amazon_google"]
    assert "2 of 3 paired" in rows["abt_buy"] and "anchor seeds [0, 1]" in rows["abt_buy"]
    assert "recipe seeds [0, 2]" in rows["walmart_amazon"]
    for dataset in ("abt_buy", "walmart_amazon"):
        assert "met" not in rows[dataset] and "missed" not in rows[dataset]
    assert "Pooled" not in table and "1 of 3 sets complete" in table
    anchor[("abt_buy", 2)], recipe[("walmart_amazon", 1)] = anchor[("abt_buy", 0)], recipe[("walmart_amazon", 0)]
    assert "n = 180 paired" in headline.headline_markdown(recipe, anchor)  # complete: 3 sets x 3 seeds x 20


def test_dev_runs_only_the_named_candidates(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(headline.suite, "run_jobs", lambda jobs: ran.extend(path.name for path, _ in jobs) or [])
    assert headline.main(["--dev", "--candidates", "hardest_n5_e4_lr1e-4", "--sets", "abt_buy", "amazon_google",
                          "--results", str(tmp_path)]) == 0  # fmt: skip
    assert ran == ["hardest_n5_e4_lr1e-4-abt_buy.json", "hardest_n5_e4_lr1e-4-amazon_google.json"]
    module, overrides = headline.CANDIDATES["hardest_n5_e4_lr1e-4"]
    config = headline.recipe_config(module, "abt_buy", 0, "dev", overrides)
    assert (config.train.learning_rate, config.train.num_epochs, config.mining.num_negatives) == (1e-4, 4, 5)
    module, overrides = headline.CANDIDATES["hardest_n5_e4_t0.03"]
    config = headline.recipe_config(module, "abt_buy", 0, "dev", overrides)
    assert (config.loss.temperature, config.train.learning_rate, config.train.num_epochs) == (0.03, 5e-5, 4)
