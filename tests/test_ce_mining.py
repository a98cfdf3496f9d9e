"""Cross-encoder guided mining inside a run: planted duplicates are filtered, positives never; cross-fitting
never lets a CE judge a query it trained on; the gate lets a CE filter only when enough of what its rules drop from
the dev split's labelled pairs is a true match; pools re-queried between refreshes keep only CE-scored entries; the
filter is judged on a synthetic benchmark's known duplicates, which the oracle filter keeps out of the pools; the CE
phase trains, exports and resumes; evaluation reports the retrieve and re-rank stages."""

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest
from conftest import tiny_config, write_tiny_beir

from hnm_jax.config import ConfigError, dataset_root, spec_from_config
from hnm_jax.data.beir import load_texts, read_split
from hnm_jax.data.synthetic import (
    SyntheticConfig,
    generate,
    load_unlabelled_duplicates,
    read_unlabelled_duplicates,
    write_beir,
)
from hnm_jax.mining.negatives import cross_fit_folds
from hnm_jax.models.loading import build_cross_encoder, build_encoder
from hnm_jax.training import batches as training_batches
from hnm_jax.training import miner, train
from hnm_jax.training.checkpointing import miner_arrays, miner_position, miner_template, restore_miner
from hnm_jax.training.miner import MinerState, cross_fitted, load_dev_set, make_context, with_judges
from hnm_jax.training.runs import CE_DIR
from hnm_jax.training.train import _cross_encoder_phase, train_and_evaluate


def plant_case_variants(root):
    """Adds an upper-case copy of every train positive: the same tokens for the uncased tokenizer, so any
    cross-encoder scores it exactly like the positive; not an exact-text twin, so mining does not drop it."""
    positives = [line.split("\t")[1] for line in (root / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
    by_id = {doc["_id"]: doc for doc in corpus}
    planted = {f"dup-{doc_id}": doc_id for doc_id in positives}
    with open(root / "corpus.jsonl", "a") as f:
        f.writelines(json.dumps({"_id": dup, "title": "", "text": by_id[doc_id]["text"].upper()}) + "\n"
                     for dup, doc_id in planted.items())
    return planted


@pytest.mark.slow
def test_ce_filter_drops_planted_duplicates_and_never_a_positive(tmp_path):
    root = write_tiny_beir(tmp_path / "data")
    planted = plant_case_variants(root)
    config = tiny_config(root, "configs/ablations/full_stack.py", ce__threshold=1.0, ce__margin=1e-6, ce__rescore_top=0,
                         mining__pool_size=20)
    spec = spec_from_config(config)
    spec = dataclasses.replace(spec, band=spec.band.for_run(2))  # as train_and_evaluate does for a 2-step run
    _, corpus, queries = load_texts(dataset_root(spec.data), skip_empty=spec.data.skip_empty)
    split = read_split(root, "train", corpus, queries)
    positives_before = split.positives.copy()
    encoder = build_encoder(spec.model, spec.seed)
    context = make_context(spec, tmp_path / "run", encoder, corpus, queries, split, batch_sharding=None)[0]
    mined = miner.refresh(context, MinerState(), encoder.state, 0)[0]
    row_of = {doc_id: row for row, doc_id in enumerate(corpus.ids)}
    dup_of_query = np.array([row_of[f"dup-{corpus.ids[p[0]]}"] for p in split.positives])  # [Q]
    in_pool = np.any(mined.pool.indices == dup_of_query[:, None], axis=1)
    assert in_pool.sum() >= len(planted) // 2  # the retriever does surface them

    # untrained: identical tokens still give identical scores
    context = with_judges(context, [build_cross_encoder(spec.model, spec.ce.source, spec.seed)])
    judged, stats = miner.judge(context, mined)  # no dev split: no gate, the CE filters
    assert stats["ce_filter_on"] == 1.0 and "ce_gate_precision" not in stats
    assert not np.any(judged.pool.indices == dup_of_query[:, None])  # every planted duplicate is gone
    assert np.any(mined.pool.indices == dup_of_query[:, None])  # a new state: the refreshed one is unchanged
    assert not mined.ce_scores and judged.ce_scores
    assert stats["ce_removed_margin"] >= in_pool.sum()
    np.testing.assert_array_equal(split.positives, positives_before)  # the labelled positives are untouched
    assert not np.any(judged.pool.indices[:, :, None] == split.positives[:, None, :])  # never in a pool
    kept = int((judged.pool.indices >= 0).sum())
    assert stats["ce_kept"] == kept

    # Guide-model masking: query 0's batch column holding its planted duplicate is masked, its positive is not.
    rows = np.array([0, 1])
    columns = np.array([split.positives[0, 0], split.positives[1, 0], dup_of_query[0], dup_of_query[1]])
    mask = miner.guide(context, judged, rows, columns)
    assert mask[0, 0] and mask[1, 1] and not mask[0, 2] and not mask[1, 3]


def add_dev_split(root):
    """A dev split: the test split's qrels and labelled candidates (12 queries, each 1 positive, 2 near-duplicates:
    `<brand> <item> <other model> <color>` and `<brand> <item> <model> pro`)."""
    for folder in ("qrels", "candidates"):
        shutil.copy(root / folder / "test.tsv", root / folder / "dev.tsv")
    return root


class FakeCE:
    """A stand-in cross-encoder (any object with `score` will do): logit `sign` * 10 for a labelled positive of the
    query (case-insensitive, so the planted upper-case copies too), `sign` * 9.95 for docs matching `also`, else
    0. Records every pair it scores."""

    def __init__(self, positives: dict[str, set[str]], sign: float = 1.0, also=lambda doc: False):
        self.positives, self.sign, self.also, self.pairs = positives, sign, also, []

    def score(self, queries, docs, batch_size=64, *, max_length=None, show_progress=False):
        self.pairs += list(zip(queries, docs, strict=True))
        return np.asarray([self.sign * (10.0 if d.lower() in self.positives.get(q, ()) else 9.95 if self.also(d)
                                        else 0.0) for q, d in zip(queries, docs, strict=True)], np.float32)


def positives_by_query(corpus, queries, *splits) -> dict[str, set[str]]:
    """query text -> lower-cased texts of its labelled positives, over `splits`."""
    out: dict[str, set[str]] = {}
    for split in splits:
        for row, positives in zip(split.query_rows, split.positives, strict=True):
            out.setdefault(queries.texts[row], set()).update(corpus.texts[d].lower() for d in positives if d >= 0)
    return out


def mined_miner(root, workdir, **overrides):
    """A tiny full-stack mining context over `root` (its dev split loaded) and the state of a pool mined once with the
    initial encoder."""
    config = tiny_config(root, "configs/ablations/full_stack.py",
                         **{"ce__threshold": 1.0, "ce__margin": 1e-6, "mining__pool_size": 20, **overrides})
    spec = spec_from_config(config)
    spec = dataclasses.replace(spec, band=spec.band.for_run(2))  # as train_and_evaluate does for a 2-step run
    _, corpus, queries = load_texts(dataset_root(spec.data), skip_empty=spec.data.skip_empty)
    split = read_split(root, "train", corpus, queries)
    encoder = build_encoder(spec.model, spec.seed)
    dev = load_dev_set(spec, root, corpus, queries)
    context = make_context(spec, workdir, encoder, corpus, queries, split, batch_sharding=None, dev=dev)[0]
    state = miner.refresh(context, MinerState(), encoder.state, 0)[0]
    return spec, corpus, queries, split, encoder, context, state


class Writes:
    def __init__(self):
        self.lines = []

    def write(self, step, scalars, prefix=""):
        self.lines.append((step, {f"{prefix}{k}": v for k, v in scalars.items()}))


@pytest.mark.slow
def test_cross_fitting_never_lets_a_ce_judge_queries_it_trained_on(tmp_path, monkeypatch):
    root = write_tiny_beir(tmp_path / "data")
    plant_case_variants(root)
    workdir = tmp_path / "run"
    spec, corpus, queries, split, encoder, context, state = mined_miner(root, workdir)
    assert spec.ce.train.cross_fit and context.dev is None and cross_fitted(spec)
    pool_before = state.pool
    oracle = positives_by_query(corpus, queries, split)
    trained, fakes = {}, {}

    def fake_train(spec_, ce_dir, context_, pool, mesh, rows=None):
        assert pool is state.pool
        trained[ce_dir.name] = (ce_dir, rows)
        fakes[ce_dir.name] = FakeCE(oracle)
        return fakes[ce_dir.name]

    monkeypatch.setattr(train, "train_cross_encoder", fake_train)
    writes = Writes()
    context, state, returned = _cross_encoder_phase(spec, workdir, context, state, encoder.state, mesh=None,
                                                    writer=writes)

    # Two halves, deterministic in the seed, each CE trained on one in its own folder.
    folds = cross_fit_folds(len(split), spec.seed)
    assert sorted(trained) == ["fold0", "fold1"] and returned is fakes["fold0"]
    for k in (0, 1):
        ce_dir, rows = trained[f"fold{k}"]
        assert ce_dir == workdir / CE_DIR / f"fold{k}"
        np.testing.assert_array_equal(rows, np.flatnonzero(folds == k))
    assert len(trained["fold0"][1]) == len(trained["fold1"][1]) == len(split) // 2
    assert not set(trained["fold0"][1]) & set(trained["fold1"][1])
    np.testing.assert_array_equal(context.judges.scorer, 1 - folds)

    # Which CE scored which pair: CE k only ever saw queries of the other fold, and scored all of them.
    row_of_text = {context.query_texts[r]: r for r in range(len(split))}
    for k in (0, 1):
        scored_rows = {row_of_text[q] for q, _ in fakes[f"fold{k}"].pairs}
        assert scored_rows == set(np.flatnonzero(folds == 1 - k).tolist())
        assert not scored_rows & set(trained[f"fold{k}"][1].tolist())
    assert state.ce_scores  # every cached score came from the CE of the query's other fold
    for q, d in state.ce_scores:
        pair = (context.query_texts[q], context.doc_texts[d])
        assert pair in fakes[f"fold{1 - folds[q]}"].pairs and pair not in fakes[f"fold{folds[q]}"].pairs

    # The pools were filtered (the planted copies score like the positive) by those CEs; the refresh figures
    # went to the writer.
    assert writes.lines and writes.lines[0][1]["refresh/ce_filter_on"] == 1.0
    assert writes.lines[0][1]["refresh/ce_removed_margin"] > 0
    assert (state.pool.indices >= 0).sum() < (pool_before.indices >= 0).sum()

    # Guide masks of a batch with a query of each fold use those scores (no new scoring): planted copies masked.
    rows = np.array([np.flatnonzero(folds == 0)[0], np.flatnonzero(folds == 1)[0]])
    row_of = {doc_id: row for row, doc_id in enumerate(corpus.ids)}
    dups = [row_of[f"dup-{corpus.ids[split.positives[r, 0]]}"] for r in rows]
    counts = [len(fake.pairs) for fake in fakes.values()]
    mask = miner.guide(context, state, rows,
                       np.array([split.positives[rows[0], 0], split.positives[rows[1], 0], *dups]))
    np.testing.assert_array_equal(mask, [[True, True, False, True], [True, True, True, False]])
    assert [len(fake.pairs) for fake in fakes.values()] == counts


def test_refreshes_count_the_unlabelled_duplicates_in_the_pool_and_those_the_filter_drops(tmp_path):
    """Claim (4)'s counts on a tiny power_dup-like benchmark: its unlabelled_duplicates.tsv mapped to corpus rows per
    training query; a refresh whose CE filter runs logs how many pool entries are their query's duplicate, how many
    of those the filter dropped, and its precision and recall on them. Datasets without the file (or a filter that
    did not run) log nothing new."""
    root = dup_benchmark(tmp_path / "data")
    spec, corpus, queries, split, encoder, context, state = mined_miner(root, tmp_path / "run")
    duplicates = load_unlabelled_duplicates(root, corpus, queries, split)
    expected = {(queries.ids[split.query_rows[q]], corpus.ids[d]) for q, row in enumerate(duplicates)
                for d in row if d >= 0}
    train_ids = {queries.ids[r] for r in split.query_rows}
    assert expected == {pair for pair in read_unlabelled_duplicates(root) if pair[0] in train_ids}
    assert expected and duplicates.shape == (len(split), 1)
    context = dataclasses.replace(context, dev=None, duplicates=duplicates)  # no dev check: the CE filters
    is_duplicate = (state.pool.indices == duplicates) & (duplicates >= 0)  # [Q, M] (one duplicate per query)
    assert is_duplicate.sum() >= 2  # BM25 + dense surface them
    # A CE that knows the duplicates of even split rows only: it scores them like the positive (the margin rule
    # drops them), the others like any negative.
    # The CE also scores like the positive the first pool entry of every query divisible by 3 that is not its
    # duplicate (a true negative it wrongly drops).
    even = np.arange(len(split)) % 2 == 0
    known = {context.query_texts[q]: {context.doc_texts[d].lower() for d in duplicates[q] if d >= 0}
             for q in range(0, len(split), 2)}
    wrong = {q: next(d for d in state.pool.indices[q] if d >= 0 and d not in duplicates[q])
             for q in range(0, len(split), 3)}
    for q, d in wrong.items():
        known.setdefault(context.query_texts[q], set()).add(context.doc_texts[d].lower())
    oracle = positives_by_query(corpus, queries, split)
    context = with_judges(context, [FakeCE({q: oracle[q] | known.get(q, set()) for q in oracle})])
    judged, stats = miner.judge(context, state)
    assert stats["ce_filter_on"] == 1.0
    assert stats["pool_unlabelled_duplicates"] == is_duplicate.sum()
    removed_duplicates = is_duplicate[even].sum()
    assert stats["ce_removed_unlabelled_duplicates"] == removed_duplicates < is_duplicate.sum()
    assert not np.any((judged.pool.indices == duplicates) & (duplicates >= 0) & even[:, None])
    # Every entry the filter dropped is a planted one: the even queries' duplicates and the wrong ones (the same
    # text may sit in a pool twice only as one row, so each counts once); precision = duplicates / dropped,
    # recall = dropped duplicates / duplicates in the pools.
    dropped = removed_duplicates + len(wrong)
    assert stats["ce_removed_margin"] + stats["ce_removed_threshold"] == dropped
    assert stats["ce_dup_precision"] == pytest.approx(removed_duplicates / dropped)
    assert stats["ce_dup_recall"] == pytest.approx(removed_duplicates / is_duplicate.sum())

    guides_only = dataclasses.replace(context, spec=dataclasses.replace(spec, ce=spec.ce.replace(filter=False)))
    stats = miner.judge(guides_only, state)[1]  # guide masks only: no filter ran
    assert not {"pool_unlabelled_duplicates", "ce_dup_precision", "ce_dup_recall"} & set(stats)
    (root / "unlabelled_duplicates.tsv").unlink()  # a dataset without the file
    assert load_unlabelled_duplicates(root, corpus, queries, split) is None
    stats = miner.judge(dataclasses.replace(context, duplicates=None), state)[1]
    assert not {"pool_unlabelled_duplicates", "ce_removed_unlabelled_duplicates", "ce_dup_precision"} & set(stats)


@pytest.mark.slow
def test_gate_filters_only_when_enough_of_what_the_rules_drop_on_dev_is_a_true_match(tmp_path, caplog):
    """The dev split: 12 queries, each with 1 labelled positive and 2 labelled negatives, one of them
    `<brand> <item> <model> pro`. Rules: margin 0.1 around the query's positive (threshold off)."""
    root = add_dev_split(write_tiny_beir(tmp_path / "data"))
    plant_case_variants(root)
    spec, corpus, queries, split, encoder, context, state = mined_miner(root, tmp_path / "run", ce__margin=0.1)
    dev = context.dev
    assert dev is not None and len(dev.split) == 12 and len(dev.split.candidates) == 36
    assert spec.ce.mining.gate_min_precision == 0.5 and spec.ce.mining.threshold == 1.0
    pool_before = state.pool
    oracle = positives_by_query(corpus, queries, split, dev.split)

    def with_spec(context, **ce):  # the context of a spec with these ce.* keys
        return dataclasses.replace(context, spec=dataclasses.replace(spec, ce=spec.ce.replace(**ce)))

    # A CE that scores positives -10 and everything else 0: every negative is above the reference (its positive,
    # -10), and each positive is its own reference: 12 positives and 24 negatives dropped, precision 12 / 36.
    worse = FakeCE(oracle, sign=-1.0)
    judged_by_worse = with_judges(context, [worse])
    with caplog.at_level(logging.WARNING, logger="hnm_jax.training.miner"):
        closed, stats = miner.judge(judged_by_worse, state)
    assert stats["ce_gate_precision"] == pytest.approx(1 / 3) and stats["ce_gate_recall"] == 1.0
    assert stats["ce_gate_negatives_removed"] == 1.0
    assert stats["ce_filter_on"] == 0.0 and not closed.ce_filter_on and "ce_kept" not in stats
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "12 of 12 true matches and 24 of 24 labelled negatives" in warnings[0]
    assert "precision 0.3333 < ce.gate_min_precision 0.5000" in warnings[0]
    np.testing.assert_array_equal(closed.pool.indices, pool_before.indices)
    assert np.isnan(closed.pool.ce[closed.pool.indices >= 0]).all()  # the training pools were not even scored
    assert {q for q, _ in worse.pairs} == set(dev.query_texts) and len(worse.pairs) == 36  # each dev pair once
    assert miner.guide(judged_by_worse, closed, np.arange(4), split.positives[:4, 0]).all()
    arrays = miner_arrays(closed)
    assert set(arrays) == set(miner_template(context, encoder.config.hidden_size))  # a closed gate checkpoints too
    miner.judge(judged_by_worse, closed)
    assert len(worse.pairs) == 36  # the figures are fixed per CE: dev is scored once

    # ce.gate_min_precision = 0: no gate; the same CE filters, its figures still logged.
    stats = miner.judge(with_spec(judged_by_worse, gate_min_precision=0.0), state)[1]
    assert stats["ce_filter_on"] == 1.0 and stats["ce_gate_precision"] == pytest.approx(1 / 3) and "ce_kept" in stats
    assert len(worse.pairs) > 36 and not state.ce_scores  # the pool scored, into a new state

    # A CE that scores the `... pro` negatives within the margin (9.95 >= 10 - 0.1): 12 positives and 12 negatives
    # dropped, precision 0.5 >= 0.5: it filters (each query's planted copy of its positive scores 10: dropped).
    caplog.clear()
    better = FakeCE(oracle, also=lambda doc: doc.endswith(" pro"))
    judged_by_better = with_judges(context, [better])
    with caplog.at_level(logging.WARNING, logger="hnm_jax.training.miner"):
        opened, stats = miner.judge(judged_by_better, state)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert stats["ce_gate_precision"] == 0.5 and stats["ce_gate_recall"] == 1.0
    assert stats["ce_gate_negatives_removed"] == 0.5
    assert stats["ce_filter_on"] == 1.0 and opened.ce_filter_on
    row_of = {doc_id: row for row, doc_id in enumerate(corpus.ids)}
    dup_of_query = np.array([row_of[f"dup-{corpus.ids[p[0]]}"] for p in split.positives])  # [Q]
    assert np.any(pool_before.indices == dup_of_query[:, None])
    assert not np.any(opened.pool.indices == dup_of_query[:, None])  # each query's own planted copy is gone
    assert miner.judge(with_spec(judged_by_better, gate_min_precision=0.6), state)[1]["ce_filter_on"] == 0.0  # < 0.6

    # A precise CE (the positives 10, everything else 0): precision 1, no labelled negative lost.
    stats = miner.judge(with_judges(context, [FakeCE(oracle)]), state)[1]
    assert stats["ce_gate_precision"] == 1.0 and stats["ce_gate_negatives_removed"] == 0.0
    assert stats["ce_filter_on"] == 1.0

    # Cross-fitted: EACH CE must pass; the figures are the lower-precision CE's, both per fold.
    cross_fit = with_judges(context, [better, FakeCE(oracle, sign=-1.0)], 1 - cross_fit_folds(len(split), spec.seed))
    stats = miner.judge(cross_fit, state)[1]
    assert stats["ce_gate_precision_fold0"] == 0.5 and stats["ce_gate_precision_fold1"] == pytest.approx(1 / 3)
    assert stats["ce_gate_negatives_removed_fold0"] == 0.5 and stats["ce_gate_negatives_removed_fold1"] == 1.0
    assert stats["ce_gate_precision"] == pytest.approx(1 / 3) and stats["ce_gate_negatives_removed"] == 1.0
    assert stats["ce_filter_on"] == 0.0


def test_pools_requeried_between_refreshes_keep_only_ce_scored_entries(tmp_path):
    """With the filter on, a pool re-queried inside an epoch keeps only entries the CE scored at the refresh (here
    its first 5 of 20, ce.rescore_top) and kept; with the filter off it is the raw re-query."""
    root = write_tiny_beir(tmp_path / "data")
    plant_case_variants(root)
    spec, corpus, queries, split, encoder, context, state = mined_miner(root, tmp_path / "run", ce__rescore_top=5,
                                                                        ce__margin=0.1)
    assert spec.mining.pool == "online" and context.dev is None  # no dev split: no gate, the CE filters
    rows = np.arange(8)
    # The same parameters as the refresh: the raw re-query is the refresh's pool before the filter.
    raw = miner.candidates(context, state, rows, encoder.state, step=1).pool.indices
    np.testing.assert_array_equal(raw, state.pool.indices[rows])
    context = with_judges(context, [FakeCE(positives_by_query(corpus, queries, split))])
    state = miner.judge(context, state)[0]
    scored = state.ce_scores
    assert any((int(r), int(d)) not in scored for r, row in zip(rows, raw, strict=True) for d in row if d >= 0)
    requeried = miner.candidates(context, state, rows, encoder.state, step=1).pool  # pool_step 0 < 1: re-queried
    for r, row in zip(rows, raw, strict=True):
        expected = [d for d in row if d >= 0 and (int(r), int(d)) in scored
                    and scored[(int(r), int(d))] < state.ce_positive[r] - 0.1]
        got = requeried.indices[r]
        np.testing.assert_array_equal(got[:len(expected)], expected)
        assert np.all(got[len(expected):] == -1)
    assert np.isfinite(requeried.ce[requeried.indices >= 0]).all()
    # A checkpointed state restores to one whose re-query keeps the same entries (its scores: the pool's `ce`).
    arrays = miner_arrays(state)
    template = miner_template(context, encoder.config.hidden_size)
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {k: (v.shape, v.dtype) for k, v in template.items()}
    restored = restore_miner(context, arrays, miner_position(state))
    assert restored.pool_step == state.pool_step and restored.ce_filter_on and set(restored.ce_scores) <= set(scored)
    np.testing.assert_array_equal(miner.candidates(context, restored, rows, encoder.state, step=1).pool.indices,
                                  requeried.indices)

    closed = dataclasses.replace(state, ce_filter_on=False)  # a closed gate: no filter, nothing restricted
    np.testing.assert_array_equal(miner.candidates(context, closed, rows, encoder.state, step=1).pool.indices, raw)
    guides_only = dataclasses.replace(context, spec=dataclasses.replace(spec, ce=spec.ce.replace(filter=False)))
    np.testing.assert_array_equal(miner.candidates(guides_only, state, rows, encoder.state, step=1).pool.indices, raw)


def dup_benchmark(root):
    """A tiny power_dup-like benchmark: 40 tasks, 2 queries each, an unlabelled duplicate for a quarter of them; format
    siblings by the date rule only (a "capacity" sibling lower-cases to its task's text: FakeCE would call it one)."""
    return write_beir(generate(SyntheticConfig(num_tasks=40, distractors=10, queries_per_task=2, seed=4,
                                               duplicate_share=0.25, format_rules=("date",))), root)


def test_oracle_filter_keeps_exactly_the_known_duplicates_out_of_the_pools(tmp_path):
    root = dup_benchmark(tmp_path / "data")
    pools = {}
    for oracle in (False, True):
        config = tiny_config(root, "configs/ablations/online_hardest_oracle.py", mining__pool_size=20,
                             mining__oracle_filter=oracle)
        spec = spec_from_config(config)
        assert spec.mining_retriever.mode == "dense" and spec.mining.pool == "online"
        _, corpus, queries = load_texts(dataset_root(spec.data), skip_empty=spec.data.skip_empty)
        split = read_split(root, "train", corpus, queries)
        encoder = build_encoder(spec.model, spec.seed)
        duplicates = load_unlabelled_duplicates(root, corpus, queries, split)
        context = make_context(spec, tmp_path / f"run{oracle}", encoder, corpus, queries, split, batch_sharding=None,
                               duplicates=duplicates)[0]
        state, stats = miner.refresh(context, MinerState(), encoder.state, 0)
        is_duplicate = ((state.pool.indices[:, :, None] == duplicates[:, None, :])
                        & (duplicates[:, None, :] >= 0)).any(axis=2)
        assert stats["pool_unlabelled_duplicates"] == is_duplicate.sum()
        requeried = miner.candidates(context, state, np.arange(len(split)), encoder.state, step=1).pool.indices
        pools[oracle] = state.pool.indices, requeried, is_duplicate  # the pool and its re-query
    plain, plain_requeried, plain_duplicate = pools[False]
    oracle, oracle_requeried, oracle_duplicate = pools[True]
    assert plain_duplicate.sum() >= 2 and oracle_duplicate.sum() == 0  # the dense retriever surfaces them
    for q in range(len(plain)):  # the same pool without the duplicates, topped up from further down the ranking
        kept = [d for d, dup in zip(plain[q], plain_duplicate[q], strict=True) if d >= 0 and not dup]
        np.testing.assert_array_equal(oracle[q, :len(kept)], kept)
        assert not set(oracle[q]) & set(duplicates[q][duplicates[q] >= 0])
        assert (oracle[q] >= 0).sum() == (plain[q] >= 0).sum()
    in_requeried = [((pool[:, :, None] == duplicates[:, None, :]) & (duplicates[:, None, :] >= 0)).any()
                    for pool in (plain_requeried, oracle_requeried)]
    assert in_requeried == [True, False]

    # A dataset without unlabelled_duplicates.tsv cannot run the oracle: a ConfigError before any workdir exists.
    plain_root = write_tiny_beir(tmp_path / "plain")
    with pytest.raises(ConfigError, match="mining.oracle_filter: needs the known unlabelled duplicates"):
        train_and_evaluate(tiny_config(plain_root, "configs/ablations/online_hardest_oracle.py"), tmp_path / "w")
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_full_config_trains_the_cross_encoder_reranks_and_resumes(tmp_path, monkeypatch):
    root = add_dev_split(write_tiny_beir(tmp_path / "data"))
    workdir = tmp_path / "run"
    config = tiny_config(root, "configs/ablations/full_stack.py", train__max_steps=2, ce__rerank_depth=5,
                         ce__gate_min_precision=0.0)
    assert config.ce.cross_fit and config.ce.rescore_top == 0
    fold_of_training, trained_rows = [], {}  # spies: the rows each fold's CE trains on
    real_train, real_batch = train.train_cross_encoder, training_batches.make_ce_batch

    def spy_train(spec, ce_dir, context, pool, mesh, rows=None):
        fold_of_training.append(ce_dir.name)
        return real_train(spec, ce_dir, context, pool, mesh, rows)

    def spy_batch(ce, query_texts, doc_texts, rows, *args):
        trained_rows.setdefault(fold_of_training[-1], set()).update(rows.tolist())
        return real_batch(ce, query_texts, doc_texts, rows, *args)

    monkeypatch.setattr(train, "train_cross_encoder", spy_train)
    monkeypatch.setattr(training_batches, "make_ce_batch", spy_batch)
    metrics = train_and_evaluate(config, workdir)
    assert set(metrics["stages"]) == {"retrieve", "rerank"}
    for name, value in metrics["stages"]["rerank"].items():  # top level = the final stage
        assert metrics[name] == value
    for name in ("recall@5", "recall@10", "accuracy@5"):  # re-ranking the top 5 re-orders, never replaces
        assert metrics["stages"]["retrieve"][name] == metrics["stages"]["rerank"][name]

    # Two CEs, each trained on its half of the 36 training queries only, exported in its own folder.
    folds = cross_fit_folds(36, config.seed)
    assert fold_of_training == ["fold0", "fold1"]
    for k in (0, 1):
        assert trained_rows[f"fold{k}"] and trained_rows[f"fold{k}"] <= set(np.flatnonzero(folds == k).tolist())
    exports = [workdir / CE_DIR / f"fold{k}" / "model" / "model.safetensors" for k in (0, 1)]
    assert all(export.is_file() for export in exports) and not (workdir / CE_DIR / "model").exists()
    for k in (0, 1):
        lines = (workdir / CE_DIR / f"fold{k}" / "metrics.jsonl").read_text().splitlines()
        assert json.loads(lines[-1])["step"] == config.ce.train_steps

    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    refresh = [line for line in lines if "refresh/ce_kept" in line]
    assert refresh and all(line["refresh/ce_kept"] + line["refresh/ce_removed_threshold"]
                           + line["refresh/ce_removed_margin"] > 0 for line in refresh)
    checked = [line for line in lines if "refresh/ce_gate_precision" in line]  # the gate's figures, logged
    assert checked and all(line["refresh/ce_filter_on"] == 1.0 for line in checked)  # no gate
    for line in checked:
        assert 0.0 <= line["refresh/ce_gate_recall"] <= 1.0
        assert 0.0 <= line["refresh/ce_gate_negatives_removed"] <= 1.0
        assert line["refresh/ce_gate_precision"] == min(line["refresh/ce_gate_precision_fold0"],
                                                        line["refresh/ce_gate_precision_fold1"])

    mtimes = [export.stat().st_mtime_ns for export in exports]
    again = train_and_evaluate(config, workdir)  # finished run: resumes at the end, CEs loaded, not retrained
    assert [export.stat().st_mtime_ns for export in exports] == mtimes
    assert again["accuracy@1"] == metrics["accuracy@1"]
    assert again["stages"] == metrics["stages"]


def test_ce_train_epochs_replace_train_steps(tmp_path):
    config = tiny_config(tmp_path, "configs/base.py", ce__train_steps=60, ce__batch_size=16)
    spec = spec_from_config(config).ce.train
    assert spec.train_epochs == 0 and spec.total_steps(37) == 60  # base: train_steps
    config.ce.train_epochs = 4
    assert spec_from_config(config).ce.train.total_steps(37) == 148  # 4 epochs of 37 full batches
    config.ce.train_epochs = -1
    with pytest.raises(ConfigError, match="ce.train_epochs"):
        spec_from_config(config)


def test_a_run_trains_its_reranker_for_ce_train_epochs_and_interpolates(tmp_path):
    root = write_tiny_beir(tmp_path / "data")
    workdir = tmp_path / "run"
    config = tiny_config(root, "configs/full.py", train__max_steps=2, ce__rerank_depth=3, ce__rerank_weight=0.2,
                         ce__train_epochs=1)
    metrics = train_and_evaluate(config, workdir)
    queries = len(read_split(root, "train", *load_texts(root)[1:]))
    lines = (workdir / CE_DIR / "metrics.jsonl").read_text().splitlines()
    assert config.ce.train_steps != queries // config.ce.batch_size  # the epoch count, not train_steps, decides
    assert json.loads(lines[-1])["step"] == queries // config.ce.batch_size
    assert metrics["rerank"]["weight"] == 0.2 and set(metrics["stages"]) == {"retrieve", "rerank"}
