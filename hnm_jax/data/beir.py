"""BEIR-format datasets: corpus, queries, qrels and labelled candidates -> id maps and numpy arrays.

A dataset folder holds ``corpus.jsonl`` (``{"_id", "title"?, "text"}``), ``queries.jsonl``
(``{"_id", "text"}``), ``qrels/{split}.tsv`` (``query-id  corpus-id  score``; score > 0 = relevant)
and optionally ``candidates/{split}.tsv`` (``query-id  corpus-id  label``; the benchmark's labelled
pairs, label 0 = near-duplicate non-match).

Files are read line by line in binary and decoded per line, so every problem is reported as a
``DataError`` naming the file and line: ``str(e) == "path:line: message"``. A UTF-8 BOM, CRLF line
ends and blank lines are accepted. Pure numpy + stdlib (no jax).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR: Path = Path(__file__).resolve().parents[3] / "shared" / "datasets"
DATA_DIR_ENV = "HNM_DATA_DIR"

_BOM = b"\xef\xbb\xbf"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class DataError(ValueError):
    """A bad input file: ``str(e) == f"{path}:{line}: {message}"`` (no line -> ``f"{path}: {message}"``)."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        super().__init__(path, line, message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclasses.dataclass(frozen=True)
class Texts:
    """Records of a corpus or query file, in file order.

    ``skipped`` counts records dropped for empty text (only with ``skip_empty``);
    ``skipped_lines`` maps each skipped id to its line.
    """

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    index: Mapping[str, int]
    skipped: int = 0
    skipped_lines: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True, eq=False)
class Candidates:
    """Labelled (query, doc) pairs of one split, in file order. Arrays are read-only.

    query: [C] int32 row into ``Split.query_rows``; doc: [C] int32 corpus row;
    label: [C] int8, 1 = match, 0 = labelled non-match (near-duplicate).
    """

    query: np.ndarray
    doc: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.query.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Queries of one split with their relevant docs. Arrays are read-only.

    query_rows: [Q] int32 rows into the queries ``Texts``, in qrels order of first relevant row;
    positives: [Q, P] int32 corpus rows of every relevant doc (qrels order), -1 padded;
    candidates: the split's labelled pairs, or None without ``candidates/{split}.tsv``.
    """

    name: str
    query_rows: np.ndarray
    positives: np.ndarray
    candidates: Candidates | None

    def __len__(self) -> int:
        return int(self.query_rows.shape[0])

    def positive_lists(self) -> list[np.ndarray]:
        """Per query, the corpus rows of its relevant docs (no padding)."""
        return [row[row >= 0] for row in self.positives]


@dataclasses.dataclass(frozen=True, eq=False)
class BeirData:
    """A loaded dataset folder: the whole corpus and query set, plus one split."""

    root: Path
    corpus: Texts
    queries: Texts
    split: Split


# ----------------------------------------------------------------------------------------- paths


def _check_dataset_dir(root: Path) -> None:
    if not root.is_dir():
        raise DataError(root, None, "not a directory (expected a folder with corpus.jsonl, queries.jsonl)")
    missing = [f for f in ("corpus.jsonl", "queries.jsonl") if not (root / f).is_file()]
    if missing:
        raise DataError(root, None, f"not a BEIR folder: missing {', '.join(missing)}")


def _available_datasets(data_dir: Path) -> list[str]:
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if (p / "corpus.jsonl").is_file())


def resolve_dataset_path(name: str | None = None, path: str | Path | None = None) -> Path:
    """Folder of a dataset given by ``name`` (under $HNM_DATA_DIR or DEFAULT_DATA_DIR) or by ``path``."""
    if (name is None) == (path is None):
        raise ValueError("give exactly one of name= or path=")
    if path is not None:
        root = Path(path).expanduser()
    else:
        data_dir = Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
        available = _available_datasets(data_dir)
        if name not in available:
            listed = ", ".join(available) if available else "none"
            raise DataError(
                data_dir,
                None,
                f"no dataset named {name!r}; available: {listed} (set ${DATA_DIR_ENV} to change)",
            )
        root = data_dir / name
    _check_dataset_dir(root)
    return root


def resolve_dataset(name_or_path: str | Path) -> Path:
    """`resolve_dataset_path` of a command-line dataset argument: a folder when one exists there, else a name."""
    path = Path(name_or_path)
    if path.is_dir():
        return resolve_dataset_path(path=name_or_path)
    if path.exists() or str(name_or_path).startswith(("/", ".", "~")) or os.sep in str(name_or_path):
        raise DataError(path, None, f"{'not a folder' if path.exists() else 'no such folder'} (expected a BEIR "
                                    "folder with corpus.jsonl, queries.jsonl and qrels/, or a benchmark name)")
    return resolve_dataset_path(name=str(name_or_path))


def load_texts(root: str | Path, *, skip_empty: bool = False) -> tuple[Path, Texts, Texts]:
    """(root, corpus, queries) of the dataset folder `root` (every split's texts; no qrels read)."""
    root = Path(root)
    corpus = read_corpus(root / "corpus.jsonl", skip_empty=skip_empty)
    return root, corpus, read_queries(root / "queries.jsonl", skip_empty=skip_empty)


def list_splits(root: Path) -> list[str]:
    """Names of the splits with a ``qrels/{split}.tsv`` file, sorted."""
    qrels_dir = Path(root) / "qrels"
    if not qrels_dir.is_dir():
        return []
    return sorted(p.stem for p in qrels_dir.glob("*.tsv") if p.is_file())


def _qrels_path(root: Path, split: str) -> Path:
    path = root / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = ", ".join(list_splits(root)) or "none"
        raise DataError(path, None, f"no split {split!r}; splits in {root / 'qrels'}: {splits}")
    return path


# ----------------------------------------------------------------------------------------- lines


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yields (line number, decoded line without its line end), skipping blank lines."""
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                raw = raw.rstrip(b"\r\n")
                nul = raw.find(b"\x00")
                if nul >= 0:
                    raise DataError(path, lineno, f"NUL byte at column {nul + 1}")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(path, lineno, f"invalid UTF-8 at byte {e.start + 1}: {e.reason}") from e
                if line.strip():
                    yield lineno, line
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e.strerror or e}") from e


def _check_string(path: Path, lineno: int, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise DataError(path, lineno, f"{key!r} must be a string, got {type(value).__name__} {value!r:.40}")
    if "\x00" in value:
        raise DataError(path, lineno, f"NUL character in {key!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(path, lineno, f"{key!r} has an unpaired surrogate at character {e.start}") from e
    return value


# ----------------------------------------------------------------------------------------- jsonl


def _read_texts(path: Path, *, use_title: bool, skip_empty: bool) -> Texts:
    ids: list[str] = []
    texts: list[str] = []
    first_line: dict[str, int] = {}  # every id seen (kept or skipped) -> its line
    skipped: dict[str, int] = {}
    for lineno, line in _lines(path):
        try:
            record = json.loads(line)
        except RecursionError as e:
            raise DataError(path, lineno, "malformed JSON: nested too deeply") from e
        except ValueError as e:  # JSONDecodeError, and e.g. integers with too many digits
            raise DataError(path, lineno, f"malformed JSON: {e}") from e
        if not isinstance(record, dict):
            raise DataError(path, lineno, f"expected a JSON object, got {type(record).__name__}")
        for key in ("_id", "text"):
            if key not in record:
                raise DataError(path, lineno, f"missing {key!r} (expected keys '_id', 'text')")
        doc_id = _check_string(path, lineno, "_id", record["_id"])
        if not doc_id:
            raise DataError(path, lineno, "'_id' is empty")
        text = _check_string(path, lineno, "text", record["text"])
        if use_title and record.get("title") is not None:
            title = _check_string(path, lineno, "title", record["title"])
            if title:
                text = f"{title} {text}" if text else title
        if doc_id in first_line:
            raise DataError(path, lineno, f"duplicate _id {doc_id!r} (first at line {first_line[doc_id]})")
        first_line[doc_id] = lineno
        if not text.strip():
            if skip_empty:
                skipped[doc_id] = lineno
                continue
            raise DataError(path, lineno, f"empty text for _id {doc_id!r} (skip_empty=True skips it)")
        ids.append(doc_id)
        texts.append(text)
    index = {doc_id: row for row, doc_id in enumerate(ids)}
    return Texts(tuple(ids), tuple(texts), index, skipped=len(skipped), skipped_lines=skipped)


def read_corpus(path: Path, *, skip_empty: bool = False) -> Texts:
    """Reads corpus.jsonl; a record's text is ``title + " " + text`` when the title is non-empty."""
    return _read_texts(Path(path), use_title=True, skip_empty=skip_empty)


def read_queries(path: Path, *, skip_empty: bool = False) -> Texts:
    """Reads queries.jsonl; a record's text is its ``text`` (other keys are ignored)."""
    return _read_texts(Path(path), use_title=False, skip_empty=skip_empty)


# ----------------------------------------------------------------------------------------- tsv


def read_triples(path: Path, value_name: str) -> Iterator[tuple[int, str, str, float]]:
    """Yields (line, query id, corpus id, value) of a 3-column TSV; the first line may be a header."""
    first = True
    for lineno, line in _lines(path):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(
                path,
                lineno,
                f"expected 3 tab-separated columns (query-id, corpus-id, {value_name}), got {len(fields)}",
            )
        query_id, doc_id, value = fields
        is_number = _NUMBER.fullmatch(value.strip()) is not None
        if first and not is_number:  # header line
            first = False
            continue
        first = False
        if not is_number:
            raise DataError(path, lineno, f"{value_name} must be a number, got {value!r:.40}")
        number = float(value)
        if not math.isfinite(number):
            raise DataError(path, lineno, f"{value_name} must be finite, got {value!r:.40}")
        yield lineno, query_id, doc_id, number


def _lookup(path: Path, lineno: int, texts: Texts, key: str, kind: str) -> int | None:
    """Row of ``key`` in ``texts``; None if it was skipped for empty text; DataError if unknown."""
    row = texts.index.get(key)
    if row is None and key not in texts.skipped_lines:
        source = "corpus.jsonl" if kind == "corpus" else "queries.jsonl"
        raise DataError(path, lineno, f"unknown {kind} id {key!r} (not in {source})")
    return row


def _check_new_pair(
    path: Path, lineno: int, pair_line: dict[tuple[str, str], int], qid: str, did: str
) -> None:
    first = pair_line.setdefault((qid, did), lineno)
    if first != lineno:
        raise DataError(path, lineno, f"duplicate pair ({qid!r}, {did!r}) (first at line {first})")


def _read_qrels(
    path: Path, corpus: Texts, queries: Texts
) -> tuple[dict[int, list[int]], dict[tuple[int, int], int]]:
    """Per query row, the relevant corpus rows in file order; and (query row, doc row) -> line."""
    positives: dict[int, list[int]] = {}
    relevant_line: dict[tuple[int, int], int] = {}
    pair_line: dict[tuple[str, str], int] = {}
    for lineno, query_id, doc_id, score in read_triples(path, "score"):
        _check_new_pair(path, lineno, pair_line, query_id, doc_id)
        qrow = _lookup(path, lineno, queries, query_id, "query")
        drow = _lookup(path, lineno, corpus, doc_id, "corpus")
        if score <= 0 or qrow is None:  # not relevant, or the query was skipped (empty text)
            continue
        if drow is None:
            raise DataError(
                path,
                lineno,
                f"relevant corpus id {doc_id!r} was skipped for empty text "
                f"(corpus.jsonl:{corpus.skipped_lines[doc_id]})",
            )
        positives.setdefault(qrow, []).append(drow)
        relevant_line[qrow, drow] = lineno
    return positives, relevant_line


def _read_candidates(
    path: Path,
    split: str,
    corpus: Texts,
    queries: Texts,
    split_row: Mapping[int, int],
    relevant_line: Mapping[tuple[int, int], int],
) -> Candidates:
    query: list[int] = []
    doc: list[int] = []
    label: list[int] = []
    pair_line: dict[tuple[str, str], int] = {}
    for lineno, query_id, doc_id, value in read_triples(path, "label"):
        if value not in (0.0, 1.0):
            raise DataError(path, lineno, f"label must be 0 or 1, got {value:g}")
        _check_new_pair(path, lineno, pair_line, query_id, doc_id)
        qrow = _lookup(path, lineno, queries, query_id, "query")
        drow = _lookup(path, lineno, corpus, doc_id, "corpus")
        if qrow is None or drow is None:  # skipped for empty text
            continue
        if qrow not in split_row:
            raise DataError(path, lineno, f"query {query_id!r} has no relevant doc in qrels/{split}.tsv")
        qrels_line = relevant_line.get((qrow, drow))
        pair = f"pair ({query_id!r}, {doc_id!r})"
        if value == 1.0 and qrels_line is None:
            raise DataError(path, lineno, f"{pair} is labelled 1 but not relevant in qrels/{split}.tsv")
        if value == 0.0 and qrels_line is not None:
            raise DataError(
                path, lineno, f"{pair} is labelled 0 but relevant in qrels/{split}.tsv:{qrels_line}"
            )
        query.append(split_row[qrow])
        doc.append(drow)
        label.append(int(value))
    return Candidates(
        query=_frozen(np.asarray(query, dtype=np.int32)),
        doc=_frozen(np.asarray(doc, dtype=np.int32)),
        label=_frozen(np.asarray(label, dtype=np.int8)),
    )


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def read_split(root: Path, split: str, corpus: Texts, queries: Texts) -> Split:
    """Reads ``qrels/{split}.tsv`` and, if present, ``candidates/{split}.tsv`` against loaded texts."""
    root = Path(root)
    path = _qrels_path(root, split)
    positives, relevant_line = _read_qrels(path, corpus, queries)
    if not positives:
        raise DataError(path, None, "split has no relevant pairs (rows with score > 0)")
    query_rows = np.fromiter(positives, dtype=np.int32, count=len(positives))
    width = max(len(rows) for rows in positives.values())
    padded = np.full((len(positives), width), -1, dtype=np.int32)
    for i, rows in enumerate(positives.values()):
        padded[i, : len(rows)] = rows
    candidates_path = root / "candidates" / f"{split}.tsv"
    candidates = None
    if candidates_path.exists():
        split_row = {int(qrow): i for i, qrow in enumerate(query_rows)}
        candidates = _read_candidates(candidates_path, split, corpus, queries, split_row, relevant_line)
    return Split(split, _frozen(query_rows), _frozen(padded), candidates)


def load_beir(root: str | Path, split: str, *, skip_empty: bool = False) -> BeirData:
    """Loads a BEIR folder: all of the corpus and queries, and one split's qrels and candidates."""
    root = Path(root)
    _check_dataset_dir(root)
    _qrels_path(root, split)  # fail fast on a wrong split name, before reading the corpus
    _, corpus, queries = load_texts(root, skip_empty=skip_empty)
    return BeirData(root, corpus, queries, read_split(root, split, corpus, queries))
