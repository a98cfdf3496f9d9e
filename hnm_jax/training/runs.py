"""A training workdir as the commands that read it meet it: its config (config.json) and its trained models (the
newest checkpoint's parameters in the encoder or cross-encoder its config names), and the layout of its
cross-encoder folders.
"""

import dataclasses
import json
from pathlib import Path

import ml_collections

from hnm_jax.config import ExperimentSpec, spec_from_config
from hnm_jax.models.loading import build_cross_encoder, build_encoder
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder
from hnm_jax.training.checkpointing import Checkpointer
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import create_train_state
from hnm_jax.workdir import CONFIG_FILE, WorkdirError, check_run

CE_DIR = "ce"  # <workdir>/ce: the cross-encoder's checkpoints, logs and exported HF folder ("model")
CE_FOLD_DIR = "fold{}"  # cross-fitting: <workdir>/ce/fold0, <workdir>/ce/fold1, each laid out like <workdir>/ce


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
    ce_dir = Path(workdir) / CE_DIR
    if not (ce_dir / "checkpoints").is_dir() and (ce_dir / CE_FOLD_DIR.format(0) / "checkpoints").is_dir():
        ce_dir = ce_dir / CE_FOLD_DIR.format(0)
    _check_checkpoints(ce_dir / "checkpoints")
    model = build_cross_encoder(spec.model, spec.ce.source, spec.seed)
    params = _newest_params(ce_dir / "checkpoints", model.graphdef, model.state, spec)
    return dataclasses.replace(model, state=params)
