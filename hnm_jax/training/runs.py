"""A run as the commands that read it meet it. A training workdir: its config (config.json), its trained models (the
newest checkpoint's parameters in the encoder or cross-encoder its config names) and the layout of its cross-encoder
folders. And `load_run`: the one resolution of "workdir, or model + config" -> spec, data, encoder, cross-encoder
that `hnm eval` and `hnm mine` make, with its policy (the zero-shot width, which cross-encoder re-ranks and how deep).
"""

import copy
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections

from hnm_jax.config import ExperimentSpec, dataset_root, load_config_file, spec_from_config
from hnm_jax.data.beir import BeirData, load_beir
from hnm_jax.mine import mining_spec
from hnm_jax.models.loading import build_cross_encoder, build_encoder
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder, load_cross_encoder
from hnm_jax.training.checkpointing import Checkpointer
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import create_train_state
from hnm_jax.workdir import CONFIG_FILE, WorkdirError, check_run

CE_DIR = "ce"  # <workdir>/ce: the cross-encoder's checkpoints, logs and exported HF folder ("model")
CE_FOLD_DIR = "fold{}"  # cross-fitting: <workdir>/ce/fold0, <workdir>/ce/fold1, each laid out like <workdir>/ce
ZERO_SHOT_MAX_LENGTH = 128  # evaluation with no workdir: tokens per query and document (the zero-shot reference's)
DEFAULT_RERANK_DEPTH = 10  # a re-ranking cross-encoder with no depth from the flag or ce.rerank_depth


def workdir_ce_path(workdir: str | Path, name: str) -> Path:
    """<workdir>/ce/<name>; of a cross-fitted run that lacks it but has <workdir>/ce/fold0/<name>, that one (the
    fold-0 CE stands for the run: the one its evaluation re-ranks with and `hnm export --cross-encoder` writes)."""
    ce_dir = Path(workdir) / CE_DIR
    fold0 = ce_dir / CE_FOLD_DIR.format(0) / name
    return fold0 if not (ce_dir / name).is_dir() and fold0.is_dir() else ce_dir / name


def load_trained_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a training workdir was run with (its config.json); WorkdirError when `workdir` is not one."""
    config_path = check_run(workdir) / CONFIG_FILE
    try:
        return ml_collections.ConfigDict(json.loads(config_path.read_text()))
    except ValueError as error:
        raise WorkdirError(f"{config_path}: not a JSON config ({error}); expected the config.json `hnm train` "
                           "writes") from None


def _check_checkpoints(directory: Path) -> None:
    """WorkdirError naming `directory` when it holds no checkpoint step (before any model is built)."""
    if not (directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())):
        raise WorkdirError(f"{directory}: no checkpoint (expected the checkpoints of a run that trained at least "
                           "one checkpoint_every interval)")


def _newest_params(directory: Path, graphdef, params, spec: ExperimentSpec, freeze_layers: int = 0):
    """The params of the newest checkpoint in `directory`, given a model's graphdef and params as template."""
    # the opt_state structure does not depend on the schedule, only on what is frozen
    tx = make_optimizer(spec.train, total_steps=1, freeze_layers=freeze_layers)
    template = create_train_state(graphdef, params, tx, spec.seed)
    checkpointer = Checkpointer(directory, keep=spec.train.keep_checkpoints)
    try:
        restored = checkpointer.restore(template)
    finally:
        checkpointer.close()
    if restored is None:
        raise WorkdirError(f"{directory}: no finished checkpoint (expected the checkpoints of a run that trained "
                           "at least one checkpoint_every interval)")
    return restored[0].params


def load_trained(workdir: str | Path) -> tuple[Encoder, ml_collections.ConfigDict]:
    """The encoder of a training workdir with the parameters of its newest checkpoint, and its config."""
    workdir = Path(workdir)
    config = load_trained_config(workdir)
    _check_checkpoints(workdir / "checkpoints")
    spec = spec_from_config(config)
    encoder = build_encoder(spec.model, spec.seed)
    params = _newest_params(workdir / "checkpoints", encoder.graphdef, encoder.state, spec, spec.model.freeze_layers)
    return dataclasses.replace(encoder, state=params), config


def load_trained_cross_encoder(workdir: str | Path) -> CrossEncoderModel:
    """The cross-encoder of a training workdir (<workdir>/ce) with the parameters of its newest checkpoint; of a
    cross-fitted run without <workdir>/ce/checkpoints, the fold-0 CE (<workdir>/ce/fold0, the one its evaluation
    re-ranked with)."""
    spec = spec_from_config(load_trained_config(workdir))
    checkpoints = workdir_ce_path(workdir, "checkpoints")
    _check_checkpoints(checkpoints)
    model = build_cross_encoder(spec.model, spec.ce.source, spec.seed)
    params = _newest_params(checkpoints, model.graphdef, model.state, spec)
    return dataclasses.replace(model, state=params)


@dataclasses.dataclass(frozen=True)
class EvalFlags:
    """An evaluation's overrides of the run's keys (None: the run's own): eval.max_length, eval.batch_size,
    eval.search, retriever.mode, and the re-ranking depth (ce.rerank_depth)."""

    max_length: int | None = None
    batch_size: int | None = None
    search: str | None = None
    retriever: str | None = None
    rerank_depth: int | None = None

    def apply(self, spec: ExperimentSpec) -> ExperimentSpec:
        """`spec` with the eval.* and retriever.mode given here; bad values raise ConfigError naming the key."""
        evals = {key: value for key, value in (("max_length", self.max_length), ("batch_size", self.batch_size),
                                               ("search", self.search)) if value is not None}
        spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, **evals))
        if self.retriever:
            spec = dataclasses.replace(spec, retriever=dataclasses.replace(spec.retriever, mode=self.retriever))
        return spec


@dataclasses.dataclass(frozen=True)
class MiningFlags:
    """A one-off mining's overrides (None: the config's, see `mine.mining_spec`)."""

    strategy: str | None = None
    num_negatives: int | None = None
    pool_size: int | None = None
    retriever: str | None = None


def rerank_choice(ce_model: str, ce_depth: int, workdir: str | Path | None, folder: str | None,
                  depth: int | None) -> tuple[str, int] | None:
    """Which cross-encoder re-ranks an evaluation and how deep: (folder, k), or None for no re-ranking.

    `folder` and `depth` are the caller's (None: not given); `ce_model` and `ce_depth` the run's ce.model and
    ce.rerank_depth. The depth is `depth`, else ce.rerank_depth. A given folder re-ranks; without one, a workdir
    with a depth > 0 re-ranks with the run's own CE, as training used it: ce.model, else the CE it trained
    (`workdir_ce_path(workdir, "model")`: ce/model, of a cross-fitted run ce/fold0/model). A depth of 0 with a
    folder is DEFAULT_RERANK_DEPTH.
    """
    depth = ce_depth if depth is None else depth
    if folder is None and workdir is not None and depth:
        folder = ce_model or str(workdir_ce_path(workdir, "model"))
    return (folder, depth or DEFAULT_RERANK_DEPTH) if folder else None


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A run resolved for a command: the spec it runs under (the command's overrides applied), the data split it
    reads, its encoder, and the cross-encoder (evaluation's re-ranker, mining's judge) or None.

    label: the workdir's folder name or the model, and the split ("run (test)"). workdir: None for a model run.
    """

    spec: ExperimentSpec
    data: BeirData
    encoder: Encoder
    label: str
    workdir: Path | None = None
    cross_encoder: CrossEncoderModel | None = None

    @property
    def cache_dir(self) -> Path | None:
        """Where the run's token caches live (<workdir>/cache); None for a model run (nothing cached)."""
        return None if self.workdir is None else self.workdir / "cache"


def load_run(*, workdir: str | Path | None = None, model: str | None = None,
             config: str | ml_collections.ConfigDict | Mapping[str, Any] | None = None, data: str | None = None,
             split: str | None = None, cross_encoder: str | None = None, evaluation: EvalFlags | None = None,
             mining: MiningFlags | None = None) -> LoadedRun:
    """The one resolution of a run for `hnm eval` / `hnm mine`: workdir (its config.json and newest checkpoint), or
    `config` (a ConfigDict, a mapping or a configs/*.py[:arg] file; hnm_jax imports nothing of configs/, so a
    caller that wants configs/base.py passes it) with model.name replaced by `model` when given.

    data: benchmark name or BEIR folder (None: the config's dataset; with data.folds, the config's fold of it).
    split: the qrels split to load (None: data.train_split). cross_encoder: a CE folder (mining's judge; for an
    evaluation, the re-ranker, chosen by `rerank_choice` when None). evaluation: evaluate the run: `EvalFlags`
    override its keys, a model run evaluates at ZERO_SHOT_MAX_LENGTH unless EvalFlags.max_length says otherwise,
    and the re-ranker and its depth are written to ce.model / ce.rerank_depth. mining: mine once
    (`mining_spec` with these overrides).
    Bad keys, paths or data raise their one-line errors (ConfigError, WorkdirError, DataError) before any model is
    built; a missing model folder raises ModelNotFoundError.
    """
    if (workdir is None) == (config is None):
        raise ValueError("load_run: give a workdir (it brings its own config) or a config, not both")
    if workdir is not None:
        if model is not None:
            raise ValueError("load_run: a workdir brings its own model; drop model")
        workdir = Path(workdir)
        source: Any = load_trained_config(workdir)
        name = workdir.name
    else:
        source = load_config_file(config) if isinstance(config, str) else config
        source = copy.deepcopy(source.to_dict() if isinstance(source, ml_collections.ConfigDict) else dict(source))
        if model is not None:
            source["model"]["name"] = model
        if evaluation is not None:
            source["eval"]["max_length"] = ZERO_SHOT_MAX_LENGTH
        name = model or source["model"]["name"]
    spec = spec_from_config(source)
    if evaluation is not None:
        spec = evaluation.apply(spec)
        choice = rerank_choice(spec.ce.source.model, spec.ce.rerank.rerank_depth, workdir, cross_encoder,
                               evaluation.rerank_depth)
        cross_encoder = None
        if choice is not None:
            cross_encoder, depth = choice
            spec = dataclasses.replace(spec, ce=spec.ce.replace(model=cross_encoder, rerank_depth=depth))
    if mining is not None:
        spec = mining_spec(spec, **dataclasses.asdict(mining))
    split = split or spec.data.train_split
    beir = load_beir(dataset_root(spec.data, data), split, skip_empty=spec.data.skip_empty)  # before any model
    encoder = load_trained(workdir)[0] if workdir is not None else build_encoder(spec.model, spec.seed)
    judge = None
    if cross_encoder:  # ce.max_length 0 (auto) is resolved by its user; load at the model's own default meanwhile
        judge = load_cross_encoder(cross_encoder, dtype=jax.numpy.dtype(spec.model.dtype),
                                   **({"max_length": spec.ce.source.max_length} if spec.ce.source.max_length else {}))
    return LoadedRun(spec, beir, encoder, f"{name} ({split})", workdir, judge)
