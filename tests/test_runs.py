"""training/runs.py's `load_run`: the one "workdir, or model + config" -> spec, data, encoder, cross-encoder resolution
of `hnm eval` and `hnm mine`, and its policy (the zero-shot width, which cross-encoder re-ranks and how deep), on a
tiny workdir with a hand-made checkpoint (no training)."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from hnm_jax.config import ConfigError, spec_from_config
from hnm_jax.data.beir import DataError
from hnm_jax.models.loading import build_cross_encoder, build_encoder
from hnm_jax.training import runs
from hnm_jax.training.checkpointing import Checkpointer
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.runs import (
    DEFAULT_RERANK_DEPTH,
    ZERO_SHOT_MAX_LENGTH,
    EvalFlags,
    MiningFlags,
    load_run,
    load_trained_cross_encoder,
    rerank_choice,
    workdir_ce_path,
)
from hnm_jax.training.step import create_train_state


def make_dirs(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
    return root


# --- the pure choices -------------------------------------------------------------------------------------------


def test_workdir_ce_path_prefers_ce_then_fold0_then_names_ce(tmp_path):
    neither = make_dirs(tmp_path / "neither", "ce")
    assert workdir_ce_path(neither, "model") == neither / "ce" / "model"  # the path a load then reports missing
    fold0 = make_dirs(tmp_path / "fold0", "ce/fold0/model", "ce/fold1/model")
    assert workdir_ce_path(fold0, "model") == fold0 / "ce" / "fold0" / "model"
    both = make_dirs(tmp_path / "both", "ce/model", "ce/fold0/model")
    assert workdir_ce_path(both, "model") == both / "ce" / "model"
    assert workdir_ce_path(both, "checkpoints") == both / "ce" / "checkpoints"  # one name at a time


def test_rerank_choice_of_an_explicit_folder():
    assert rerank_choice("", 0, None, "/ce", None) == ("/ce", DEFAULT_RERANK_DEPTH) == ("/ce", 10)
    assert rerank_choice("", 0, None, "/ce", 4) == ("/ce", 4)
    assert rerank_choice("", 7, None, "/ce", None) == ("/ce", 7)  # the config's depth
    assert rerank_choice("", 7, None, "/ce", 0) == ("/ce", 10)  # a folder with depth 0 still re-ranks
    assert rerank_choice("/config_ce", 3, "/run", "/ce", None) == ("/ce", 3)  # the flag beats ce.model


def test_rerank_choice_of_a_workdir(tmp_path):
    run = make_dirs(tmp_path / "run", "ce/model")
    assert rerank_choice("", 3, run, None, None) == (str(run / "ce" / "model"), 3)
    assert rerank_choice("", 0, run, None, 5) == (str(run / "ce" / "model"), 5)  # --rerank-depth turns it on
    assert rerank_choice("", 3, run, None, 0) is None  # ... and off
    assert rerank_choice("", 0, run, None, None) is None  # ce.rerank_depth 0: no re-ranking
    assert rerank_choice("/trained_ce", 2, run, None, None) == ("/trained_ce", 2)  # ce.model: the run's CE
    crossfit = make_dirs(tmp_path / "crossfit", "ce/fold0/model", "ce/fold1/model")
    assert rerank_choice("", 2, crossfit, None, None) == (str(crossfit / "ce" / "fold0" / "model"), 2)


def test_rerank_choice_without_workdir_or_folder_is_none():
    assert rerank_choice("", 5, None, None, None) is None
    assert rerank_choice("/ce", 5, None, None, 3) is None  # a model run re-ranks only with a given folder


# --- load_run on a tiny workdir ---------------------------------------------------------------------------------

SHIFT = 0.5  # the checkpoint's word embeddings are the random init's + SHIFT: a loaded checkpoint is recognisable


@pytest.fixture(scope="module")
def tiny_run(tiny_beir, tmp_path_factory) -> Path:
    """A workdir (config.json: base.py's tiny variant on the tiny BEIR set) with one checkpoint."""
    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    workdir.mkdir()
    config = tiny_config(tiny_beir)
    (workdir / "config.json").write_text(config.to_json())
    spec = spec_from_config(config)
    encoder = build_encoder(spec.model, spec.seed)
    params = jax.tree.map(lambda x: x, encoder.state)
    embedding = params["embeddings"]["word_embeddings"]["embedding"]
    embedding.set_value(embedding.get_value() + SHIFT)
    state = create_train_state(encoder.graphdef, params, make_optimizer(spec.train, 1), spec.seed)
    checkpointer = Checkpointer(workdir / "checkpoints", keep=1)
    checkpointer.save(state.replace(step=jnp.int32(1)), position={"step": 1})
    checkpointer.close()
    return workdir


def word_embeddings(model, *path: str) -> np.ndarray:
    """The word-embedding table of an encoder (of a cross-encoder: path "encoder")."""
    state = model.state
    for key in path:
        state = state[key]
    return np.asarray(state["embeddings"]["word_embeddings"]["embedding"].get_value())


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the tiny workdir whose config.json keys a test may set: run_copy(ce__rerank_depth=3)."""

    def make(**keys) -> Path:
        workdir = tmp_path / "run"
        shutil.copytree(tiny_run, workdir)
        config = json.loads((workdir / "config.json").read_text())
        for dotted, value in keys.items():
            section, key = dotted.split("__")
            config[section][key] = value
        (workdir / "config.json").write_text(json.dumps(config))
        return workdir

    return make


MINES = {"mining__pool": "online", "mining__strategy": "band"}  # a run that trains a CE (ce.rerank_depth > 0) mines


def export_ce(workdir: Path, folder: Path) -> Path:
    spec = spec_from_config(json.loads((workdir / "config.json").read_text()))
    build_cross_encoder(spec.model, spec.ce.source, spec.seed).export(folder)
    return folder


def test_load_run_of_a_workdir_evaluates_its_checkpoint_with_its_keys(run_copy, tiny_beir):
    workdir = run_copy(eval__batch_size=8)
    run = load_run(workdir=workdir, split="test", evaluation=EvalFlags())
    spec = spec_from_config(json.loads((workdir / "config.json").read_text()))
    random = build_encoder(spec.model, spec.seed)
    np.testing.assert_allclose(word_embeddings(run.encoder), word_embeddings(random) + SHIFT, rtol=0, atol=1e-6)
    assert run.spec == spec  # no flag, no cross-encoder: the run's own keys, eval.max_length (16) included
    assert (run.label, run.workdir, run.cache_dir) == ("run (test)", workdir, workdir / "cache")
    assert run.data.root == tiny_beir and run.data.split.name == "test" and run.cross_encoder is None
    flags = EvalFlags(max_length=24, batch_size=4, search="ann", retriever="hybrid")
    spec = load_run(workdir=workdir, split="test", evaluation=flags).spec
    assert (spec.eval.max_length, spec.eval.batch_size, spec.eval.search) == (24, 4, "ann")
    assert spec.retriever.mode == "hybrid"
    with pytest.raises(ConfigError, match="eval.search"):
        load_run(workdir=workdir, split="test", evaluation=EvalFlags(search="fuzzy"))


def test_load_run_re_ranks_with_the_workdirs_cross_encoder(run_copy):
    workdir = run_copy(ce__rerank_depth=3, **MINES)
    export_ce(workdir, workdir / "ce" / CE_FOLD0 / "model")  # cross-fitted: only fold 0 and 1 have a CE
    export_ce(workdir, workdir / "ce" / "fold1" / "model")
    run = load_run(workdir=workdir, split="test", evaluation=EvalFlags())
    fold0 = str(workdir / "ce" / CE_FOLD0 / "model")
    assert run.cross_encoder.source == fold0
    assert (run.spec.ce.source.model, run.spec.ce.rerank.rerank_depth) == (fold0, 3)
    assert run.cross_encoder.max_length == run.spec.ce.source.max_length == 32  # the tiny config's ce.max_length
    export_ce(workdir, workdir / "ce" / "model")  # the run's own CE beats fold 0
    run = load_run(workdir=workdir, split="test", evaluation=EvalFlags(rerank_depth=5))
    assert run.cross_encoder.source == str(workdir / "ce" / "model") and run.spec.ce.rerank.rerank_depth == 5
    run = load_run(workdir=workdir, split="test", evaluation=EvalFlags(rerank_depth=0))  # turned off
    assert run.cross_encoder is None and run.spec.ce.rerank.rerank_depth == 3 and run.spec.ce.source.model == ""


def test_load_run_re_ranks_with_a_given_cross_encoder_at_the_default_depth(run_copy, tmp_path):
    workdir = run_copy()  # ce.rerank_depth 0
    export_ce(workdir, workdir / "ce" / "model")
    given = str(export_ce(workdir, tmp_path / "other_ce"))
    run = load_run(workdir=workdir, split="test", cross_encoder=given, evaluation=EvalFlags())
    assert run.cross_encoder.source == given
    assert (run.spec.ce.source.model, run.spec.ce.rerank.rerank_depth) == (given, 10)
    assert load_run(workdir=workdir, split="test", evaluation=EvalFlags()).cross_encoder is None


def test_load_run_to_mine_takes_no_cross_encoder_of_the_workdir(run_copy, tmp_path):
    workdir = run_copy(ce__rerank_depth=3, mining__pool_size=7, **MINES)
    export_ce(workdir, workdir / "ce" / "model")
    run = load_run(workdir=workdir, mining=MiningFlags(num_negatives=2))
    assert run.cross_encoder is None and run.spec.ce.source.model == "" and run.spec.ce.rerank.rerank_depth == 3
    assert run.data.split.name == "train" and run.label == "run (train)"  # data.train_split
    assert (run.spec.mining.strategy, run.spec.mining.num_negatives, run.spec.mining.pool) == ("band", 2, "offline")
    assert run.spec.mining.pool_size == 7 and run.spec.eval.max_length == 16  # the config's, never the zero-shot's
    given = str(export_ce(workdir, tmp_path / "judge"))
    run = load_run(workdir=workdir, split="test", cross_encoder=given, mining=MiningFlags())
    assert run.cross_encoder.source == given and run.spec.ce.source.model == ""  # the judge leaves ce.* alone


def test_load_run_of_a_model_evaluates_zero_shot(tiny_beir, tmp_path):
    config = tiny_config(tiny_beir)
    spec = spec_from_config(config)
    folder = tmp_path / "tiny_model"
    build_encoder(spec.model, seed=3).export(folder)  # a model folder, not the config's random init
    before = config.to_json()
    run = load_run(model=str(folder), config=config, split="test", evaluation=EvalFlags())
    assert config.to_json() == before  # the caller's config is not changed
    assert run.spec.model.name == str(folder) and run.spec.eval.max_length == ZERO_SHOT_MAX_LENGTH == 128
    expected = word_embeddings(build_encoder(run.spec.model, run.spec.seed))
    np.testing.assert_array_equal(word_embeddings(run.encoder), expected)
    assert not np.allclose(word_embeddings(run.encoder), word_embeddings(build_encoder(spec.model, spec.seed)))
    assert (run.label, run.workdir, run.cache_dir, run.cross_encoder) == (f"{folder} (test)", None, None, None)
    run = load_run(model=str(folder), config=config, split="test", evaluation=EvalFlags(max_length=32, rerank_depth=5))
    assert run.spec.eval.max_length == 32 and run.cross_encoder is None  # no workdir, no folder: no re-ranking
    assert run.spec.ce.rerank.rerank_depth == 0
    mined = load_run(model=str(folder), config=config, mining=MiningFlags())
    assert mined.spec.eval.max_length == 16 and mined.label == f"{folder} (train)"  # not evaluating: the config's


def test_load_run_of_a_config_file_and_its_arg(tiny_beir):
    from conftest import REPO

    run = load_run(config=f"{REPO / 'configs/base.py'}:tiny", data=str(tiny_beir), mining=MiningFlags())
    assert run.spec.model.name == "tiny" and run.label == "tiny (train)" and run.data.root == tiny_beir


def test_load_run_fails_on_bad_data_before_any_model(run_copy, tiny_beir, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was read")

    monkeypatch.setattr(runs, "build_encoder", no_model)
    monkeypatch.setattr(runs, "load_trained", no_model)
    with pytest.raises(ConfigError, match="--data: .*missing: no such folder"):
        load_run(workdir=run_copy(), data=str(tmp_path / "missing"), split="test", evaluation=EvalFlags())
    with pytest.raises(DataError, match="no split 'nosuch'"):
        load_run(config=tiny_config(tiny_beir), split="nosuch", mining=MiningFlags())


def test_load_run_wants_a_workdir_or_a_config(tiny_run, tiny_beir):
    with pytest.raises(ValueError, match="not both"):
        load_run(workdir=tiny_run, config=tiny_config(tiny_beir))
    with pytest.raises(ValueError, match="not both"):
        load_run(model="all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="drop model"):
        load_run(workdir=tiny_run, model="all-MiniLM-L6-v2")


def test_export_of_a_cross_fitted_run_takes_the_fold0_checkpoints(run_copy):
    workdir = run_copy()
    spec = spec_from_config(json.loads((workdir / "config.json").read_text()))
    model = build_cross_encoder(spec.model, spec.ce.source, spec.seed)
    state = create_train_state(model.graphdef, model.state, make_optimizer(spec.train, 1), spec.seed)
    for fold, shift in ((CE_FOLD0, 1.0), ("fold1", 2.0)):
        params = jax.tree.map(lambda x, s=shift: x + s if jnp.issubdtype(x.dtype, jnp.floating) else x, model.state)
        checkpointer = Checkpointer(workdir / "ce" / fold / "checkpoints", keep=1)
        checkpointer.save(state.replace(params=params, step=jnp.int32(1)), position={"step": 1})
        checkpointer.close()
    loaded = load_trained_cross_encoder(workdir)
    expected = word_embeddings(model, "encoder") + 1.0
    np.testing.assert_allclose(word_embeddings(loaded, "encoder"), expected, rtol=0, atol=1e-6)


CE_FOLD0 = runs.CE_FOLD_DIR.format(0)
