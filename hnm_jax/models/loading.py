"""Every loader a run needs that reads a config or a workdir: the encoder and cross-encoder a config names (a tiny
random one, or `models/pretrained.py`'s load_encoder / load_cross_encoder, with the configured dropout), and the
trained models of a workdir (its config.json and newest checkpoint).

Separate from `pretrained.py` (which knows nothing of configs, optimizers or checkpoints) so the CLI, the miners and
the experiments reach trained models without importing `hnm_jax.train`.
"""

import dataclasses
import json
from pathlib import Path

import jax
import ml_collections
from flax import nnx

from hnm_jax.checkpointing import Checkpointer
from hnm_jax.config import ConfigError, ExperimentSpec, ModelSpec, spec_from_config
from hnm_jax.models.encoder import BertConfig
from hnm_jax.models.pretrained import (
    CrossEncoderModel,
    Encoder,
    load_cross_encoder,
    load_encoder,
    random_cross_encoder,
    random_encoder,
    resolve_model_dir,
)
from hnm_jax.optimizer import make_optimizer
from hnm_jax.train_step import create_train_state
from hnm_jax.workdir import CONFIG_FILE, WorkdirError, check_run

TINY_TOKENIZER = "all-MiniLM-L6-v2"  # the tiny random model borrows this tokenizer (packaged, offline)
CE_DIR = "ce"  # <workdir>/ce: the cross-encoder's checkpoints, logs and exported HF folder ("model")
CE_FOLD_DIR = "fold{}"  # cross-fitting: <workdir>/ce/fold0, <workdir>/ce/fold1, each laid out like <workdir>/ce


def build_encoder(spec: ModelSpec, seed: int) -> Encoder:
    """The pretrained encoder named by `model.name` (or a tiny random one), with the configured dropout; with
    `model.normalize` False its pooled embeddings are not L2-normalized (True: the model's own pooling, as loaded)."""
    if spec.name == "tiny":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(TINY_TOKENIZER))
        encoder = random_encoder(BertConfig.tiny(vocab_size=tokenizer.vocab_size), tokenizer, seed=seed,
                                 dtype=jax.numpy.dtype(spec.dtype), attention=spec.attention)
    else:
        encoder = load_encoder(spec.name, dtype=jax.numpy.dtype(spec.dtype), attention=spec.attention)
    if not spec.normalize:
        encoder = dataclasses.replace(encoder, pooling=dataclasses.replace(encoder.pooling, normalize=False))
    return with_frozen_trunk(with_dropout(encoder, spec.dropout), spec.freeze_layers)


def with_frozen_trunk(encoder: Encoder, layers: int) -> Encoder:
    """The same encoder with its embeddings and lowest `layers` blocks frozen (`BertEncoder.trunk`; 0: none);
    ConfigError naming model.freeze_layers unless 0 <= layers <= the model's layers."""
    if not 0 <= layers <= encoder.config.num_layers:
        raise ConfigError(f"model.freeze_layers: must be in [0, {encoder.config.num_layers}] (the layers of "
                          f"{encoder.source}; 0 = full fine-tuning), got {layers}")
    model = encoder.module()
    model.freeze_layers = layers
    graphdef, state = nnx.split(model)
    return dataclasses.replace(encoder, graphdef=graphdef, state=state)


def build_cross_encoder(spec: ExperimentSpec) -> CrossEncoderModel:
    """The cross-encoder to train: `ce.model` if set, else initialised from the bi-encoder's `model.name`."""
    name, max_length = spec.ce.model or spec.model.name, spec.ce.max_length
    if name == "tiny":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(TINY_TOKENIZER))
        model = random_cross_encoder(BertConfig.tiny(vocab_size=tokenizer.vocab_size), tokenizer, seed=spec.seed,
                                     max_length=max_length, dtype=jax.numpy.dtype(spec.model.dtype),
                                     attention=spec.model.attention)
    else:
        model = load_cross_encoder(name, dtype=jax.numpy.dtype(spec.model.dtype), max_length=max_length,
                                   seed=spec.seed, attention=spec.model.attention)
    return with_dropout(model, spec.model.dropout)


def with_dropout(encoder: Encoder | CrossEncoderModel, rate: float) -> Encoder | CrossEncoderModel:
    """The same model with hidden and attention dropout `rate` (used only when a step passes a dropout key)."""
    model = encoder.module()
    for _, module in nnx.iter_modules(model):
        for name in ("hidden_dropout", "attention_dropout"):
            if hasattr(module, name):
                setattr(module, name, rate)
    graphdef, state = nnx.split(model)
    config = dataclasses.replace(encoder.config, hidden_dropout=rate, attention_dropout=rate)
    return dataclasses.replace(encoder, graphdef=graphdef, state=state, config=config)


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
    model = build_cross_encoder(spec)
    params = _newest_params(ce_dir / "checkpoints", model.graphdef, model.state, spec)
    return dataclasses.replace(model, state=params)
