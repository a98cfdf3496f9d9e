"""Cross-validation folds over queries (data/folds.py): disjoint, covering, grouped, balanced, deterministic; the fold
folder the loader reads; the config keys and their one-line errors; training and `hnm eval` reading the fold."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, tiny_config

from hnm_jax.config import ConfigError, dataset_root, load_config_file, spec_from_config
from hnm_jax.data import beir
from hnm_jax.data.folds import (
    FoldError,
    FoldSpec,
    assign_folds,
    fold_folder_name,
    fold_queries,
    fold_splits,
    materialize_fold,
    query_groups,
    read_pooled,
)
from hnm_jax.main import main

# Hand-made: a, b, c linked through d1 and d2; e alone; f with a relevant and a non-relevant row; g has only a
# non-relevant row on d9 (unlabelled), which must not link it to h (relevant on d9).
HAND = {
    "a": {"d1": 1.0},
    "b": {"d1": 1.0, "d2": 1.0},
    "c": {"d2": 2.0},
    "e": {"d3": 1.0},
    "f": {"d4": 1.0, "d5": 0.0},
    "g": {"d9": 0.0},
    "h": {"d9": 1.0},
}
HAND_GROUPS = [("a", "b", "c"), ("e",), ("f",), ("h",)]
DATASETS = {"abt_buy": 1016, "amazon_google": 1002, "walmart_amazon_dirty": 852}  # labelled queries, all splits


@pytest.fixture(autouse=True)
def folds_dir(tmp_path, monkeypatch) -> Path:
    """Fold folders go to a fresh folder, never ~/.cache."""
    monkeypatch.setenv("HNM_FOLDS_DIR", str(tmp_path / "folds"))
    return tmp_path / "folds"


def random_qrels(num_queries: int, num_docs: int, seed: int) -> dict[str, dict[str, float]]:
    """Each query relevant to 1-2 random docs (so some share a positive), plus a non-relevant row."""
    rng = np.random.default_rng(seed)
    qrels = {}
    for q in range(num_queries):
        docs = rng.choice(num_docs, size=rng.integers(1, 3), replace=False)
        qrels[f"q{q:03d}"] = {f"d{d}": 1.0 for d in docs} | {f"n{q}": 0.0}
    return qrels


def labelled(qrels) -> set[str]:
    return {q for q, docs in qrels.items() if any(score > 0 for score in docs.values())}


def split_across(qrels, part_of) -> list[str]:
    """Docs relevant to queries in more than one part (`part_of`: query -> fold or split); [] when grouped."""
    parts: dict[str, set] = {}
    for q, docs in qrels.items():
        for d, score in docs.items():
            if score > 0:
                parts.setdefault(d, set()).add(part_of[q])
    return sorted(d for d, found in parts.items() if len(found) > 1)


def write_grouped_beir(root: Path, num_queries: int = 48) -> Path:
    """A BEIR folder whose queries 4k and 4k+1 share a positive; qrels and candidates over train/dev/test; and a
    dataset-level file (perturbations.tsv) a fold must keep."""
    (root / "qrels").mkdir(parents=True)
    (root / "candidates").mkdir()
    docs = [{"_id": f"d{i}", "title": "", "text": f"item {i} model {100 + i}"} for i in range(2 * num_queries)]
    queries = [{"_id": f"q{q}", "text": f"query for item {q}"} for q in range(num_queries)]
    qrels = {s: ["query-id\tcorpus-id\tscore"] for s in ("train", "dev", "test")}
    candidates = {s: ["query-id\tcorpus-id\tlabel"] for s in ("train", "dev", "test")}
    for q in range(num_queries):
        split = ("train", "train", "dev", "test")[q % 4]
        positive = q - 1 if q % 4 == 1 else q  # q4k+1 shares q4k's positive (and is in the same official split)
        qrels[split].append(f"q{q}\td{positive}\t1")
        candidates[split] += [f"q{q}\td{positive}\t1", f"q{q}\td{num_queries + q}\t0"]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split in qrels:
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(qrels[split]) + "\n")
        (root / "candidates" / f"{split}.tsv").write_text("\n".join(candidates[split]) + "\n")
    (root / "perturbations.tsv").write_text("corpus-id\tperturbation\ttask-id\n")
    return root


def read_rows(path: Path) -> list[tuple[str, str, str]]:
    """(query, doc, value) rows of a TSV after its header, by plain text splitting."""
    return [tuple(line.split("\t")) for line in path.read_text().splitlines()[1:] if line]


# ----------------------------------------------------------------------------------------- pure


def test_query_groups_are_the_components_of_query_to_positive():
    assert query_groups(HAND) == HAND_GROUPS
    assert query_groups(dict(reversed(HAND.items()))) == HAND_GROUPS  # independent of the qrels order


def test_assign_folds_largest_group_first_into_the_smallest_fold():
    # Sizes 3,1,1,1,1,1 into 2 folds: the triple goes first (to fold 0), singles fill fold 1 to 3, then alternate.
    qrels = {"t1": {"x": 1}, "t2": {"x": 1}, "t3": {"x": 1}} | {f"s{i}": {f"y{i}": 1} for i in range(5)}
    for seed in range(4):
        fold_of = assign_folds(qrels, 2, seed)
        assert fold_of["t1"] == fold_of["t2"] == fold_of["t3"] == 0
        assert sorted(Counter(fold_of.values()).items()) == [(0, 4), (1, 4)]


@pytest.mark.parametrize("num_folds", [2, 5])
def test_assign_folds_is_disjoint_covering_grouped_and_balanced(num_folds):
    qrels = random_qrels(200, 260, seed=1)
    fold_of = assign_folds(qrels, num_folds, seed=0)
    assert set(fold_of) == labelled(qrels)  # every labelled query, each once (a dict key)
    assert set(fold_of.values()) == set(range(num_folds))
    assert split_across(qrels, fold_of) == []  # no positive shared across folds
    sizes = Counter(fold_of.values())
    biggest_group = max(len(g) for g in query_groups(qrels))
    assert biggest_group > 1  # the case has groups to keep together
    assert max(sizes.values()) - min(sizes.values()) <= biggest_group


def test_assign_folds_leaves_unlabelled_queries_out_and_keeps_groups():
    fold_of = assign_folds(HAND, 2, seed=3)
    assert set(fold_of) == {"a", "b", "c", "e", "f", "h"}
    assert fold_of["a"] == fold_of["b"] == fold_of["c"]


def test_folds_are_deterministic_in_the_seed():
    qrels = random_qrels(120, 150, seed=2)
    assert assign_folds(qrels, 5, seed=7) == assign_folds(dict(reversed(qrels.items())), 5, seed=7)
    assert assign_folds(qrels, 5, seed=7) != assign_folds(qrels, 5, seed=8)
    spec = FoldSpec(5, 2, seed=7)
    assert fold_queries(qrels, spec) == fold_queries(qrels, spec)
    assert fold_queries(qrels, spec)["dev"] != fold_queries(qrels, FoldSpec(5, 2, seed=8))["dev"]


def test_too_few_groups_for_the_folds():
    with pytest.raises(ValueError, match="4 groups of labelled queries cannot fill 5 folds"):
        assign_folds(HAND, 5, seed=0)


@pytest.mark.parametrize("fold", range(5))
def test_fold_splits_test_is_the_fold_dev_is_a_tenth_of_the_rest(fold):
    qrels = random_qrels(300, 390, seed=3)
    spec = FoldSpec(5, fold, seed=1)
    parts = fold_queries(qrels, spec)
    fold_of = assign_folds(qrels, 5, seed=1)
    assert parts["test"] == {q for q, f in fold_of.items() if f == fold}
    assert not (parts["train"] & parts["dev"] or parts["train"] & parts["test"] or parts["dev"] & parts["test"])
    assert parts["train"] | parts["dev"] | parts["test"] == labelled(qrels)
    rest = len(labelled(qrels)) - len(parts["test"])
    assert abs(len(parts["dev"]) - 0.1 * rest) <= 1  # groups of 1 are plenty: dev hits round(0.1 * rest)
    split_of = {q: s for s, queries in parts.items() for q in queries}
    assert split_across(qrels, split_of) == []  # dev takes whole groups too


def test_every_query_is_a_test_query_exactly_once():
    qrels = random_qrels(90, 110, seed=4)
    tests = [fold_queries(qrels, FoldSpec(3, f))["test"] for f in range(3)]
    assert sorted(q for t in tests for q in t) == sorted(labelled(qrels))


def test_fold_splits_keep_every_row_of_a_query_and_no_dev_at_fraction_zero():
    splits = fold_splits(HAND, FoldSpec(2, 0, seed=0, dev_fraction=0.0))
    assert splits["dev"] == {}
    assert {q for part in splits.values() for q in part} == {"a", "b", "c", "e", "f", "h"}  # g: unlabelled
    assert next(part["f"] for part in splits.values() if "f" in part) == {"d4": 1.0, "d5": 0.0}


@pytest.mark.parametrize(("fields", "message"), [
    ((1, 0), r"num_folds: must be >= 2, got 1"),
    ((5, 5), r"fold: must be in \[0, 5\), got 5"),
    ((5, -1), r"fold: must be in \[0, 5\), got -1"),
    ((5, 0, -3), r"seed: must be >= 0"),
    ((5, 0, 0, 1.0), r"dev_fraction: must be in \[0, 1\)"),
])
def test_fold_spec_rejects_impossible_values(fields, message):
    with pytest.raises(ValueError, match=message):
        FoldSpec(*fields)


# ----------------------------------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(("keys", "message"), [
    ({"folds": 5, "fold": 5}, r"^data\.fold: must be in \[0, 5\), got 5$"),
    ({"folds": 1}, r"^data\.folds: must be >= 2, got 1$"),
    ({"folds": 0, "fold": 2}, r"^data\.fold: 2 is set but data\.folds is 0"),
    ({"folds": 5, "fold_seed": -1}, r"^data\.fold_seed: must be >= 0"),
    ({"folds": 5, "fold_dev_fraction": 1.5}, r"^data\.fold_dev_fraction: must be in \[0, 1\)"),
])
def test_fold_config_errors_name_the_key(keys, message):
    config = load_config_file(str(REPO / "configs/base.py")).to_dict()
    config["data"].update(keys)
    with pytest.raises(ConfigError, match=message):
        spec_from_config(config)


def test_fold_keys_default_off_and_a_saved_config_without_them_reads_as_off():
    config = load_config_file(str(REPO / "configs/base.py")).to_dict()
    assert spec_from_config(config).data.fold_spec is None
    for key in ("folds", "fold", "fold_seed", "fold_dev_fraction"):
        del config["data"][key]
    assert spec_from_config(config).data.fold_spec is None
    config["data"].update(folds=5, fold=3, fold_seed=2, fold_dev_fraction=0.2)
    assert spec_from_config(config).data.fold_spec == FoldSpec(5, 3, seed=2, dev_fraction=0.2)


def test_cli_fold_out_of_range_is_one_line_rc_2(tiny_beir, tmp_path, capsys):
    workdir = tmp_path / "run"
    code = main(["train", "--config", f"{REPO / 'configs/base.py'}:tiny", f"--config.data.path={tiny_beir}",
                 "--config.data.folds=5", "--config.data.fold=5", "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["hnm train: data.fold: must be in [0, 5), got 5"]
    assert not workdir.exists()


def test_cli_too_few_queries_for_the_folds_names_data_folds(tmp_path, capsys):
    root = write_grouped_beir(tmp_path / "small", num_queries=8)  # 6 groups
    code = main(["train", "--config", f"{REPO / 'configs/base.py'}:tiny", f"--config.data.path={root}",
                 "--config.data.folds=7", "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("hnm train: data.folds: ") and "6 groups of labelled queries cannot fill 7 folds" in err[0]


# ----------------------------------------------------------------------------------------- fold folders


def test_fold_folder_holds_the_fold_splits_and_candidates_follow_their_query(tmp_path, folds_dir):
    root = write_grouped_beir(tmp_path / "grouped")
    spec = FoldSpec(4, 1, seed=3)
    out = materialize_fold(root, spec)
    assert out.parent == folds_dir and out.name.startswith("grouped-k4-s3-f1-d0.1-")
    parts = fold_queries(read_pooled(root, "qrels"), spec)
    split_of = {q: s for s, queries in parts.items() for q in queries}
    assert len(split_of) == 48 and split_of["q4"] == split_of["q5"]  # q4, q5 share d4
    original = [row for s in ("train", "dev", "test") for row in read_rows(root / "candidates" / f"{s}.tsv")]
    for split in ("train", "dev", "test"):
        data = beir.load_beir(out, split)
        assert {data.queries.ids[r] for r in data.split.query_rows} == parts[split]
        assert len(data.corpus) == 96  # the whole corpus, every fold
        cand = data.split.candidates
        loaded = {(data.queries.ids[data.split.query_rows[q]], data.corpus.ids[d], str(label))
                  for q, d, label in zip(cand.query, cand.doc, cand.label, strict=True)}
        assert loaded == {row for row in original if split_of[row[0]] == split}
    assert (out / "perturbations.tsv").resolve() == (root / "perturbations.tsv").resolve()
    assert (out / "corpus.jsonl").resolve() == (root / "corpus.jsonl").resolve()


def test_fold_folder_is_rewritten_only_when_it_changes(tmp_path):
    root = write_grouped_beir(tmp_path / "grouped")
    out = materialize_fold(root, FoldSpec(4, 0))
    stamp = (out / "qrels" / "train.tsv").stat().st_mtime_ns
    assert materialize_fold(root, FoldSpec(4, 0)) == out
    assert (out / "qrels" / "train.tsv").stat().st_mtime_ns == stamp
    with open(root / "qrels" / "test.tsv", "a") as f:  # a new labelled query changes the folds
        f.write("q0\td50\t1\n")
    materialize_fold(root, FoldSpec(4, 0))
    rows = [row for split in ("train", "dev", "test") for row in read_rows(out / "qrels" / f"{split}.tsv")]
    assert ("q0", "d50", "1") in rows


def test_two_datasets_of_one_name_get_two_fold_folders(tmp_path):
    first = write_grouped_beir(tmp_path / "a" / "data")
    second = write_grouped_beir(tmp_path / "b" / "data", num_queries=40)
    assert fold_folder_name(first, FoldSpec(4, 0)) != fold_folder_name(second, FoldSpec(4, 0))
    assert materialize_fold(first, FoldSpec(4, 0)) != materialize_fold(second, FoldSpec(4, 0))


def test_a_pair_in_two_splits_is_an_error_naming_both(tmp_path):
    root = write_grouped_beir(tmp_path / "grouped")
    with open(root / "qrels" / "dev.tsv", "a") as f:
        f.write("q0\td0\t1\n")  # q0 -> d0 is already in train.tsv
    with pytest.raises(beir.DataError, match=r"train\.tsv:\d+: duplicate pair \('q0', 'd0'\) \(first at .*dev\.tsv:"):
        materialize_fold(root, FoldSpec(4, 0))


def test_too_few_groups_is_a_fold_error(tmp_path):
    root = write_grouped_beir(tmp_path / "small", num_queries=8)
    with pytest.raises(FoldError, match="cannot fill 7 folds"):
        materialize_fold(root, FoldSpec(7, 0))


def test_dataset_root_of_a_fold_config_reads_the_fold(tmp_path):
    root = write_grouped_beir(tmp_path / "grouped")
    spec = spec_from_config(tiny_config(root, data__folds=4, data__fold=2, data__fold_seed=5))
    fold_root = dataset_root(spec.data)
    assert fold_root != root and dataset_root(spec.data, str(root)) == fold_root  # --data names the same dataset
    _, corpus, queries = beir.load_texts(fold_root)
    parts = fold_queries(read_pooled(root, "qrels"), FoldSpec(4, 2, seed=5))
    for split in ("train", "dev", "test"):
        rows = beir.read_split(fold_root, split, corpus, queries).query_rows
        assert {queries.ids[r] for r in rows} == parts[split]
    official = spec_from_config(tiny_config(root))
    assert dataset_root(official.data) == root


@pytest.mark.slow
def test_train_and_eval_of_a_fold_config_read_the_folds_splits(tmp_path, monkeypatch):
    from hnm_jax.training import train

    root = write_grouped_beir(tmp_path / "grouped")
    parts = fold_queries(read_pooled(root, "qrels"), FoldSpec(4, 1))
    read = {}

    def recording_read_split(root_, split, corpus, queries):
        result = beir.read_split(root_, split, corpus, queries)
        read[split] = {queries.ids[r] for r in result.query_rows}
        return result

    monkeypatch.setattr(train, "read_split", recording_read_split)
    workdir = tmp_path / "run"
    metrics = train.train_and_evaluate(tiny_config(root, data__folds=4, data__fold=1, train__max_steps=1), workdir)
    assert read["train"] == parts["train"]
    assert set(metrics["per_query"]["query_ids"]) == parts["test"]  # evaluated on the fold, over the whole corpus
    assert metrics["num_docs"] == 96
    out = tmp_path / "eval.json"
    assert main(["eval", "--workdir", str(workdir), "--output", str(out)]) == 0  # the workdir's config: its fold
    assert set(json.loads(out.read_text())["per_query"]["query_ids"]) == parts["test"]


# ----------------------------------------------------------------------------------------- the real benchmarks


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_real_benchmark_folds(name):
    root = beir.DEFAULT_DATA_DIR / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    _, corpus, queries = beir.load_texts(root)
    official = [beir.read_split(root, s, corpus, queries) for s in ("train", "dev", "test")]
    assert sum(len(s) for s in official) == DATASETS[name]
    qrels = read_pooled(root, "qrels")
    fold_of = assign_folds(qrels, 5, seed=0)
    assert len(fold_of) == DATASETS[name]
    assert split_across(qrels, fold_of) == []
    sizes = sorted(Counter(fold_of.values()).values())
    assert sizes[-1] - sizes[0] <= max(len(g) for g in query_groups(qrels))
    out = materialize_fold(root, FoldSpec(5, 0))
    loaded = {s: beir.load_beir(out, s) for s in ("train", "dev", "test")}
    counts = {s: len(data.split) for s, data in loaded.items()}
    assert sum(counts.values()) == DATASETS[name]
    assert counts["test"] == Counter(fold_of.values())[0]
    assert abs(counts["dev"] - 0.1 * (counts["train"] + counts["dev"])) <= 1
    candidates = sum(len(read_rows(root / "candidates" / f"{s}.tsv")) for s in ("train", "dev", "test"))
    assert sum(len(data.split.candidates) for data in loaded.values()) == candidates
    print(f"{name}: fold 0 of 5 train/dev/test = {counts['train']}/{counts['dev']}/{counts['test']}, "
          f"folds {sizes}")
