"""ConfigDict -> frozen, hashable specs. jit only ever sees these specs, never a ConfigDict.

The composition root of the specs, in the training and evaluation layer (docs/DESIGN.md), above retrieval/mining.
A spec used by one module is owned by that module (ModelSpec: models/loading.py, BandSpec: mining/schedules.py,
RetrieverSpec, IndexSpec, CEFilterSpec, FoldSpec, ...); this module assembles them into the ExperimentSpec, names
their config keys in its errors, and holds the specs that several training and evaluation modules read.

Each section of the config maps onto one frozen dataclass; `spec_from_config` checks that every key is known
(suggesting the closest valid key), that every value has the declared type, and that values are possible.
All errors are `ConfigError`s whose message starts with the dotted key.
"""

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from hnm_jax.data.beir import DataError, resolve_dataset, resolve_dataset_path
from hnm_jax.data.folds import FoldError, FoldSpec, materialize_fold
from hnm_jax.errors import ConfigError
from hnm_jax.errors import fail as _fail
from hnm_jax.mining.dense_index import IndexSpec
from hnm_jax.mining.negatives import NEGATIVE_STRATEGIES, POOL_SOURCES, SAMPLINGS, needs_pool
from hnm_jax.mining.pipeline import CEMiningSpec
from hnm_jax.mining.retriever import MODES as RETRIEVER_MODES
from hnm_jax.mining.retriever import RetrieverSpec
from hnm_jax.mining.schedules import BandSpec
from hnm_jax.mining.scoring import RerankSpec
from hnm_jax.models.loading import CEModelSpec, ModelSpec
from hnm_jax.training.ce_step import CETrainSpec
from hnm_jax.training.step import LossSpec


@dataclasses.dataclass(frozen=True)
class DataSpec:
    name: str
    path: str
    train_split: str
    eval_split: str
    query_max_length: int
    doc_max_length: int
    max_length_cap: int
    length_coverage: float
    skip_empty: bool
    memory_budget_mb: float
    folds: int = 0  # > 0: cross-validation over queries (data/folds.py), this many folds; 0: the dataset's splits
    fold: int = 0
    fold_seed: int = 0
    fold_dev_fraction: float = 0.1

    def __post_init__(self):
        if self.folds == 0 and self.fold != 0:
            _fail("data.fold", f"{self.fold} is set but data.folds is 0 (the dataset's own splits); set data.folds")
        if self.folds != 0:
            try:
                _ = self.fold_spec  # FoldSpec checks its values
            except ValueError as error:  # "<FoldSpec field>: message"
                field, _, message = str(error).partition(": ")
                _fail(FOLD_KEYS[field], message)
        if self.memory_budget_mb < 0:
            _fail("data.memory_budget_mb", f"must be >= 0 (0: no budget), got {self.memory_budget_mb}")
        if not (self.name or self.path):
            _fail("data.name", "set data.name (a benchmark) or data.path (a BEIR folder)")
        for key in ("query_max_length", "doc_max_length"):
            if getattr(self, key) != 0 and not 4 <= getattr(self, key) <= 512:
                _fail(f"data.{key}", f"must be 0 (auto: from the data) or in [4, 512], got {getattr(self, key)}")
        if not 8 <= self.max_length_cap <= 512:
            _fail("data.max_length_cap", f"must be in [8, 512], got {self.max_length_cap}")
        if not 0.5 <= self.length_coverage <= 1.0:
            _fail("data.length_coverage", f"must be in [0.5, 1], got {self.length_coverage}")

    @property
    def memory_budget_bytes(self) -> int | None:
        return int(self.memory_budget_mb * 2**20) or None

    @property
    def fold_spec(self) -> FoldSpec | None:
        """The cross-validation fold the run reads (data.folds > 0), else None (the dataset's own splits)."""
        if not self.folds:
            return None
        return FoldSpec(num_folds=self.folds, fold=self.fold, seed=self.fold_seed, dev_fraction=self.fold_dev_fraction)


FOLD_KEYS = {"num_folds": "data.folds", "fold": "data.fold", "seed": "data.fold_seed",
             "dev_fraction": "data.fold_dev_fraction"}  # FoldSpec field -> its config key


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    batch_size: int
    num_epochs: int
    max_steps: int
    learning_rate: float
    warmup_fraction: float
    lr_schedule: str
    weight_decay: float
    grad_clip: float
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int
    inject_nan_at_step: int

    def __post_init__(self):
        if self.batch_size < 2:
            _fail("train.batch_size", f"must be >= 2 (in-batch negatives need a batch), got {self.batch_size}")
        if self.num_epochs < 1 and self.max_steps < 1:
            _fail("train.num_epochs", "set num_epochs >= 1 or max_steps >= 1")
        if self.max_steps < 0:
            _fail("train.max_steps", f"must be >= 0, got {self.max_steps}")
        if not 0.0 < self.learning_rate < 1.0:
            _fail("train.learning_rate", f"must be in (0, 1), got {self.learning_rate}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            _fail("train.warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        if self.lr_schedule not in LR_SCHEDULES:
            _fail("train.lr_schedule", f"unknown {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            _fail("train.weight_decay" if self.weight_decay < 0 else "train.grad_clip", "must be >= 0")
        for key in ("checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, key) < 1:
                _fail(f"train.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.inject_nan_at_step == 0 or self.inject_nan_at_step < -1:
            _fail("train.inject_nan_at_step", f"must be -1 (off) or a step >= 1, got {self.inject_nan_at_step}")


LR_SCHEDULES = ("linear", "constant")


@dataclasses.dataclass(frozen=True)
class MiningSpec:
    strategy: str
    pool: str
    num_negatives: int
    pool_size: int
    sampling: str
    simans_a: float
    simans_b: float
    band_in_step: bool
    refresh_every_epochs: int
    retriever: str = ""  # the retriever that mines pools: "" (= retriever.mode) | dense | lexical | hybrid
    oracle_filter: bool = False  # keep the known unlabelled duplicates (unlabelled_duplicates.tsv) out of every pool
    band_refill: bool = False  # "band": fill the slots the band leaves empty with the pool entries nearest to it

    def __post_init__(self):
        if self.strategy not in NEGATIVE_STRATEGIES:
            _fail("mining.strategy", f"unknown {self.strategy!r}; valid: {', '.join(sorted(NEGATIVE_STRATEGIES))}")
        if self.pool not in POOL_SOURCES:
            _fail("mining.pool", f"unknown {self.pool!r}; valid: {', '.join(POOL_SOURCES)}")
        if self.sampling not in SAMPLINGS:
            _fail("mining.sampling", f"unknown {self.sampling!r}; valid: {', '.join(SAMPLINGS)}")
        if needs_pool(self.strategy) and self.pool == "none":
            _fail("mining.pool", f"strategy {self.strategy!r} picks from a mined pool: set 'offline' or 'online'")
        if not needs_pool(self.strategy) and self.pool != "none":
            _fail("mining.pool", f"strategy {self.strategy!r} uses no pool: set 'none'")
        if not 0 <= self.num_negatives <= 64:
            _fail("mining.num_negatives", f"must be in [0, 64], got {self.num_negatives}")
        if self.strategy == "in_batch" and self.num_negatives:
            _fail("mining.num_negatives", "must be 0 with strategy 'in_batch' (no explicit negatives)")
        if self.strategy != "in_batch" and not self.num_negatives:
            _fail("mining.num_negatives", f"must be >= 1 with strategy {self.strategy!r}")
        if needs_pool(self.strategy) and not self.num_negatives <= self.pool_size <= 1000:
            _fail("mining.pool_size", f"must be in [num_negatives={self.num_negatives}, 1000], got {self.pool_size}")
        if self.refresh_every_epochs < 1:
            _fail("mining.refresh_every_epochs", f"must be >= 1, got {self.refresh_every_epochs}")
        if self.retriever not in ("", *RETRIEVER_MODES):
            _fail("mining.retriever", f"unknown {self.retriever!r}; valid: '' (= retriever.mode), "
                                      f"{', '.join(RETRIEVER_MODES)}")
        if self.retriever and self.pool == "none":
            _fail("mining.retriever", f"strategy {self.strategy!r} mines no pool (mining.pool = 'none'): set ''")
        if self.oracle_filter and self.pool == "none":
            _fail("mining.oracle_filter", f"strategy {self.strategy!r} mines no pool (mining.pool = 'none'): set False")
        if self.strategy == "band" and self.band_refill and self.band_in_step:
            _fail("mining.band_in_step", "would mask again the slots mining.band_refill filled from outside the band "
                                         "(fewer negatives than mining.num_negatives): set one of them False")


@dataclasses.dataclass(frozen=True)
class CESpec:
    """`ce.*`: the cross-encoder, split by concern into the parts their modules own. The config keys stay flat
    (`ce.<key>`: each key is a field of one part, CE_PARTS) and every error names its `ce.<key>`."""

    source: CEModelSpec  # models/loading.py: which CE (model) and its pair width (max_length)
    mining: CEMiningSpec  # mining/pipeline.py: how it filters pools and guides batches, and its gate
    train: CETrainSpec  # training/ce_step.py: how a CE is trained here (steps, batch, negatives, rate, loss, folds)
    rerank: RerankSpec  # mining/scoring.py: whether evaluation re-ranks with it (rerank_depth)

    @property
    def needed(self) -> bool:
        """Whether the run uses a cross-encoder at all."""
        return self.mining.guides or self.rerank.rerank_depth > 0

    @property
    def guides_mining(self) -> bool:
        """Whether the cross-encoder filters pools or masks batch columns (what cross-fitting applies to)."""
        return self.mining.guides

    def replace(self, **keys: Any) -> "CESpec":
        """A copy with new values of the flat `ce.<key>`s `keys`, each in its part (TypeError on an unknown key)."""
        changes, left = {}, dict(keys)
        for attribute, part in CE_PARTS.items():
            mine = {f.name: left.pop(f.name) for f in dataclasses.fields(part) if f.name in left}
            if mine:
                changes[attribute] = dataclasses.replace(getattr(self, attribute), **mine)
        if left:
            raise TypeError(f"CESpec.replace: no ce.{', ce.'.join(left)} key")
        return dataclasses.replace(self, **changes)


CE_PARTS = {"source": CEModelSpec, "mining": CEMiningSpec, "train": CETrainSpec, "rerank": RerankSpec}


EVAL_SEARCHES = ("exact", "ann")  # eval.search: dense top-k over the whole corpus | ScaNN with the index.* settings


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    max_length: int
    batch_size: int
    search: str
    duplicates_relevant: bool = True  # unlabelled_duplicates.tsv's pairs count as relevant (a synthetic benchmark)

    def __post_init__(self):
        if self.search not in EVAL_SEARCHES:
            _fail("eval.search", f"unknown {self.search!r}; valid: {', '.join(EVAL_SEARCHES)}")
        if self.max_length != 0 and not 4 <= self.max_length <= 512:
            _fail("eval.max_length", f"must be 0 (auto: from the data) or in [4, 512], got {self.max_length}")
        if self.batch_size < 1:
            _fail("eval.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    seed: int
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    loss: LossSpec
    mining: MiningSpec
    band: BandSpec
    retriever: RetrieverSpec
    index: IndexSpec
    eval: EvalSpec
    ce: CESpec

    def __post_init__(self):
        if self.ce.guides_mining and self.mining.pool == "none":
            _fail("ce.filter", "the cross-encoder filters a mined pool: set mining.pool to offline or online "
                               "(and a pool strategy), or turn ce.filter and ce.guide_in_batch off")
        if self.ce.needed and not self.ce.source.model and self.mining.pool == "none":
            _fail("ce.model", "training a cross-encoder needs mined negatives: set mining.pool, or ce.model to a "
                              "trained cross-encoder folder")
        if self.loss.uniformity_weight and not self.model.normalize:
            _fail("loss.uniformity_weight", "the uniformity regularizer acts on unit vectors: set "
                                            "model.normalize = True (or 0 here)")
        if self.loss.hybrid_logits:
            if self.mining.pool == "none":
                _fail("loss.hybrid_logits", "its per-query fusion coefficients come from the retriever at each pool "
                                            "refresh: set mining.pool to offline or online (or False here)")
            if self.retriever.fusion != "weighted" or self.retriever.dense_weight <= 0:
                _fail("loss.hybrid_logits", "trains on the weighted fusion (a per-query affine map of it): needs "
                                            "retriever.fusion = 'weighted' and retriever.dense_weight > 0, got "
                                            f"{self.retriever.fusion!r} and {self.retriever.dense_weight}")

    @property
    def mining_retriever(self) -> RetrieverSpec:
        """The retriever that mines pools: retriever.* with mode mining.retriever ("" = retriever.mode, the
        deployed one evaluation uses)."""
        return dataclasses.replace(self.retriever, mode=self.mining.retriever or self.retriever.mode)


def check_splits(spec: ExperimentSpec, splits: list[str]) -> None:
    """data.train_split and data.eval_split exist among the dataset's `splits` (ConfigError naming the key)."""
    for key in ("train_split", "eval_split"):
        if getattr(spec.data, key) not in splits:
            _fail(f"data.{key}", f"no split {getattr(spec.data, key)!r} in the dataset; it has "
                                 f"{', '.join(splits) or 'no qrels/*.tsv'}")


def dataset_root(data: DataSpec, name_or_path: str | None = None) -> Path:
    """The folder a run reads: the dataset's own (data.path when set, else the benchmark named data.name, or a
    command line's --data `name_or_path` in their place), or with data.folds > 0 the folder of fold data.fold
    (`data.folds.materialize_fold`: the same corpus and queries, the fold's train/dev/test qrels and candidates).

    ConfigError naming the key when the dataset is missing or not a BEIR folder; a bad data file stays a DataError.
    """
    key = "--data" if name_or_path else "data.path" if data.path else "data.name"
    try:
        if name_or_path:
            root = resolve_dataset(name_or_path)
        else:
            root = resolve_dataset_path(name=None if data.path else data.name, path=data.path or None)
    except DataError as error:
        raise ConfigError(f"{key}: {error}") from None
    if data.fold_spec is None:
        return root
    try:
        return materialize_fold(root, data.fold_spec)
    except FoldError as error:  # too few query groups for the folds
        raise ConfigError(f"data.folds: {error}") from None


def check_against_data(spec: ExperimentSpec, *, train_queries: int, devices: int, processes: int = 1) -> None:
    """The checks that need the data's size and the device count but no model (ConfigError naming the key).

    train.batch_size: at most the training queries, and a multiple of the devices (so every host gets the same
    share); ce.batch_size likewise, against the queries one cross-encoder trains on (half with ce.cross_fit).
    """
    for key, batch, queries in (("train.batch_size", spec.train.batch_size, train_queries),
                                ("ce.batch_size", spec.ce.train.batch_size,
                                 train_queries // 2 if spec.ce.train.cross_fit and spec.ce.guides_mining
                                 else train_queries)):
        if key == "ce.batch_size" and not (spec.ce.needed and not spec.ce.source.model):
            continue  # no cross-encoder is trained
        if batch > queries:
            _fail(key, f"{batch} is larger than the {queries} training queries"
                       + (" of one cross-fitting half" if queries < train_queries else "") + "; lower it")
        if batch % devices or batch % processes:
            _fail(key, f"{batch} does not divide by the {devices} devices ({processes} processes)")


def _check_type(key: str, value: Any, expected: Any) -> Any:
    """Returns `value` converted to `expected` (int -> float allowed), or raises ConfigError naming `key`."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        _fail(key, f"expected int, got bool {value!r}")
    origin = typing.get_origin(expected)
    allowed = typing.get_args(expected) if origin in (typing.Union, types.UnionType) else (expected,)
    if not isinstance(value, allowed):
        names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
        _fail(key, f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def _build(name: str, cls: type, values: dict[str, Any]) -> Any:
    """`cls(**values)`; a ValueError of a spec owned by another module ('BandSpec.mode ...', 'CEFilterSpec.margin
    must ...') becomes a ConfigError naming its key (`name`.field)."""
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as error:  # specs owned by other modules validate themselves: name their keys
        message = re.sub(r"\bCEFilterSpec\.(\w+) ", rf"{name}.\1: ", str(error))  # CEMiningSpec's rules
        message = re.sub(rf"\b{cls.__name__}\.(\w+)", rf"{name}.\1", message).replace(f"{cls.__name__}: ", "")
        raise ConfigError(message if message.startswith(f"{name}.") else f"{name}: {message}") from None


def _section(config: Mapping[str, Any], name: str, cls: type) -> Any:
    """Builds the dataclass `cls` from `config[name]`, rejecting unknown and missing keys. A section split by concern
    (`ce`: CE_PARTS) has flat keys, each the field of one part; `cls` is built from the parts."""
    if name not in config:
        _fail(name, "missing section")
    section = config[name]
    parts = CE_PARTS if cls is CESpec else {"": cls}  # attribute of `cls` -> the spec class of its keys
    owner = {}  # key -> (attribute, its type)
    for attribute, part in parts.items():
        types_ = typing.get_type_hints(part)  # resolves string annotations (modules using `from __future__`)
        owner.update({f.name: (attribute, types_[f.name]) for f in dataclasses.fields(part)})
    for key in section:
        if key not in owner:
            close = difflib.get_close_matches(key, owner, n=1)
            hint = f"; did you mean {name}.{close[0]}?" if close else f"; valid keys: {', '.join(owner)}"
            _fail(f"{name}.{key}", f"unknown key{hint}")
    values: dict[str, dict[str, Any]] = {attribute: {} for attribute in parts}
    for key, (attribute, expected) in owner.items():
        if key not in section:
            _fail(f"{name}.{key}", "missing key (every key lives in configs/base.py)")
        values[attribute][key] = _check_type(f"{name}.{key}", section[key], expected)
    built = {attribute: _build(name, part, values[attribute]) for attribute, part in parts.items()}
    return built[""] if "" in built else cls(**built)


SECTIONS = {
    "model": ModelSpec,
    "data": DataSpec,
    "train": TrainSpec,
    "loss": LossSpec,
    "mining": MiningSpec,
    "band": BandSpec,
    "retriever": RetrieverSpec,
    "index": IndexSpec,
    "eval": EvalSpec,
    "ce": CESpec,
}


def _migrate_legacy(config: Mapping[str, Any]) -> dict[str, Any]:
    """Reads configs saved before the gap band and the margin kinds (a workdir's config.json) as they meant.

    band.relative (bool) -> band.mode "relative" | "absolute"; a loss with margin_weight > 0 and no margin_kind was a
    hinge. Keys added since get the value that reproduces the old behaviour (one cross-encoder, exact evaluation).
    """
    config = {name: dict(value) if isinstance(value, Mapping) else value for name, value in config.items()}
    band, loss = config.get("band", {}), config.get("loss", {})
    if "relative" in band and "mode" not in band:
        band["mode"] = "relative" if band.pop("relative") else "absolute"
    if "margin_kind" not in loss and "margin_weight" in loss:
        loss["margin_kind"] = "hinge" if loss["margin_weight"] else "none"
    if "hybrid_beta" in loss and "hybrid_logits" not in loss:  # the batch-normalized BM25 term is gone: its
        loss["hybrid_logits"] = bool(loss.pop("hybrid_beta"))  # runs now train on the deployed fusion
    ce = config.get("ce", {})
    if isinstance(ce, dict) and "require_better" in ce:  # the re-ranking check of old -> the precision gate
        ce.setdefault("gate_min_precision", 0.5 if ce.pop("require_better") else 0.0)
    # auto = the einsum and threefry of old on CPU
    added = {"model": {"attention": "auto", "rng_impl": "auto", "normalize": True, "freeze_layers": 0},
             "data": {"max_length_cap": 256, "length_coverage": 0.95, "folds": 0, "fold": 0, "fold_seed": 0,
                      "fold_dev_fraction": 0.1}, "train": {"lr_schedule": "linear"},
             "band": {"curriculum_fraction": 0.7}, "eval": {"search": "exact", "duplicates_relevant": False},
             "mining": {"retriever": "", "oracle_filter": False, "band_refill": False},
             "retriever": {"lexical_tokens": "words"},
             "ce": {"cross_fit": False, "gate_min_precision": 0.0, "negatives_top": ce.get("rescore_top", 10),
                    "rerank_weight": 0.0, "train_epochs": 0}}
    for section, keys in added.items():  # keys added since: the value that reproduces the old behaviour
        if isinstance(config.get(section), dict):
            for key, value in keys.items():
                config[section].setdefault(key, value)
    return config


def spec_from_config(config: ml_collections.ConfigDict | Mapping[str, Any]) -> ExperimentSpec:
    """Validates `config` and returns the frozen ExperimentSpec, or raises ConfigError naming the key."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    config = _migrate_legacy(config)
    known = set(SECTIONS) | {"seed"}
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            _fail(key, "unknown key" + (f"; did you mean {close[0]}?" if close else ""))
    seed = _check_type("seed", config.get("seed", 0), int)
    sections = {name: _section(config, name, cls) for name, cls in SECTIONS.items()}
    return ExperimentSpec(seed=seed, **sections)


def load_config_file(path_and_arg: str) -> ml_collections.ConfigDict:
    """Runs `get_config(arg)` of a config file named 'path/to/config.py[:arg]' (what --config takes)."""
    import importlib.util

    path, _, arg = path_and_arg.partition(":")
    if not Path(path).is_file():
        raise ConfigError(f"config: no such file {path!r}")
    module_spec = importlib.util.spec_from_file_location(f"hnm_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
