"""Issue 25, round 2: which deployed fusion of dense and BM25 scores a trained run should use, read on dev.

    python -m experiments.fusion WORKDIR [WORKDIR ...] --split dev --out results/recipe_dev_r2/fusion

Each workdir (a finished training run) is encoded once on `--split` over the whole corpus (exact search, the run's
eval.* settings, as `hnm eval` does), and every retriever of FUSIONS ranks the same embeddings: dense alone, BM25
alone, dense + w x min-max BM25 for each w of LEXICAL_WEIGHTS, and reciprocal-rank fusion, with BM25 over word
tokens and over "codes" tokens (retriever.lexical_tokens). One JSON per workdir
(<out>/<workdir name>.json: accuracy@1 and the per-query rank of the first relevant document under each fusion),
then a table. The run's own setting (weighted, w = 0.3) must reproduce the hybrid accuracy@1 of its training JSON.

A run with a re-ranking stage (ce.rerank_depth > 0 and a cross-encoder, as `hnm eval` resolves it) also ranks its
deployed retriever's top ce.rerank_depth by CE logit alone ("ce", `hnm eval`'s re-ranking) and by the retriever's
score + v x the query's min-max-scaled CE logits for each v of CE_WEIGHTS ("ce_<v>", `scoring.interpolate_ce`;
PROTOCOL.md section 10).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LEXICAL_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
CE_WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
# name -> the RetrieverSpec fields it sets over the run's own retriever.*
FUSIONS: dict[str, dict[str, Any]] = {
    "dense": {"mode": "dense"},
    "lexical": {"mode": "lexical", "lexical_tokens": "words"},
    **{f"weighted_{w}": {"mode": "hybrid", "fusion": "weighted", "dense_weight": 1.0, "lexical_weight": w,
                         "lexical_tokens": "words"} for w in LEXICAL_WEIGHTS},  # fmt: skip
    "rrf": {"mode": "hybrid", "fusion": "rrf", "lexical_tokens": "words"},
    # BM25 over "codes" tokens (PROTOCOL.md section 9's addendum): product codes written apart also match joined
    "lexical_codes": {"mode": "lexical", "lexical_tokens": "codes"},
    **{f"weighted_codes_{w}": {"mode": "hybrid", "fusion": "weighted", "dense_weight": 1.0, "lexical_weight": w,
                               "lexical_tokens": "codes"} for w in LEXICAL_WEIGHTS},  # fmt: skip
    "rrf_codes": {"mode": "hybrid", "fusion": "rrf", "lexical_tokens": "codes"},
}


def sweep(workdir: Path, split: str) -> dict[str, Any]:
    """{"workdir", "dataset", "split", "query_ids", "fusions": {name: {"accuracy@1", "rank": [Q]}}} of one run."""
    from hnm_jax.evaluate import embed_split, relevant_rows
    from hnm_jax.metrics import first_relevant_rank
    from hnm_jax.mining.lexical import TOKENIZERS
    from hnm_jax.mining.pipeline import at_least_10, build_lexical_index, build_retriever
    from hnm_jax.mining.retriever import Retriever
    from hnm_jax.mining.scoring import RETRIEVE_K, interpolate_ce, reorder_top, rerank_logits
    from hnm_jax.training.runs import EvalFlags, load_run

    run = load_run(workdir=workdir, split=split, evaluation=EvalFlags(search="exact"))
    data, spec = run.data, run.spec
    relevant = relevant_rows(spec, data.root, data.corpus, data.queries, data.split)[0]
    spec, doc_emb, query_emb = embed_split(spec, run.encoder, data.corpus, data.queries, data.split,
                                           cache_dir=run.cache_dir, resolve_ce=run.cross_encoder is not None,
                                           show_progress=True)  # fmt: skip
    query_texts = [data.queries.texts[i] for i in data.split.query_rows]
    lexical = {tokens: build_lexical_index(data.corpus.texts, tokens=tokens) for tokens in TOKENIZERS}
    dense = build_retriever(dataclasses.replace(spec.retriever, mode="dense"), doc_emb, index=spec.index,
                            exact=True).dense  # fmt: skip
    k = min(RETRIEVE_K, len(data.corpus))
    fusions = {}
    for name, fields in FUSIONS.items():
        retriever_spec = dataclasses.replace(spec.retriever, **fields)
        retriever = Retriever(retriever_spec, dense, lexical[retriever_spec.lexical_tokens])
        rank = first_relevant_rank(at_least_10(retriever.retrieve(query_emb, query_texts, k=k).indices), relevant)
        fusions[name] = {"accuracy@1": float(np.mean(rank == 1)), "rank": rank.tolist()}
    if run.cross_encoder is not None:  # the run's re-ranking stage over its deployed retriever
        deployed = Retriever(spec.retriever, dense, lexical[spec.retriever.lexical_tokens])
        retrieved = deployed.retrieve(query_emb, query_texts, k=k)
        ranked = at_least_10(retrieved.indices)
        logits = rerank_logits(ranked, query_texts, data.corpus.texts, run.cross_encoder,
                               spec.ce.rerank.rerank_depth, spec.eval.batch_size, show_progress=True,
                               max_length=spec.ce.source.max_length)  # fmt: skip
        fused = retrieved.fused[:, :logits.shape[1]]
        scores = {"ce": logits, **{f"ce_{v}": interpolate_ce(fused, logits, v) for v in CE_WEIGHTS}}
        for name, score in scores.items():
            rank = first_relevant_rank(reorder_top(ranked, score), relevant)
            fusions[name] = {"accuracy@1": float(np.mean(rank == 1)), "rank": rank.tolist()}
    return {"workdir": str(workdir), "dataset": spec.data.name, "split": split, "retriever": spec.retriever.mode,
            "lexical_weight": spec.retriever.lexical_weight, "fusion": spec.retriever.fusion,
            "query_ids": [data.queries.ids[r] for r in data.split.query_rows], "fusions": fusions}


def picked(record: dict[str, Any]) -> tuple[str, float]:
    """The fusion a run's split picks: the highest accuracy@1, ties to the earlier in FUSIONS (PROTOCOL.md
    section 9)."""
    name = max(FUSIONS, key=lambda f: (record["fusions"][f]["accuracy@1"], -list(FUSIONS).index(f)))
    return name, record["fusions"][name]["accuracy@1"]


def table(records: Sequence[dict[str, Any]]) -> str:
    """Fusions x runs: accuracy@1, the mean over runs, and the fusion each run's split picks."""
    names = [Path(r["workdir"]).name for r in records]
    lines = ["| fusion | " + " | ".join(names) + " | mean |", "|---|" + "---|" * (len(names) + 1)]
    rerankings = [name for name in records[0]["fusions"] if name not in FUSIONS
                  and all(name in r["fusions"] for r in records)]  # fmt: skip
    for fusion in [*FUSIONS, *rerankings]:
        values = [r["fusions"][fusion]["accuracy@1"] for r in records]
        lines.append(f"| {fusion} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {np.mean(values):.4f} |")
    best = [picked(r) for r in records]
    lines.append("| picked on this split | " + " | ".join(f"{name}: {value:.4f}" for name, value in best)
                 + f" | {np.mean([value for _, value in best]):.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.fusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--out", type=Path, required=True, help="folder of the per-run JSONs")
    args = parser.parse_args(argv)
    from hnm_jax.atomic_write import write_text

    records = []
    for workdir in args.workdirs:
        path = args.out / f"{workdir.name}.json"
        if not path.exists():
            write_text(path, json.dumps(sweep(workdir, args.split)))
        records.append(json.loads(path.read_text()))
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
