"""Evaluation end to end: one `evaluate(spec, ...)` for every caller, exact search unless asked, every eval.* key of
`hnm eval --workdir` honoured, per-query ranks, metrics per perturbation type on the synthetic benchmark."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import tiny_config, write_tiny_beir

from hnm_jax.config import ConfigError, ModelSpec, spec_from_config
from hnm_jax.data.beir import load_beir
from hnm_jax.data.synthetic import SIZES, SyntheticConfig, generate, write_beir
from hnm_jax.data.tokenize import tokenize_texts
from hnm_jax.evaluate import corpus_perturbations, dumps_metrics, evaluate, relevant_rows
from hnm_jax.main import main
from hnm_jax.metrics import first_relevant_rank
from hnm_jax.mining.dense_index import IndexSpec
from hnm_jax.mining.retriever import Retriever
from hnm_jax.mining.scoring import RETRIEVE_K, encoding_sharding, interpolate_ce, rerank
from hnm_jax.models.loading import build_cross_encoder, build_encoder
from hnm_jax.models.pretrained import CrossEncoderModel, Encoder
from hnm_jax.training.train import train_and_evaluate


def tiny_spec(root, **overrides):
    """The tiny config's spec pointed at `root` (dotted-key overrides as in `tiny_config`)."""
    return spec_from_config(tiny_config(root, **overrides))


def tiny_encoder():
    return build_encoder(ModelSpec(name="tiny", dtype="float32", dropout=0.0), seed=0)


def test_per_perturbation_metrics_on_synthetic(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    data = load_beir(root, "test")
    doc_types = corpus_perturbations(root, data.corpus)
    assert set(doc_types) == {"", "single_token", "format", "semantic"}
    metrics = evaluate(tiny_spec(root, eval__max_length=32), tiny_encoder(), (root, data.corpus, data.queries),
                       data.split, show_progress=False)
    for kind in ("single_token", "format", "semantic"):
        assert 0.0 <= metrics[f"pairwise_accuracy/{kind}"] <= 1.0
    # the per-type figures partition the labelled negatives: their weighted mean is the overall figure
    cand = data.split.candidates
    negatives = cand.label == 0
    counts = {k: int(np.sum(doc_types[cand.doc][negatives] == k)) for k in ("single_token", "format", "semantic")}
    weighted = sum(metrics[f"pairwise_accuracy/{k}"] * n for k, n in counts.items()) / sum(counts.values())
    assert abs(weighted - metrics["pairwise_accuracy"]) < 1e-9
    # per labelled negative pair, the outcome behind pairwise_accuracy, by ids (for paired tests between runs)
    per_pair = metrics["per_pair"]
    assert per_pair["query_ids"] == [data.queries.ids[data.split.query_rows[q]] for q in cand.query[negatives]]
    assert per_pair["doc_ids"] == [data.corpus.ids[d] for d in cand.doc[negatives]]
    assert set(per_pair["correct"]) <= {0, 1} and 0 < sum(per_pair["correct"]) < len(per_pair["correct"])
    assert np.mean(per_pair["correct"]) == pytest.approx(metrics["pairwise_accuracy"], abs=1e-12)
    assert json.loads(dumps_metrics(metrics)) == json.loads(json.dumps(metrics))
    assert '\n    "correct": [' in dumps_metrics(metrics)  # one line per list


def test_collapse_is_a_cosine_without_normalization_and_the_device_is_recorded(tmp_path):
    """model.normalize = False: the encoder's vectors are not unit, yet near_duplicate_cosine stays a cosine (the
    same figure as the normalized encoder's, whose directions are the same)."""
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    data = load_beir(root, "test")
    raw = build_encoder(ModelSpec(name="tiny", dtype="float32", dropout=0.0, normalize=False), seed=0)
    by = {name: evaluate(tiny_spec(root, eval__max_length=32), encoder, (root, data.corpus, data.queries), data.split,
                         show_progress=False) for name, encoder in (("unit", tiny_encoder()), ("raw", raw))}
    for key in ("near_duplicate_cosine", "near_duplicate_cosine_max"):
        assert by["raw"][key] == pytest.approx(by["unit"][key], abs=1e-5) and -1.0 <= by["raw"][key] <= 1.0
    per_query = [c for c in by["unit"]["per_query"]["near_duplicate_cosine"] if c is not None]  # the mean's terms
    assert len(by["unit"]["per_query"]["near_duplicate_cosine"]) == by["unit"]["num_queries"]
    assert np.mean(per_query) == pytest.approx(by["unit"]["near_duplicate_cosine"], abs=1e-5)
    assert by["raw"]["device"] == by["unit"]["device"] and {"kind", "platform", "count"} == set(by["raw"]["device"])


def test_lexical_retriever_finds_single_token_twins_by_text(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    data = load_beir(root, "test")
    spec = tiny_spec(root, eval__max_length=32, retriever__mode="lexical")
    metrics = evaluate(spec, tiny_encoder(), (root, data.corpus, data.queries), "test", show_progress=False)
    assert metrics["retriever"] == "lexical" and set(metrics["retrievers"]) == {"dense", "hybrid", "lexical"}
    retrievers = metrics["retrievers"]
    assert retrievers["lexical"]["accuracy@10"] > retrievers["dense"]["accuracy@10"]  # BM25 beats random weights
    assert {k: metrics[k] for k in retrievers["lexical"]} == retrievers["lexical"]  # deployed = top level


@pytest.mark.slow
def test_cli_eval_reports_types(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", "all-MiniLM-L6-v2", "--data", str(root), "--split", "test", "--output", str(out),
                 "--max-length", "32"]) == 0
    metrics = json.loads(out.read_text())
    assert {"pairwise_accuracy/single_token", "pairwise_accuracy/format", "pairwise_accuracy/semantic"} <= set(metrics)


@pytest.mark.slow
def test_cli_eval_retriever_override(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    outputs = {}
    for mode in ("dense", "lexical"):
        out = tmp_path / f"{mode}.json"
        assert main(["eval", "--model", "all-MiniLM-L6-v2", "--data", str(root), "--split", "test", "--output",
                     str(out), "--max-length", "32", "--retriever", mode]) == 0
        outputs[mode] = json.loads(out.read_text())
    assert [outputs[mode]["retriever"] for mode in ("dense", "lexical")] == ["dense", "lexical"]
    assert outputs["dense"]["accuracy@1"] != outputs["lexical"]["accuracy@1"]
    assert outputs["lexical"]["retrievers"]["dense"] == outputs["dense"]["retrievers"]["dense"]
    assert outputs["dense"]["max_length"] == 32 and outputs["dense"]["search"] == "exact"
    for name in ("gap_mean", "pairwise_accuracy"):  # the bi-encoder's figures, whatever the deployed retriever
        assert outputs["lexical"][name] == outputs["dense"][name]


def test_first_relevant_rank_by_hand():
    ranked = np.array([[5, 3, 7], [1, 2, -1], [4, -1, -1], [-1, -1, -1]])
    positives = np.array([[3, 9], [8, -1], [-1, 4], [2, -1]])
    np.testing.assert_array_equal(first_relevant_rank(ranked, positives), [2, 0, 1, 0])


def test_per_query_ranks_agree_with_accuracy_and_mrr(tmp_path):
    root = write_beir(generate(SIZES["tiny"]), tmp_path / "synthetic")
    data = load_beir(root, "test")
    spec = tiny_spec(root, eval__max_length=32, retriever__mode="hybrid")
    encoder = tiny_encoder()
    metrics = evaluate(spec, encoder, (root, data.corpus, data.queries), data.split, show_progress=False)
    per_query = metrics["per_query"]
    assert per_query["query_ids"] == [data.queries.ids[r] for r in data.split.query_rows]
    assert metrics["retriever"] == "hybrid" and set(metrics["retrievers"]) == {"dense", "hybrid"}
    # the dense ranks by brute force: 1 + the docs scoring above the best relevant one (a near tie either way), 0
    # beyond the ranked depth
    query_texts = [data.queries.texts[r] for r in data.split.query_rows]
    encode = dict(batch_size=spec.eval.batch_size,  # evaluate's compiles
                  sharding=encoding_sharding(spec.eval.batch_size, None))
    doc_emb, query_emb = (encoder.encode_tokens(tokenize_texts(encoder.tokenizer, texts, 32), **encode)
                          for texts in (data.corpus.texts, query_texts))
    scores = query_emb.astype(np.float64) @ doc_emb.T.astype(np.float64)
    relevant = relevant_rows(spec, root, data.corpus, data.queries, data.split)[0]
    dense_rank = np.asarray(per_query["rank_dense"])
    assert dense_rank.shape == (len(data.split),)
    for q, row in enumerate(relevant):
        best = scores[q, row[row >= 0]].max()
        low, high = 1 + int((scores[q] > best + 1e-5).sum()), 1 + int((scores[q] >= best - 1e-5).sum()) - 1
        low, high = (0, 0) if low > RETRIEVE_K else (low, min(high, RETRIEVE_K))
        assert low <= dense_rank[q] <= high, (q, dense_rank[q], low, high)
    assert np.any(dense_rank > 1)  # not all trivially first
    for mode in ("dense", "hybrid"):
        rank = np.asarray(per_query[f"rank_{mode}"])
        expected = metrics["retrievers"][mode]
        assert rank.shape == (len(data.split),) and rank.min() >= 0 and rank.max() <= RETRIEVE_K
        for k in (1, 5, 10):
            assert expected[f"accuracy@{k}"] == pytest.approx(np.mean((rank >= 1) & (rank <= k)), abs=1e-6)
        mrr = np.mean(np.where((rank >= 1) & (rank <= 10), 1.0 / np.maximum(rank, 1), 0.0))
        assert expected["mrr@10"] == pytest.approx(mrr, abs=1e-6)
    hybrid = np.asarray(per_query["rank_hybrid"])
    assert np.any(hybrid == 1) and np.any(hybrid > 1)  # the check above is not vacuous
    assert {k: metrics[k] for k in metrics["retrievers"]["hybrid"]} == metrics["retrievers"]["hybrid"]


def test_unlabelled_duplicates_count_as_relevant_at_test(tmp_path):
    """A synthetic benchmark's unlabelled duplicates are true matches: with eval.duplicates_relevant (the default) a
    test query's first relevant rank is the better of its qrels positive's and its duplicate's; the qrels file stays
    as written, unlabelled_duplicates.tsv the record of which pairs were added."""
    bench = generate(SyntheticConfig(num_tasks=40, distractors=10, queries_per_task=2, seed=4, duplicate_share=0.5))
    root = write_beir(bench, tmp_path / "synthetic")
    data = load_beir(root, "test")
    encoder, run = tiny_encoder(), (root, data.corpus, data.queries)
    spec = tiny_spec(root, eval__max_length=32)
    assert spec.eval.duplicates_relevant
    test_ids = [data.queries.ids[r] for r in data.split.query_rows]
    pairs = [(q, d) for q, d in bench.unlabelled_duplicates() if q in set(test_ids)]
    assert pairs and all(d not in (root / "qrels" / "test.tsv").read_text() for _, d in pairs)
    counted = evaluate(spec, encoder, run, data.split, show_progress=False)
    labelled = evaluate(tiny_spec(root, eval__max_length=32, eval__duplicates_relevant=False), encoder, run,
                        data.split, show_progress=False)
    assert counted["duplicates_relevant"] == len(pairs) and labelled["duplicates_relevant"] == 0
    # The duplicates' own ranks: the same queries with their duplicate as the only relevant doc.
    duplicate_of = dict(pairs)
    with_duplicate = [q for q, query_id in enumerate(test_ids) if query_id in duplicate_of]
    only_duplicates = dataclasses.replace(
        data.split, query_rows=data.split.query_rows[with_duplicate], candidates=None,
        positives=np.array([[data.corpus.index[duplicate_of[test_ids[q]]]] for q in with_duplicate], np.int32))
    duplicate_rank = evaluate(tiny_spec(root, eval__max_length=32, eval__duplicates_relevant=False), encoder, run,
                              only_duplicates, show_progress=False)["per_query"]["rank_dense"]
    expected = np.asarray(labelled["per_query"]["rank_dense"])
    for q, rank in zip(with_duplicate, duplicate_rank, strict=True):
        found = [r for r in (expected[q], rank) if r > 0]  # 0: not in the top RETRIEVE_K
        expected[q] = min(found) if found else 0
    got = np.asarray(counted["per_query"]["rank_dense"])
    np.testing.assert_array_equal(got, expected)
    assert np.any(got < np.asarray(labelled["per_query"]["rank_dense"]))  # some duplicate ranks above its positive
    assert counted["retrievers"]["dense"]["accuracy@10"] == pytest.approx(np.mean((got >= 1) & (got <= 10)))


COLORS = ("red", "blue", "green", "black", "white")


def write_items_beir(root, num_docs: int, num_queries: int, seed: int = 0):
    """A BEIR folder of `num_docs` short records "item 01234 red"; query j asks for a random item by number."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": f"d{i}", "text": f"item {i:05d} {COLORS[i % 5]}"}) + "\n"
                     for i in range(num_docs))
    targets = np.random.default_rng(seed).choice(num_docs, num_queries, replace=False)
    with open(root / "queries.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": f"q{j}", "text": f"item {d:05d}"}) + "\n" for j, d in enumerate(targets))
    with open(root / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"q{j}\td{d}\t1\n" for j, d in enumerate(targets))
    return root


@pytest.mark.slow
def test_exact_search_over_25k_docs_matches_numpy_brute_force(tmp_path, monkeypatch):
    num_docs = 25_000
    assert num_docs > IndexSpec().exact_threshold  # the old evaluation searched a corpus this size with ScaNN
    root = write_items_beir(tmp_path / "items", num_docs, num_queries=300)
    embeddings, retrieved = [], {}
    encode_tokens, retrieve = Encoder.encode_tokens, Retriever.retrieve

    def record_embeddings(self, tokens, *args, **kwargs):
        embeddings.append(encode_tokens(self, tokens, *args, **kwargs))
        return embeddings[-1]

    def record_retrieved(self, *args, **kwargs):
        retrieved[self.spec.mode] = retrieve(self, *args, **kwargs)
        return retrieved[self.spec.mode]

    monkeypatch.setattr(Encoder, "encode_tokens", record_embeddings)
    monkeypatch.setattr(Retriever, "retrieve", record_retrieved)
    data = load_beir(root, "test")
    metrics = evaluate(tiny_spec(root), tiny_encoder(), (root, data.corpus, data.queries), "test", show_progress=False)
    assert metrics["search"] == "exact" and metrics["num_docs"] == num_docs and metrics["max_length"] == 16

    doc_emb, query_emb = (np.asarray(e, np.float64) for e in embeddings)  # the corpus, then the queries
    sample = np.arange(0, len(query_emb), 3)
    scores = query_emb[sample] @ doc_emb.T  # [S, N] brute force
    second, first = np.sort(scores, axis=1)[:, -2:].T
    clear = first - second > 1e-5  # no near-tie at the top: float32 rounding cannot swap the first two
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(retrieved["dense"].indices[sample[clear], 0], np.argmax(scores[clear], axis=1))
    # the rank of each query's positive, counted by brute force, where no other doc ties with it
    positive_score = scores[np.arange(len(sample)), data.split.positives[sample, 0]]
    above = np.sum(scores > positive_score[:, None] + 1e-5, axis=1)
    tied = np.sum(np.abs(scores - positive_score[:, None]) <= 1e-5, axis=1) > 1
    expected = np.where(above < 100, above + 1, 0)
    rank = np.asarray(metrics["per_query"]["rank_dense"])[sample]
    np.testing.assert_array_equal(rank[~tied], expected[~tied])
    assert (~tied).mean() > 0.5


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A tiny trained workdir over a 300-doc corpus (enough docs for ScaNN), and its data folder."""
    root = write_tiny_beir(tmp_path_factory.mktemp("data") / "tiny300", num_queries=100)
    workdir = tmp_path_factory.mktemp("run")
    train_and_evaluate(tiny_config(root, train__max_steps=2), workdir)
    return workdir, root


def eval_workdir(workdir, out, *flags, **keys):
    """`hnm eval --workdir` after setting config.json keys ("eval__max_length": 24) -> (exit code, JSON or None)."""
    path = workdir / "config.json"
    saved = path.read_text()
    config = json.loads(saved)
    for dotted, value in keys.items():
        section, key = dotted.split("__")
        config[section][key] = value
    path.write_text(json.dumps(config))
    try:
        code = main(["eval", "--workdir", str(workdir), "--output", str(out), *flags])
    finally:
        path.write_text(saved)
    return code, json.loads(out.read_text()) if code == 0 else None


@pytest.mark.slow
def test_cli_eval_workdir_honours_every_eval_key(trained_workdir, tmp_path, monkeypatch):
    workdir, root = trained_workdir
    encodes, scores = [], []
    encode_tokens, score = Encoder.encode_tokens, CrossEncoderModel.score

    def record_encode(self, tokens, batch_size=64, **kwargs):
        encodes.append((tokens.max_length, batch_size))
        return encode_tokens(self, tokens, batch_size, **kwargs)

    def record_score(self, queries, docs, batch_size=64, *, max_length=None, **kwargs):
        scores.append((max_length, len(queries)))
        return score(self, queries, docs, batch_size, max_length=max_length, **kwargs)

    monkeypatch.setattr(Encoder, "encode_tokens", record_encode)
    monkeypatch.setattr(CrossEncoderModel, "score", record_score)
    out = tmp_path / "eval.json"

    def run(*flags, **keys):
        encodes.clear()
        code, metrics = eval_workdir(workdir, out, *flags, **keys)
        assert code == 0
        return metrics

    metrics = run()  # the workdir's own config: what training evaluated with
    assert (metrics["max_length"], metrics["batch_size"], metrics["search"]) == (16, 16, "exact")
    assert encodes == [(16, 16), (16, 16)] and metrics["retriever"] == "dense"
    assert metrics["accuracy@1"] == json.loads((workdir / "eval_test.json").read_text())["accuracy@1"]

    metrics = run(eval__max_length=24, eval__batch_size=8)
    assert (metrics["max_length"], metrics["batch_size"]) == (24, 8) and encodes == [(24, 8), (24, 8)]

    metrics = run(eval__search="ann", index__exact_threshold=0)
    assert metrics["search"]["ann"] == "scann" and metrics["search"]["num_leaves"] == 6  # min(300 // 50, sqrt 300)
    assert metrics["num_docs"] == 300

    metrics = run("--max-length", "20", "--batch-size", "4", "--search", "exact", eval__search="ann",
                  index__exact_threshold=0)  # flags override the config
    assert (metrics["max_length"], metrics["batch_size"], metrics["search"]) == (20, 4, "exact")
    assert encodes == [(20, 4), (20, 4)]

    # ce.*: the run's cross-encoder re-ranks the deployed retriever's top ce.rerank_depth at ce.max_length
    spec = spec_from_config(json.loads((workdir / "config.json").read_text()))
    build_cross_encoder(spec.model, spec.ce.source, spec.seed).export(tmp_path / "ce")
    metrics = run(ce__rerank_depth=3, ce__model=str(tmp_path / "ce"), retriever__mode="hybrid")
    assert metrics["rerank"] == {"depth": 3, "weight": 0.0, "max_length": spec.ce.source.max_length,
                                 "model": str(tmp_path / "ce")}
    assert spec.ce.source.max_length == 32 and scores and all(length == 32 for length, _ in scores)
    assert set(metrics["stages"]) == {"retrieve", "rerank"} and metrics["retriever"] == "hybrid"
    assert "rank_rerank" in metrics["per_query"]
    metrics = run(ce__rerank_depth=3, ce__model=str(tmp_path / "ce"), ce__rerank_weight=0.2, retriever__mode="hybrid")
    assert metrics["rerank"]["weight"] == 0.2 and "rank_rerank" in metrics["per_query"]
    scores.clear()
    shutil.copytree(tmp_path / "ce", workdir / "ce" / "model")  # where `hnm train` leaves the cross-encoder it trains
    try:
        metrics = run("--rerank-depth", "5")
        assert metrics["rerank"]["depth"] == 5 and sum(n for _, n in scores) == 5 * metrics["num_queries"]
        assert metrics["rerank"]["model"] == str(workdir / "ce" / "model")
    finally:
        shutil.rmtree(workdir / "ce")

    # data.skip_empty: a corpus with an empty record fails without it and is read (one record skipped) with it
    dirty = tmp_path / "dirty"
    shutil.copytree(root, dirty)
    with open(dirty / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "empty", "text": ""}) + "\n")
    assert eval_workdir(workdir, out, "--data", str(dirty))[0] == 2
    metrics = run("--data", str(dirty), data__skip_empty=True)
    assert metrics["skipped_docs"] == 1 and metrics["num_docs"] == 300


def test_eval_search_key_is_validated(tiny_beir):
    with pytest.raises(ConfigError, match="eval.search"):
        tiny_spec(tiny_beir, eval__search="approximate")
    spec = tiny_spec(tiny_beir)
    with pytest.raises(ConfigError, match="eval.search"):
        dataclasses.replace(spec.eval, search="scann")


@pytest.mark.slow
def test_fusion_sweep_reproduces_the_evaluation_of_the_run(trained_workdir, tmp_path):
    """experiments.fusion encodes once and re-ranks: its dense and weighted w = 0.3 ranks are `hnm eval`'s dense and
    hybrid ranks of the same run, and every fusion ranks every query."""
    from experiments import fusion

    workdir, _ = trained_workdir
    code, metrics = eval_workdir(workdir, tmp_path / "eval.json", "--split", "test")
    assert code == 0
    assert fusion.main([str(workdir), "--split", "test", "--out", str(tmp_path / "fusion")]) == 0
    record = json.loads((tmp_path / "fusion" / f"{workdir.name}.json").read_text())
    assert record["query_ids"] == metrics["per_query"]["query_ids"]
    assert record["fusions"]["dense"]["rank"] == metrics["per_query"]["rank_dense"]
    assert record["fusions"]["weighted_0.3"]["rank"] == metrics["per_query"]["rank_hybrid"]
    assert set(record["fusions"]) == set(fusion.FUSIONS)
    for result in record["fusions"].values():
        assert len(result["rank"]) == len(record["query_ids"])
        assert result["accuracy@1"] == pytest.approx(np.mean(np.asarray(result["rank"]) == 1))
    assert record["fusions"]["lexical"]["rank"] != record["fusions"]["dense"]["rank"]  # BM25 ranks on its own

    # a run with a re-ranking stage: "ce" is `hnm eval`'s re-ranking, and each ce_<v> ranks every query
    reranking = tmp_path / "reranking"
    shutil.copytree(workdir, reranking)
    config = json.loads((reranking / "config.json").read_text())
    spec = spec_from_config(config)
    build_cross_encoder(spec.model, spec.ce.source, spec.seed).export(tmp_path / "ce")
    config["ce"].update(model=str(tmp_path / "ce"), rerank_depth=5)
    config["retriever"]["mode"] = "hybrid"
    (reranking / "config.json").write_text(json.dumps(config))
    code, metrics = eval_workdir(reranking, tmp_path / "eval_rerank.json", "--split", "test")
    assert code == 0 and "rank_rerank" in metrics["per_query"]
    assert fusion.main([str(reranking), "--split", "test", "--out", str(tmp_path / "fusion")]) == 0
    record = json.loads((tmp_path / "fusion" / "reranking.json").read_text())
    assert record["fusions"]["ce"]["rank"] == metrics["per_query"]["rank_rerank"]
    assert set(record["fusions"]) == set(fusion.FUSIONS) | {"ce"} | {f"ce_{v}" for v in fusion.CE_WEIGHTS}
    assert all(len(record["fusions"][f"ce_{v}"]["rank"]) == len(record["query_ids"]) for v in fusion.CE_WEIGHTS)


class _DocLogits:
    """A stand-in cross-encoder whose logit of (query, doc) is a fixed number per doc text."""

    def __init__(self, logits: dict[str, float]):
        self.logits = logits

    def score(self, queries, docs, batch_size=64, *, max_length=None, show_progress=False):
        return np.array([self.logits[d] for d in docs], np.float32)


def test_rerank_by_logit_or_by_retrieval_score_plus_scaled_logit():
    docs = ["a", "b", "c", "d"]
    ranked = np.array([[0, 1, 2, 3], [1, 2, -1, -1]])  # query 1 has two candidates
    fused = np.array([[0.90, 0.88, 0.50, 0.1], [0.7, 0.65, -np.inf, -np.inf]])
    ce = _DocLogits({"a": -2.0, "b": 3.0, "c": 8.0, "d": 0.0})
    # the CE alone orders query 0's top 3 by logit (c, b, a); d stays below the depth
    assert rerank(ranked, ["q0", "q1"], docs, ce, 3, 8).tolist() == [[2, 1, 0, 3], [2, 1, -1, -1]]
    # logits scale to 0, 0.5, 1 over a, b, c: a small weight swaps the two close scores only, a large one follows the CE
    small = rerank(ranked, ["q0", "q1"], docs, ce, 3, 8, retrieval_scores=fused, weight=0.1)
    assert small.tolist() == [[1, 0, 2, 3], [2, 1, -1, -1]]
    large = rerank(ranked, ["q0", "q1"], docs, ce, 3, 8, retrieval_scores=fused, weight=1.0)
    assert large[0].tolist() == [2, 1, 0, 3]
    with pytest.raises(ValueError, match="retrieval_scores"):
        rerank(ranked, ["q0", "q1"], docs, ce, 3, 8, weight=0.1)
    # equal logits add nothing; a missing candidate stays -inf
    scores = interpolate_ce(fused[1:, :3], np.array([[1.0, 1.0, -np.inf]], np.float32), 0.5)
    assert scores.tolist() == [[0.7, 0.65, -np.inf]]
