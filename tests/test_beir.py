"""Tests for hnm_jax.data.beir: the real benchmarks against stats.json, every error kind, and fuzzing."""

from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hnm_jax.data import beir
from hnm_jax.data.beir import DataError

DATASETS = [
    "abt_buy",
    "amazon_google",
    "walmart_amazon",
    "dblp_acm",
    "dblp_scholar",
    "walmart_amazon_dirty",
    "dblp_acm_dirty",
]
SPLITS = ["train", "dev", "test"]

CORPUS = [
    {"_id": "d1", "title": "", "text": "alpha"},
    {"_id": "d2", "title": "Beta", "text": "two"},
    {"_id": "d3", "text": "gamma"},
]
QUERIES = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "third"}]
QRELS = ["query-id\tcorpus-id\tscore", "q2\td2\t1", "q1\td1\t1", "q2\td3\t2", "q3\td1\t0"]
CANDIDATES = ["query-id\tcorpus-id\tlabel", "q1\td1\t1", "q1\td2\t0", "q2\td3\t1", "q2\td1\t0"]


def _jsonl(records: list[dict]) -> list[str]:
    return [json.dumps(r) for r in records]


def _write(path: Path, lines: list[str | bytes] | bytes) -> Path:
    """Writes lines joined by '\\n' (str lines are UTF-8 encoded), or raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        encoded = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
        path.write_bytes(b"\n".join(encoded) + b"\n")
    return path


def _dataset(
    root: Path,
    corpus: list[str | bytes] | bytes | None = None,
    queries: list[str | bytes] | bytes | None = None,
    qrels: list[str | bytes] | bytes | None = None,
    candidates: list[str | bytes] | bytes | None = None,
    split: str = "train",
) -> Path:
    """A small BEIR folder; each file defaults to the valid toy content above."""
    _write(root / "corpus.jsonl", _jsonl(CORPUS) if corpus is None else corpus)
    _write(root / "queries.jsonl", _jsonl(QUERIES) if queries is None else queries)
    _write(root / "qrels" / f"{split}.tsv", QRELS if qrels is None else qrels)
    _write(root / "candidates" / f"{split}.tsv", CANDIDATES if candidates is None else candidates)
    return root


@contextlib.contextmanager
def _raises(path: Path, line: int | None, *fragments: str) -> Iterator[None]:
    """Asserts the block raises a DataError at path:line whose message holds every fragment."""
    with pytest.raises(DataError) as info:
        yield
    error, message = info.value, str(info.value)
    assert (error.path, error.line) == (str(path), line), message
    assert message.startswith(f"{path}: " if line is None else f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ------------------------------------------------------------------------------------ real data


@pytest.mark.shared_data
@pytest.mark.parametrize("name", DATASETS)
def test_real_dataset_matches_stats(name: str) -> None:
    root = beir.DEFAULT_DATA_DIR / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    stats = json.loads((beir.DEFAULT_DATA_DIR / "stats.json").read_text())[name]
    assert beir.resolve_dataset_path(name=name) == root
    assert beir.list_splits(root) == sorted(SPLITS)
    corpus = beir.read_corpus(root / "corpus.jsonl")
    queries = beir.read_queries(root / "queries.jsonl")
    assert len(corpus) == stats["corpus"]
    assert len(queries) == stats["queries"]
    seen_queries: set[int] = set()
    for split_name in SPLITS:
        expected = stats[split_name]
        split = beir.read_split(root, split_name, corpus, queries)
        n_pos = np.array([len(p) for p in split.positive_lists()])
        assert len(split) == expected["queries"]
        assert int(n_pos.sum()) == expected["qrels"]
        assert int(n_pos.max()) == expected["pos_per_query_max"] == split.positives.shape[1]
        assert float(n_pos.mean()) == pytest.approx(expected["pos_per_query_mean"], abs=5e-4)
        cands = split.candidates
        assert cands is not None
        assert len(cands.query) == expected["candidate_pairs"]
        assert int((cands.label == 0).sum()) == expected["candidate_negatives"]
        # Every query lives in exactly one split (README "Splits").
        rows = set(split.query_rows.tolist())
        assert len(rows) == len(split) and not rows & seen_queries
        seen_queries |= rows
    assert len(seen_queries) == len(queries)
    data = beir.load_beir(root, "test")
    assert len(data.corpus) == stats["corpus"] and len(data.split) == stats["test"]["queries"]


# ------------------------------------------------------------------------------------ valid input


def test_toy_dataset(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    data = beir.load_beir(root, "train")
    assert data.root == root
    assert data.corpus.ids == ("d1", "d2", "d3")
    assert data.corpus.texts == ("alpha", "Beta two", "gamma")  # title + " " + text when title non-empty
    assert dict(data.corpus.index) == {"d1": 0, "d2": 1, "d3": 2}
    assert data.queries.texts == ("first", "second", "third")
    split = data.split
    assert split.name == "train" and len(split) == 2
    np.testing.assert_array_equal(split.query_rows, [1, 0])  # qrels order of first relevant row
    assert split.query_rows.dtype == np.int32 and split.positives.dtype == np.int32
    np.testing.assert_array_equal(split.positives, [[1, 2], [0, -1]])
    assert [p.tolist() for p in split.positive_lists()] == [[1, 2], [0]]
    cands = split.candidates
    assert cands is not None
    np.testing.assert_array_equal(cands.query, [1, 1, 0, 0])  # rows into split.query_rows
    np.testing.assert_array_equal(cands.doc, [0, 1, 2, 0])
    np.testing.assert_array_equal(cands.label, [1, 0, 1, 0])
    assert (cands.query.dtype, cands.doc.dtype, cands.label.dtype) == (np.int32, np.int32, np.int8)
    with pytest.raises(ValueError):
        split.positives[0, 0] = 5  # arrays are read-only


def test_no_candidates_file(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "candidates" / "train.tsv").unlink()
    assert beir.load_beir(root, "train").split.candidates is None


def test_bom_crlf_blank_lines_and_headerless_qrels(tmp_path: Path) -> None:
    corpus = b"\xef\xbb\xbf" + b"\r\n".join(line.encode() for line in _jsonl(CORPUS)) + b"\r\n\r\n"
    queries = b"\n   \n" + b"\r\n".join(line.encode() for line in _jsonl(QUERIES))  # no final newline
    qrels = b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\n\r\nq1\td1\t1\r\n"
    root = _dataset(tmp_path, corpus=corpus, queries=queries, qrels=qrels, candidates=b"q1\td1\t1\r\n")
    data = beir.load_beir(root, "train")
    assert data.corpus.ids == ("d1", "d2", "d3") and data.corpus.texts[2] == "gamma"
    assert data.queries.ids == ("q1", "q2", "q3") and data.queries.texts[2] == "third"
    np.testing.assert_array_equal(data.split.positives, [[0]])
    assert data.split.candidates is not None and data.split.candidates.label.tolist() == [1]


def test_title_join_and_queries_ignore_title(tmp_path: Path) -> None:
    records = [
        {"_id": "a", "title": "T", "text": "x"},
        {"_id": "b", "title": "", "text": "y"},
        {"_id": "c", "title": None, "text": "z"},
        {"_id": "d", "title": "only title", "text": ""},
        {"_id": "e", "text": "w", "extra": [1, 2]},
    ]
    path = _write(tmp_path / "corpus.jsonl", _jsonl(records))
    assert beir.read_corpus(path).texts == ("T x", "y", "z", "only title", "w")
    assert beir.read_queries(path, skip_empty=True).texts == ("x", "y", "z", "w")


def test_skip_empty(tmp_path: Path) -> None:
    corpus = [*_jsonl(CORPUS), '{"_id": "d4", "text": " \\t "}']
    queries = [*_jsonl(QUERIES), '{"_id": "q4", "title": "ignored", "text": ""}']
    qrels = [*QRELS, "q4\td1\t1", "q1\td4\t0"]  # skipped query: row dropped; skipped doc, score 0: ignored
    candidates = [*CANDIDATES, "q4\td1\t1", "q1\td4\t0"]
    root = _dataset(tmp_path, corpus=corpus, queries=queries, qrels=qrels, candidates=candidates)
    with _raises(root / "corpus.jsonl", 4, "empty text", "'d4'"):
        beir.load_beir(root, "train")
    data = beir.load_beir(root, "train", skip_empty=True)
    assert (len(data.corpus), data.corpus.skipped, dict(data.corpus.skipped_lines)) == (3, 1, {"d4": 4})
    assert (len(data.queries), data.queries.skipped, dict(data.queries.skipped_lines)) == (3, 1, {"q4": 4})
    np.testing.assert_array_equal(data.split.query_rows, [1, 0])
    assert data.split.candidates is not None and len(data.split.candidates.query) == 4


def test_skip_empty_relevant_doc_is_an_error(tmp_path: Path) -> None:
    corpus = [*_jsonl(CORPUS), '{"_id": "d4", "text": ""}']
    root = _dataset(tmp_path, corpus=corpus, qrels=[*QRELS, "q3\td4\t1"])
    with _raises(root / "qrels" / "train.tsv", 6, "'d4'", "skipped", "corpus.jsonl:4"):
        beir.load_beir(root, "train", skip_empty=True)


def test_resolve_dataset_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(__file__).resolve().parents[2] / "shared" / "datasets" == beir.DEFAULT_DATA_DIR
    toy = _dataset(tmp_path / "toy")
    (tmp_path / "not_a_dataset").mkdir()
    monkeypatch.setenv("HNM_DATA_DIR", str(tmp_path))
    assert beir.resolve_dataset_path(name="toy") == toy
    assert beir.resolve_dataset_path(path=str(toy)) == toy
    with _raises(tmp_path, None, "'nope'", "available: toy"):
        beir.resolve_dataset_path(name="nope")
    with _raises(tmp_path / "not_a_dataset", None, "corpus.jsonl", "queries.jsonl"):
        beir.resolve_dataset_path(path=str(tmp_path / "not_a_dataset"))
    (toy / "queries.jsonl").unlink()
    with _raises(toy, None, "missing queries.jsonl"):
        beir.resolve_dataset_path(path=str(toy))
    with _raises(tmp_path / "missing", None, "not a directory"):
        beir.resolve_dataset_path(path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="exactly one"):
        beir.resolve_dataset_path()
    with pytest.raises(ValueError, match="exactly one"):
        beir.resolve_dataset_path(name="toy", path=str(toy))


def test_data_error_format_and_pickle(tmp_path: Path) -> None:
    error = DataError(tmp_path / "f.tsv", 7, "bad")
    assert str(error) == f"{tmp_path / 'f.tsv'}:7: bad"
    assert (error.path, error.line, error.message) == (str(tmp_path / "f.tsv"), 7, "bad")
    assert str(DataError("f.tsv", None, "bad")) == "f.tsv: bad"
    assert isinstance(error, ValueError)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


# ------------------------------------------------------------------------------------ jsonl errors

GOOD_LINES = ['{"_id": "d1", "text": "alpha"}', '{"_id": "d2", "text": "beta"}']
JSONL_ERRORS = {
    "malformed_json": ('{"_id": "d3", "text": }', ["malformed JSON", "Expecting value"]),
    "truncated": ('{"_id": "d3", "te', ["malformed JSON"]),
    "not_an_object": ('["d3", "text"]', ["expected a JSON object", "list"]),
    "scalar": ("42", ["expected a JSON object", "int"]),
    "missing_id": ('{"text": "x"}', ["missing '_id'"]),
    "missing_text": ('{"_id": "d3", "title": "x"}', ["missing 'text'"]),
    "id_not_string": ('{"_id": 3, "text": "x"}', ["'_id' must be a string", "int"]),
    "id_empty": ('{"_id": "", "text": "x"}', ["'_id' is empty"]),
    "text_not_string": ('{"_id": "d3", "text": ["x"]}', ["'text' must be a string", "list"]),
    "text_null": ('{"_id": "d3", "text": null}', ["'text' must be a string", "NoneType"]),
    "title_not_string": ('{"_id": "d3", "title": 1, "text": "x"}', ["'title' must be a string"]),
    "duplicate_id": ('{"_id": "d1", "text": "again"}', ["duplicate _id 'd1'", "first at line 1"]),
    "empty_text": ('{"_id": "d3", "text": ""}', ["empty text", "'d3'"]),
    "blank_text": ('{"_id": "d3", "title": "", "text": " \\n "}', ["empty text"]),
    "nul_escape": ('{"_id": "d3", "text": "a\\u0000b"}', ["NUL character in 'text'"]),
    "lone_surrogate": ('{"_id": "d\\ud800", "text": "x"}', ["unpaired surrogate"]),
    "deep_nesting": ("[" * 100_000, ["nested too deeply"]),
    "huge_int": ('{"_id": "d3", "text": "x", "n": ' + "1" * 5000 + "}", ["malformed JSON"]),
    "bom_mid_file": ('\ufeff{"_id": "d3", "text": "x"}', ["malformed JSON"]),
}


@pytest.mark.parametrize("reader", [beir.read_corpus, beir.read_queries], ids=["corpus", "queries"])
@pytest.mark.parametrize("case", sorted(JSONL_ERRORS))
def test_jsonl_errors(tmp_path: Path, reader, case: str) -> None:
    bad, fragments = JSONL_ERRORS[case]
    path = _write(tmp_path / "records.jsonl", [GOOD_LINES[0], "", GOOD_LINES[1], bad])
    if case == "title_not_string" and reader is beir.read_queries:
        assert len(reader(path)) == 3  # queries ignore titles
        return
    with _raises(path, 4, *fragments):
        reader(path)


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        (b'{"_id": "d3", "text": "caf\xe9"}', ["invalid UTF-8", "byte 27"]),
        (b'{"_id": "d3", "text": "a\x00b"}', ["NUL byte", "column 25"]),
        (b"\x00\x00\x00", ["NUL byte"]),
    ],
    ids=["undecodable", "nul_byte", "utf16ish"],
)
def test_jsonl_byte_errors(tmp_path: Path, bad: bytes, fragments: list[str]) -> None:
    path = _write(tmp_path / "corpus.jsonl", [GOOD_LINES[0], GOOD_LINES[1], b"", bad])
    with _raises(path, 4, *fragments):
        beir.read_corpus(path)


def test_missing_file(tmp_path: Path) -> None:
    with _raises(tmp_path / "corpus.jsonl", None, "cannot read"):
        beir.read_corpus(tmp_path / "corpus.jsonl")


# ------------------------------------------------------------------------------------ tsv errors

QRELS_ERRORS = {
    "too_few_columns": ("q1\td1", ["expected 3 tab-separated columns", "got 2"]),
    "too_many_columns": ("q1\td1\t1\textra", ["expected 3 tab-separated columns", "got 4"]),
    "spaces_not_tabs": ("q1 d1 1", ["got 1"]),
    "non_numeric_score": ("q1\td3\tyes", ["score must be a number", "'yes'"]),
    "empty_score": ("q1\td3\t", ["score must be a number"]),
    "nan_score": ("q1\td3\tnan", ["score must be a number"]),
    "infinite_score": ("q1\td3\t1e999", ["score must be finite"]),
    "unknown_query": ("q9\td1\t1", ["unknown query id 'q9'", "queries.jsonl"]),
    "unknown_doc": ("q1\td9\t1", ["unknown corpus id 'd9'", "corpus.jsonl"]),
    "unknown_doc_score_0": ("q1\td9\t0", ["unknown corpus id 'd9'"]),
    "duplicate_pair": ("q2\td2\t1", ["duplicate pair ('q2', 'd2')", "first at line 2"]),
    "undecodable": (b"q1\td\xff3\t1", ["invalid UTF-8"]),
    "nul_byte": (b"q1\td3\t1\x00", ["NUL byte"]),
}


@pytest.mark.parametrize("case", sorted(QRELS_ERRORS))
def test_qrels_errors(tmp_path: Path, case: str) -> None:
    bad, fragments = QRELS_ERRORS[case]
    root = _dataset(tmp_path, qrels=[*QRELS, "", bad])
    with _raises(root / "qrels" / "train.tsv", 7, *fragments):
        beir.load_beir(root, "train")


CANDIDATE_ERRORS = {
    "too_few_columns": ("q1\td3", ["expected 3 tab-separated columns (query-id, corpus-id, label)"]),
    "non_numeric_label": ("q1\td3\tno", ["label must be a number", "'no'"]),
    "label_not_binary": ("q1\td3\t2", ["label must be 0 or 1, got 2"]),
    "label_fraction": ("q1\td3\t0.5", ["label must be 0 or 1"]),
    "unknown_query": ("q9\td3\t0", ["unknown query id 'q9'"]),
    "unknown_doc": ("q1\td9\t0", ["unknown corpus id 'd9'"]),
    "query_not_in_split": ("q3\td1\t0", ["query 'q3' has no relevant doc in qrels/train.tsv"]),
    "positive_not_in_qrels": ("q1\td3\t1", ["labelled 1 but not relevant"]),
    "negative_in_qrels": ("q2\td2\t0", ["labelled 0 but relevant", "qrels/train.tsv:2"]),
    "duplicate_pair": ("q1\td2\t0", ["duplicate pair ('q1', 'd2')", "first at line 3"]),
}


@pytest.mark.parametrize("case", sorted(CANDIDATE_ERRORS))
def test_candidate_errors(tmp_path: Path, case: str) -> None:
    bad, fragments = CANDIDATE_ERRORS[case]
    root = _dataset(tmp_path, candidates=[*CANDIDATES, bad])
    with _raises(root / "candidates" / "train.tsv", 6, *fragments):
        beir.load_beir(root, "train")


def test_missing_split_lists_existing(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    _write(root / "qrels" / "test.tsv", QRELS)
    with _raises(root / "qrels" / "dev.tsv", None, "no split 'dev'", "test, train"):
        beir.load_beir(root, "dev")
    with _raises(root / "qrels" / "dev.tsv", None, "no split 'dev'"):
        beir.read_split(
            root, "dev", beir.read_corpus(root / "corpus.jsonl"), beir.read_queries(root / "queries.jsonl")
        )
    assert beir.list_splits(root) == ["test", "train"]
    assert beir.list_splits(tmp_path / "nowhere") == []


@pytest.mark.parametrize(
    "qrels", [["query-id\tcorpus-id\tscore"], [*QRELS[:1], "q1\td1\t0", "q2\td2\t-1"], []]
)
def test_empty_split(tmp_path: Path, qrels: list[str]) -> None:
    root = _dataset(tmp_path, qrels=qrels or b"")
    with _raises(root / "qrels" / "train.tsv", None, "no relevant pairs"):
        beir.load_beir(root, "train")


# ------------------------------------------------------------------------------------ fuzzing

_ID_POOL = ["d1", "d2", "d3", "q1", "x", "", "d\u00e9", "1"]
_SPECIAL = ["", "", "", "", "\x00", "\ud800", "x\udc00"]  # NUL characters and unpaired surrogates
_JSON_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
_WEIRD_VALUES = (
    _JSON_VALUES | st.lists(_JSON_VALUES, max_size=3) | st.dictionaries(st.text(max_size=3), _JSON_VALUES)
)


@st.composite
def _jsonl_line(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, line bytes); 'valid' lines are records with string fields (ids may repeat, text be blank)."""
    kinds = ["valid", "valid", "valid", "blank", "weird", "bytes", "truncated", "nul", "huge"]
    kind = draw(st.sampled_from(kinds))
    record = {
        "_id": draw(st.sampled_from(_ID_POOL)) + draw(st.sampled_from(_SPECIAL)),
        "text": draw(st.text(max_size=20)) + draw(st.sampled_from(_SPECIAL)),
    }
    if draw(st.booleans()):
        record["title"] = draw(st.text(max_size=8)) + draw(st.sampled_from(_SPECIAL))
    # ensure_ascii=False writes surrogates raw: invalid UTF-8 once encoded with surrogatepass.
    line = json.dumps(record, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == "blank":
        line = draw(st.sampled_from([b"", b"   ", b"\t", b"\r"]))
    elif kind == "weird":
        record = draw(st.dictionaries(st.sampled_from(["_id", "text", "title", "other"]), _WEIRD_VALUES))
        line = json.dumps(draw(st.just(record) | _WEIRD_VALUES)).encode("utf-8")
    elif kind == "bytes":
        line = draw(st.binary(max_size=40)).replace(b"\n", b"")
    elif kind == "truncated":
        line = line[: draw(st.integers(0, max(len(line) - 1, 0)))]
    elif kind == "nul":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + b"\x00" + line[at:]
    elif kind == "huge":
        record["text"] = "w" * draw(st.integers(50_000, 300_000))
        line = json.dumps(record).encode("utf-8", "surrogatepass")
    return kind, line


def _assemble(lines: list[bytes], crlf: bool, bom: bool, final_newline: bool) -> bytes:
    data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if final_newline else b"")
    return (b"\xef\xbb\xbf" if bom else b"") + data


def _clean(value: str) -> bool:
    return "\x00" not in value and not any("\ud800" <= c <= "\udfff" for c in value)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("beir_fuzz")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_jsonl_line(), max_size=12),
    crlf=st.booleans(),
    bom=st.booleans(),
    final_newline=st.booleans(),
    skip_empty=st.booleans(),
)
@pytest.mark.slow
def test_fuzz_corpus_reader(
    fuzz_dir: Path,
    lines: list[tuple[str, bytes]],
    crlf: bool,
    bom: bool,
    final_newline: bool,
    skip_empty: bool,
) -> None:
    path = fuzz_dir / "corpus.jsonl"
    path.write_bytes(_assemble([line for _, line in lines], crlf, bom, final_newline))
    try:
        texts = beir.read_corpus(path, skip_empty=skip_empty)
        event("loaded")
    except DataError as e:
        assert str(e).startswith(f"{path}:")
        event(f"DataError: {e.message.split(' ')[0]}")
        texts = None
    if texts is not None:
        assert len(texts.ids) == len(texts.texts) == len(texts.index) == len(set(texts.ids))
        assert all(texts.index[i] == row for row, i in enumerate(texts.ids))
        assert all(t.strip() for t in texts.texts)
    # Oracle for files made only of string-field records and blank lines.
    if all(kind in ("valid", "blank") for kind, _ in lines):
        records = [
            json.loads(line.decode("utf-8", "surrogatepass")) for kind, line in lines if kind == "valid"
        ]
        ids = [r["_id"] for r in records]
        joined = [" ".join(p for p in (r.get("title", ""), r["text"]) if p) for r in records]
        empty = [not t.strip() for t in joined]
        clean = all(_clean(r["_id"]) and _clean(r["text"]) and _clean(r.get("title", "")) for r in records)
        loadable = clean and len(set(ids)) == len(ids) and "" not in ids and (skip_empty or not any(empty))
        event(f"oracle: loadable={loadable}")
        assert (texts is not None) == loadable
        if texts is not None:
            kept = [(i, t) for i, t, e in zip(ids, joined, empty, strict=True) if not e]
            assert list(zip(texts.ids, texts.texts, strict=True)) == kept
            assert texts.skipped == sum(empty)


_FUZZ_QUERIES = [f"q{i}" for i in range(5)]
_FUZZ_DOCS = [f"d{i}" for i in range(8)]
_BAD_IDS = ["qx", "dx", "", "Q1", "q1 ", "d0\r"]
_SCORES = ["1", "0", "-1", "2", "1.0", "0.5", " 1", "+3", "1e2"]
_BAD_SCORES = ["yes", "", "nan", "inf", "1e999", "1,0", "0x1", "\u0661"]
Row = tuple[str, str, float]


@st.composite
def _tsv_line(draw: st.DrawFn, clean: bool = False) -> tuple[str, bytes, Row | None]:
    """(kind, line bytes, (query id, corpus id, score) for kind 'row').

    ``clean``: only rows and blank lines, and ids are unknown 1 time in 30 (else 1 in 10).
    """
    kinds = ["row", "row", "row", "row", "row", "blank"]
    kind = draw(st.sampled_from(kinds if clean else [*kinds, "bad_score", "columns", "bytes", "nul"]))
    odds = 29 if clean else 9
    qid = draw(st.sampled_from(_FUZZ_QUERIES if draw(st.integers(0, odds)) else _BAD_IDS))
    did = draw(st.sampled_from(_FUZZ_DOCS if draw(st.integers(0, odds)) else _BAD_IDS))
    score = draw(st.sampled_from(_SCORES))
    line = f"{qid}\t{did}\t{score}"
    if kind == "blank":
        line = draw(st.sampled_from(["", "  ", "\t \t"]))
    elif kind == "bad_score":
        line = f"{qid}\t{did}\t{draw(st.sampled_from(_BAD_SCORES))}"
    elif kind == "columns":
        fields = draw(
            st.lists(st.sampled_from(_FUZZ_QUERIES + _SCORES), max_size=6).filter(lambda f: len(f) != 3)
        )
        line = "\t".join(fields)
    encoded = line.encode("utf-8")
    if kind == "bytes":
        encoded = draw(st.binary(max_size=30)).replace(b"\n", b"")
    elif kind == "nul":
        at = draw(st.integers(0, len(encoded)))
        encoded = encoded[:at] + b"\x00" + encoded[at:]
    return kind, encoded, (qid, did, float(score)) if kind == "row" else None


@pytest.fixture(scope="module")
def fuzz_root(fuzz_dir: Path) -> Path:
    corpus = [{"_id": d, "text": f"doc {d}"} for d in _FUZZ_DOCS]
    queries = [{"_id": q, "text": f"query {q}"} for q in _FUZZ_QUERIES]
    return _dataset(fuzz_dir / "qrels_case", corpus=_jsonl(corpus), queries=_jsonl(queries))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    qrels=st.booleans().flatmap(lambda clean: st.lists(_tsv_line(clean), min_size=1, max_size=10)),
    header=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
    data=st.data(),
)
@pytest.mark.slow
def test_fuzz_qrels_reader(
    fuzz_root: Path,
    qrels: list[tuple[str, bytes, Row | None]],
    header: bool,
    crlf: bool,
    bom: bool,
    data: st.DataObject,
) -> None:
    corpus = beir.read_corpus(fuzz_root / "corpus.jsonl")
    queries = beir.read_queries(fuzz_root / "queries.jsonl")
    head = [b"query-id\tcorpus-id\tscore"] if header else []
    qrels_bytes = _assemble(head + [line for _, line, _ in qrels], crlf, bom, data.draw(st.booleans()))
    (fuzz_root / "qrels" / "train.tsv").write_bytes(qrels_bytes)
    # Candidates: none, random lines, or labels derived from the qrels rows (label = score > 0).
    rows = [row for kind, _, row in qrels if kind == "row"]
    mode = data.draw(st.sampled_from(["none", "random", "derived"]))
    picks: list[Row] = []
    cand_lines: list[bytes] = []
    if mode == "random":
        cand_lines = [line for _, line, _ in data.draw(st.lists(_tsv_line(), max_size=8))]
    elif mode == "derived" and rows:
        picks = data.draw(st.lists(st.sampled_from(rows), max_size=8, unique_by=lambda r: r[:2]))
        cand_lines = [f"{q}\t{d}\t{int(s > 0)}".encode() for q, d, s in picks]
    cand_path = fuzz_root / "candidates" / "train.tsv"
    cand_path.unlink(missing_ok=True)
    if mode != "none":
        cand_path.write_bytes(_assemble([b"query-id\tcorpus-id\tlabel", *cand_lines], crlf, bom, True))

    try:
        split = beir.read_split(fuzz_root, "train", corpus, queries)
        event(f"loaded, candidates={mode}")
    except DataError as e:
        assert str(e).startswith(str(fuzz_root))
        event(f"DataError: {e.message.split(' ')[0]}")
        split = None
    if split is not None:
        q, p = split.positives.shape
        assert q == len(split) >= 1 and p >= 1
        assert ((split.positives >= 0).sum(axis=1) >= 1).all()
        assert ((split.positives >= -1) & (split.positives < len(corpus))).all()
        assert (split.candidates is None) == (mode == "none")
        if split.candidates is not None:
            c = split.candidates
            assert ((c.query >= 0) & (c.query < q)).all() and ((c.doc >= 0) & (c.doc < len(corpus))).all()
            positives = {(i, int(d)) for i, row in enumerate(split.positives) for d in row if d >= 0}
            for i, d, label in zip(c.query, c.doc, c.label, strict=True):
                assert label in (0, 1) and ((int(i), int(d)) in positives) == (label == 1)

    # Oracle for qrels made only of well-formed rows (numeric scores, so a missing header changes nothing).
    if not all(kind in ("row", "blank") for kind, _, _ in qrels) or mode == "random":
        return
    known = all(r[0] in queries.index and r[1] in corpus.index for r in rows)
    unique = len({r[:2] for r in rows}) == len(rows)
    expected: dict[str, list[str]] = {}
    for qid, did, score in rows:
        if score > 0:
            expected.setdefault(qid, []).append(did)
    loadable = known and unique and bool(expected) and all(qid in expected for qid, _, _ in picks)
    event(f"oracle: loadable={loadable}, candidates={mode}")
    assert (split is not None) == loadable
    if split is not None:
        got = {
            queries.ids[qrow]: [corpus.ids[d] for d in pos]
            for qrow, pos in zip(split.query_rows, split.positive_lists(), strict=True)
        }
        assert list(got) == list(expected) and got == expected
        if split.candidates is not None:
            c = split.candidates
            got_pairs = [
                (queries.ids[split.query_rows[i]], corpus.ids[d], int(label))
                for i, d, label in zip(c.query, c.doc, c.label, strict=True)
            ]
            assert got_pairs == [(qid, did, int(score > 0)) for qid, did, score in picks]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_jsonl_line(), max_size=12),
    crlf=st.booleans(),
    bom=st.booleans(),
    final_newline=st.booleans(),
    skip_empty=st.booleans(),
)
@pytest.mark.slow
def test_fuzz_queries_reader(
    fuzz_dir: Path,
    lines: list[tuple[str, bytes]],
    crlf: bool,
    bom: bool,
    final_newline: bool,
    skip_empty: bool,
) -> None:
    path = fuzz_dir / "queries.jsonl"
    path.write_bytes(_assemble([line for _, line in lines], crlf, bom, final_newline))
    try:
        texts = beir.read_queries(path, skip_empty=skip_empty)
        event("loaded")
    except DataError as e:
        assert str(e).startswith(f"{path}:")
        event(f"DataError: {e.message.split(' ')[0]}")
        texts = None
    if texts is not None:
        assert len(texts.ids) == len(texts.texts) == len(texts.index) == len(set(texts.ids))
        assert all(texts.index[i] == row for row, i in enumerate(texts.ids))
        assert all(t.strip() for t in texts.texts)
    # Oracle for files made only of string-field records and blank lines. Queries ignore titles, so a bad
    # title only matters when it makes the line itself invalid UTF-8 (a raw unpaired surrogate).
    if all(kind in ("valid", "blank") for kind, _ in lines):
        valid = [line for kind, line in lines if kind == "valid"]
        records = [json.loads(line.decode("utf-8", "surrogatepass")) for line in valid]
        ids = [r["_id"] for r in records]
        empty = [not r["text"].strip() for r in records]
        decodable = all(_utf8(line) for line in valid)
        clean = decodable and all(_clean(r["_id"]) and _clean(r["text"]) for r in records)
        loadable = clean and len(set(ids)) == len(ids) and "" not in ids and (skip_empty or not any(empty))
        event(f"oracle: loadable={loadable}")
        assert (texts is not None) == loadable
        if texts is not None:
            kept = [(r["_id"], r["text"]) for r, e in zip(records, empty, strict=True) if not e]
            assert list(zip(texts.ids, texts.texts, strict=True)) == kept
            assert texts.skipped == sum(empty)


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Candidates against fixed qrels: q0 -> d0, d1 and q1 -> d2 are relevant; q2 is in the qrels with score 0
# only (so not in the split); q3 and q4 are not in the qrels.
_CAND_QRELS = ["query-id\tcorpus-id\tscore", "q0\td0\t1", "q0\td1\t2", "q1\td2\t1", "q2\td3\t0"]
_RELEVANT = {("q0", "d0"), ("q0", "d1"), ("q1", "d2")}
_LABELS = {0: ["0", "0.0", "-0", "0e5", " 0"], 1: ["1", "1.0", "+1", "1e0", "01 "]}
_BAD_LABELS = ["2", "-1", "0.5", "yes", "", "nan", "inf", "true", "1,0"]
CandRow = tuple[str, str, int]


@st.composite
def _candidate_line(draw: st.DrawFn, clean: bool) -> tuple[str, bytes, CandRow | None]:
    """(kind, line bytes, (query id, corpus id, label) for kind 'row').

    ``clean``: only rows and blank lines; 1 time in 30 an id is unknown, the query is outside the split or the
    label disagrees with the qrels (else 1 time in 4).
    """
    kinds = ["row", "row", "row", "row", "row", "blank"]
    kind = draw(st.sampled_from(kinds if clean else [*kinds, "bad_label", "columns", "bytes", "nul"]))
    odds = 29 if clean else 3
    qid = draw(st.sampled_from(["q0", "q1"] if draw(st.integers(0, odds)) else _FUZZ_QUERIES + _BAD_IDS))
    did = draw(st.sampled_from(_FUZZ_DOCS if draw(st.integers(0, odds)) else _BAD_IDS))
    relevant = int((qid, did) in _RELEVANT)
    label = relevant if draw(st.integers(0, odds)) else 1 - relevant
    line = f"{qid}\t{did}\t{draw(st.sampled_from(_LABELS[label]))}"
    if kind == "blank":
        line = draw(st.sampled_from(["", "  ", "\t \t"]))
    elif kind == "bad_label":
        line = f"{qid}\t{did}\t{draw(st.sampled_from(_BAD_LABELS))}"
    elif kind == "columns":
        fields = draw(st.lists(st.sampled_from(_FUZZ_DOCS + ["0", "1"]), max_size=6).filter(lambda f: len(f) != 3))
        line = "\t".join(fields)
    encoded = line.encode("utf-8")
    if kind == "bytes":
        encoded = draw(st.binary(max_size=30)).replace(b"\n", b"")
    elif kind == "nul":
        at = draw(st.integers(0, len(encoded)))
        encoded = encoded[:at] + b"\x00" + encoded[at:]
    return kind, encoded, (qid, did, label) if kind == "row" else None


@pytest.fixture(scope="module")
def candidates_root(fuzz_dir: Path) -> Path:
    corpus = [{"_id": d, "text": f"doc {d}"} for d in _FUZZ_DOCS]
    queries = [{"_id": q, "text": f"query {q}"} for q in _FUZZ_QUERIES]
    return _dataset(fuzz_dir / "candidates_case", corpus=_jsonl(corpus), queries=_jsonl(queries), qrels=_CAND_QRELS)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.booleans().flatmap(lambda clean: st.lists(_candidate_line(clean), max_size=10)),
    header=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
    final_newline=st.booleans(),
)
@pytest.mark.slow
def test_fuzz_candidates_reader(
    candidates_root: Path,
    lines: list[tuple[str, bytes, CandRow | None]],
    header: bool,
    crlf: bool,
    bom: bool,
    final_newline: bool,
) -> None:
    corpus = beir.read_corpus(candidates_root / "corpus.jsonl")
    queries = beir.read_queries(candidates_root / "queries.jsonl")
    path = candidates_root / "candidates" / "train.tsv"
    head = [b"query-id\tcorpus-id\tlabel"] if header else []
    path.write_bytes(_assemble(head + [line for _, line, _ in lines], crlf, bom, final_newline))
    try:
        split = beir.read_split(candidates_root, "train", corpus, queries)
        event("loaded")
    except DataError as e:
        assert str(e).startswith(f"{path}:"), str(e)  # the qrels are valid: every error is the candidates'
        event(f"DataError: {e.message.split(' ')[0]}")
        split = None
    if split is not None:
        assert [queries.ids[r] for r in split.query_rows] == ["q0", "q1"]
        c = split.candidates
        assert c is not None and len(c.query) == len(c.doc) == len(c.label)
        for i, d, label in zip(c.query, c.doc, c.label, strict=True):
            pair = (queries.ids[split.query_rows[i]], corpus.ids[d])
            assert label in (0, 1) and (pair in _RELEVANT) == (label == 1)

    # Oracle for files made only of well-formed rows (numeric labels 0/1) and blank lines.
    if not all(kind in ("row", "blank") for kind, _, _ in lines):
        return
    rows = [row for kind, _, row in lines if kind == "row"]
    known = all(q in queries.index and d in corpus.index for q, d, _ in rows)
    unique = len({r[:2] for r in rows}) == len(rows)
    in_split = all(q in ("q0", "q1") for q, _, _ in rows)
    agrees = all(((q, d) in _RELEVANT) == (label == 1) for q, d, label in rows)
    loadable = known and unique and in_split and agrees
    event(f"oracle: loadable={loadable}")
    assert (split is not None) == loadable
    if split is not None:
        c = split.candidates
        got = [
            (queries.ids[split.query_rows[i]], corpus.ids[d], int(label))
            for i, d, label in zip(c.query, c.doc, c.label, strict=True)
        ]
        assert got == rows
