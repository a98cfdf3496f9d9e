"""Hugging Face BERT weights <-> NNX `BertEncoder` params (safetensors), and sentence-transformers export.

HF names map one-to-one onto the NNX tree (`_param_table`, plus `_head_groups` for a `CrossEncoder`:
`bert.pooler.dense`, `classifier`); `nn.Linear.weight` [out, in] is stored
transposed as `kernel` [in, out], LayerNorm `weight`/`bias` are `scale`/`bias`, embeddings
`weight` is `embedding`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from hnm_jax.models.encoder import BertConfig, BertEncoder, CrossEncoder, PoolingSpec

# Checkpoint keys that are not part of BertModel's encoder: pooler, pre-training / task heads, buffers.
_IGNORED_PREFIXES = ("pooler.", "cls.", "classifier.", "qa_outputs.")
_ST_PREFIX = "sentence_transformers.models."


def _param_table(model: BertEncoder) -> list[tuple[str, nnx.Variable, bool]]:
    """[(HF key without 'bert.', NNX variable, is a Linear kernel to transpose)] for every param."""
    table: list[tuple[str, nnx.Variable, bool]] = []

    def linear(name: str, layer: nnx.Linear) -> None:
        table.extend([(f"{name}.weight", layer.kernel, True), (f"{name}.bias", layer.bias, False)])

    def norm(name: str, layer: nnx.LayerNorm) -> None:
        table.extend([(f"{name}.weight", layer.scale, False), (f"{name}.bias", layer.bias, False)])

    emb = model.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table.append((f"embeddings.{name}.weight", getattr(emb, name).embedding, False))
    norm("embeddings.LayerNorm", emb.layer_norm)
    for i, layer in enumerate(model.layers):
        prefix = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            linear(f"{prefix}.attention.self.{name}", getattr(layer.attention, name))
        linear(f"{prefix}.attention.output.dense", layer.attention.output)
        norm(f"{prefix}.attention.output.LayerNorm", layer.attention.layer_norm)
        linear(f"{prefix}.intermediate.dense", layer.intermediate)
        linear(f"{prefix}.output.dense", layer.output)
        norm(f"{prefix}.output.LayerNorm", layer.layer_norm)
    return table


def _normalize_key(key: str) -> str | None:
    """The encoder key a checkpoint key stands for: 'bert.' stripped, old LayerNorm 'gamma'/'beta' renamed; None for
    the pooler, heads and position_ids (not part of BertModel's encoder)."""
    key = key.removeprefix("bert.")
    if key.startswith(_IGNORED_PREFIXES) or key.endswith("position_ids"):
        return None
    return key.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias")


def _normalize_keys(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{_normalize_key(key): tensor} without the keys that stand for no encoder param."""
    return {name: value for key, value in tensors.items() if (name := _normalize_key(key)) is not None}


def carried_tensors(model: BertEncoder, tensors: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    """What an export must write back beside `model`'s params to have every tensor of the checkpoint `tensors`:
    (the key prefix of its encoder params, 'bert.' or '', and the tensors no param stands for, under their own
    names: the pooler, position_ids, task heads), unchanged."""
    params = {key for key, _, _ in _param_table(model)}
    carried = {key: value for key, value in tensors.items() if _normalize_key(key) not in params}
    prefixed = any(key.startswith("bert.") and _normalize_key(key) in params for key in tensors)
    return ("bert." if prefixed else ""), carried


def _head_groups(model: CrossEncoder) -> list[list[tuple[str, nnx.Variable, bool]]]:
    """The cross-encoder head as HF keys (without 'bert.'), one group per Linear: pooler, classifier."""
    return [
        [("pooler.dense.weight", model.pooler.kernel, True), ("pooler.dense.bias", model.pooler.bias, False)],
        [("classifier.weight", model.classifier.kernel, True), ("classifier.bias", model.classifier.bias, False)],
    ]


def load_hf_weights(model: BertEncoder | CrossEncoder, safetensors_path: Path,
                    tensors: dict[str, np.ndarray] | None = None) -> list[str]:
    """Fills `model`'s params in place from a HF BERT safetensors file ('bert.'-prefixed or not).

    A `BertEncoder`: every param is overwritten (pooler and task heads in the file are ignored), so `model`
    may be abstract (from `nnx.eval_shape`). A `CrossEncoder`: its `encoder` likewise; its head takes
    `pooler.dense.*` and `classifier.*` (num_labels must be 1) from the file when present and otherwise keeps
    its initialisation, so a bi-encoder (`BertModel`) checkpoint gives a cross-encoder with a fresh head.
    Raises ValueError listing every missing, shape-mismatched and unexpected key (and then changes nothing).

    Returns the head keys left at their initialisation (always [] for a BertEncoder). `tensors`: the file's
    tensors when already read (`safetensors_path` then only names it in errors).
    """
    raw = safetensors.numpy.load_file(str(safetensors_path)) if tensors is None else tensors
    encoder, groups = (model.encoder, _head_groups(model)) if isinstance(model, CrossEncoder) else (model, [])
    tensors = _normalize_keys(raw)
    head_tensors = {key.removeprefix("bert."): value for key, value in raw.items()}
    table = _param_table(encoder)
    missing, mismatched, updates, fresh = [], [], [], []

    def check(key: str, var: nnx.Variable, transpose: bool, source: dict[str, np.ndarray]) -> None:
        value = source[key].T if transpose else source[key]
        expected = tuple(var.get_value().shape)
        if tuple(value.shape) != expected:
            mismatched.append(f"{key}: file {tuple(source[key].shape)}, model expects {expected}")
        else:
            updates.append((var, value))

    for key, var, transpose in table:
        if key not in tensors:
            missing.append(key)
            continue
        check(key, var, transpose, tensors)
    for group in groups:
        present = [key for key, _, _ in group if key in head_tensors]
        if not present:  # optional: keep the initialisation (which an abstract model does not have)
            abstract = [key for key, var, _ in group if isinstance(var.get_value(), jax.ShapeDtypeStruct)]
            missing += abstract
            fresh += [key for key, _, _ in group if key not in abstract]
            continue
        for key, var, transpose in group:
            if key in head_tensors:
                check(key, var, transpose, head_tensors)
            else:
                missing.append(key)
    unexpected = sorted(set(tensors) - {key for key, _, _ in table})
    if missing or mismatched or unexpected:
        kind = type(model).__name__
        lines = [f"{safetensors_path}: weights do not match the {kind} built from config.json"]
        lines += [f"  missing: {key}" for key in missing]
        lines += [f"  shape mismatch: {item}" for item in mismatched]
        lines += [f"  unexpected: {key}" for key in unexpected]
        raise ValueError("\n".join(lines))
    for var, value in updates:
        var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))
    return fresh


def hf_state_dict(model: BertEncoder, prefix: str = "") -> dict[str, np.ndarray]:
    """HF `BertModel` state dict (keys with `prefix`, Linear weights [out, in]) as float32 numpy."""
    out = {}
    for key, var, transpose in _param_table(model):
        value = np.asarray(var.get_value(), dtype=np.float32)
        out[prefix + key] = np.ascontiguousarray(value.T if transpose else value)
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def export_hf(
    model: BertEncoder,
    config: BertConfig,
    pooling: PoolingSpec,
    tokenizer: Any,
    out_dir: Path,
    max_seq_length: int,
    carried: tuple[str, dict[str, np.ndarray]] = ("", {}),
) -> None:
    """Writes a sentence-transformers folder loadable by `load_encoder`, `SentenceTransformer` and HF.

    Files: config.json (BertModel), model.safetensors, tokenizer files, modules.json
    (Transformer, Pooling, + Normalize when `pooling.normalize`), 1_Pooling/config.json,
    sentence_bert_config.json. `carried` (`carried_tensors` of the source checkpoint): the params' key prefix and
    the source's other tensors, written unchanged, so the file has every tensor the source had (no MISSING pooler).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "config.json", config.to_hf())
    prefix, extra = carried
    tensors = hf_state_dict(model, prefix)
    tensors.update({key: np.ascontiguousarray(value) for key, value in extra.items()})
    safetensors.numpy.save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out_dir))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": _ST_PREFIX + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_PREFIX + "Pooling"},
    ]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": _ST_PREFIX + "Normalize"})
    _write_json(out_dir / "modules.json", modules)
    _write_json(
        out_dir / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": config.hidden_size,
            "pooling_mode_cls_token": pooling.mode == "cls",
            "pooling_mode_mean_tokens": pooling.mode == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
        },
    )
    _write_json(out_dir / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})


def hf_cross_encoder_state_dict(model: CrossEncoder) -> dict[str, np.ndarray]:
    """HF `BertForSequenceClassification` state dict: 'bert.'-prefixed encoder and pooler, then `classifier.*`."""
    out = {f"bert.{key}": value for key, value in hf_state_dict(model.encoder).items()}
    for group in _head_groups(model):
        for key, var, transpose in group:
            value = np.asarray(var.get_value(), dtype=np.float32)
            name = key if key.startswith("classifier.") else f"bert.{key}"
            out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def export_hf_cross_encoder(model: CrossEncoder, config: BertConfig, tokenizer: Any, out_dir: Path) -> None:
    """Writes a HF `BertForSequenceClassification` folder (num_labels 1) loadable by `load_cross_encoder`,
    `transformers` and sentence-transformers' `CrossEncoder`: config.json, model.safetensors, tokenizer files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_config = {**config.to_hf(), "architectures": ["BertForSequenceClassification"], "num_labels": 1,
                 "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    _write_json(out_dir / "config.json", hf_config)
    safetensors.numpy.save_file(hf_cross_encoder_state_dict(model), str(out_dir / "model.safetensors"),
                                metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out_dir))
