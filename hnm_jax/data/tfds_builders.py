"""TFDS builders for BEIR-style data, written as array_record and read with ``tfds.data_source`` (no TensorFlow).

Two builders, one layout:

``SyntheticNearDup`` (``synthetic_near_dup/{tiny,small,base,ablation,power,power_dup,ablation_dup}``)
    the ``hnm_jax.data.synthetic`` benchmark of ``SIZES[name]``; a custom seed or size is a custom
    ``SyntheticNearDupConfig`` (read back by its name, from files).
``LocalBeir`` (``local_beir/{name}``)
    any local BEIR folder, given by ``LocalBeirConfig(name=..., root=...)``; read back by name, from files.

Every dataset has these splits (one TFDS split per BEIR table, rows in file order) and one feature dict;
the columns a table does not use are ``""`` (text) or ``0`` (score):

=====================  ===========================================================================
split                  columns used
=====================  ===========================================================================
``corpus``             ``id``, ``text`` (title folded in as ``beir.read_corpus`` does),
                       ``perturbation`` and ``task_id`` (siblings of a synthetic benchmark only)
``queries``            ``id``, ``text``
``qrels_{split}``      ``query_id``, ``corpus_id``, ``score`` (every row of ``qrels/{split}.tsv``)
``candidates_{split}`` ``query_id``, ``corpus_id``, ``score`` = label (``candidates/{split}.tsv``)
``unlabelled_duplicates`` ``query_id``, ``corpus_id`` (``unlabelled_duplicates.tsv``; only when there are
                       some, e.g. ``power_dup``: true matches that no qrels lists)
=====================  ===========================================================================

Examples are written with ``disable_shuffling=True`` and integer keys, so ``source[i]`` is row ``i``.
Text columns come back as UTF-8 ``bytes``. ``beir_from_tfds`` writes a dataset back as a BEIR folder
(+ ``perturbations.tsv`` when the corpus has perturbations, + ``unlabelled_duplicates.tsv`` when the dataset
has that table), which is what the rest of hnm_jax reads.

Calls that work without TensorFlow (tensorflow-datasets 4.9.10 + array-record)::

    builder = SyntheticNearDup(config="tiny", data_dir=d, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    sources = tfds.data_source("synthetic_near_dup/tiny", data_dir=d, download=False)  # {split: source}
    sources["corpus"][0]  # {"id": b"c00000", "text": b"...", ...}

``DatasetInfo`` is built directly (``dataset_info_from_configs`` would look for metadata files next to
this module).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hnm_jax.data import beir, synthetic

DATA_VERSION = "1.0.0"
TEXT_COLUMNS = ("id", "text", "perturbation", "task_id", "query_id", "corpus_id")
CORPUS, QUERIES = "corpus", "queries"
QRELS_PREFIX, CANDIDATES_PREFIX = "qrels_", "candidates_"
UNLABELLED_DUPLICATES = "unlabelled_duplicates"

Row = dict[str, Any]


def _features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {**{name: tfds.features.Text() for name in TEXT_COLUMNS}, "score": tfds.features.Scalar(np.float32)}
    )


def _row(**values: Any) -> Row:
    """A row of the shared layout: unused text columns "", score 0."""
    row: Row = dict.fromkeys(TEXT_COLUMNS, "")
    row["score"] = 0.0
    row.update(values)
    return row


class _BeirTablesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared by both builders: the table layout, in-order writing, and a fixed ``code_path``."""

    VERSION = tfds.core.Version(DATA_VERSION)
    RELEASE_NOTES = {DATA_VERSION: "Initial release."}
    DESCRIPTION = ""
    # TFDS 4.9.10 derives code_path via `importlib_resources.abc.Traversable` for any builder defined in
    # a package, which needs the `importlib_resources` backport (only a dependency on Python < 3.9).
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION, features=_features(), disable_shuffling=True
        )

    @abc.abstractmethod
    def _tables(self) -> dict[str, list[Row]]:
        """Split name -> rows; each concrete builder says what its tables are."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        return {name: self._generate_examples(rows) for name, rows in self._tables().items()}

    def _generate_examples(self, rows: list[Row]) -> Iterator[tuple[int, Row]]:
        yield from enumerate(rows)


# ----------------------------------------------------------------------------------------- synthetic


@dataclasses.dataclass(eq=False)
class SyntheticNearDupConfig(tfds.core.BuilderConfig):
    """A ``SyntheticNearDup`` config: the ``SyntheticConfig`` to generate."""

    synthetic: synthetic.SyntheticConfig | None = None


def _synthetic_tables(bench: synthetic.SyntheticBenchmark) -> dict[str, list[Row]]:
    tables: dict[str, list[Row]] = {
        CORPUS: [  # task_id only for siblings, as in perturbations.tsv
            _row(id=r.id, text=r.text, perturbation=r.perturbation or "", task_id=r.task_id if r.perturbation else "")
            for r in bench.corpus
        ],
        QUERIES: [_row(id=q.id, text=q.text) for q in bench.queries],
    }
    for split in synthetic.SPLITS:
        tables[QRELS_PREFIX + split] = [
            _row(query_id=q.id, corpus_id=q.task_id, score=1.0) for q in bench.split_queries(split)
        ]
        tables[CANDIDATES_PREFIX + split] = [
            _row(query_id=qid, corpus_id=did, score=float(label)) for qid, did, label in bench.candidates(split)
        ]
    duplicates = bench.unlabelled_duplicates()
    if duplicates:
        tables[UNLABELLED_DUPLICATES] = [_row(query_id=qid, corpus_id=did) for qid, did in duplicates]
    return tables


class SyntheticNearDup(_BeirTablesBuilder):
    """The synthetic near-duplicate entity -> task benchmark (``hnm_jax.data.synthetic``)."""

    DESCRIPTION = "Synthetic entity -> task matching with labelled near-duplicate siblings."
    BUILDER_CONFIGS = [
        SyntheticNearDupConfig(name=name, synthetic=config, description=f"synthetic.SIZES[{name!r}]")
        for name, config in synthetic.SIZES.items()
    ]

    def _tables(self) -> dict[str, list[Row]]:
        config = self.builder_config.synthetic
        if config is None:
            raise ValueError(f"config {self.builder_config.name!r} has no synthetic=SyntheticConfig(...)")
        return _synthetic_tables(synthetic.generate(config))


# ----------------------------------------------------------------------------------------- local BEIR


@dataclasses.dataclass(eq=False)
class LocalBeirConfig(tfds.core.BuilderConfig):
    """A ``LocalBeir`` config: ``root`` is the BEIR folder to wrap."""

    root: str = ""


def _read_pairs(path: Path) -> list[tuple[str, str, float]]:
    """(query id, corpus id, value) of every row of a TSV that ``beir.read_split`` has validated."""
    out = []
    first = True
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            query_id, doc_id, value = line.rstrip("\r\n").split("\t")
            try:
                out.append((query_id, doc_id, float(value)))
            except ValueError:
                if not first:  # only the first line may be a header
                    raise beir.DataError(path, lineno, f"not a number: {value!r:.40}") from None
            first = False
    return out


def _beir_tables(root: Path) -> dict[str, list[Row]]:
    """The tables of a BEIR folder, validated by ``hnm_jax.data.beir`` first (errors name file:line)."""
    corpus = beir.read_corpus(root / "corpus.jsonl")
    queries = beir.read_queries(root / "queries.jsonl")
    perturbations = synthetic.read_perturbations(root) if (root / synthetic.PERTURBATIONS_FILE).is_file() else {}
    unknown = sorted(set(perturbations) - set(corpus.index))
    if unknown:
        raise beir.DataError(root / synthetic.PERTURBATIONS_FILE, None, f"unknown corpus ids {unknown[:5]}")
    corpus_rows = []
    for doc_id, text in zip(corpus.ids, corpus.texts, strict=True):
        kind, task = perturbations.get(doc_id, ("", ""))
        corpus_rows.append(_row(id=doc_id, text=text, perturbation=kind, task_id=task))
    tables = {
        CORPUS: corpus_rows,
        QUERIES: [_row(id=i, text=t) for i, t in zip(queries.ids, queries.texts, strict=True)],
    }
    duplicates = synthetic.read_unlabelled_duplicates(root)
    unknown = sorted(
        {q for q, _ in duplicates if q not in queries.index} | {d for _, d in duplicates if d not in corpus.index}
    )
    if unknown:
        raise beir.DataError(root / synthetic.UNLABELLED_DUPLICATES_FILE, None, f"unknown ids {unknown[:5]}")
    if duplicates:
        tables[UNLABELLED_DUPLICATES] = [_row(query_id=q, corpus_id=d) for q, d in duplicates]
    for split in beir.list_splits(root):
        beir.read_split(root, split, corpus, queries)  # validates qrels and candidates
        for prefix, folder in ((QRELS_PREFIX, "qrels"), (CANDIDATES_PREFIX, "candidates")):
            path = root / folder / f"{split}.tsv"
            if path.is_file():
                tables[prefix + split] = [_row(query_id=q, corpus_id=d, score=v) for q, d, v in _read_pairs(path)]
    return tables


class LocalBeir(_BeirTablesBuilder):
    """A local BEIR folder (``LocalBeirConfig.root``) as a TFDS dataset."""

    DESCRIPTION = "A local BEIR folder: corpus, queries, qrels and labelled candidates."

    def _tables(self) -> dict[str, list[Row]]:
        config = self.builder_config
        if not isinstance(config, LocalBeirConfig) or not config.root:
            raise ValueError("LocalBeir needs config=LocalBeirConfig(name=..., root=<BEIR folder>)")
        return _beir_tables(Path(config.root))


# ----------------------------------------------------------------------------------------- helpers


def _prepare(builder: tfds.core.DatasetBuilder, overwrite: bool) -> str:
    mode = (
        tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False, download_mode=mode)
    )
    return f"{builder.name}/{builder.builder_config.name}"


def prepare_synthetic(
    data_dir: str | Path,
    size: str = "tiny",
    config: synthetic.SyntheticConfig | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Builds ``synthetic_near_dup/{size}`` (or a custom ``config`` under the name ``size``); returns its name."""
    if config is None and size not in synthetic.SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(synthetic.SIZES)} or a config")
    builder_config: str | SyntheticNearDupConfig = size
    if config is not None:
        if size in synthetic.SIZES:
            raise ValueError(f"a custom config needs a name other than {', '.join(synthetic.SIZES)}, got {size!r}")
        builder_config = SyntheticNearDupConfig(name=size, synthetic=config)
    builder = SyntheticNearDup(config=builder_config, data_dir=str(data_dir), file_format="array_record")
    return _prepare(builder, overwrite)


def prepare_local_beir(
    root: str | Path, data_dir: str | Path, name: str | None = None, *, overwrite: bool = False
) -> str:
    """Builds ``local_beir/{name}`` (default: the folder's name) from a BEIR folder; returns its name."""
    root = Path(root)
    beir.resolve_dataset_path(path=root)  # a clear error for a missing or non-BEIR folder
    name = re.sub(r"\W", "_", name or root.name).lower()
    config = LocalBeirConfig(name=name, root=str(root.resolve()))
    builder = LocalBeir(config=config, data_dir=str(data_dir), file_format="array_record")
    return _prepare(builder, overwrite)


def data_sources(name: str, data_dir: str | Path) -> Mapping[str, Any]:
    """Split -> random-access source (``len``, ``[i]`` -> row dict) of a prepared dataset."""
    return tfds.data_source(name, data_dir=str(data_dir), download=False)


def _rows(source: Any, chunk: int = 4096) -> Iterator[Row]:
    """Rows of a data source in order, text columns decoded to str."""
    for start in range(0, len(source), chunk):
        for row in source.__getitems__(range(start, min(start + chunk, len(source)))):
            yield {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in row.items()}


def _score(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _write(path: Path, lines: Iterator[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def beir_from_tfds(name: str, data_dir: str | Path, out: str | Path) -> Path:
    """Writes the prepared TFDS dataset ``name`` as a BEIR folder at ``out``; returns ``out``.

    ``out`` then loads with ``beir.load_beir``; a synthetic benchmark's folder is byte-identical to
    ``synthetic.write_beir`` of the same config.
    """
    sources = data_sources(name, data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = list(_rows(sources[CORPUS]))
    _write(out / "corpus.jsonl", (_json({"_id": r["id"], "text": r["text"]}) for r in corpus))
    _write(out / "queries.jsonl", (_json({"_id": r["id"], "text": r["text"]}) for r in _rows(sources[QUERIES])))
    for split_name in sorted(sources):
        for prefix, folder, column in ((QRELS_PREFIX, "qrels", "score"), (CANDIDATES_PREFIX, "candidates", "label")):
            if split_name.startswith(prefix):
                (out / folder).mkdir(exist_ok=True)
                rows = _rows(sources[split_name])
                header = f"query-id\tcorpus-id\t{column}"
                lines = (f"{r['query_id']}\t{r['corpus_id']}\t{_score(r['score'])}" for r in rows)
                _write(out / folder / f"{split_name[len(prefix) :]}.tsv", _prepend(header, lines))
    siblings = [r for r in corpus if r["perturbation"]]
    if siblings:
        lines = (f"{r['id']}\t{r['perturbation']}\t{r['task_id']}" for r in siblings)
        _write(out / synthetic.PERTURBATIONS_FILE, _prepend("corpus-id\tperturbation\ttask-id", lines))
    if UNLABELLED_DUPLICATES in sources:
        lines = (f"{r['query_id']}\t{r['corpus_id']}" for r in _rows(sources[UNLABELLED_DUPLICATES]))
        _write(out / synthetic.UNLABELLED_DUPLICATES_FILE, _prepend(synthetic.UNLABELLED_DUPLICATES_HEADER, lines))
    return out


def _prepend(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _json(record: dict[str, str]) -> str:
    return json.dumps(record, ensure_ascii=False)
