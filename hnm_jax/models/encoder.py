"""BERT-family encoder in Flax NNX (post-LN, absolute positions, exact-erf GELU) and bi-encoder pooling.

The forward pass is a pure function of (params, inputs, dropout_rng): every dropout mask of one forward pass
is cut from ONE draw of random bits of `dropout_rng` (`DropoutMasks`, `random_bits16`), so no NNX RNG state is
mutated and a jitted train step stays pure. One draw, not one per site: XLA compiles each random-bits call into its
own kernel (threefry: ~20 integer rounds), and on CPU 16 draws compile ~8x slower than one of the same size.
The sites (shape, rate) are described once, by the forward pass itself: `run_with_dropout` records them with a
shape-only pass (`jax.eval_shape`, nothing compiled), draws once for exactly those, then runs the forward.
Parameter names mirror Hugging Face's `BertModel` (see `hf_weights.py` for the exact mapping).

Mixed precision (`dtype=bfloat16`): parameters stay float32; matmuls, attention and activations run in the compute
dtype; embedding rows are looked up in the float32 tables and summed in float32 (so their gradients accumulate in
float32, never as a contended bfloat16 scatter-add), layer-norm statistics, the attention softmax, pooling and
everything after it are float32. Attention (`ATTENTIONS`): the explicit einsum (with attention-probability
dropout), or `jax.nn.dot_product_attention` (XLA, or cuDNN flash attention on GPU; no attention-probability
dropout there, hidden dropout is unchanged).

Frozen trunk (`freeze_layers` = K > 0, model.freeze_layers): the embeddings and the lowest K blocks are frozen. They
run deterministically (no dropout, also while training) behind a stop_gradient (`BertEncoder.trunk`), so their
output is a pure function of the text: a run computes it once per text and keeps it on the host (`HiddenStates`,
memory-mapped when large; `pretrained.Encoder.cache_trunk`), and every training step and re-encoding runs only the
blocks above (`encode_from_hidden`, `embed_hidden`); the optimizer never updates the frozen parameters
(`split_frozen`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_INIT = nnx.initializers.normal(stddev=0.02)  # BERT's initializer_range

# model.attention: how self-attention is computed. "einsum": the explicit einsum + mask + float32 softmax (+
# attention-probability dropout), the CPU reference; "xla": jax.nn.dot_product_attention, XLA implementation (the
# boolean padding mask, any mask); "cudnn": jax.nn.dot_product_attention on cuDNN flash attention (GPU, bf16/fp16
# compute; the mask is read as right padding, key lengths = mask.sum(-1), as every batch here is built); "auto":
# einsum on CPU, cudnn on GPU with bf16/fp16 compute where cuDNN takes the shape (else xla), xla otherwise.
ATTENTIONS = ("auto", "einsum", "xla", "cudnn")
# model.rng_impl: the PRNG behind dropout masks. threefry: JAX's default (counter-based, the same bits on every
# backend and sharding, but ~20 integer rounds per 64 random bits); rbg / unsafe_rbg: XLA's RngBitGenerator (one
# cheap op per mask; bits depend on the backend; unsafe_rbg also splits keys cheaply with lower-quality streams);
# auto: threefry on CPU (today's numbers), rbg elsewhere. TrainState.rng stays a threefry key whatever the choice.
RNG_IMPLS = ("auto", "threefry", "rbg", "unsafe_rbg")
T = TypeVar("T")
SMALL_TABLE = 16  # embedding tables with at most this many rows (token types) are read by selects, not a gather


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


def _dropout(x: jax.Array, rate: float, keep: jax.Array | None) -> jax.Array:
    """Inverted dropout with the bool mask `keep` (x's shape; True with probability `keep_probability(rate)`);
    identity when `keep` is None."""
    if keep is None:
        return x
    with jax.named_scope("dropout"):  # a name in the HLO metadata, for profiles (benchmarks/profile_step.py)
        return jnp.where(keep, x / keep_probability(rate), jnp.zeros_like(x))


MASK_BITS = 16  # random bits per mask element: rates are rounded to 1/65536 (0.1 -> 0.100006)
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def random_bits16(key: jax.Array, size: int) -> jax.Array:
    """`jax.random.bits(key, (size,), jnp.uint16)`, bit for bit; for a threefry key the hash is unrolled here.

    JAX lowers threefry2x32 on CPU as a while loop over its 5 groups of 4 rounds (to compile small), and every
    iteration writes the whole [size] state to memory. Unrolled (JAX's own lowering on GPU/TPU), XLA fuses the 20
    rounds into the kernels that read the masks: the ~1.2 * 10^8 masks of a MiniLM 64 x 64 training forward take
    ~4x less time on CPU (results/bench_dropout.json, recorded at a995eb2). The counters are the element indices
    (JAX's default, partitionable threefry); the bits are the low 16 of the two output words xor-ed. Other PRNG
    implementations (and `jax_threefry_partitionable=False`) go through `jax.random.bits`.
    key: a raw uint32 [2] threefry key or a typed key -> uint16 [size].
    """
    if str(jax.random.key_impl(key)) != "threefry2x32" or not jax.config.jax_threefry_partitionable:
        return jax.random.bits(key, (size,), jnp.uint16)
    if size >= 1 << 32:
        raise ValueError(f"{size} random words: threefry counters here are 32-bit")
    k1, k2 = jax.random.key_data(key)
    keys = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
    x0 = jnp.broadcast_to(k1, (size,))  # the high counter word is 0 below 2^32 elements
    x1 = jax.lax.iota(jnp.uint32, size) + k2
    for group in range(5):
        for rotation in _THREEFRY_ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << rotation) | (x1 >> (32 - rotation)))
        x0 = x0 + keys[(group + 1) % 3]
        x1 = x1 + keys[(group + 2) % 3] + jnp.uint32(group + 1)
    return (x0 ^ x1).astype(jnp.uint16)


def drop_threshold(rate: float) -> int:
    """The 16-bit draws below this are dropped: round(rate * 2^16), at most 2^16 - 1 (something is always kept)."""
    return min(round(rate * (1 << MASK_BITS)), (1 << MASK_BITS) - 1)


def keep_probability(rate: float) -> float:
    """The exact keep probability of a mask drawn for `rate` (dropout scales kept values by its inverse)."""
    return 1.0 - drop_threshold(rate) / (1 << MASK_BITS)


Site = tuple[tuple[int, ...], float]  # a dropout site: (mask shape, rate)


class DropoutSites:
    """Records the dropout sites of a forward pass, (shape, rate) in the order it takes them: the recording pass of
    `run_with_dropout`. `take` returns an all-True mask (abstract under `jax.eval_shape`), None at rate 0."""

    def __init__(self) -> None:
        self.sites: list[Site] = []

    def take(self, shape: tuple[int, ...], rate: float) -> jax.Array | None:
        if rate == 0.0:
            return None
        self.sites.append((tuple(shape), rate))
        return jnp.ones(shape, bool)

    def apply(self, x: jax.Array, rate: float) -> jax.Array:
        """Dropout of x (any shape) at `rate` with the next mask: the one way a forward pass takes a site."""
        return _dropout(x, rate, self.take(x.shape, rate))


class DropoutMasks(DropoutSites):
    """The keep-masks of one forward pass, cut in order from one draw of 16-bit random words (module docstring).

    `sites` lists (shape, rate) in the order the forward pass asks for them (`run_with_dropout` records them from
    the forward itself); `take(shape, rate)` returns the next bool mask (True with probability
    `keep_probability(rate)`), or None without a key or at rate 0 (no dropout there). A site is checked against the
    plan, so a forward that asks in another order, or for more sites, fails loudly instead of reusing bits.
    """

    def __init__(self, key: jax.Array | None, sites: list[Site]):
        super().__init__()
        self.sites = [(tuple(shape), rate) for shape, rate in sites if rate > 0.0] if key is not None else []
        sizes = [math.prod(shape) for shape, _ in self.sites]
        self.bits = random_bits16(key, sum(sizes)) if self.sites else None
        self.offsets = [0, *itertools.accumulate(sizes)]
        self.next = 0

    def take(self, shape: tuple[int, ...], rate: float) -> jax.Array | None:
        if self.bits is None or rate == 0.0:
            return None
        planned = self.sites[self.next] if self.next < len(self.sites) else "no more sites"
        if planned != (tuple(shape), rate):
            raise ValueError(f"dropout site {self.next}: planned {planned}, asked for {(tuple(shape), rate)}")
        start, stop = self.offsets[self.next], self.offsets[self.next + 1]
        self.next += 1
        return self.bits[start:stop].reshape(shape) >= drop_threshold(rate)

    def check_all_taken(self) -> None:
        """ValueError if the forward pass took fewer sites than planned."""
        if self.next != len(self.sites):
            raise ValueError(f"dropout: {len(self.sites)} sites planned, {self.next} taken")


def run_with_dropout(forward: Callable[[DropoutSites], T], key: jax.Array | None) -> T:
    """`forward(masks)` with every dropout mask cut from ONE draw of `key` (`DropoutMasks`); no dropout without a key.

    The sites are read from `forward` itself, so nothing else describes them: a shape-only pass (`jax.eval_shape`,
    nothing of it is compiled) records each `masks.take(shape, rate)` in order (`DropoutSites`), then the real pass
    takes the masks cut from one draw for exactly those sites. `forward` must take the same sites on both passes
    (a pure function of shapes and static settings; checked by `DropoutMasks`).
    """
    if key is None:
        return forward(DropoutMasks(None, []))
    recorder = DropoutSites()
    jax.eval_shape(lambda: forward(recorder))  # a fresh function each call: never a cached trace that records nothing
    masks = DropoutMasks(key, recorder.sites)
    out = forward(masks)
    masks.check_all_taken()
    return out


def resolve_attention(kind: str, dtype: Any, platform: str | None = None) -> str:
    """The implementation `kind` (one of ATTENTIONS) means for compute `dtype` on `platform` (default: JAX's
    default backend): "auto" -> "einsum" on CPU, "cudnn" on GPU with bfloat16/float16 compute, else "xla"."""
    if kind not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
    if kind != "auto":
        return kind
    platform = platform or jax.default_backend()
    if platform == "cpu":
        return "einsum"
    return "cudnn" if platform in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                          implementation: str) -> jax.Array:
    """softmax(q k^T / sqrt(D) over unmasked keys) v by `jax.nn.dot_product_attention` (softmax in float32).

    q, k, v [B, L, N, D] (compute dtype); key_mask [B, L] bool (True = attend) -> [B, L, N, D]. "xla" masks with
    `key_mask` as given; "cudnn" reads it as right padding (lengths = key_mask.sum(-1), at least 1: an all-padding
    row attends to its first position instead of uniformly, finite either way, and its output is never pooled).
    """
    if implementation == "cudnn":
        lengths = jnp.maximum(jnp.sum(key_mask, axis=-1, dtype=jnp.int32), 1)
        return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
    return jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :], implementation="xla")


def dense(layer: nnx.Linear, x: jax.Array) -> jax.Array:
    """`layer(x)` for x [..., in] as ONE 2-D matmul over the flattened leading axes ([N, in] @ [in, out]).

    Over a [B, L, in] input the weight gradient contracts two axes, and XLA:CPU transposes the activations into
    a copy to do it; over [B * L, in] it contracts one, which the GEMM reads in place. The reshapes are free
    (row-major bitcasts) and the sums are the same (results/bench_dense.json, recorded at 8bc76de: 1.12-1.21x).
    """
    return layer(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], layer.out_features)


def _lookup_small(table: jax.Array, ids: jax.Array) -> jax.Array:
    """table[ids] for a table of a few rows by selects: exact like a gather, and its gradient is a reduction per
    row instead of a scatter-add into one hot row (every token of a batch shares token type 0)."""
    out = jnp.broadcast_to(table[0], (*ids.shape, table.shape[-1]))
    for row in range(1, table.shape[0]):
        out = jnp.where((ids == row)[..., None], table[row], out)
    return out


class BertEmbeddings(nnx.Module):
    """word + position + token-type embeddings, then LayerNorm (and dropout).

    Rows are read from the parameter-dtype (float32) tables and summed there; the LayerNorm casts to the compute
    dtype. Positions are a slice of their table. With a compute dtype other than the tables', token types (a
    table of <= SMALL_TABLE rows) are read by selects, so no gradient is a scatter-add in a narrow dtype.
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        self.mixed = jnp.dtype(dtype) != jnp.dtype(param_dtype)
        kw = {"dtype": dtype, "param_dtype": param_dtype, "embedding_init": _INIT, "rngs": rngs}
        self.word_embeddings = nnx.Embed(config.vocab_size, config.hidden_size, **kw)
        self.position_embeddings = nnx.Embed(config.max_position_embeddings, config.hidden_size, **kw)
        self.token_type_embeddings = nnx.Embed(config.type_vocab_size, config.hidden_size, **kw)
        self.layer_norm = nnx.LayerNorm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        """[B, L] ids -> [B, L, H]."""
        types = self.token_type_embeddings.embedding[...]
        if self.mixed and types.shape[0] <= SMALL_TABLE:
            token_types = _lookup_small(types, token_type_ids)
        else:
            token_types = jnp.take(types, token_type_ids, axis=0)
        x = (
            jnp.take(self.word_embeddings.embedding[...], input_ids, axis=0)
            + self.position_embeddings.embedding[...][None, : input_ids.shape[1]]
            + token_types
        )
        return self.layer_norm(x)


class BertAttention(nnx.Module):
    """Multi-head self-attention + output projection + residual + LayerNorm (HF `BertAttention`)."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any, attention: str = "auto"):
        h = config.hidden_size
        kw = {"dtype": dtype, "param_dtype": param_dtype, "kernel_init": _INIT, "rngs": rngs}
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention_impl = attention  # one of ATTENTIONS, resolved when traced (`resolve_attention`)
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

    def __call__(self, x: jax.Array, key_mask: jax.Array, masks: DropoutSites) -> jax.Array:
        """x [B, L, H], key_mask [B, L] bool (True = attend) -> [B, L, H]; dropout masks from `masks`."""
        b, length, h = x.shape
        head_dim = h // self.num_heads

        def heads(t: jax.Array) -> jax.Array:
            return t.reshape(b, length, self.num_heads, head_dim)

        q, k, v = (heads(dense(layer, x)) for layer in (self.query, self.key, self.value))
        implementation = resolve_attention(self.attention_impl, q.dtype)
        if implementation == "einsum":
            scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
            scores = scores / jnp.sqrt(float(head_dim))
            # Like HF's extended attention mask: masked keys get the most negative float (softmax weight 0).
            scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
            probs = masks.apply(probs, self.attention_dropout)
            context = jnp.einsum("bnqk,bknd->bqnd", probs, v)
        elif implementation == "cudnn" and self.attention_impl == "auto":  # cuDNN where it takes the shape, else XLA
            try:
                context = dot_product_attention(q, k, v, key_mask, "cudnn")
            except (NotImplementedError, RuntimeError, ValueError) as error:
                # Python's warning registry shows each distinct message once (no module state of our own)
                warnings.warn(f"attention 'auto': cuDNN attention unavailable ({error}); using XLA's", RuntimeWarning,
                              stacklevel=2)
                context = dot_product_attention(q, k, v, key_mask, "xla")
        else:
            context = dot_product_attention(q, k, v, key_mask, implementation)
        context = context.reshape(b, length, h)
        out = dense(self.output, context)
        out = masks.apply(out, self.hidden_dropout)
        return self.layer_norm(out + x)


class BertLayer(nnx.Module):
    """One post-LN transformer block: attention, then GELU feed-forward + residual + LayerNorm."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs, dtype: Any, param_dtype: Any, attention: str = "auto"):
        h, i = config.hidden_size, config.intermediate_size
        kw = {"dtype": dtype, "param_dtype": param_dtype, "kernel_init": _INIT, "rngs": rngs}
        self.hidden_dropout = config.hidden_dropout
        self.attention = BertAttention(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, attention=attention)
        self.intermediate = nnx.Linear(h, i, **kw)
        self.output = nnx.Linear(i, h, **kw)
        self.layer_norm = nnx.LayerNorm(
            h, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, key_mask: jax.Array, masks: DropoutSites) -> jax.Array:
        """x [B, L, H] -> [B, L, H]."""
        x = self.attention(x, key_mask, masks)
        y = dense(self.output, jax.nn.gelu(dense(self.intermediate, x), approximate=False))
        y = masks.apply(y, self.hidden_dropout)
        return self.layer_norm(y + x)


class BertEncoder(nnx.Module):
    """BERT encoder without the pooler: ids -> last hidden state.

    `dtype` is the compute dtype (e.g. bfloat16 on GPU); parameters are stored in `param_dtype`. `attention`: one
    of ATTENTIONS (see there; "auto" keeps the einsum on CPU). `freeze_layers` = K > 0 freezes the embeddings and
    the lowest K blocks (`trunk`; model.freeze_layers): they run without dropout and pass no gradient.
    """

    def __init__(
        self,
        config: BertConfig,
        *,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        attention: str = "auto",
        freeze_layers: int = 0,
    ):
        if not 0 <= freeze_layers <= config.num_layers:
            raise ValueError(f"freeze_layers must be in [0, {config.num_layers}] (the layers), got {freeze_layers}")
        self.config = config
        self.hidden_dropout = config.hidden_dropout
        self.freeze_layers = freeze_layers  # static: the frozen trunk's blocks (see `trunk`); 0 = none
        self.embeddings = BertEmbeddings(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.layers = nnx.List(
            [BertLayer(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, attention=attention)
             for _ in range(config.num_layers)]
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

        Dropout (hidden and attention probabilities) is applied only when `dropout_rng` is given, and never in a
        frozen trunk: this is `encode_from_hidden(trunk(...))`, so a cached trunk gives the same numbers.
        """
        hidden = self.trunk(input_ids, attention_mask, token_type_ids)
        return self.encode_from_hidden(hidden, attention_mask, dropout_rng=dropout_rng)

    def trunk(self, input_ids: jax.Array, attention_mask: jax.Array,
              token_type_ids: jax.Array | None = None) -> jax.Array:
        """[B, L] ids and mask -> hidden [B, L, H] (compute dtype): the embeddings, then the lowest `freeze_layers`
        blocks, deterministic (no dropout) and behind a stop_gradient; with freeze_layers = 0 the embeddings alone.

        A frozen trunk's output is a pure function of the text: a run computes it once per text and caches it on
        the host (`HiddenStates`); `encode_from_hidden` runs the blocks above it.
        """
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        if not self.freeze_layers:
            return x
        key_mask, no_dropout = attention_mask.astype(bool), DropoutMasks(None, [])
        for layer in self.layers[: self.freeze_layers]:
            x = layer(x, key_mask, no_dropout)
        return jax.lax.stop_gradient(x)

    def encode_from_hidden(self, hidden: jax.Array, attention_mask: jax.Array, *,
                           dropout_rng: jax.Array | None = None) -> jax.Array:
        """hidden [B, L, H] from `trunk` (e.g. cached), attention_mask [B, L] -> last hidden state [B, L, H] float32.

        Runs the blocks above the frozen trunk (all of them, after the embeddings' dropout, when nothing is
        frozen), with dropout when `dropout_rng` is given. Padding positions of `hidden` never reach a real one.
        """
        key_mask = attention_mask.astype(bool)

        def forward(masks: DropoutSites) -> jax.Array:  # the one description of the dropout sites
            x = hidden if self.freeze_layers else masks.apply(hidden, self.hidden_dropout)
            for layer in self.layers[self.freeze_layers :]:
                x = layer(x, key_mask, masks)
            return x

        return run_with_dropout(forward, dropout_rng).astype(jnp.float32)


def is_frozen(path: tuple, freeze_layers: int) -> bool:
    """Whether the BertEncoder parameter at state `path` (keys, e.g. ("layers", 0, "output", "kernel")) belongs to
    the frozen trunk: the embeddings and the lowest `freeze_layers` blocks (nothing when freeze_layers = 0)."""
    keys = tuple(getattr(k, "key", getattr(k, "name", k)) for k in path)  # jax tree paths or nnx state paths
    return freeze_layers > 0 and (keys[0] == "embeddings" or (keys[0] == "layers" and int(keys[1]) < freeze_layers))


def split_frozen(state: nnx.State, freeze_layers: int) -> tuple[nnx.State, nnx.State]:
    """(frozen, trainable) parts of a BertEncoder state (`is_frozen`); `nnx.merge_state` puts them back."""
    return nnx.split_state(state, lambda path, _: is_frozen(path, freeze_layers), ...)


@dataclasses.dataclass(frozen=True)
class HiddenStates:
    """The frozen trunk's output for N texts (`BertEncoder.trunk`), on the host, read like `TokenizedTexts`.

    hidden: [M, L, H] in the compute dtype (in memory or memory-mapped), row i computed at its batch's bucket
    length, zeros beyond; lengths [N] real tokens per text; rows [N]: the row of `hidden` of each text (a
    `subset` is a view, nothing is copied). `take` gives (hidden, mask) where tokens give (ids, mask); batches
    carry them under `*_hidden` keys (`batch_key`) instead of `*_ids`.
    """

    hidden: np.ndarray
    lengths: np.ndarray
    rows: np.ndarray | None = None  # None: row i of `hidden` is text i
    pad_id: int = 0  # what padded batch rows hold
    batch_key: ClassVar[str] = "hidden"

    @property
    def max_length(self) -> int:
        return int(self.hidden.shape[1])

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, rows: np.ndarray) -> HiddenStates:
        """The texts at `rows` ([R]), as a view."""
        rows = np.asarray(rows)
        index = rows if self.rows is None else self.rows[rows]
        return dataclasses.replace(self, lengths=self.lengths[rows], rows=index)

    def take(self, rows: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(hidden [R, length, H], mask [R, length] int32) for `rows`, cut to `length` positions."""
        length = self.max_length if length is None else int(length)
        if not 0 < length <= self.max_length:
            raise ValueError(f"length must be in [1, {self.max_length}], got {length}")
        rows = np.asarray(rows)
        index = rows if self.rows is None else self.rows[rows]
        mask = (np.arange(length)[None, :] < self.lengths[rows][:, None]).astype(np.int32)
        return np.asarray(self.hidden[index, :length]), mask


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


def embed_hidden(model: BertEncoder, hidden: jax.Array, attention_mask: jax.Array, spec: PoolingSpec, *,
                 dropout_rng: jax.Array | None = None) -> jax.Array:
    """`embed` from the frozen trunk's hidden states [B, L, H] (`BertEncoder.trunk`) -> [B, H] float32."""
    return pool(model.encode_from_hidden(hidden, attention_mask, dropout_rng=dropout_rng), attention_mask, spec)


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
        attention: str = "auto",
    ):
        self.config = config
        self.hidden_dropout = config.hidden_dropout
        if encoder is None:
            encoder = BertEncoder(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, attention=attention)
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
        encoder_rng, head_rng = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, dropout_rng=encoder_rng)
        pooled = jnp.tanh(self.pooler(hidden[:, 0]))
        pooled = run_with_dropout(lambda masks: masks.apply(pooled, self.hidden_dropout), head_rng)
        return self.classifier(pooled)[:, 0].astype(jnp.float32)
