"""Batches, the sharded train step, the train loop (smoke, resume after SIGKILL), the CLI around it."""

import functools
import json
import shutil

import jax
import numpy as np
import pytest
from conftest import REPO, make_tiny_batch, params_of, tiny_config

from hnm_jax import sharding
from hnm_jax.config import ModelSpec, spec_from_config
from hnm_jax.data import batches
from hnm_jax.data.tokenize import bucket_length
from hnm_jax.mining.negatives import Candidates, SelectSpec, random_negatives
from hnm_jax.models.loading import build_encoder
from hnm_jax.training import train
from hnm_jax.training.runs import load_trained
from hnm_jax.training.step import contrastive_loss, jit_train_step
from hnm_jax.training.train import train_and_evaluate


def test_batch_rows_deterministic_and_cover_epoch():
    a = batches.batch_rows(3, 1, 2, 50, 8)
    np.testing.assert_array_equal(a, batches.batch_rows(3, 1, 2, 50, 8))
    assert not np.array_equal(a, batches.batch_rows(3, 2, 2, 50, 8))
    epoch = np.concatenate([batches.batch_rows(3, 1, s, 50, 8) for s in range(batches.steps_per_epoch(50, 8))])
    assert len(np.unique(epoch)) == len(epoch) == 48


def test_canonical_rows_group_exact_twins():
    np.testing.assert_array_equal(batches.canonical_rows(["a", "b", "a", "c", "b"]), [0, 1, 0, 3, 1])


def test_random_negatives_never_known_positives():
    positives = np.array([[0, 1], [2, -1], [3, -1]])
    candidates = Candidates(positives=positives, num_docs=5, pool=None, band=(-1.0, 1.0), band_mode="absolute")
    for seed in range(20):
        neg = random_negatives(candidates, SelectSpec(num_negatives=4), np.random.default_rng(seed))
        for row in range(3):
            assert not set(neg[row].tolist()) & set(positives[row].tolist()) - {-1}


@pytest.mark.slow
@pytest.mark.parametrize("num_devices", [2, 4])
def test_same_loss_and_grads_on_1_2_4_devices(tiny_beir, num_devices):
    if jax.device_count() < num_devices:
        pytest.skip(f"needs {num_devices} devices")
    encoder, batch = make_tiny_batch(tiny_beir)
    loss_spec = spec_from_config(tiny_config(tiny_beir)).loss

    def loss_and_grads(devices):
        mesh = sharding.make_mesh(devices)
        fn = jax.jit(jax.value_and_grad(
            lambda p, b: contrastive_loss(p, encoder.graphdef, b, loss_spec, encoder.pooling, None)[0]),
            in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)))
        params = jax.device_put(encoder.state, sharding.replicated(mesh))
        return jax.device_get(fn(params, sharding.to_global(batch, mesh)))

    loss1, grads1 = loss_and_grads(jax.devices()[:1])
    loss_n, grads_n = loss_and_grads(jax.devices()[:num_devices])
    assert abs(float(loss1) - float(loss_n)) <= 1e-5
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), grads1, grads_n))
    assert max(diffs) <= 1e-5


TOKEN_KEYS = ("query_ids", "query_mask", "pos_ids", "pos_mask", "neg_ids", "neg_mask")


def pad_tokens(batch: dict, query_width: int, doc_width: int) -> dict:
    """`batch` with its token arrays padded on the right to the given widths (pad id 0, mask 0)."""
    width = lambda key: query_width if key.startswith("query") else doc_width  # noqa: E731
    return {k: np.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, width(k) - v.shape[-1])]) if k in TOKEN_KEYS else v
            for k, v in batch.items()}


@pytest.mark.slow
def test_bucketed_batch_gives_the_loss_and_gradients_of_max_length_padding(tiny_beir):
    encoder, batch = make_tiny_batch(tiny_beir, max_length=64)
    assert batch["query_ids"].shape[1] < 64 and batch["pos_ids"].shape[1] < 64  # cut to their length buckets
    longest_doc = max(int(batch["pos_mask"].sum(-1).max()), int(batch["neg_mask"].sum(-1).max()))
    assert batch["query_ids"].shape[1] == bucket_length(int(batch["query_mask"].sum(-1).max()), 64)
    assert batch["pos_ids"].shape[1] == batch["neg_ids"].shape[2] == bucket_length(longest_doc, 64)
    padded = pad_tokens(batch, 64, 64)  # what fixed max-length shapes carried
    loss_spec = spec_from_config(tiny_config(tiny_beir)).loss
    fn = jax.jit(jax.value_and_grad(
        lambda p, b: contrastive_loss(p, encoder.graphdef, b, loss_spec, encoder.pooling, None)[0]))
    (loss_b, grads_b), (loss_m, grads_m) = jax.device_get(fn(encoder.state, batch)), jax.device_get(
        fn(encoder.state, padded))
    assert abs(float(loss_b) - float(loss_m)) <= 1e-5
    assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), grads_b, grads_m))) <= 1e-5


def test_queries_as_wide_as_the_documents_share_one_encoder_pass(tiny_beir):
    """encode_pair_batch encodes queries and documents in one pass when their widths match (the program holds the
    encoder's matmuls once, not twice), with the loss and gradients of two passes (no dropout)."""
    encoder, batch = make_tiny_batch(tiny_beir)
    width = max(batch["query_ids"].shape[1], batch["pos_ids"].shape[1])
    one_pass, two_passes = pad_tokens(batch, width, width), pad_tokens(batch, width + 8, width)
    loss_spec = spec_from_config(tiny_config(tiny_beir)).loss
    loss = lambda p, b: contrastive_loss(p, encoder.graphdef, b, loss_spec, encoder.pooling, None)[0]  # noqa: E731
    dots = lambda b: str(jax.make_jaxpr(loss)(encoder.state, b)).count("dot_general")  # noqa: E731
    assert dots(two_passes) - 1 == 2 * (dots(one_pass) - 1)  # 1: the query x document score matmul
    fn = jax.jit(jax.value_and_grad(loss))
    (loss_1, grads_1), (loss_2, grads_2) = jax.device_get(fn(encoder.state, one_pass)), jax.device_get(
        fn(encoder.state, two_passes))
    assert abs(float(loss_1) - float(loss_2)) <= 1e-5
    assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), grads_1, grads_2))) <= 1e-5


@pytest.mark.slow
def test_tiny_run_compiles_one_step_per_length_bucket_pair(tiny_beir, tmp_path, monkeypatch):
    compiled, shapes = [], set()

    def recording_jit_train_step(*args, **kwargs):
        step_fn = jit_train_step(*args, **kwargs)
        compiled.append(step_fn)

        def step(state, batch):
            shapes.add((batch["query_ids"].shape[1], batch["pos_ids"].shape[1]))
            return step_fn(state, batch)

        return step

    monkeypatch.setattr(train, "jit_train_step", recording_jit_train_step)
    config = tiny_config(tiny_beir, "configs/ablations/random.py", data__query_max_length=64,
                         data__doc_max_length=64, train__max_steps=8)
    train_and_evaluate(config, tmp_path)
    buckets = {bucket_length(n, 64) for n in range(1, 65)}
    assert len(compiled) == 1 and compiled[0]._cache_size() == len(shapes) <= len(buckets) ** 2  # jax private API
    assert max(length for shape in shapes for length in shape) < 64  # short texts: no max-length padding


@pytest.mark.slow
def test_train_smoke_writes_logs_checkpoints_and_eval(tiny_beir, tmp_path):
    config = tiny_config(tiny_beir, train__max_steps=3, train__log_every=1)
    metrics = train_and_evaluate(config, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "train/loss" in line]
    assert [line["step"] for line in train_lines] == [1, 2, 3]
    assert all(np.isfinite(line["train/loss"]) for line in train_lines)
    compiles = [line for line in lines if "setup/compiles" in line]  # compile_stats.CompileCounter, at the end
    assert len(compiles) == 1 and compiles[0]["step"] == 3 and compiles[0]["setup/compile_s"] > 0
    assert compiles[0]["setup/compiles"] + compiles[0]["setup/compile_cache_hits"] >= 1
    assert list((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "checkpoints" / "3").is_dir()
    saved = json.loads((tmp_path / "eval_test.json").read_text())
    for name in ("accuracy@1", "accuracy@5", "accuracy@10", "recall@1", "recall@5", "recall@10", "mrr@10",
                 "ndcg@10", "pairwise_accuracy"):
        assert 0.0 <= saved[name] <= 1.0
        assert saved[name] == metrics[name]


CONFIG_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py") if p.name != "__init__.py")


@functools.cache
def initial_params(model: ModelSpec, seed: int) -> list[np.ndarray]:
    """The parameter leaves a run of `model` and `seed` starts from; built once per (spec, seed), as most configs
    share the tiny model."""
    return [np.asarray(leaf) for leaf in jax.tree.leaves(build_encoder(model, seed).state)]


def with_unlabelled_duplicates(root, out):
    """A copy of the tiny BEIR folder `root` whose unlabelled_duplicates.tsv names each training query's labelled
    negatives (what mining.oracle_filter needs)."""
    shutil.copytree(root, out)
    train_queries = {line.split("\t")[0] for line in (out / "qrels" / "train.tsv").read_text().splitlines()[1:]}
    rows = [line.split("\t")[:2] for line in (out / "candidates" / "train.tsv").read_text().splitlines()[1:]
            if line.endswith("\t0") and line.split("\t")[0] in train_queries]
    (out / "unlabelled_duplicates.tsv").write_text("query-id\tcorpus-id\n" + "".join(f"{q}\t{d}\n" for q, d in rows))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_every_config_runs_one_tiny_step(config_file, tiny_beir, tmp_path):
    config = tiny_config(tiny_beir, config_file, train__max_steps=1)
    if config.mining.oracle_filter:  # it needs the known unlabelled duplicates
        config.data.path = str(with_unlabelled_duplicates(tiny_beir, tmp_path / "data"))
    metrics = train_and_evaluate(config, tmp_path / "run")
    assert metrics["train_steps"] == 1
    spec = spec_from_config(config)
    assert metrics["mining_retriever"] == (spec.mining_retriever.mode if spec.mining.pool != "none" else None)
    assert 0.0 <= metrics["accuracy@1"] <= 1.0
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step = next(row for row in logged if "train/loss" in row)
    assert np.isfinite(step["train/loss"]) and step["train/grad_norm"] > 0
    initial = initial_params(spec.model, spec.seed)
    assert any(not np.array_equal(a, b) for a, b in zip(params_of(tmp_path / "run"), initial, strict=True))
    # the config's own mechanism shows in its logged diagnostics
    if spec.loss.margin_kind == "additive":
        assert step["train/margin_grad_share"] > 0
    if spec.mining.strategy == "band" and spec.mining.band_in_step:
        assert "train/band_kept_per_query" in step
    if spec.mining.strategy == "band":
        assert {"train/band_lo", "train/band_hi", "train/explicit_negative_gap"} <= set(step)
    # refilled: N per query where the pool holds N (a CE filter may drop a tiny run's whole pool)
    if spec.mining.band_refill and spec.mining.strategy == "band" and not spec.ce.guides_mining:
        assert step["train/explicit_negatives_per_query"] == spec.mining.num_negatives
    if spec.loss.hybrid_logits:
        assert step["train/hybrid_beta_mean"] > 0
    if spec.band.curriculum != "none":
        assert step["train/band_lo"] < spec.band.lo or step["train/band_hi"] < spec.band.hi
    if spec.loss.uniformity_weight:
        assert np.isfinite(step["train/uniformity"])
    if spec.ce.guides_mining:
        assert any("refresh/ce_filter_on" in row for row in logged)
    if spec.mining.oracle_filter:
        refreshes = [row["refresh/pool_unlabelled_duplicates"] for row in logged if "refresh/search_s" in row]
        assert refreshes and not any(refreshes)


@pytest.mark.slow
def test_eval_json_records_the_mining_retriever_and_the_device(tiny_beir, tmp_path):
    """A run deploying hybrid while mining from dense (configs/ablations/online_band_dense_mining.py) says so in its
    eval JSON ("retriever", "mining_retriever"), with the hardware it ran on ("device")."""
    config = tiny_config(tiny_beir, "configs/ablations/online_band_dense_mining.py", train__max_steps=1,
                         retriever__mode="hybrid")
    train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "eval_test.json").read_text())
    assert saved["retriever"] == "hybrid" and saved["mining_retriever"] == "dense"
    device = jax.devices()[0]
    assert saved["device"] == {"kind": device.device_kind, "platform": device.platform, "count": jax.device_count()}


@pytest.mark.slow
def test_cli_eval_and_export_round_trip(tiny_beir, tmp_path):
    from hnm_jax import load_encoder
    from hnm_jax.main import main

    config = tiny_config(tiny_beir, train__max_steps=2)
    train_and_evaluate(config, tmp_path / "run")
    out = tmp_path / "eval.json"
    assert main(["eval", "--workdir", str(tmp_path / "run"), "--split", "test", "--output", str(out),
                 "--max-length", "16"]) == 0
    assert json.loads(out.read_text())["accuracy@1"] == pytest.approx(
        json.loads((tmp_path / "run" / "eval_test.json").read_text())["accuracy@1"])
    assert main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 0
    trained, _ = load_trained(tmp_path / "run")
    exported = load_encoder(str(tmp_path / "export"))
    texts = ["acme camera AC-101 black", "zenith router"]
    np.testing.assert_array_equal(trained.encode(texts, max_length=16), exported.encode(texts, max_length=16))


def test_cli_data_error_is_one_line(tmp_path, capsys):
    from hnm_jax.main import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n')
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (bad / "qrels").mkdir()
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    code = main(["eval", "--model", "all-MiniLM-L6-v2", "--data", str(bad), "--split", "test"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corpus.jsonl:2" in err[0]
