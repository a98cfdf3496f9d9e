"""The encoder and cross-encoder a config names: a tiny random one, or `models/pretrained.py`'s load_encoder /
load_cross_encoder, with the configured dropout and frozen trunk.

Separate from `pretrained.py`, which knows nothing of configs. A workdir's trained models (its config.json and newest
checkpoint) are loaded by `training/runs.py`, which needs the optimizer, the TrainState and the Checkpointer.
"""

import dataclasses

import jax
from flax import nnx

from hnm_jax.config import ConfigError, ExperimentSpec, ModelSpec
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

TINY_TOKENIZER = "all-MiniLM-L6-v2"  # the tiny random model borrows this tokenizer (packaged, offline)


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
