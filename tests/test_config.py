"""Config validation: every config file validates; bad keys, types and values fail naming the key."""

import dataclasses
from pathlib import Path

import pytest

from hnm_jax.config import CE_PARTS, ConfigError, load_config_file, spec_from_config
from hnm_jax.main import main

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_every_config_validates(config_file):
    for arg in ("", "tiny"):
        spec = spec_from_config(load_config_file(f"{REPO / config_file}:{arg}" if arg else str(REPO / config_file)))
        assert spec.train.batch_size >= 2


def test_every_config_docstring_starts_with_its_command():
    for config_file in CONFIG_FILES:
        if config_file.endswith("base.py"):
            continue
        text = (REPO / config_file).read_text()
        assert f"--config {config_file}" in text.split('"""')[1], config_file


def base_dict():
    return load_config_file(str(REPO / "configs/base.py")).to_dict()


def test_unknown_key_suggests_closest():
    config = base_dict()
    config["loss"]["temperatur"] = 0.1
    with pytest.raises(ConfigError, match=r"loss\.temperatur: unknown key; did you mean loss\.temperature\?"):
        spec_from_config(config)


def test_wrong_type_names_key():
    config = base_dict()
    config["train"]["batch_size"] = "32"
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int, got str"):
        spec_from_config(config)


@pytest.mark.parametrize("section,key,value,message", [
    ("loss", "temperature", 0.0, r"loss\.temperature: must be in"),
    ("loss", "temperature", -1.0, r"loss\.temperature"),
    ("train", "batch_size", 1, r"train\.batch_size: must be >= 2"),
    ("train", "learning_rate", 5.0, r"train\.learning_rate"),
    ("mining", "strategy", "hardest_ever", r"mining\.strategy: unknown 'hardest_ever'; valid: .*random"),
    ("model", "dtype", "float16", r"model\.dtype"),
    ("model", "attention", "flash", r"model\.attention: unknown 'flash'; valid: auto, einsum, xla, cudnn"),
    ("model", "rng_impl", "philox", r"model\.rng_impl: unknown 'philox'; valid: auto, threefry, rbg"),
    ("data", "doc_max_length", 1024, r"data\.doc_max_length"),
    ("mining", "retriever", "bm25", r"mining\.retriever: unknown 'bm25'; valid: '' \(= retriever\.mode\), dense, "
                                    r"lexical, hybrid$"),
    ("mining", "retriever", "dense", r"mining\.retriever: strategy 'random' mines no pool"),  # base: no pool
    ("model", "normalize", "no", r"model\.normalize: expected bool, got str"),
    ("ce", "gate_min_precision", 1.5, r"ce\.gate_min_precision: must be in \[0, 1\] \(0: no gate\), got 1\.5"),
    ("mining", "oracle_filter", True, r"mining\.oracle_filter: strategy 'random' mines no pool"),  # base: no pool
    ("retriever", "lexical_tokens", "chars", r"retriever\.lexical_tokens=?:? ?'?chars'? is unknown"),
])
def test_impossible_values(section, key, value, message):
    config = base_dict()
    config[section][key] = value
    with pytest.raises(ConfigError, match=message):
        spec_from_config(config)


def test_cli_rejects_bad_override_type(tmp_path, capsys):
    code = main(["train", "--config", str(REPO / "configs/base.py:tiny"), "--config.loss.temperature=abc",
                 "--workdir", str(tmp_path)])
    assert code == 2
    assert "temperature" in capsys.readouterr().err


def test_cli_rejects_unknown_override(tmp_path, capsys):
    code = main(["train", "--config", str(REPO / "configs/base.py:tiny"), "--config.loss.tempreature=0.1",
                 "--workdir", str(tmp_path)])
    assert code == 2
    assert "tempreature" in capsys.readouterr().err


def test_mining_retriever_defaults_to_the_deployed_one():
    config = base_dict()
    config["mining"].update(strategy="band", pool="online")
    config["retriever"].update(mode="hybrid", lexical_weight=0.5)
    spec = spec_from_config(config)
    assert spec.mining.retriever == "" and spec.mining_retriever == spec.retriever  # "": retriever.mode
    config["mining"]["retriever"] = "dense"
    spec = spec_from_config(config)
    assert spec.retriever.mode == "hybrid"  # evaluation still deploys hybrid
    assert spec.mining_retriever.mode == "dense" and spec.mining_retriever.lexical_weight == 0.5


def test_normalize_off_refuses_the_uniformity_regularizer():
    config = base_dict()
    config["model"]["normalize"] = False
    assert not spec_from_config(config).model.normalize
    config["loss"]["uniformity_weight"] = 0.1
    with pytest.raises(ConfigError, match=r"^loss\.uniformity_weight: .*model\.normalize"):
        spec_from_config(config)


def test_configs_saved_before_the_new_keys_still_load():
    """A workdir's config.json from before model.normalize and mining.retriever reads as it meant."""
    config = base_dict()
    del config["model"]["normalize"], config["mining"]["retriever"]
    spec = spec_from_config(config)
    assert spec.model.normalize is True and spec.mining.retriever == "" and spec.mining_retriever.mode == "dense"


def test_configs_saved_with_the_reranking_check_read_as_the_precision_gate():
    """ce.require_better (the dev re-ranking check, replaced by the gate) maps to ce.gate_min_precision: on -> the
    default 0.5, off -> 0 (no gate); configs from before the gate, the oracle and eval.duplicates_relevant keep the
    behaviour they had (no gate, no oracle, duplicates not counted)."""
    for require_better, gate in ((True, 0.5), (False, 0.0)):
        config = base_dict()
        del config["ce"]["gate_min_precision"]
        config["ce"]["require_better"] = require_better
        assert spec_from_config(config).ce.mining.gate_min_precision == gate
    config = base_dict()
    del config["ce"]["gate_min_precision"], config["mining"]["oracle_filter"], config["eval"]["duplicates_relevant"]
    spec = spec_from_config(config)
    assert spec.ce.mining.gate_min_precision == 0.0 and not spec.mining.oracle_filter
    assert not spec.eval.duplicates_relevant
    default = spec_from_config(base_dict())
    assert default.ce.mining.gate_min_precision == 0.5 and default.eval.duplicates_relevant
    assert not default.mining.oracle_filter


def test_band_refill_and_the_in_step_band_exclude_each_other():
    config = load_config_file(str(REPO / "configs/ablations/online_band.py")).to_dict()
    spec = spec_from_config(config)
    assert spec.mining.band_refill and not spec.mining.band_in_step  # every band arm: N negatives, all trained on
    config["mining"]["band_in_step"] = True
    with pytest.raises(ConfigError, match=r"^mining\.band_in_step: .*mining\.band_refill"):
        spec_from_config(config)
    config["mining"]["band_refill"] = False  # the band as a filter, in the step too: the old arm
    assert spec_from_config(config).mining.band_in_step


def test_hybrid_logits_need_a_pool_and_the_weighted_fusion():
    config = load_config_file(str(REPO / "configs/ablations/online_band_hybrid_logits.py")).to_dict()
    assert spec_from_config(config).loss.hybrid_logits
    for section, key, value in (("retriever", "fusion", "rrf"), ("retriever", "dense_weight", 0.0)):
        bad = {name: dict(values) if isinstance(values, dict) else values for name, values in config.items()}
        bad[section][key] = value
        with pytest.raises(ConfigError, match=r"^loss\.hybrid_logits: .*weighted"):
            spec_from_config(bad)
    base = base_dict()
    base["loss"]["hybrid_logits"] = True  # base: random negatives, no pool
    with pytest.raises(ConfigError, match=r"^loss\.hybrid_logits: .*mining\.pool"):
        spec_from_config(base)


def test_configs_saved_before_refill_and_deployed_hybrid_logits_load():
    """mining.band_refill absent: the band was a filter; loss.hybrid_beta > 0 now trains on the deployed fusion."""
    config = load_config_file(str(REPO / "configs/ablations/online_band_hybrid_logits.py")).to_dict()
    del config["mining"]["band_refill"], config["loss"]["hybrid_logits"]
    config["mining"]["band_in_step"] = True
    config["loss"]["hybrid_beta"] = 0.1
    spec = spec_from_config(config)
    assert not spec.mining.band_refill and spec.mining.band_in_step and spec.loss.hybrid_logits
    config["loss"]["hybrid_beta"] = 0.0
    assert not spec_from_config(config).loss.hybrid_logits


def test_ce_keys_stay_flat_and_each_lands_in_the_one_part_that_owns_it():
    """configs/base.py's ce.* keys are the fields of CESpec's parts, each in exactly one; replace() routes them."""
    fields = [f.name for part in CE_PARTS.values() for f in dataclasses.fields(part)]
    assert sorted(fields) == sorted(base_dict()["ce"]) and len(set(fields)) == len(fields)
    spec = spec_from_config(base_dict())
    for attribute, part in CE_PARTS.items():
        assert isinstance(getattr(spec.ce, attribute), part)
        for f in dataclasses.fields(part):
            assert getattr(getattr(spec.ce, attribute), f.name) == base_dict()["ce"][f.name]
    changed = spec.ce.replace(model="x", loss="binary", rerank_depth=3, threshold=0.5)
    assert (changed.source.model, changed.train.loss, changed.rerank.rerank_depth) == ("x", "binary", 3)
    assert changed.mining.rules.threshold == 0.5 and changed.mining.filter == spec.ce.mining.filter
    with pytest.raises(TypeError, match="ce.bogus"):
        spec.ce.replace(bogus=1)
