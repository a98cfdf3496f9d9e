"""Tests for hnm_jax.data.synthetic and hnm_jax.data.tfds_builders: labels, determinism, exports, TFDS."""

from __future__ import annotations

import dataclasses
import datetime
import filecmp
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hnm_jax.data import beir, synthetic
from hnm_jax.data.synthetic import SyntheticConfig

RECORD = re.compile(
    r"(?P<action>\w+) (?P<part>.+) (?P<capacity>\d+[GT][Bb]) model (?P<model>[A-Z]{2}-\d{4}[A-Z]) "
    r"in rack (?P<rack>[A-H]-\d+), (?P<location>.+), due (?P<date>\d{4}-\d\d-\d\d), priority (?P<priority>\w+)"
)
TWO_PER_TYPE = SyntheticConfig(num_tasks=30, siblings_per_type=2, distractors=10, queries_per_task=2, seed=3)
CONFIGS = {"tiny": synthetic.SIZES["tiny"], "two_per_type": TWO_PER_TYPE}


@pytest.fixture(scope="module", params=list(CONFIGS))
def bench(request: pytest.FixtureRequest) -> synthetic.SyntheticBenchmark:
    return synthetic.generate(CONFIGS[request.param])


@pytest.fixture(scope="module")
def tiny() -> synthetic.SyntheticBenchmark:
    return synthetic.generate(synthetic.SIZES["tiny"])


def _parse(text: str) -> dict[str, str]:
    match = RECORD.fullmatch(text)
    assert match is not None, text
    return match.groupdict()


def _families(bench: synthetic.SyntheticBenchmark) -> list[tuple[synthetic.CorpusRecord, list]]:
    by_id = {r.id: r for r in bench.corpus}
    return [(by_id[task], siblings) for task, siblings in bench.siblings().items()]


def _changed(a: str, b: str) -> list[str]:
    pa, pb = _parse(a), _parse(b)
    return [k for k in pa if pa[k] != pb[k]]


# ----------------------------------------------------------------------------------------- corpus


def test_records_render_their_fields(bench):
    for record in bench.corpus:
        assert _parse(record.text) == record.fields._asdict()
    assert len({r.text for r in bench.corpus}) == len(bench.corpus)
    assert len({r.id for r in bench.corpus}) == len(bench.corpus)


def test_corpus_roles_and_counts(bench):
    config = bench.config
    tasks = [r for r in bench.corpus if r.task_id == r.id]
    distractors = [r for r in bench.corpus if r.task_id is None]
    siblings = [r for r in bench.corpus if r.perturbation is not None]
    assert len(tasks) == config.num_tasks and len(distractors) == config.distractors
    assert all(r.perturbation is None for r in tasks + distractors)
    assert len(siblings) == 3 * config.siblings_per_type * config.num_tasks
    for task, family in _families(bench):
        assert task.perturbation is None
        counts = Counter(s.perturbation for s in family)
        assert counts == dict.fromkeys(synthetic.PERTURBATIONS, config.siblings_per_type)
    # model numbers identify a family: unique across tasks, distractors and single_token siblings
    models = [r.fields.model for r in bench.corpus if r.perturbation in (None, "single_token")]
    assert len(set(models)) == len(models)


def test_single_token_siblings_differ_by_one_token_one_digit(bench):
    for task, family in _families(bench):
        for sibling in (s for s in family if s.perturbation == "single_token"):
            a, b = task.text.split(), sibling.text.split()
            assert len(a) == len(b)
            diff = [i for i in range(len(a)) if a[i] != b[i]]
            assert len(diff) == 1
            old, new = a[diff[0]], b[diff[0]]
            assert old == task.fields.model and new == sibling.fields.model
            chars = [j for j in range(len(old)) if old[j] != new[j]]
            assert len(old) == len(new) and len(chars) == 1 and old[chars[0]].isdigit() and new[chars[0]].isdigit()


def test_format_siblings_follow_the_rule(bench):
    rules = Counter()
    for task, family in _families(bench):
        for sibling in (s for s in family if s.perturbation == "format"):
            (field,) = _changed(task.text, sibling.text)
            old, new = getattr(task.fields, field), getattr(sibling.fields, field)
            # same characters up to order and case, one whitespace token changed
            assert sorted(old.lower()) == sorted(new.lower()) and old != new
            assert sum(x != y for x, y in zip(task.text.split(), sibling.text.split(), strict=True)) == 1
            if field == "date":  # month and day swapped; both valid, different dates
                y, m, d = old.split("-")
                assert new == f"{y}-{d}-{m}"
                assert datetime.date.fromisoformat(old) != datetime.date.fromisoformat(new)
            else:  # bytes -> bits
                assert field == "capacity" and old[-2:] in ("GB", "TB") and new == old[:-2] + old[-2] + "b"
            rules[field] += 1
    assert set(rules) == {"date", "capacity"}


def test_semantic_siblings_change_one_field_to_a_related_value(bench):
    fields_seen = Counter()
    for task, family in _families(bench):
        for sibling in (s for s in family if s.perturbation == "semantic"):
            (field,) = _changed(task.text, sibling.text)
            assert field in synthetic.SEMANTIC_FIELDS
            old, new = getattr(task.fields, field), getattr(sibling.fields, field)
            part = sibling.fields.part
            assert sibling.fields.capacity in synthetic.CAPACITIES[part]  # still a real product
            if field == "action":
                assert new in synthetic.ACTIONS
            elif field == "part":
                assert new in synthetic.PARTS
            elif field == "location":
                assert new in synthetic.LOCATIONS
            elif field == "capacity":
                levels = synthetic.CAPACITIES[part]
                assert abs(levels.index(new) - levels.index(old)) == 1
            elif field == "priority":
                assert abs(synthetic.PRIORITIES.index(new) - synthetic.PRIORITIES.index(old)) == 1
            else:
                assert new.split("-")[0] == old.split("-")[0]
            fields_seen[field] += 1
    assert len(fields_seen) >= 4


def test_mentions_are_unambiguous_per_field():
    for table in (synthetic.ACTIONS, synthetic.PARTS):
        mentions = [m for values in table.values() for m in values]
        assert len(mentions) == len(set(mentions))


# ----------------------------------------------------------------------------------------- queries


def test_queries_point_to_their_task_and_keep_distinguishing_fields(bench):
    by_id = {r.id: r for r in bench.corpus}
    families = bench.siblings()
    assert len(bench.queries) == bench.config.num_tasks * bench.config.queries_per_task
    for query in bench.queries:
        task = by_id[query.task_id]
        assert task.task_id == task.id and task.perturbation is None
        assert task.fields.model in query.text.split(" ") or f"{task.fields.model}" in query.text
        distinguishing = {f for s in families[task.id] for f in _changed(task.text, s.text)}
        assert distinguishing | {"model"} <= set(query.mentioned)
        for sibling in families[task.id]:
            if sibling.perturbation == "single_token":
                assert sibling.fields.model not in query.text
        assert query.text != task.text
    per_task = Counter(q.task_id for q in bench.queries)
    assert set(per_task.values()) == {bench.config.queries_per_task}


def test_splits_are_disjoint_by_query_and_task(bench):
    queries = {split: bench.split_queries(split) for split in synthetic.SPLITS}
    ids = [q.id for split in synthetic.SPLITS for q in queries[split]]
    assert sorted(ids) == sorted(q.id for q in bench.queries)
    tasks = {split: {q.task_id for q in queries[split]} for split in synthetic.SPLITS}
    assert not (tasks["train"] & tasks["dev"] or tasks["train"] & tasks["test"] or tasks["dev"] & tasks["test"])
    n = bench.config.num_tasks
    train, dev = round(0.6 * n), round(0.2 * n)
    assert [len(tasks[s]) for s in synthetic.SPLITS] == [train, dev, n - train - dev]


def test_candidates_are_positive_plus_siblings(tiny):
    by_id = {r.id: r for r in tiny.corpus}
    for split in synthetic.SPLITS:
        rows = tiny.candidates(split)
        queries = {q.id: q for q in tiny.split_queries(split)}
        assert {qid for qid, _, _ in rows} == set(queries)
        for qid, doc_id, label in rows:
            record = by_id[doc_id]
            assert (label == 1) == (doc_id == queries[qid].task_id)
            assert label == 1 or (record.perturbation is not None and record.task_id == queries[qid].task_id)
        assert len(rows) == len(queries) * 4


def test_determinism():
    config = SyntheticConfig(num_tasks=20, distractors=5, seed=7)
    assert synthetic.generate(config) == synthetic.generate(config)
    other = synthetic.generate(SyntheticConfig(num_tasks=20, distractors=5, seed=8))
    assert [r.text for r in other.corpus] != [r.text for r in synthetic.generate(config).corpus]
    assert [q.text for q in other.queries] != [q.text for q in synthetic.generate(config).queries]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_tasks": 0}, "num_tasks"),
        ({"num_tasks": 10, "siblings_per_type": 3}, "siblings_per_type"),
        ({"num_tasks": 10, "split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
        ({"num_tasks": 2}, "leaves a split without tasks"),
    ],
)
def test_bad_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.generate(SyntheticConfig(**kwargs))


# ----------------------------------------------------------------------------------------- BEIR export


def test_beir_export_loads_for_every_split(tiny, tmp_path):
    root = synthetic.write_beir(tiny, tmp_path / "synth")
    assert beir.list_splits(root) == sorted(synthetic.SPLITS)
    types = synthetic.perturbation_types(root)
    assert types == {r.id: r.perturbation for r in tiny.corpus if r.perturbation is not None}
    for split in synthetic.SPLITS:
        data = beir.load_beir(root, split)
        assert data.corpus.ids == tuple(r.id for r in tiny.corpus)
        assert data.corpus.texts == tuple(r.text for r in tiny.corpus)
        queries = tiny.split_queries(split)
        assert [data.queries.ids[row] for row in data.split.query_rows] == [q.id for q in queries]
        assert [data.corpus.ids[row] for row in data.split.positives[:, 0]] == [q.task_id for q in queries]
        assert data.split.positives.shape[1] == 1
        cand = data.split.candidates
        assert cand is not None and len(cand) == len(tiny.candidates(split))
        doc_ids = [data.corpus.ids[row] for row in cand.doc]
        assert all((types.get(d) is None) == (label == 1) for d, label in zip(doc_ids, cand.label, strict=True))
        np.testing.assert_array_equal(np.bincount(cand.label), [3 * len(queries), len(queries)])


def test_perturbations_file_errors_name_the_line(tmp_path):
    (tmp_path / "perturbations.tsv").write_text("corpus-id\tperturbation\ttask-id\nc1\tsemantic\tc0\nc2\tcolour\tc0\n")
    with pytest.raises(beir.DataError, match=r"perturbations.tsv:3: unknown perturbation 'colour'"):
        synthetic.perturbation_types(tmp_path)
    with pytest.raises(beir.DataError, match="missing"):
        synthetic.perturbation_types(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------- TFDS


def _same_files(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert filecmp.cmp(a / f, b / f, shallow=False), f


def test_tfds_synthetic_round_trip(tiny, tmp_path):
    tfds_builders = pytest.importorskip("hnm_jax.data.tfds_builders")
    data_dir = tmp_path / "tfds"
    builder = tfds_builders.SyntheticNearDup(config="tiny", data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds_builders.tfds.download.DownloadConfig(try_download_gcs=False))
    sources = tfds_builders.tfds.data_source("synthetic_near_dup/tiny", data_dir=str(data_dir), download=False)
    assert len(sources["corpus"]) == len(tiny.corpus) and len(sources["queries"]) == len(tiny.queries)
    for i in (0, 7, len(tiny.corpus) - 1):
        row, record = sources["corpus"][i], tiny.corpus[i]
        assert row["id"].decode() == record.id and row["text"].decode() == record.text
        assert row["perturbation"].decode() == (record.perturbation or "")
    assert [sources["queries"][i]["text"].decode() for i in range(len(tiny.queries))] == [q.text for q in tiny.queries]
    assert len(sources["candidates_test"]) == len(tiny.candidates("test"))
    exported = tfds_builders.beir_from_tfds("synthetic_near_dup/tiny", data_dir, tmp_path / "from_tfds")
    _same_files(synthetic.write_beir(tiny, tmp_path / "direct"), exported)

    # a custom seed is a custom config, read back from files by its name
    config = SyntheticConfig(num_tasks=10, distractors=2, seed=5)
    name = tfds_builders.prepare_synthetic(data_dir, "tiny_seed5", config)
    assert name == "synthetic_near_dup/tiny_seed5"
    exported = tfds_builders.beir_from_tfds(name, data_dir, tmp_path / "seed5_tfds")
    _same_files(synthetic.write_beir(synthetic.generate(config), tmp_path / "seed5"), exported)


def test_tfds_local_beir_round_trip(tiny_beir, tmp_path):
    tfds_builders = pytest.importorskip("hnm_jax.data.tfds_builders")
    root = tiny_beir
    data_dir = tmp_path / "tfds"
    name = tfds_builders.prepare_local_beir(root, data_dir, name="Tiny BEIR")
    assert name == "local_beir/tiny_beir"
    sources = tfds_builders.data_sources(name, data_dir)
    assert set(sources) == {"corpus", "queries", "qrels_train", "qrels_test", "candidates_train", "candidates_test"}
    out = tfds_builders.beir_from_tfds(name, data_dir, tmp_path / "back")
    assert not (out / "perturbations.tsv").exists()
    for split in ("train", "test"):
        a, b = beir.load_beir(root, split), beir.load_beir(out, split)
        assert (a.corpus.ids, a.corpus.texts) == (b.corpus.ids, b.corpus.texts)
        assert (a.queries.ids, a.queries.texts) == (b.queries.ids, b.queries.texts)
        np.testing.assert_array_equal(a.split.query_rows, b.split.query_rows)
        np.testing.assert_array_equal(a.split.positives, b.split.positives)
        for field in ("query", "doc", "label"):
            np.testing.assert_array_equal(getattr(a.split.candidates, field), getattr(b.split.candidates, field))
    with pytest.raises(beir.DataError, match="not a BEIR folder"):
        tfds_builders.prepare_local_beir(tmp_path, data_dir, name="nope")


# ----------------------------------------------------------------------------------------- unlabelled duplicates

DUP = SyntheticConfig(num_tasks=40, distractors=10, queries_per_task=2, seed=4, duplicate_share=0.25)


@pytest.fixture(scope="module")
def dup_bench() -> synthetic.SyntheticBenchmark:
    return synthetic.generate(DUP)


def test_unlabelled_duplicates_are_matches_by_construction(dup_bench):
    by_id = {r.id: r for r in dup_bench.corpus}
    duplicates = [r for r in dup_bench.corpus if r.perturbation == synthetic.DUPLICATE]
    assert duplicates and dup_bench.duplicates() == {r.task_id: r for r in duplicates}
    queries = {q.text.lower() for q in dup_bench.queries}
    for dup in duplicates:
        task = by_id[dup.task_id]
        assert task.task_id == task.id and task.perturbation is None  # the duplicate of a task with queries
        assert dup.fields == task.fields  # same entity: all eight values identical
        assert dup.text.lower() != task.text.lower() and dup.text.lower() not in queries  # only the surface differs
        f = task.fields  # read back from the text: the model first, then the values in some surface form
        assert re.fullmatch(rf"(model |mdl |p/n )?{f.model}: .+", dup.text)
        row, number = f.rack.split("-")
        assert f.rack in dup.text or f"{row}{number}" in dup.text
        assert f.priority in dup.text and f.capacity[:-2] in dup.text and f.date[:4] in dup.text
        assert "Gb" not in dup.text and "Tb" not in dup.text  # never the look of a capacity format sibling
        # no sibling of the task appears among the duplicates, and siblings stay siblings
        assert dup.id not in {s.id for s in dup_bench.siblings()[task.id]}
    # round(share * n) tasks of each split
    for split in synthetic.SPLITS:
        tasks = {q.task_id for q in dup_bench.split_queries(split)}
        assert len(tasks & dup_bench.duplicates().keys()) == round(DUP.duplicate_share * len(tasks))
    assert len(dup_bench.corpus) == 40 * 4 + 10 + len(duplicates)


def test_unlabelled_duplicates_are_in_no_qrels_or_candidates(dup_bench, tmp_path):
    dup_ids = {r.id for r in dup_bench.duplicates().values()}
    root = synthetic.write_beir(dup_bench, tmp_path / "dup")
    for split in synthetic.SPLITS:
        assert not dup_ids & {q.task_id for q in dup_bench.split_queries(split)}
        assert not dup_ids & {doc for _, doc, _ in dup_bench.candidates(split)}
        data = beir.load_beir(root, split)
        rows = {data.corpus.index[d] for d in dup_ids}
        assert not rows & set(data.split.positives.ravel().tolist())
        assert not rows & set(data.split.candidates.doc.tolist())
        assert len(data.split.candidates) == 4 * len(dup_bench.split_queries(split))  # task + 3 siblings, as before
    # the side file: every query of a task with a duplicate, once, in query order
    pairs = synthetic.read_unlabelled_duplicates(root)
    task_of = {q.id: q.task_id for q in dup_bench.queries}
    duplicates = dup_bench.duplicates()
    assert pairs == dup_bench.unlabelled_duplicates()
    assert [q for q, _ in pairs] == [q.id for q in dup_bench.queries if q.task_id in duplicates]
    assert all(duplicates[task_of[q]].id == d for q, d in pairs)
    assert (root / "unlabelled_duplicates.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id"
    # perturbations.tsv: siblings as before, duplicates with type "duplicate" and their task
    rows = synthetic.read_perturbations(root)
    assert {d: rows[d] for d in dup_ids} == {d: (synthetic.DUPLICATE, duplicates_task) for duplicates_task, d in
                                             ((t, r.id) for t, r in duplicates.items())}  # fmt: skip
    assert Counter(kind for kind, _ in rows.values()) == {"single_token": 40, "format": 40, "semantic": 40,
                                                          "duplicate": len(dup_ids)}  # fmt: skip
    # a benchmark without duplicates writes no side file, and reads back as []
    assert not (synthetic.write_beir(synthetic.generate(SyntheticConfig(num_tasks=10)), tmp_path / "none")
                / "unlabelled_duplicates.tsv").exists()  # fmt: skip
    assert synthetic.read_unlabelled_duplicates(tmp_path / "none") == []


def test_duplicates_leave_the_rest_of_the_benchmark_unchanged(dup_bench):
    plain = synthetic.generate(dataclasses.replace(DUP, duplicate_share=0.0))
    assert plain.duplicates() == {} and plain.unlabelled_duplicates() == []
    assert [(q.id, q.text, q.split, q.mentioned) for q in plain.queries] == [
        (q.id, q.text, q.split, q.mentioned) for q in dup_bench.queries]  # fmt: skip
    assert [r.text for r in plain.corpus] == [r.text for r in dup_bench.corpus if r.perturbation != "duplicate"]
    text = {b: {r.id: r.text for r in b.corpus} for b in (plain, dup_bench)}
    assert [text[plain][q.task_id] for q in plain.queries] == [text[dup_bench][q.task_id] for q in dup_bench.queries]
    assert synthetic.generate(DUP) == dup_bench  # deterministic in the seed


def test_unlabelled_duplicates_file_errors_name_the_line(tmp_path):
    (tmp_path / "unlabelled_duplicates.tsv").write_text("query-id\tcorpus-id\nq1\tc1\nq2\n")
    with pytest.raises(beir.DataError, match=r"unlabelled_duplicates.tsv:3: expected 2 tab-separated columns"):
        synthetic.read_unlabelled_duplicates(tmp_path)


def test_tfds_round_trip_writes_the_unlabelled_duplicates(dup_bench, tmp_path):
    tfds_builders = pytest.importorskip("hnm_jax.data.tfds_builders")
    data_dir = tmp_path / "tfds"
    name = tfds_builders.prepare_synthetic(data_dir, "dup_test", DUP)
    sources = tfds_builders.data_sources(name, data_dir)
    assert len(sources["unlabelled_duplicates"]) == len(dup_bench.unlabelled_duplicates())
    exported = tfds_builders.beir_from_tfds(name, data_dir, tmp_path / "from_tfds")
    assert (exported / "unlabelled_duplicates.tsv").is_file()
    _same_files(synthetic.write_beir(dup_bench, tmp_path / "direct"), exported)
    # a local BEIR folder keeps its side file through TFDS too
    local = tfds_builders.prepare_local_beir(exported, data_dir, name="dup_local")
    _same_files(exported, tfds_builders.beir_from_tfds(local, data_dir, tmp_path / "local_back"))
    # the named configs
    configs = {c.name: c.synthetic for c in tfds_builders.SyntheticNearDup.BUILDER_CONFIGS}
    assert configs["power"] == synthetic.SIZES["power"] and configs["power_dup"].duplicate_share > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format_rules": ()}, "format_rules"),
        ({"format_rules": ("date", "date")}, "format_rules"),
        ({"format_rules": ("colour",)}, "format_rules"),
        ({"format_rules": ("date",), "siblings_per_type": 2}, "needs as many format_rules"),
        ({"duplicate_share": 1.5}, "duplicate_share"),
    ],
)
def test_bad_duplicate_and_format_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.generate(SyntheticConfig(num_tasks=10, **kwargs))


# ----------------------------------------------------------------------------------------- power size


def test_power_sizes_have_2000_test_queries():
    for name in ("power", "power_dup"):
        config = synthetic.SIZES[name]
        n = config.num_tasks
        train, dev = round(config.split_fractions[0] * n), round(config.split_fractions[1] * n)
        assert (n - train - dev) * config.queries_per_task >= 2000
        assert config.format_rules == ("date",) and config.seed != synthetic.SIZES["ablation"].seed
    assert synthetic.SIZES["power_dup"] == dataclasses.replace(synthetic.SIZES["power"], duplicate_share=0.2)


def test_ablation_dup_size_counts():
    """The 2-core size of claim 4: the ablation size with date-rule format siblings and a duplicate for 20% of each
    split's tasks: 500 tasks x (1 + 3 siblings) + 250 distractors + 100 duplicates; 1,000 queries."""
    bench = synthetic.generate(synthetic.SIZES["ablation_dup"])
    kinds = Counter(record.perturbation for record in bench.corpus)
    assert len(bench.corpus) == 2350 and kinds[synthetic.DUPLICATE] == 100 and kinds[None] == 750
    assert {split: len(bench.split_queries(split)) for split in synthetic.SPLITS} == {"train": 600, "dev": 200,
                                                                                      "test": 200}
    with_duplicate = {query_id for query_id, _ in bench.unlabelled_duplicates()}
    assert Counter(q.split for q in bench.queries if q.id in with_duplicate) == {"train": 120, "dev": 40, "test": 40}
    assert synthetic.SIZES["ablation_dup"].format_rules == ("date",)


@pytest.fixture(scope="module")
def tokenizer():
    from hnm_jax.models.pretrained import load_tokenizer

    return load_tokenizer("all-MiniLM-L6-v2")


@pytest.mark.slow
def test_power_siblings_stay_distinguishable_at_the_covering_width(tokenizer):
    from configs import base
    from hnm_jax.data.lengths import covering_width, token_lengths

    bench = synthetic.generate(synthetic.SIZES["power"])  # ~1.5 s
    assert [len(bench.split_queries(s)) for s in synthetic.SPLITS] == [6000, 2000, 2000]
    assert len(bench.corpus) == 22500
    data = base.get_config().data
    lengths = token_lengths(tokenizer, [r.text for r in bench.corpus])
    width = covering_width(lengths, data.length_coverage, data.max_length_cap)  # what `hnm train` picks for docs
    assert np.percentile(lengths, 95) <= 64 and width <= 64
    assert synthetic.indistinguishable_share(bench, tokenizer, width) == 0.0


def test_indistinguishable_share_counts_token_identical_siblings(tokenizer):
    # capacity-rule format siblings ("512GB" -> "512Gb") differ only in case: identical for an uncased tokenizer
    bench = synthetic.generate(SyntheticConfig(num_tasks=30, format_rules=("capacity",)))
    assert synthetic.indistinguishable_share(bench, tokenizer, 64) == pytest.approx(1 / 3)
    by_id = {r.id: r for r in bench.corpus}
    (task, family), *_ = bench.siblings().items()
    sibling = next(s for s in family if s.perturbation == "format")
    ids = tokenizer([by_id[task].text, sibling.text])["input_ids"]
    assert ids[0] == ids[1]
    # at width 2 only [CLS] and [SEP] are left: every sibling is identical to its task
    assert synthetic.indistinguishable_share(bench, tokenizer, 2) == 1.0
    assert synthetic.indistinguishable_share(synthetic.generate(SyntheticConfig(num_tasks=30)), tokenizer, 64) < 1 / 3
