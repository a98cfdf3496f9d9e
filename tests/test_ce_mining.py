"""Cross-encoder guided mining inside a run: planted duplicates are filtered, positives never; the CE phase
trains, exports and resumes; evaluation reports the retrieve and re-rank stages."""

import json

import numpy as np
from conftest import tiny_config, write_tiny_beir

from hnm_jax.config import spec_from_config
from hnm_jax.data.beir import read_split
from hnm_jax.train import CE_DIR, _make_miner, build_cross_encoder, build_encoder, load_texts, train_and_evaluate


def plant_case_variants(root):
    """Adds an upper-case copy of every train positive: the same tokens for the uncased tokenizer, so any
    cross-encoder scores it exactly like the positive; not an exact-text twin, so mining does not drop it."""
    positives = [line.split("\t")[1] for line in (root / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
    by_id = {doc["_id"]: doc for doc in corpus}
    planted = {f"dup-{doc_id}": doc_id for doc_id in positives}
    with open(root / "corpus.jsonl", "a") as f:
        f.writelines(json.dumps({"_id": dup, "title": "", "text": by_id[doc_id]["text"].upper()}) + "\n"
                     for dup, doc_id in planted.items())
    return planted


def test_ce_filter_drops_planted_duplicates_and_never_a_positive(tmp_path):
    root = write_tiny_beir(tmp_path / "data")
    planted = plant_case_variants(root)
    config = tiny_config(root, "configs/full.py", ce__threshold=1.0, ce__margin=1e-6, ce__rescore_top=0,
                         mining__pool_size=20)
    spec = spec_from_config(config)
    _, corpus, queries = load_texts(spec)
    split = read_split(root, "train", corpus, queries)
    positives_before = split.positives.copy()
    encoder = build_encoder(spec.model, spec.seed)
    miner = _make_miner(spec, tmp_path / "run", encoder, corpus, queries, split, batch_sharding=None)[0]
    miner.refresh(encoder.state, 0)
    row_of = {doc_id: row for row, doc_id in enumerate(corpus.ids)}
    dup_of_query = np.array([row_of[f"dup-{corpus.ids[p[0]]}"] for p in split.positives])  # [Q]
    in_pool = np.any(miner.pool.indices == dup_of_query[:, None], axis=1)
    assert in_pool.sum() >= len(planted) // 2  # the retriever does surface them

    miner.ce = build_cross_encoder(spec)  # untrained: identical tokens still give identical scores
    stats = miner.apply_cross_encoder()
    assert not np.any(miner.pool.indices == dup_of_query[:, None])  # every planted duplicate is gone
    assert stats["ce_removed_margin"] >= in_pool.sum()
    np.testing.assert_array_equal(split.positives, positives_before)  # the labelled positives are untouched
    assert not np.any(miner.pool.indices[:, :, None] == split.positives[:, None, :])  # never in a pool
    kept = int((miner.pool.indices >= 0).sum())
    assert stats["ce_kept"] == kept

    # Guide-model masking: query 0's batch column holding its planted duplicate is masked, its positive is not.
    rows = np.array([0, 1])
    columns = np.array([split.positives[0, 0], split.positives[1, 0], dup_of_query[0], dup_of_query[1]])
    mask = miner.guide(rows, columns)
    assert mask[0, 0] and mask[1, 1] and not mask[0, 2] and not mask[1, 3]


def test_full_config_trains_the_cross_encoder_reranks_and_resumes(tiny_beir, tmp_path):
    config = tiny_config(tiny_beir, "configs/full.py", train__max_steps=2, ce__rerank_depth=5)
    metrics = train_and_evaluate(config, tmp_path)
    assert set(metrics["stages"]) == {"retrieve", "rerank"}
    for name, value in metrics["stages"]["rerank"].items():  # top level = the final stage
        assert metrics[name] == value
    for name in ("recall@5", "recall@10", "accuracy@5"):  # re-ranking the top 5 re-orders, never replaces
        assert metrics["stages"]["retrieve"][name] == metrics["stages"]["rerank"][name]
    export = tmp_path / CE_DIR / "model" / "model.safetensors"
    assert export.is_file()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    refresh = [line for line in lines if "refresh/ce_kept" in line]
    assert refresh and all(line["refresh/ce_kept"] + line["refresh/ce_removed_threshold"]
                           + line["refresh/ce_removed_margin"] > 0 for line in refresh)
    ce_steps = [json.loads(line)["step"] for line in (tmp_path / CE_DIR / "metrics.jsonl").read_text().splitlines()]
    assert ce_steps[-1] == config.ce.train_steps

    mtime = export.stat().st_mtime_ns
    again = train_and_evaluate(config, tmp_path)  # finished run: resumes at the end, CE loaded, not retrained
    assert export.stat().st_mtime_ns == mtime
    assert again["accuracy@1"] == metrics["accuracy@1"]
    assert again["stages"] == metrics["stages"]
