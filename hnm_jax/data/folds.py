"""Cross-validation over queries: every labelled query of a dataset in one of K folds.

The qrels of every split are pooled; queries that share a positive document form a group (a connected component
of the graph query <-> positive doc) and a group lives in one fold. Fold ``f`` gives three splits: ``test`` =
fold f; ``dev`` = about ``dev_fraction`` of the other folds' queries, also whole groups; ``train`` = the rest.
Everything is a pure function of the qrels and ``FoldSpec`` (numpy Generators seeded from ``seed``), except
`materialize_fold`, which writes a fold's BEIR folder for `data.beir` to read like any other dataset.

Qrels are ``{query id: {corpus id: score}}``; score > 0 = relevant; a query with a relevant doc is labelled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hnm_jax.atomic_write import atomic_path
from hnm_jax.data.beir import DataError, read_triples

Qrels = Mapping[str, Mapping[str, float]]
SPLITS = ("train", "dev", "test")
FOLDS_DIR_ENV = "HNM_FOLDS_DIR"
SPLIT_FOLDERS = {"qrels": ("score", "query-id\tcorpus-id\tscore"),
                 "candidates": ("label", "query-id\tcorpus-id\tlabel")}  # per-split files: value name, header

log = logging.getLogger(__name__)


class FoldError(DataError):
    """The dataset's labelled queries cannot make the folds asked for (too few query groups)."""


@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """Fold ``fold`` of ``num_folds``, drawn with ``seed``; ``dev_fraction`` of the training queries form the inner
    dev split (0: no dev split). A bad value raises ValueError ``"<field>: <message>"``."""

    num_folds: int
    fold: int
    seed: int = 0
    dev_fraction: float = 0.1

    def __post_init__(self):
        if self.num_folds < 2:
            raise ValueError(f"num_folds: must be >= 2, got {self.num_folds}")
        if not 0 <= self.fold < self.num_folds:
            raise ValueError(f"fold: must be in [0, {self.num_folds}), got {self.fold}")
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction: must be in [0, 1), got {self.dev_fraction}")

    @property
    def name(self) -> str:
        """'k5-s0-f0-d0.1': the fold's part of its folder name."""
        return f"k{self.num_folds}-s{self.seed}-f{self.fold}-d{self.dev_fraction:g}"


# ----------------------------------------------------------------------------------------- pure


def query_groups(qrels: Qrels) -> list[tuple[str, ...]]:
    """Connected components of query <-> relevant doc over the labelled queries of `qrels`.

    Each group is sorted, and the groups are sorted by their first id, so the result does not depend on the
    order of `qrels`. Queries with no relevant doc belong to no group.
    """
    parent: dict[str, str] = {}

    def find(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    first_query: dict[str, str] = {}  # doc -> a query it is relevant to
    for query, docs in qrels.items():
        for doc, score in docs.items():
            if score <= 0:
                continue
            parent.setdefault(query, query)
            other = first_query.setdefault(doc, query)
            parent[find(query)] = find(other)
    members: dict[str, list[str]] = {}
    for query in parent:
        members.setdefault(find(query), []).append(query)
    return sorted(tuple(sorted(group)) for group in members.values())


def assign_folds(qrels: Qrels, num_folds: int, seed: int) -> dict[str, int]:
    """Labelled query -> fold in [0, num_folds): whole groups (`query_groups`), sizes balanced.

    The groups are shuffled by ``np.random.default_rng(seed)``, then placed largest first (ties in shuffled
    order), each in the fold with the fewest queries so far (the lowest index on a tie); fold sizes then differ
    by at most the largest group. ValueError when there are fewer groups than folds.
    """
    groups = query_groups(qrels)
    if num_folds < 2 or len(groups) < num_folds:
        raise ValueError(f"{len(groups)} groups of labelled queries cannot fill {num_folds} folds (need >= 2 folds "
                         "and a group for each)")
    order = sorted(np.random.default_rng(seed).permutation(len(groups)).tolist(), key=lambda g: -len(groups[g]))
    sizes = np.zeros(num_folds, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for g in order:
        fold = int(np.argmin(sizes))
        sizes[fold] += len(groups[g])
        fold_of.update(dict.fromkeys(groups[g], fold))
    return fold_of


def _dev_groups(groups: list[tuple[str, ...]], dev_fraction: float, seed: int, fold: int) -> set[str]:
    """Queries of the inner dev split: whole `groups` in the order of ``default_rng([seed, fold])``, each taken
    while the split stays within round(dev_fraction * queries) (at least 1); the smallest group if none fits."""
    total = sum(len(g) for g in groups)
    if dev_fraction == 0 or not groups:
        return set()
    target = max(1, round(dev_fraction * total))
    dev: set[str] = set()
    for g in np.random.default_rng([seed, fold]).permutation(len(groups)).tolist():
        if len(dev) + len(groups[g]) <= target:
            dev.update(groups[g])
    return dev or set(min(groups, key=len))


def fold_queries(qrels: Qrels, spec: FoldSpec) -> dict[str, frozenset[str]]:
    """{"train", "dev", "test"} -> the labelled queries of each split of fold ``spec.fold`` (disjoint, covering).

    test: the queries `assign_folds` puts in the fold; dev: `_dev_groups` of the other folds' groups (empty
    with dev_fraction 0); train: the rest. ValueError when train would be empty.
    """
    fold_of = assign_folds(qrels, spec.num_folds, spec.seed)
    rest = [g for g in query_groups(qrels) if fold_of[g[0]] != spec.fold]
    dev = _dev_groups(rest, spec.dev_fraction, spec.seed, spec.fold)
    train = {q for g in rest for q in g} - dev
    if not train:
        raise ValueError(f"fold {spec.fold} of {spec.num_folds} leaves no training queries (too few query groups)")
    test = {q for q, f in fold_of.items() if f == spec.fold}
    return {"train": frozenset(train), "dev": frozenset(dev), "test": frozenset(test)}


def fold_splits(qrels: Qrels, spec: FoldSpec) -> dict[str, dict[str, dict[str, float]]]:
    """{"train", "dev", "test"} -> the qrels of fold ``spec.fold``'s split (`fold_queries`): every row of its
    queries, in the order of `qrels`. Queries with no relevant doc are in no split."""
    split_of = {q: split for split, queries in fold_queries(qrels, spec).items() for q in queries}
    splits: dict[str, dict[str, dict[str, float]]] = {split: {} for split in SPLITS}
    for query, docs in qrels.items():
        if query in split_of:
            splits[split_of[query]][query] = dict(docs)
    return splits


# ----------------------------------------------------------------------------------------- files


def folds_cache_dir() -> Path:
    """Where fold folders go: $HNM_FOLDS_DIR, else $XDG_CACHE_HOME/hnm_jax/folds, else ~/.cache/hnm_jax/folds."""
    if os.environ.get(FOLDS_DIR_ENV):
        return Path(os.environ[FOLDS_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hnm_jax" / "folds"


def read_pooled(root: Path, folder: str) -> dict[str, dict[str, float]]:
    """The rows of every ``root/folder/*.tsv`` (files by name, rows in file order) as {query: {doc: value}}.

    A (query, doc) pair given twice, in one file or in two, is a DataError naming both places.
    """
    value_name = SPLIT_FOLDERS[folder][0]
    pooled: dict[str, dict[str, float]] = {}
    seen: dict[tuple[str, str], str] = {}
    for path in sorted((Path(root) / folder).glob("*.tsv")):
        for lineno, query, doc, value in read_triples(path, value_name):
            first = seen.setdefault((query, doc), f"{path}:{lineno}")
            if first != f"{path}:{lineno}":
                raise DataError(path, lineno, f"duplicate pair ({query!r}, {doc!r}) (first at {first}); a fold "
                                              "pools every split")
            pooled.setdefault(query, {})[doc] = value
    return pooled


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and not path.is_symlink() and path.read_text(encoding="utf-8") == text:
        return
    with atomic_path(path, unique=True) as tmp:  # several processes of one run may write the same folder
        tmp.write_text(text, encoding="utf-8")


def _link(path: Path, target: Path) -> None:
    if path.is_symlink() and Path(os.readlink(path)) == target:
        return
    with atomic_path(path, unique=True) as tmp:
        tmp.symlink_to(target)


def fold_folder_name(root: Path, spec: FoldSpec) -> str:
    """'<dataset>-k5-s0-f0-d0.1-<8 hex of the dataset folder's absolute path>' (two folders of one name differ)."""
    root = Path(root).resolve()
    return f"{root.name}-{spec.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


def materialize_fold(root: str | Path, spec: FoldSpec, cache_dir: str | Path | None = None) -> Path:
    """Writes fold ``spec.fold`` of the BEIR folder `root` as a BEIR folder and returns it.

    The folder is ``cache_dir`` (default `folds_cache_dir`) / `fold_folder_name`. Every entry of `root` but
    qrels/ and candidates/ is linked (corpus, queries, per-dataset files); ``qrels/{train,dev,test}.tsv`` hold the
    `fold_splits` of the pooled qrels (a split with no queries gets no file), and ``candidates/{split}.tsv`` each
    labelled pair of that split's queries. Files are rewritten (atomically) only when their text changes, so a
    rerun, or another process of the same run, finds the same folder. DataError for bad files or a candidate whose
    query has no relevant doc; FoldError for too few query groups for the folds.
    """
    root = Path(root).resolve()
    qrels_dir = root / "qrels"
    pooled = {folder: read_pooled(root, folder) for folder in SPLIT_FOLDERS}
    try:
        splits = fold_splits(pooled["qrels"], spec)
    except ValueError as error:
        raise FoldError(qrels_dir, None, str(error)) from None
    split_of = {query: split for split, part in splits.items() for query in part}
    orphans = sorted(set(pooled["candidates"]) - set(split_of))
    if orphans:
        raise DataError(root / "candidates", None, f"{len(orphans)} queries with labelled pairs have no relevant doc "
                                                   f"in {qrels_dir}, e.g. {orphans[0]!r}")
    out = Path(cache_dir).expanduser() if cache_dir is not None else folds_cache_dir()
    out = out / fold_folder_name(root, spec)
    for entry in sorted(root.iterdir()):
        if entry.name not in SPLIT_FOLDERS:
            _link(out / entry.name, entry)
    for folder, (_, header) in SPLIT_FOLDERS.items():
        rows = {split: [] for split in SPLITS}
        for query, docs in pooled[folder].items():
            if query in split_of:  # not: a query of qrels with no relevant doc (candidates' queries all have one)
                rows[split_of[query]] += [f"{query}\t{doc}\t{_number(value)}" for doc, value in docs.items()]
        for split, lines in rows.items():
            if lines:
                _write_if_changed(out / folder / f"{split}.tsv", "\n".join([header, *lines]) + "\n")
            else:  # e.g. no dev split: none left from an earlier version of the dataset either
                (out / folder / f"{split}.tsv").unlink(missing_ok=True)
    sizes = ", ".join(f"{split} {len(splits[split])}" for split in SPLITS)
    log.info("fold %d of %d (seed %d) of %s: %s queries -> %s", spec.fold, spec.num_folds, spec.seed, root, sizes,
             out)
    return out
