"""BERT-family encoder in Flax NNX (post-LN, absolute positions, exact-erf GELU) and bi-encoder pooling.

The forward pass is a pure function of (params, inputs, dropout_rng): dropout masks are drawn with
`jax.random` from keys folded out of `dropout_rng` per layer and site, so no NNX RNG state is
mutated and a jitted train step stays pure. Parameter names mirror Hugging Face's `BertModel`
(see `hf_weights.py` for the exact mapping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

_INIT = nnx.initializers.normal(stddev=0.02)  # BERT's initializer_range


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape and regularization hyper-parameters of a BERT encoder (mirrors HF `BertConfig`)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"BertConfig: hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig: {name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_hf(cls, hf_config: dict) -> BertConfig:
        """Builds a config from a Hugging Face `config.json` dict; ValueError naming the bad key."""
        model_type = hf_config.get("model_type")
        if model_type != "bert":
            raise ValueError(f"model_type must be 'bert' (a BERT-family model), got {model_type!r}")
        hidden_act = hf_config.get("hidden_act", "gelu")
        if hidden_act != "gelu":
            raise ValueError(f"hidden_act must be 'gelu' (exact erf GELU), got {hidden_act!r}")
        position_type = hf_config.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"position_embedding_type must be 'absolute', got {position_type!r}")
        required = {
            "vocab_size": "vocab_size",
            "hidden_size": "hidden_size",
            "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads",
            "intermediate_size": "intermediate_size",
        }
        missing = [hf_key for hf_key in required.values() if hf_key not in hf_config]
        if missing:
            raise ValueError(f"missing required key(s) {missing}")
        optional = {
            "max_position_embeddings": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size",
            "layer_norm_eps": "layer_norm_eps",
            "hidden_dropout": "hidden_dropout_prob",
            "attention_dropout": "attention_probs_dropout_prob",
            "pad_token_id": "pad_token_id",
        }
        kwargs: dict[str, Any] = {ours: hf_config[hf] for ours, hf in required.items()}
        kwargs.update({ours: hf_config[hf] for ours, hf in optional.items() if hf_config.get(hf) is not None})
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """A Hugging Face `BertModel` config.json dict."""
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "initializer_range": 0.02,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
            "use_cache": True,
        }

    @classmethod
    def tiny(cls, vocab_size: int = 30522) -> BertConfig:
        """2 layers, hidden 32, 2 heads, intermediate 64: for tests."""
        return cls(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@dataclasses.dataclass(frozen=True)
class PoolingSpec:
    """How token embeddings become one vector: 'mean' (over attention mask) or 'cls', then L2 norm."""

    mode: str = "mean"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("mean", "cls"):
            raise ValueError(f"PoolingSpec.mode must be 'mean' or 'cls', got {self.mode!r}")


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; identity when `key` is None or rate == 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _site_key(key: jax.Array | None, site: int) -> jax.Array | None:
    return None if key is None else jax.random.fold_in(key, site)


class BertEmbeddings(nnx.Module):
    """word + position + token-type embeddings, then LayerNorm (and dropout)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        kw = {"dtype": dtype, "param_dtype": param_dtype, "embedding_init": _INIT, "rngs": rngs}
        self.word_embeddings = nnx.Embed(config.vocab_size, config.hidden_size, **kw)
        self.position_embeddings = nnx.Embed(config.max_position_embeddings, config.hidden_size, **kw)
        self.token_type_embeddings = nnx.Embed(config.type_vocab_size, config.hidden_size, **kw)
        self.layer_norm = nnx.LayerNorm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        """[B, L] ids -> [B, L, H]."""
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.layer_norm(x)


class BertAttention(nnx.Module):
    """Multi-head self-attention + output projection + residual + LayerNorm (HF `BertAttention`)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        h = config.hidden_size
        kw = {"dtype": dtype, "param_dtype": param_dtype, "kernel_init": _INIT, "rngs": rngs}
        self.num_heads = config.num_heads
        self.attention_dropout = config.attention_dropout
        self.hidden_dropout = config.hidden_dropout
        self.dtype = dtype
        self.query = nnx.Linear(h, h, **kw)
        self.key = nnx.Linear(h, h, **kw)
        self.value = nnx.Linear(h, h, **kw)
        self.output = nnx.Linear(h, h, **kw)
        self.layer_norm = nnx.LayerNorm(
            h, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, key_mask: jax.Array, dropout_rng: jax.Array | None) -> jax.Array:
        """x [B, L, H], key_mask [B, L] bool (True = attend) -> [B, L, H]."""
        b, length, h = x.shape
        head_dim = h // self.num_heads

        def heads(t: jax.Array) -> jax.Array:
            return t.reshape(b, length, self.num_heads, head_dim)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
        scores = scores / jnp.sqrt(float(head_dim))
        # Like HF's extended attention mask: masked keys get the most negative float (softmax weight 0).
        scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        probs = _dropout(probs, self.attention_dropout, _site_key(dropout_rng, 0))
        context = jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, length, h)
        out = _dropout(self.output(context), self.hidden_dropout, _site_key(dropout_rng, 1))
        return self.layer_norm(out + x)


class BertLayer(nnx.Module):
    """One post-LN transformer block: attention, then GELU feed-forward + residual + LayerNorm."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        h, i = config.hidden_size, config.intermediate_size
        kw = {"dtype": dtype, "param_dtype": param_dtype, "kernel_init": _INIT, "rngs": rngs}
        self.hidden_dropout = config.hidden_dropout
        self.attention = BertAttention(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.intermediate = nnx.Linear(h, i, **kw)
        self.output = nnx.Linear(i, h, **kw)
        self.layer_norm = nnx.LayerNorm(
            h, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, key_mask: jax.Array, dropout_rng: jax.Array | None) -> jax.Array:
        """x [B, L, H] -> [B, L, H]."""
        x = self.attention(x, key_mask, _site_key(dropout_rng, 0))
        y = self.output(jax.nn.gelu(self.intermediate(x), approximate=False))
        y = _dropout(y, self.hidden_dropout, _site_key(dropout_rng, 1))
        return self.layer_norm(y + x)


class BertEncoder(nnx.Module):
    """BERT encoder without the pooler: ids -> last hidden state.

    `dtype` is the compute dtype (e.g. bfloat16 on GPU); parameters are stored in `param_dtype`.
    """

    def __init__(
        self,
        config: BertConfig,
        *,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
    ):
        self.config = config
        self.hidden_dropout = config.hidden_dropout
        self.embeddings = BertEmbeddings(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.layers = nnx.List(
            [BertLayer(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype) for _ in range(config.num_layers)]
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """input_ids, attention_mask, token_type_ids [B, L] int -> last hidden state [B, L, H] float32.

        Dropout (hidden and attention probabilities) is applied only when `dropout_rng` is given.
        """
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        key_mask = attention_mask.astype(bool)
        x = self.embeddings(input_ids, token_type_ids)
        x = _dropout(x, self.hidden_dropout, _site_key(dropout_rng, 0))
        for i, layer in enumerate(self.layers):
            x = layer(x, key_mask, _site_key(dropout_rng, i + 1))
        return x.astype(jnp.float32)


def pool(token_embeddings: jax.Array, attention_mask: jax.Array, spec: PoolingSpec) -> jax.Array:
    """[B, L, H] token embeddings, [B, L] mask -> [B, H] float32.

    mean: sum_l(mask * x) / max(sum_l mask, 1e-9); cls: x[:, 0]. Then x / max(||x||_2, 1e-12) if
    `spec.normalize` (the sentence-transformers clamps, so all-padding rows give zeros, not NaN).
    """
    x = token_embeddings.astype(jnp.float32)
    if spec.mode == "cls":
        pooled = x[:, 0]
    else:
        mask = attention_mask.astype(jnp.float32)[..., None]
        pooled = (x * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)
    if spec.normalize:
        # sqrt(max(|x|^2, eps^2)) == max(|x|, eps), but with a finite gradient at x = 0 (empty slots).
        norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(pooled), axis=-1, keepdims=True), 1e-24))
        pooled = pooled / norm
    return pooled


def embed(
    model: BertEncoder,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    spec: PoolingSpec,
    *,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """[B, L] ids and mask -> pooled (and normalized) embeddings [B, H] float32."""
    return pool(model(input_ids, attention_mask, dropout_rng=dropout_rng), attention_mask, spec)


class CrossEncoder(nnx.Module):
    """A BERT cross-encoder: `[CLS] query [SEP] doc [SEP]` -> one relevance logit (HF `BertForSequenceClassification`).

    The head is Hugging Face's, so an exported model scores identically in `transformers`:

        logit = classifier(dropout(tanh(pooler(h_cls)))),   h_cls = encoder(...)[:, 0]  ([B, H] -> [B])

    with `pooler` an H -> H Linear (HF `bert.pooler.dense`, initialised from the checkpoint when it has one)
    and `classifier` an H -> 1 Linear (HF `classifier`, num_labels = 1). `encoder` may be passed in
    (e.g. an abstract one from `nnx.eval_shape`, to be filled by `load_hf_weights`); the head is always
    initialised here, normal(0.02) kernels and zero biases as in HF.
    """

    def __init__(
        self,
        config: BertConfig,
        *,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        encoder: BertEncoder | None = None,
    ):
        self.config = config
        self.hidden_dropout = config.hidden_dropout
        if encoder is None:
            encoder = BertEncoder(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.encoder = encoder
        kw = {"dtype": dtype, "param_dtype": param_dtype, "kernel_init": _INIT, "rngs": rngs}
        self.pooler = nnx.Linear(config.hidden_size, config.hidden_size, **kw)
        self.classifier = nnx.Linear(config.hidden_size, 1, **kw)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """input_ids, attention_mask, token_type_ids [B, L] int -> logits [B] float32.

        Dropout (encoder sites, then the pooled vector) is applied only when `dropout_rng` is given.
        """
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, dropout_rng=_site_key(dropout_rng, 0))
        pooled = jnp.tanh(self.pooler(hidden[:, 0]))
        pooled = _dropout(pooled, self.hidden_dropout, _site_key(dropout_rng, 1))
        return self.classifier(pooled)[:, 0].astype(jnp.float32)
