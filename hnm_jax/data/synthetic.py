"""A synthetic entity -> task matching benchmark with labelled near-duplicates, deterministic in a seed.

Every corpus record is a maintenance task on a storage part, rendered from eight fields by one template::

    Replace SSD 512GB model WD-4821K in rack B-14, server room 3, due 2024-05-02, priority high
    {action} {part} {capacity} model {model} in rack {rack}, {location}, due {date}, priority {priority}

Each *task* has ``siblings_per_type`` near-duplicate *siblings* of each perturbation type; a sibling is a
different record (a hard negative), never a restatement of the task:

``single_token``
    The model number has exactly one digit replaced (``WD-4821K`` -> ``WD-4861K``): one whitespace token
    differs, by one character.
``format``
    One formatted field is rewritten so that it reads like a formatting variant but denotes another
    value; the field keeps the same characters up to order and case. Two rules:
    ``date``: month and day are swapped (``2024-05-02`` -> ``2024-02-05``; every due date has
    day <= 12 and day != month, so the swap is always a valid, different date);
    ``capacity``: bytes become bits (``512GB`` -> ``512Gb``, ``2TB`` -> ``2Tb``). Only the case differs, so
    an uncased tokenizer (MiniLM's) makes this sibling token-identical to its task, and to every mention of
    it: no uncased model can rank the task above it. ``SyntheticConfig.format_rules`` picks the rules; the
    ``power`` sizes use ``date`` only.
``semantic``
    One field of ``SEMANTIC_FIELDS`` gets a different, related value: another action or location;
    another part sold in the same capacity; the part's next capacity or the next priority level, up or
    down; another rack in the same row.

*Distractors* are unrelated tasks with no queries and no siblings. Model numbers are unique over the
whole corpus except that a task's ``format`` and ``semantic`` siblings (and its duplicate) share its model.

*Unlabelled duplicates* (``duplicate_share > 0``): for that share of each split's tasks, the corpus also holds
a second record of the same task: same eight values, only the surface changed (model number first, fields
reordered and abbreviated as in a mention, nothing dropped, no typo), e.g.
``p/n WD-4821K: repl. / 512 gigabytes / SSD / SR-3 / rack B14 / due May 2, 2024 / prio high``. It is a
true match of every query of its task by construction but is in no qrels and no candidates, so a method
that claims to find false negatives (a band's upper edge, a cross-encoder filter) can be checked against a
known answer. Duplicates come from a second random stream: a config with duplicates has exactly the queries,
splits and other records of the same config without them (only the corpus ids are renumbered).

*Queries* are noisy mentions of one task: fields reordered, abbreviated or spelled out (``repl.``,
``SR-3``, ``512 gigabytes``, ``May 2, 2024``, ``prio high``), up to two fields dropped and sometimes one
adjacent-letter typo in an action, part or location word. A mention always keeps the model number and
every field in which one of the task's siblings differs, so its task is its only correct match and the
siblings are hard negatives. Model numbers, capacities and dates are never typo'd.

Splits are drawn by task (all queries of a task share a split), so train/dev/test are disjoint by query
and by positive. Corpus and queries are shuffled and given opaque ids (``c00042``, ``q00007``), so
neither order nor id reveals a record's role.

``write_beir`` writes a BEIR folder that ``hnm_jax.data.beir.load_beir`` reads, plus
``perturbations.tsv`` (``corpus-id  perturbation  task-id``, one row per sibling and per duplicate, whose
type is ``duplicate``), which ``perturbation_types`` reads back for per-type evaluation, and, when there are
duplicates, ``unlabelled_duplicates.tsv`` (``query-id  corpus-id``, one row per query whose task has one),
which ``read_unlabelled_duplicates`` reads back (``load_unlabelled_duplicates``: as corpus rows per query of a
split). The qrels never list them; evaluation counts them as relevant (``eval.duplicates_relevant``), so that a
model finding a true duplicate is not scored as a miss, while training sees them as the unlabelled false negatives
they are (the CE filter is judged on them; ``mining.oracle_filter`` removes exactly them from the pools).

``indistinguishable_share`` measures how many siblings a tokenizer makes identical to their task once both
are truncated at a width (0 for ``SIZES["power"]`` at its covering width: tests/test_synthetic.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hnm_jax.data.beir import DataError, Split, Texts

PERTURBATIONS = ("single_token", "format", "semantic")
SPLITS = ("train", "dev", "test")
FORMAT_RULES = ("date", "capacity")
SEMANTIC_FIELDS = ("action", "part", "capacity", "rack", "location", "priority")
PERTURBATIONS_FILE = "perturbations.tsv"
DUPLICATE = "duplicate"  # the perturbations.tsv type of an unlabelled duplicate (a true match, not a sibling)
RECORD_TYPES = (*PERTURBATIONS, DUPLICATE)  # every type perturbations.tsv may hold
UNLABELLED_DUPLICATES_FILE = "unlabelled_duplicates.tsv"
UNLABELLED_DUPLICATES_HEADER = "query-id\tcorpus-id"

# Each value's mentions are disjoint from every other value's mentions of the same field.
ACTIONS: dict[str, tuple[str, ...]] = {
    "Replace": ("replace", "repl.", "swap out"),
    "Inspect": ("inspect", "insp.", "check"),
    "Install": ("install", "inst.", "fit"),
    "Clean": ("clean", "dust off", "cln"),
    "Test": ("test", "run diagnostics on", "tst"),
    "Upgrade": ("upgrade", "upg.", "update"),
    "Remove": ("remove", "rmv", "pull"),
    "Reseat": ("reseat", "re-seat", "resit"),
}
PARTS: dict[str, tuple[str, ...]] = {
    "SSD": ("SSD", "solid-state drive", "ssd"),
    "HDD": ("HDD", "hard disk", "hdd"),
    "NVMe drive": ("NVMe drive", "NVMe", "nvme disk"),
    "RAM module": ("RAM module", "DIMM", "memory stick"),
    "tape cartridge": ("tape cartridge", "LTO tape", "tape"),
    "cache card": ("cache card", "cache module", "flash cache"),
    "USB stick": ("USB stick", "thumb drive", "usb key"),
    "SD card": ("SD card", "sd card", "SDHC card"),
}
CAPACITIES: dict[str, tuple[str, ...]] = {  # per part, ascending
    "SSD": ("128GB", "256GB", "512GB", "1TB", "2TB", "4TB"),
    "HDD": ("1TB", "2TB", "4TB", "8TB", "16TB"),
    "NVMe drive": ("256GB", "512GB", "1TB", "2TB", "4TB"),
    "RAM module": ("8GB", "16GB", "32GB", "64GB", "128GB"),
    "tape cartridge": ("6TB", "12TB", "18TB"),
    "cache card": ("16GB", "32GB", "64GB", "128GB"),
    "USB stick": ("16GB", "32GB", "64GB", "128GB", "256GB"),
    "SD card": ("16GB", "32GB", "64GB", "128GB", "256GB", "512GB"),
}
PRIORITIES = ("low", "medium", "high", "critical")  # ordered
LOCATIONS = tuple(f"server room {n}" for n in range(1, 7)) + tuple(f"data hall {c}" for c in "ABCD")
MODEL_PREFIXES = ("WD", "ST", "MZ", "KX", "HM", "CT", "TS", "SE")
RACK_ROWS = "ABCDEFGH"
RACK_NUMBERS = 48
YEARS = (2024, 2025)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")  # fmt: skip
SEPARATORS = (", ", "; ", " / ", " ")
MAX_DROPPED = 2
TYPO_RATE = 0.3


class Fields(NamedTuple):
    """The eight fields of a task record, as they appear in its text."""

    action: str
    part: str
    capacity: str
    model: str
    rack: str
    location: str
    date: str
    priority: str


FIELD_NAMES: tuple[str, ...] = Fields._fields


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of a benchmark; ``generate`` is a pure function of it."""

    num_tasks: int
    siblings_per_type: int = 1  # 1 or 2 (``format`` has two rules)
    distractors: int = 0
    queries_per_task: int = 1
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, dev, test, by task
    seed: int = 0
    duplicate_share: float = 0.0  # share of each split's tasks with an unlabelled duplicate record in the corpus
    format_rules: tuple[str, ...] = FORMAT_RULES  # rules of the format siblings; "capacity" differs only in case


SIZES: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(num_tasks=60, distractors=60),
    "small": SyntheticConfig(num_tasks=1000, distractors=1000, queries_per_task=2),
    "base": SyntheticConfig(num_tasks=5000, distractors=5000, queries_per_task=2),
    # the old ablations and experiments.lengths: about one abt_buy run (2,250 records; 600/200/200 queries)
    "ablation": SyntheticConfig(num_tasks=500, distractors=250, queries_per_task=2),
    # statistical power: the ablation size x 10 (22,500 records; 6,000 / 2,000 / 2,000 queries). Seed 1, because
    # seed 0 would repeat the ablation benchmark's 500 tasks as its first 500. MiniLM tokens: records 31-40
    # (p95 37, covering width 40, no record truncated, no sibling token-identical to its task at that width),
    # queries 19-48 (p95 40). Format siblings by the date rule only: MiniLM's uncased tokenizer makes "capacity"
    # siblings ("512Gb") identical to their task, which caps pairwise_accuracy/format of the sizes above at the
    # share of date-rule format siblings (0.41 on the ablation test split), and leaves 18.6% of their siblings
    # token-identical to their task.
    "power": SyntheticConfig(num_tasks=5000, distractors=2500, queries_per_task=2, seed=1, format_rules=("date",)),
    # "power" + an unlabelled duplicate for 20% of each split's tasks (1,000 more records; 400 test queries)
    "power_dup": SyntheticConfig(
        num_tasks=5000, distractors=2500, queries_per_task=2, seed=1, format_rules=("date",), duplicate_share=0.2
    ),
    # claim 4 on a 2-core CPU (experiments' synthetic_dup): the ablation size, format siblings by the date rule only
    # (as "power"), an unlabelled duplicate for 20% of each split's tasks. 2,350 records (500 tasks, 1,500 siblings,
    # 250 distractors, 100 duplicates); 1,000 queries, 600 / 200 / 200 train / dev / test, 120 / 40 / 40 of them
    # with a duplicate.
    "ablation_dup": SyntheticConfig(
        num_tasks=500, distractors=250, queries_per_task=2, format_rules=("date",), duplicate_share=0.2
    ),
}


@dataclasses.dataclass(frozen=True)
class CorpusRecord:
    """A corpus record. A task has ``task_id == id``; a sibling has its task's id and a perturbation type;
    an unlabelled duplicate has its task's id and ``perturbation == DUPLICATE``; a distractor has neither."""

    id: str
    text: str
    fields: Fields
    task_id: str | None
    perturbation: str | None


@dataclasses.dataclass(frozen=True)
class Query:
    """A mention of the task ``task_id``; ``mentioned`` lists the fields it keeps (in FIELD_NAMES order)."""

    id: str
    text: str
    task_id: str
    split: str
    mentioned: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SyntheticBenchmark:
    """Corpus (shuffled tasks, siblings, distractors) and queries (shuffled) of one config."""

    config: SyntheticConfig
    corpus: tuple[CorpusRecord, ...]
    queries: tuple[Query, ...]

    def split_queries(self, split: str) -> list[Query]:
        """Queries of one split, in query order."""
        _check_split(split)
        return [q for q in self.queries if q.split == split]

    def siblings(self) -> dict[str, list[CorpusRecord]]:
        """Task id -> its siblings, in corpus order."""
        out: dict[str, list[CorpusRecord]] = {}
        for record in self.corpus:
            if record.perturbation is not None and record.perturbation != DUPLICATE:
                out.setdefault(record.task_id, []).append(record)
        return out

    def duplicates(self) -> dict[str, CorpusRecord]:
        """Task id -> its unlabelled duplicate (only tasks that have one)."""
        return {r.task_id: r for r in self.corpus if r.perturbation == DUPLICATE}

    def unlabelled_duplicates(self) -> list[tuple[str, str]]:
        """(query id, corpus id of its task's unlabelled duplicate), in query order (every split)."""
        duplicates = self.duplicates()
        return [(q.id, duplicates[q.task_id].id) for q in self.queries if q.task_id in duplicates]

    def candidates(self, split: str) -> list[tuple[str, str, int]]:
        """(query id, corpus id, label) per query of ``split``: its task (1) and siblings (0), in corpus order."""
        row = {record.id: i for i, record in enumerate(self.corpus)}
        siblings = self.siblings()
        out = []
        for query in self.split_queries(split):
            family = sorted([query.task_id, *(s.id for s in siblings[query.task_id])], key=row.__getitem__)
            out.extend((query.id, doc_id, int(doc_id == query.task_id)) for doc_id in family)
        return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


# ----------------------------------------------------------------------------------------- rendering


def render_record(fields: Fields) -> str:
    """The corpus text of a record."""
    f = fields
    return (
        f"{f.action} {f.part} {f.capacity} model {f.model} in rack {f.rack}, {f.location}, "
        f"due {f.date}, priority {f.priority}"
    )


def format_variant(field: str, value: str) -> str:
    """The ``format`` perturbation of a field value (see the module docstring for the rules)."""
    if field == "date":
        year, month, day = value.split("-")
        return f"{year}-{day}-{month}"
    if field == "capacity":
        return value[:-1] + "b"
    raise ValueError(f"no format rule for field {field!r}; expected one of {', '.join(FORMAT_RULES)}")


def _pick(rng: np.random.Generator, values: tuple[str, ...] | list[str]) -> str:
    return values[int(rng.integers(len(values)))]


def _random_model(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        digits = "".join(str(d) for d in rng.integers(0, 10, size=4))
        model = f"{_pick(rng, MODEL_PREFIXES)}-{digits}{chr(ord('A') + int(rng.integers(26)))}"
        if model not in used:
            used.add(model)
            return model


def _random_date(rng: np.random.Generator) -> str:
    month = int(rng.integers(1, 13))
    day = int(rng.integers(1, 12))  # 1..11, shifted past the month so that day != month
    day = day + 1 if day >= month else day
    return f"{_pick(rng, YEARS)}-{month:02d}-{day:02d}"


def _random_fields(rng: np.random.Generator, used_models: set[str]) -> Fields:
    part = _pick(rng, list(PARTS))
    return Fields(
        action=_pick(rng, list(ACTIONS)),
        part=part,
        capacity=_pick(rng, CAPACITIES[part]),
        model=_random_model(rng, used_models),
        rack=f"{_pick(rng, RACK_ROWS)}-{int(rng.integers(1, RACK_NUMBERS + 1))}",
        location=_pick(rng, LOCATIONS),
        date=_random_date(rng),
        priority=_pick(rng, PRIORITIES),
    )


# ----------------------------------------------------------------------------------------- siblings


def _other(rng: np.random.Generator, values: tuple[str, ...] | list[str], current: str) -> str:
    return _pick(rng, [v for v in values if v != current])


def _neighbour(rng: np.random.Generator, ordered: tuple[str, ...], current: str) -> str:
    i = ordered.index(current)
    return _pick(rng, [ordered[j] for j in (i - 1, i + 1) if 0 <= j < len(ordered)])


def _semantic_value(rng: np.random.Generator, field: str, fields: Fields) -> str:
    value = getattr(fields, field)
    if field == "action":
        return _other(rng, list(ACTIONS), value)
    if field == "part":
        return _other(rng, _parts_with(fields.capacity), value)
    if field == "location":
        return _other(rng, LOCATIONS, value)
    if field == "capacity":
        return _neighbour(rng, CAPACITIES[fields.part], value)
    if field == "priority":
        return _neighbour(rng, PRIORITIES, value)
    row, number = value.split("-")  # rack: another rack of the same row
    numbers = [str(n) for n in range(1, RACK_NUMBERS + 1) if str(n) != number]
    return f"{row}-{_pick(rng, numbers)}"


def _parts_with(capacity: str) -> list[str]:
    return [part for part, capacities in CAPACITIES.items() if capacity in capacities]


def _single_token_models(rng: np.random.Generator, model: str, count: int, used: set[str]) -> list[str]:
    prefix, rest = model.split("-")
    digits, suffix = rest[:4], rest[4:]
    out: list[str] = []
    while len(out) < count:
        position = int(rng.integers(4))
        new_digit = _other(rng, list("0123456789"), digits[position])
        new_model = f"{prefix}-{digits[:position]}{new_digit}{digits[position + 1 :]}{suffix}"
        if new_model not in used:
            used.add(new_model)
            out.append(new_model)
    return out


def _siblings(
    rng: np.random.Generator,
    fields: Fields,
    per_type: int,
    used_models: set[str],
    format_rules: tuple[str, ...] = FORMAT_RULES,
) -> list[tuple[str, str, Fields]]:
    """(perturbation, changed field, sibling fields) for every sibling of one task."""
    out = [
        ("single_token", "model", fields._replace(model=model))
        for model in _single_token_models(rng, fields.model, per_type, used_models)
    ]
    for i in rng.permutation(len(format_rules))[:per_type]:
        field = format_rules[int(i)]
        out.append(("format", field, fields._replace(**{field: format_variant(field, getattr(fields, field))})))
    # a part change must keep the capacity valid; other semantic fields always have a related value
    semantic = [f for f in SEMANTIC_FIELDS if f != "part" or len(_parts_with(fields.capacity)) > 1]
    for i in rng.permutation(len(semantic))[:per_type]:
        field = semantic[int(i)]
        out.append(("semantic", field, fields._replace(**{field: _semantic_value(rng, field, fields)})))
    return out


# ----------------------------------------------------------------------------------------- mentions


def _date_mention(rng: np.random.Generator, date: str, with_year: bool = False) -> str:
    year, month, day = (int(x) for x in date.split("-"))
    name = MONTHS[month - 1]
    forms = [f"due {date}", f"due {name} {day}, {year}", f"by {day} {name} {year}"]
    return _pick(rng, forms if with_year else [*forms, f"due {name} {day}"])


def _capacity_mention(rng: np.random.Generator, capacity: str) -> str:
    number, unit = capacity[:-2], capacity[-2:]
    word = {"GB": "gigabytes", "TB": "terabytes"}[unit]
    return _pick(rng, [capacity, f"{number} {unit}", f"{number} {word}"])


def _location_mention(rng: np.random.Generator, location: str) -> str:
    name = location.split()[-1]
    if location.startswith("server room"):
        return _pick(rng, [location, f"SR-{name}", f"srv room {name}"])
    return _pick(rng, [location, f"DH-{name}", f"hall {name}"])


def _rack_mention(rng: np.random.Generator, rack: str) -> str:
    return _pick(rng, [f"rack {rack}", f"rk {rack.replace('-', '')}", rack, f"rack {rack.replace('-', '')}"])


def _priority_mention(rng: np.random.Generator, priority: str) -> str:
    return _pick(rng, [f"priority {priority}", f"{priority} priority", f"prio {priority}", f"[{priority}]"])


def _typo(rng: np.random.Generator, phrase: str) -> str:
    """Swaps two adjacent interior letters of one alphabetic word of length >= 4, if there is one."""
    words = phrase.split(" ")
    eligible = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha() and len(set(w[1:-1])) > 1]
    if not eligible:
        return phrase
    i = _pick(rng, eligible)
    word = words[i]
    options = [j for j in range(1, len(word) - 2) if word[j] != word[j + 1]]
    j = _pick(rng, options)
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def _phrases(rng: np.random.Generator, fields: Fields) -> dict[str, str]:
    """Field -> one randomly chosen surface form of its value (abbreviated, spelled out, reformatted)."""
    return {
        "action": _pick(rng, ACTIONS[fields.action]),
        "part": _pick(rng, PARTS[fields.part]),
        "capacity": _capacity_mention(rng, fields.capacity),
        "model": _pick(rng, [f"model {fields.model}", fields.model, f"p/n {fields.model}", f"mdl {fields.model}"]),
        "rack": _rack_mention(rng, fields.rack),
        "location": _location_mention(rng, fields.location),
        "date": _date_mention(rng, fields.date),
        "priority": _priority_mention(rng, fields.priority),
    }


def _mention(rng: np.random.Generator, fields: Fields, keep: tuple[str, ...]) -> str:
    """A noisy mention of a task that keeps the fields in ``keep``."""
    phrases = _phrases(rng, fields)
    typo_fields = [f for f in ("action", "part", "location") if f in keep]
    if typo_fields and rng.random() < TYPO_RATE:
        field = _pick(rng, typo_fields)
        phrases[field] = _typo(rng, phrases[field])
    head = [f for f in ("action", "part", "capacity") if f in keep]
    if len(head) == 3 and rng.random() < 0.5:
        head = ["action", "capacity", "part"]
    tail = [keep[int(i)] for i in rng.permutation(len(keep)) if keep[int(i)] not in head]
    order = head + tail if rng.random() < 0.7 else [keep[int(i)] for i in rng.permutation(len(keep))]
    separator = _pick(rng, SEPARATORS)
    return separator.join(phrases[f] for f in order)


def render_duplicate(rng: np.random.Generator, fields: Fields) -> str:
    """An unlabelled duplicate of the record of ``fields``: every value kept, only the surface changed.

    The model number comes first (so the text never starts like ``render_record``'s), then the other seven
    fields in a random order, each in a surface form of ``_phrases`` (no typo, nothing dropped)."""
    phrases = _phrases(rng, fields)
    phrases["date"] = _date_mention(rng, fields.date, with_year=True)  # a mention may omit the year; a record not
    rest = [f for f in FIELD_NAMES if f != "model"]
    order = [rest[int(i)] for i in rng.permutation(len(rest))]
    return f"{phrases['model']}: " + _pick(rng, SEPARATORS).join(phrases[f] for f in order)


def _kept_fields(rng: np.random.Generator, protected: set[str]) -> tuple[str, ...]:
    droppable = [f for f in FIELD_NAMES if f not in protected]
    dropped = {droppable[int(i)] for i in rng.permutation(len(droppable))[: int(rng.integers(MAX_DROPPED + 1))]}
    return tuple(f for f in FIELD_NAMES if f not in dropped)


# ----------------------------------------------------------------------------------------- generate


def _check_config(config: SyntheticConfig) -> tuple[int, int, int]:
    """Validates ``config``; returns the number of tasks per split."""
    if config.num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {config.num_tasks}")
    if config.siblings_per_type not in (1, 2):
        raise ValueError(f"siblings_per_type must be 1 or 2 (format has two rules), got {config.siblings_per_type}")
    if config.distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {config.distractors}")
    if config.queries_per_task < 1:
        raise ValueError(f"queries_per_task must be >= 1, got {config.queries_per_task}")
    rules = tuple(config.format_rules)
    if not rules or len(set(rules)) != len(rules) or not set(rules) <= set(FORMAT_RULES):
        raise ValueError(f"format_rules must be distinct names of {', '.join(FORMAT_RULES)}, got {rules}")
    if config.siblings_per_type > len(rules):
        raise ValueError(f"siblings_per_type={config.siblings_per_type} needs as many format_rules, got {rules}")
    if not 0.0 <= config.duplicate_share <= 1.0:
        raise ValueError(f"duplicate_share must be in [0, 1], got {config.duplicate_share}")
    fractions = tuple(config.split_fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must be 3 positive numbers summing to 1, got {fractions}")
    train = round(fractions[0] * config.num_tasks)
    dev = round(fractions[1] * config.num_tasks)
    test = config.num_tasks - train - dev
    if min(train, dev, test) < 1:
        raise ValueError(
            f"num_tasks={config.num_tasks} with split_fractions={fractions} leaves a split without tasks "
            f"(train={train}, dev={dev}, test={test})"
        )
    return train, dev, test


def generate(config: SyntheticConfig) -> SyntheticBenchmark:
    """The benchmark of ``config``: same config -> identical output."""
    counts = _check_config(config)
    rng = np.random.default_rng(config.seed)
    used_models: set[str] = set()
    # (fields, family index or -1, perturbation or None), in generation order; family = task index
    records: list[tuple[Fields, int, str | None]] = []
    mentions: list[tuple[str, int, tuple[str, ...]]] = []  # (text, task index, kept fields)
    for task in range(config.num_tasks):
        fields = _random_fields(rng, used_models)
        records.append((fields, task, None))
        siblings = _siblings(rng, fields, config.siblings_per_type, used_models, tuple(config.format_rules))
        records.extend((sibling, task, kind) for kind, _, sibling in siblings)
        protected = {"model"} | {field for _, field, _ in siblings}
        seen: set[str] = set()
        for _ in range(config.queries_per_task):
            for _attempt in range(100):
                keep = _kept_fields(rng, protected)
                text = _mention(rng, fields, keep)
                if text not in seen:
                    break
            seen.add(text)
            mentions.append((text, task, keep))
    for _ in range(config.distractors):
        records.append((_random_fields(rng, used_models), -1, None))

    order = rng.permutation(len(records))
    task_split: dict[int, str] = {}
    bounds = np.cumsum((0, *counts))
    split_order = rng.permutation(config.num_tasks)
    for split, start, stop in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        task_split.update((int(task), split) for task in split_order[start:stop])
    query_order = rng.permutation(len(mentions))
    duplicate_texts: dict[int, str] = {}  # record index -> text of each unlabelled duplicate
    if config.duplicate_share > 0:  # a second stream: every draw above is that of the config without duplicates
        dup_rng = np.random.default_rng((config.seed, 1))
        order, duplicate_texts = _add_duplicates(dup_rng, config.duplicate_share, records, task_split, order)

    corpus_id = {int(old): f"c{new:05d}" for new, old in enumerate(order)}
    task_id = {task: corpus_id[i] for i, (_, task, kind) in enumerate(records) if task >= 0 and kind is None}
    corpus = tuple(
        CorpusRecord(
            id=corpus_id[int(old)],
            text=duplicate_texts.get(int(old)) or render_record(records[int(old)][0]),
            fields=records[int(old)][0],
            task_id=task_id.get(records[int(old)][1]),
            perturbation=records[int(old)][2],
        )
        for old in order
    )
    queries = tuple(
        Query(
            id=f"q{new:05d}",
            text=mentions[int(old)][0],
            task_id=task_id[mentions[int(old)][1]],
            split=task_split[mentions[int(old)][1]],
            mentioned=mentions[int(old)][2],
        )
        for new, old in enumerate(query_order)
    )
    return SyntheticBenchmark(config=config, corpus=corpus, queries=queries)


def _add_duplicates(
    rng: np.random.Generator,
    share: float,
    records: list[tuple[Fields, int, str | None]],
    task_split: dict[int, str],
    order: np.ndarray,
) -> tuple[np.ndarray, dict[int, str]]:
    """Appends an unlabelled duplicate of ``round(share * n)`` of the n tasks of each split to ``records``.

    Returns the corpus order with the new records inserted at random positions (the others keep their relative
    ``order``) and record index -> text of each duplicate (``render_duplicate``: it starts with the model number
    and a colon, which no mention has, so it never equals a query)."""
    task_row = {task: i for i, (_, task, kind) in enumerate(records) if task >= 0 and kind is None}
    texts: dict[int, str] = {}
    for split in SPLITS:
        tasks = sorted(task for task, s in task_split.items() if s == split)
        for i in sorted(rng.choice(len(tasks), size=round(share * len(tasks)), replace=False)):
            fields = records[task_row[tasks[int(i)]]][0]
            texts[len(records)] = render_duplicate(rng, fields)
            records.append((fields, tasks[int(i)], DUPLICATE))
    is_new = np.zeros(len(records), bool)
    is_new[rng.choice(len(records), size=len(texts), replace=False)] = True
    merged = np.empty(len(records), np.int64)
    merged[is_new] = rng.permutation(np.fromiter(texts, np.int64, len(texts)))
    merged[~is_new] = order
    return merged, texts


# ----------------------------------------------------------------------------------------- BEIR export


def write_beir(bench: SyntheticBenchmark, root: str | Path) -> Path:
    """Writes ``bench`` as a BEIR folder (+ ``perturbations.tsv``, and ``unlabelled_duplicates.tsv`` when the
    benchmark has duplicates) at ``root``; returns ``root``."""
    root = Path(root)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "candidates").mkdir(parents=True, exist_ok=True)
    _write_lines(root / "corpus.jsonl", [_json({"_id": r.id, "text": r.text}) for r in bench.corpus])
    _write_lines(root / "queries.jsonl", [_json({"_id": q.id, "text": q.text}) for q in bench.queries])
    for split in SPLITS:
        qrels = [f"{q.id}\t{q.task_id}\t1" for q in bench.split_queries(split)]
        _write_lines(root / "qrels" / f"{split}.tsv", ["query-id\tcorpus-id\tscore", *qrels])
        candidates = [f"{qid}\t{did}\t{label}" for qid, did, label in bench.candidates(split)]
        _write_lines(root / "candidates" / f"{split}.tsv", ["query-id\tcorpus-id\tlabel", *candidates])
    perturbations = [f"{r.id}\t{r.perturbation}\t{r.task_id}" for r in bench.corpus if r.perturbation is not None]
    _write_lines(root / PERTURBATIONS_FILE, ["corpus-id\tperturbation\ttask-id", *perturbations])
    duplicates = [f"{qid}\t{did}" for qid, did in bench.unlabelled_duplicates()]
    if duplicates:
        _write_lines(root / UNLABELLED_DUPLICATES_FILE, [UNLABELLED_DUPLICATES_HEADER, *duplicates])
    return root


def _json(record: dict[str, str]) -> str:
    return json.dumps(record, ensure_ascii=False)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_perturbations(root: str | Path) -> dict[str, tuple[str, str]]:
    """Corpus id -> (perturbation type, task id) of every sibling and duplicate in ``root/perturbations.tsv``."""
    path = Path(root) / PERTURBATIONS_FILE
    if not path.is_file():
        raise DataError(path, None, "missing (written by hnm_jax.data.synthetic.write_beir)")
    out: dict[str, tuple[str, str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or (lineno == 1 and line.startswith("corpus-id\t")):
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DataError(path, lineno, f"expected 3 tab-separated columns (corpus-id, perturbation, "
                                              f"task-id), got {len(fields)}")  # fmt: skip
            doc_id, kind, task = fields
            if kind not in RECORD_TYPES:
                raise DataError(path, lineno, f"unknown perturbation {kind!r}; expected one of "
                                              f"{', '.join(RECORD_TYPES)}")  # fmt: skip
            if doc_id in out:
                raise DataError(path, lineno, f"duplicate corpus-id {doc_id!r}")
            out[doc_id] = (kind, task)
    return out


def perturbation_types(root: str | Path) -> dict[str, str]:
    """Corpus id -> perturbation type of every sibling (and ``duplicate``) of a ``write_beir`` folder."""
    return {doc_id: kind for doc_id, (kind, _) in read_perturbations(root).items()}


def read_unlabelled_duplicates(root: str | Path) -> list[tuple[str, str]]:
    """(query id, corpus id) rows of ``root/unlabelled_duplicates.tsv``, in file order; [] when there is no file
    (a benchmark without duplicates). Each corpus id is a true match of its query that no qrels lists."""
    path = Path(root) / UNLABELLED_DUPLICATES_FILE
    if not path.is_file():
        return []
    out: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or (lineno == 1 and line == UNLABELLED_DUPLICATES_HEADER):
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not all(fields):
                raise DataError(path, lineno, f"expected 2 tab-separated columns (query-id, corpus-id), "
                                              f"got {line!r:.80}")  # fmt: skip
            out.append((fields[0], fields[1]))
    return out


def load_unlabelled_duplicates(root: str | Path, corpus: Texts, queries: Texts, split: Split) -> np.ndarray | None:
    """[Q, K] corpus rows of the unlabelled duplicates of each of ``split``'s queries (K >= 1, -1 padded), from
    ``root/unlabelled_duplicates.tsv`` (``read_unlabelled_duplicates``); None when the dataset lists none. Rows
    naming a query outside the split or a document outside the corpus are ignored."""
    pairs = read_unlabelled_duplicates(root)
    if not pairs:
        return None
    split_row = {int(query_row): q for q, query_row in enumerate(split.query_rows)}
    by_query: dict[int, list[int]] = {}
    for query_id, doc_id in pairs:
        q = split_row.get(queries.index.get(query_id, -1))
        if q is not None and doc_id in corpus.index:
            by_query.setdefault(q, []).append(corpus.index[doc_id])
    out = np.full((len(split), max(map(len, by_query.values()), default=1)), -1, np.int32)
    for q, docs in by_query.items():
        out[q, :len(docs)] = docs
    return out


# ----------------------------------------------------------------------------------------- token widths


def indistinguishable_share(bench: SyntheticBenchmark, tokenizer, width: int, chunk: int = 4096) -> float:
    """Share of siblings whose token ids, truncated at ``width`` ([CLS] and [SEP] included, as
    ``hnm_jax.data.tokenize`` truncates), equal their task's: pairs no model can tell apart at that width.

    ``tokenizer`` is a Hugging Face tokenizer (e.g. ``hnm_jax.models.pretrained.load_tokenizer``); 0.0 when the
    benchmark has no siblings."""
    by_id = {r.id: r for r in bench.corpus}
    pairs = [(by_id[task].text, s.text) for task, siblings in bench.siblings().items() for s in siblings]
    if not pairs:
        return 0.0
    same = 0
    for start in range(0, len(pairs), chunk):
        tasks, siblings = zip(*pairs[start : start + chunk], strict=True)
        ids = tokenizer([*tasks, *siblings], truncation=True, max_length=width, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]  # fmt: skip
        same += sum(a == b for a, b in zip(ids[: len(tasks)], ids[len(tasks) :], strict=True))
    return same / len(pairs)
