"""experiments/st_anchor.py: the sentence-transformers anchor. Its pair building runs here; its training and
evaluation run in the peers environment (torch), only where `make .venv-peers/.installed` built it."""

import json
import math
import subprocess
from pathlib import Path

import pytest

from experiments.st_anchor import train_pairs

REPO = Path(__file__).resolve().parents[1]
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"

# A tiny BERT (2 layers, hidden 32) with a word-level vocabulary of the data's words, saved as a sentence-transformers
# folder (mean pooling, normalized): what `st_anchor --model` trains, in place of all-MiniLM-L6-v2.
TINY_ST_MODEL = """
import json, re, sys
from pathlib import Path
from sentence_transformers import SentenceTransformer, models
from transformers import BertConfig, BertModel, BertTokenizerFast

data, out = Path(sys.argv[1]), Path(sys.argv[2])
words = set()
for name in ("corpus.jsonl", "queries.jsonl"):
    for line in (data / name).read_text().splitlines():
        words |= set(re.findall(r"\\w+|[^\\w\\s]", json.loads(line)["text"].lower()))
bert = out / "bert"
bert.mkdir(parents=True)
(bert / "vocab.txt").write_text("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]) + "\\n")
tokenizer = BertTokenizerFast(vocab_file=str(bert / "vocab.txt"))
tokenizer.save_pretrained(str(bert))
config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64)
BertModel(config).save_pretrained(str(bert))
transformer = models.Transformer(str(bert), max_seq_length=32)
pooling = models.Pooling(32, pooling_mode="mean")
SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(out / "st"))
"""


def read_jsonl(path: Path) -> dict[str, str]:
    return {row["_id"]: row["text"] for row in map(json.loads, path.read_text().splitlines())}


def test_train_pairs_are_one_per_train_qrel_with_the_whole_corpus(tiny_beir):
    corpus, queries = read_jsonl(tiny_beir / "corpus.jsonl"), read_jsonl(tiny_beir / "queries.jsonl")
    qrels = [line.split("\t")[:2] for line in (tiny_beir / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    anchors, positives, corpus_texts = train_pairs(tiny_beir)
    assert sorted(zip(anchors, positives, strict=True)) == sorted((queries[q], corpus[d]) for q, d in qrels)
    assert sorted(corpus_texts) == sorted(corpus.values())


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.exists(), reason="needs torch + sentence-transformers: "
                                                      "`make .venv-peers/.installed`")
def test_anchor_trains_and_is_evaluated_by_hnm_eval(tiny_beir, tmp_path):
    built = subprocess.run([str(PEERS_PYTHON), "-c", TINY_ST_MODEL, str(tiny_beir), str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    out = tmp_path / "run.json"
    command = [str(PEERS_PYTHON), "-m", "experiments.st_anchor", "--model", str(tmp_path / "st"), "--data",
               str(tiny_beir), "--epochs", "2", "--batch-size", "8", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    test_queries = len((tiny_beir / "qrels" / "test.tsv").read_text().splitlines()) - 1
    assert record["train_pairs"] == len((tiny_beir / "qrels" / "train.tsv").read_text().splitlines()) - 1
    assert record["columns"] == ["anchor", "positive", *(f"negative_{i}" for i in range(1, 6))]
    assert 0 < record["mined_rows"] <= record["train_pairs"]
    assert record["losses"] and all(math.isfinite(x) for x in record["losses"])
    metrics = record["metrics"]  # hnm eval's own JSON: the whole corpus, the per-query ranks paired statistics need
    assert metrics["num_queries"] == test_queries and len(metrics["per_query"]["rank_dense"]) == test_queries
    assert metrics["num_docs"] == len((tiny_beir / "corpus.jsonl").read_text().splitlines())
    assert metrics["search"] == "exact"
    # the JAX port and torch scored the same trained weights: the same top-1 but for near ties
    assert abs(metrics["retrievers"]["dense"]["accuracy@1"] - record["torch_dense"]["accuracy@1"]) <= 1 / test_queries
    # a second call with the JSON present does not retrain
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert again.returncode == 0 and "exists" in again.stdout
