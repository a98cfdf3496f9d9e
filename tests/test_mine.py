"""`hnm mine` (hnm_jax/mine.py): rows for other trainers, checked against the BEIR files read by hand."""

import json
import shutil

import numpy as np
import pytest
from conftest import REPO, tiny_config

from hnm_jax.config import ConfigError, spec_from_config
from hnm_jax.data.beir import load_beir
from hnm_jax.main import main
from hnm_jax.mine import final_band, mine_to_rows, mining_spec, write_rows
from hnm_jax.models.loading import build_cross_encoder, build_encoder

N = 3


def read_beir_by_hand(root, split="train"):
    """(query text -> [positive texts], number of (query, positive) qrels pairs), from the raw files."""
    docs = {d["_id"]: d["text"] for d in map(json.loads, (root / "corpus.jsonl").read_text().splitlines())}
    queries = {q["_id"]: q["text"] for q in map(json.loads, (root / "queries.jsonl").read_text().splitlines())}
    positives, pairs = {}, 0
    for line in (root / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
        query, doc, score = line.split("\t")
        if float(score) > 0:
            positives.setdefault(queries[query], []).append(docs[doc])
            pairs += 1
    return positives, pairs


def two_positive_beir(tiny_beir, tmp_path):
    """tiny_beir where q0 also has its near-duplicate sibling as a labelled positive (the hardest candidate)."""
    root = tmp_path / "two_positives"
    shutil.copytree(tiny_beir, root)
    candidates = (root / "candidates" / "train.tsv").read_text().splitlines()
    sibling = next(line.split("\t")[1] for line in candidates if line.startswith("q0\t") and line.endswith("\t0"))
    with open(root / "qrels" / "train.tsv", "a") as f:
        f.write(f"q0\t{sibling}\t1\n")
    (root / "candidates" / "train.tsv").write_text("\n".join(line for line in candidates
                                                             if not line.startswith(f"q0\t{sibling}\t")) + "\n")
    return root


def mine(root, scores="list", keep_incomplete=False, cross_encoder=False, **overrides):
    spec = mining_spec(spec_from_config(tiny_config(root, **overrides)), num_negatives=N)
    beir = load_beir(root, "train")
    encoder = build_encoder(spec.model, spec.seed)
    ce = build_cross_encoder(spec.model, spec.ce.source, spec.seed) if cross_encoder else None
    rows = mine_to_rows(spec, encoder, beir.corpus, beir.queries, beir.split, cross_encoder=ce, scores=scores,
                        keep_incomplete=keep_incomplete, show_progress=False)
    return rows, spec, encoder, ce


def test_jsonl_rows_one_per_pair_no_labelled_positive(tiny_beir, tmp_path):
    root = two_positive_beir(tiny_beir, tmp_path)
    rows, spec, encoder, _ = mine(root)
    path = tmp_path / "negatives.jsonl"
    write_rows(rows, path, "jsonl")
    loaded = [json.loads(line) for line in path.read_text().splitlines()]

    positives, pairs = read_beir_by_hand(root)
    assert len(loaded) == pairs == 37  # 36 train queries, q0 with two positives
    negatives = [f"negative_{i}" for i in range(1, N + 1)]
    for row in loaded:
        assert list(row) == ["query", "positive", *negatives, "score"]
        assert row["positive"] in positives[row["query"]]
        assert all(isinstance(row[c], str) for c in negatives) and len(set(map(row.get, negatives))) == N
        assert not set(map(row.get, negatives)) & set(positives[row["query"]])  # no labelled positive, no exact twin
    two = [row for row in loaded if len(positives[row["query"]]) == 2]
    assert len(two) == 2 and {row["positive"] for row in two} == set(positives[two[0]["query"]])

    # score = [positive, negatives]: the dense cosine of each (query, text), recomputed here
    row = loaded[0]
    query = encoder.encode([row["query"]], max_length=spec.data.query_max_length)
    texts = encoder.encode([row["positive"], *map(row.get, negatives)], max_length=spec.data.doc_max_length)
    np.testing.assert_allclose(row["score"], (texts @ query[0]).tolist(), atol=1e-4)
    assert row["score"][1:] == sorted(row["score"][1:], reverse=True)  # hardest: the top of the dense pool


def test_parquet_score_columns_with_cross_encoder(tiny_beir, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    rows, spec, _, ce = mine(tiny_beir, scores="columns", cross_encoder=True, ce__threshold=1.0,
                             ce__margin=float("-inf"))  # filter rules off: the CE only scores
    path = tmp_path / "negatives.parquet"
    write_rows(rows, path, "parquet")
    table = pq.read_table(path)
    negatives = [f"negative_{i}" for i in range(1, N + 1)]
    assert table.column_names == ["query", "positive", *negatives, "positive_score",
                                  *(f"{c}_score" for c in negatives), "positive_ce_score",
                                  *(f"{c}_ce_score" for c in negatives)]
    assert table.num_rows == read_beir_by_hand(tiny_beir)[1]
    row = table.slice(0, 1).to_pylist()[0]
    logits = ce.score([row["query"]] * (N + 1), [row["positive"], *map(row.get, negatives)],
                      max_length=spec.ce.source.max_length)
    np.testing.assert_allclose([row["positive_ce_score"], *(row[f"{c}_ce_score"] for c in negatives)], logits,
                               atol=1e-4)


def test_band_leaves_out_or_keeps_rows_short_of_negatives(tiny_beir):
    band = dict(mining__strategy="band", mining__pool="offline", band__mode="gap", band__lo=0.005, band__hi=2.0,
                band__curriculum="linear", band__start_lo=-2.0, band__start_hi=0.0)
    kept, spec, _, _ = mine(tiny_beir, keep_incomplete=True, **band)
    assert final_band(spec) == pytest.approx((0.005, 2.0))  # the curriculum's end, not its start
    assert len(kept) == read_beir_by_hand(tiny_beir)[1]
    short = [row for row in kept if row["negative_3"] is None]
    assert 0 < len(short) < len(kept)  # negatives above the positive by 0.005: some queries have 3, some fewer
    for row in kept:  # one positive per query, so score[0] is the band's reference
        found = [s for s in row["score"][1:] if s is not None]
        assert all(s >= row["score"][0] + 0.005 - 1e-5 for s in found)
        assert [row[f"negative_{i}"] is None for i in range(1, N + 1)] == [s is None for s in row["score"][1:]]
    dropped, _, _, _ = mine(tiny_beir, **band)
    assert len(dropped) == len(kept) - len(short)
    assert all(row["negative_3"] is not None for row in dropped)


def test_cli_mine_writes_the_file(tiny_beir, tmp_path, capsys):
    out = tmp_path / "negatives.jsonl"  # in an existing folder (a missing one is an error: test_main.py)
    code = main(["mine", "--config", f"{REPO / 'configs/base.py'}:tiny", "--data", str(tiny_beir), "--output",
                 str(out), "--num-negatives", "2", "--retriever", "hybrid", "--scores", "none"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == read_beir_by_hand(tiny_beir)[1]
    assert list(rows[0]) == ["query", "positive", "negative_1", "negative_2"]
    assert "hnm mine: 36 rows" in capsys.readouterr().out


@pytest.mark.parametrize("flags, named", [
    (["--format", "csv"], "--format"),
    (["--num-negatives", "two"], "--num-negatives"),
    (["--num-negatives", "0"], "mining.num_negatives"),
    (["--strategy", "random"], "mining.strategy"),
    (["--strategy", "hardset"], "mining.strategy"),
    (["--split", "nope"], "nope.tsv"),
])
def test_cli_mine_bad_flag_is_one_line(tiny_beir, tmp_path, capsys, flags, named):
    out = tmp_path / "negatives.jsonl"
    code = main(["mine", "--config", f"{REPO / 'configs/base.py'}:tiny", "--data", str(tiny_beir), "--output",
                 str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0] and err[0].startswith("hnm mine: ")
    assert not out.exists()


def test_mining_spec_defaults_and_errors(tiny_beir):
    base = spec_from_config(tiny_config(tiny_beir))  # random negatives, no pool
    spec = mining_spec(base)
    assert (spec.mining.strategy, spec.mining.num_negatives, spec.mining.pool) == ("hardest", 5, "offline")
    mined = spec_from_config(tiny_config(tiny_beir, mining__strategy="band", mining__pool="online",
                                         mining__num_negatives=2))
    assert (mining_spec(mined).mining.strategy, mining_spec(mined).mining.num_negatives) == ("band", 2)
    with pytest.raises(ConfigError, match="mining.pool_size"):
        mining_spec(base, num_negatives=8, pool_size=4)
    # the retriever is the training refresh's: mining.retriever ("" = retriever.mode); --retriever replaces it
    assert mining_spec(base).mining_retriever.mode == "dense"
    lexical = mining_spec(base, retriever="lexical")
    assert lexical.mining_retriever.mode == "lexical" and lexical.retriever.mode == "dense"
    split = spec_from_config(tiny_config(tiny_beir, mining__strategy="band", mining__pool="online",
                                         mining__retriever="dense", retriever__mode="hybrid"))
    assert mining_spec(split).mining_retriever.mode == "dense"
