"""Evaluation end to end on the synthetic near-duplicate benchmark: metrics per perturbation type."""

import json

import numpy as np

from hnm_jax.config import ModelSpec
from hnm_jax.data.beir import load_beir
from hnm_jax.data.synthetic import SIZES, generate, write_beir
from hnm_jax.evaluate import corpus_perturbations, evaluate
from hnm_jax.main import main
from hnm_jax.mining.retriever import RetrieverSpec
from hnm_jax.train import build_encoder


def test_per_perturbation_metrics_on_synthetic(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    data = load_beir(root, "test")
    doc_types = corpus_perturbations(root, data.corpus)
    assert set(doc_types) == {"", "single_token", "format", "semantic"}
    encoder = build_encoder(ModelSpec(name="tiny", dtype="float32", dropout=0.0), seed=0)
    metrics = evaluate(encoder, data.corpus, data.queries, data.split, max_length=32, batch_size=16,
                       doc_types=doc_types, show_progress=False)
    for kind in ("single_token", "format", "semantic"):
        assert 0.0 <= metrics[f"pairwise_accuracy/{kind}"] <= 1.0
    # the per-type figures partition the labelled negatives: their weighted mean is the overall figure
    cand = data.split.candidates
    negatives = cand.label == 0
    counts = {k: int(np.sum(doc_types[cand.doc][negatives] == k)) for k in ("single_token", "format", "semantic")}
    weighted = sum(metrics[f"pairwise_accuracy/{k}"] * n for k, n in counts.items()) / sum(counts.values())
    assert abs(weighted - metrics["pairwise_accuracy"]) < 1e-9


def test_lexical_retriever_finds_single_token_twins_by_text(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    data = load_beir(root, "test")
    encoder = build_encoder(ModelSpec(name="tiny", dtype="float32", dropout=0.0), seed=0)
    dense = evaluate(encoder, data.corpus, data.queries, data.split, max_length=32, batch_size=16,
                     show_progress=False)
    lexical = evaluate(encoder, data.corpus, data.queries, data.split, max_length=32, batch_size=16,
                       retriever_spec=RetrieverSpec(mode="lexical"), show_progress=False)
    assert lexical["accuracy@10"] > dense["accuracy@10"]  # BM25 beats a random-weight encoder


def test_cli_eval_reports_types(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", "all-MiniLM-L6-v2", "--data", str(root), "--split", "test", "--output", str(out),
                 "--max-length", "32"]) == 0
    metrics = json.loads(out.read_text())
    assert {"pairwise_accuracy/single_token", "pairwise_accuracy/format", "pairwise_accuracy/semantic"} <= set(metrics)


def test_cli_eval_retriever_override(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    outputs = {}
    for mode in ("dense", "lexical"):
        out = tmp_path / f"{mode}.json"
        assert main(["eval", "--model", "all-MiniLM-L6-v2", "--data", str(root), "--split", "test", "--output",
                     str(out), "--max-length", "32", "--retriever", mode]) == 0
        outputs[mode] = json.loads(out.read_text())
    assert "gap_mean" in outputs["dense"] and "gap_mean" not in outputs["lexical"]  # lexical ranks by BM25 only
    assert outputs["dense"]["accuracy@1"] != outputs["lexical"]["accuracy@1"]
