"""The encoder and cross-encoder a config names: a tiny random one, or `models/pretrained.py`'s load_encoder /
load_cross_encoder, with the configured dropout and frozen trunk. ModelSpec (`model.*`) and CEModelSpec (the
cross-encoder's source and pair width, of `ce.*`) are owned here.

Separate from `pretrained.py`, which knows nothing of configs. A workdir's trained models (its config.json and newest
checkpoint) are loaded by `training/runs.py`, which needs the optimizer, the TrainState and the Checkpointer.
"""

import dataclasses

import jax
from flax import nnx

from hnm_jax.errors import ConfigError
from hnm_jax.errors import fail as _fail
from hnm_jax.models.encoder import ATTENTIONS, RNG_IMPLS, BertConfig
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


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """`model.*`: the bi-encoder to load (and the cross-encoder's dtype, attention and dropout)."""

    name: str
    dtype: str
    dropout: float
    attention: str = "auto"
    rng_impl: str = "auto"
    normalize: bool = True  # False: the pooled embedding is not L2-normalized (scores are raw dot products)
    freeze_layers: int = 0  # frozen trunk: the embeddings and the lowest K blocks (0: full fine-tuning)

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16"):
            _fail("model.dtype", f"expected 'float32' or 'bfloat16', got {self.dtype!r}")
        if not 0.0 <= self.dropout < 1.0:
            _fail("model.dropout", f"must be in [0, 1), got {self.dropout}")
        if self.attention not in ATTENTIONS:
            _fail("model.attention", f"unknown {self.attention!r}; valid: {', '.join(ATTENTIONS)}")
        if self.rng_impl not in RNG_IMPLS:
            _fail("model.rng_impl", f"unknown {self.rng_impl!r}; valid: {', '.join(RNG_IMPLS)}")
        layers = BertConfig.tiny().num_layers if self.name == "tiny" else None  # others: checked when loaded
        if self.freeze_layers < 0 or (layers is not None and self.freeze_layers > layers):
            _fail("model.freeze_layers", f"must be in [0, {layers or 'the model layers'}] (0 = full fine-tuning), "
                                         f"got {self.freeze_layers}")


@dataclasses.dataclass(frozen=True)
class CEModelSpec:
    """Which cross-encoder (`ce.model`: a trained folder, packaged name or hub id; "": initialised from `model.name`)
    and the width of its `[CLS] query [SEP] doc [SEP]` pairs (`ce.max_length`; 0: auto, from the data)."""

    model: str
    max_length: int

    def __post_init__(self):
        if self.max_length != 0 and not 8 <= self.max_length <= 512:
            raise ValueError(f"CEModelSpec.max_length: must be 0 (auto: from the data) or in [8, 512], "
                             f"got {self.max_length}")


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


def build_cross_encoder(model: ModelSpec, ce: CEModelSpec, seed: int) -> CrossEncoderModel:
    """The cross-encoder to train: `ce.model` if set, else initialised from the bi-encoder's `model.name`; pairs
    tokenized at `ce.max_length`, `model.*`'s dtype, attention and dropout."""
    name, max_length = ce.model or model.name, ce.max_length
    if name == "tiny":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(TINY_TOKENIZER))
        ce = random_cross_encoder(BertConfig.tiny(vocab_size=tokenizer.vocab_size), tokenizer, seed=seed,
                                  max_length=max_length, dtype=jax.numpy.dtype(model.dtype), attention=model.attention)
    else:
        ce = load_cross_encoder(name, dtype=jax.numpy.dtype(model.dtype), max_length=max_length, seed=seed,
                                attention=model.attention)
    return with_dropout(ce, model.dropout)


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
