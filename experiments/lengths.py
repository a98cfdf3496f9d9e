"""Token lengths of the benchmarks: p50/p95 per side and the truncated share at the old cut vs the auto width.

    python -m experiments.lengths --out results/lengths.json     # ~1 min on 2 CPU cores (+ the synthetic build once)

"Before" is the old ablation budget (every text cut at 32 tokens); "after" is what a run now uses by default:
`hnm_jax.data.lengths.resolve_lengths` on configs/ablations/online_band.py (each side's width covers 95% of its
records, multiple of 8, capped at 256). Writes JSON and a markdown table beside it (.md). "synthetic" is
`hnm_jax.data.synthetic` at size "ablation", written once as a BEIR folder under --workdirs.
"""

import argparse
import json
import time
from pathlib import Path

from configs.ablations import online_band
from hnm_jax.atomic_write import atomic_path
from hnm_jax.config import spec_from_config
from hnm_jax.data.beir import load_texts, resolve_dataset_path
from hnm_jax.data.lengths import resolve_lengths, token_lengths, truncated_share
from hnm_jax.data.synthetic import SIZES, generate, write_beir
from hnm_jax.models.pretrained import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
OLD_CUT = 32
DATASETS = ("abt_buy", "amazon_google", "walmart_amazon", "synthetic")
SYNTHETIC_SIZE = "ablation"  # hnm_jax.data.synthetic.SIZES key: 2,250 records, 1,000 queries


def synthetic_root(workdirs: Path) -> Path:
    """<workdirs>/datasets/synthetic_ablation: the synthetic benchmark as a BEIR folder, written once (the same
    bytes as the TFDS builder's export of that size)."""
    root = Path(workdirs).resolve() / "datasets" / f"synthetic_{SYNTHETIC_SIZE}"
    if not root.is_dir():
        with atomic_path(root) as tmp:
            write_beir(generate(SIZES[SYNTHETIC_SIZE]), tmp)
    return root


def measure(root: Path, tokenizer) -> dict:
    _, corpus, queries = load_texts(root)
    config = online_band.get_config()
    config.data.path = str(root)
    spec, stats = resolve_lengths(spec_from_config(config), tokenizer, corpus.texts, queries.texts)
    rows = {}
    for side, texts, width in (("queries", queries.texts, spec.data.query_max_length),
                               ("documents", corpus.texts, spec.data.doc_max_length)):
        lengths = token_lengths(tokenizer, texts)
        stat = stats["query" if side == "queries" else "doc"]
        rows[side] = {"count": stat.count, "p50": stat.p50, "p95": stat.p95, "max": stat.max,
                      "truncated_before": truncated_share(lengths, OLD_CUT), "width_after": width,
                      "truncated_after": truncated_share(lengths, width)}
    rows["eval_width"], rows["ce_width"] = spec.eval.max_length, spec.ce.source.max_length
    return rows


def markdown(results: dict) -> str:
    lines = ["| dataset | side | records | p50 | p95 | max | truncated at 32 (before) | width (after) | "
             "truncated (after) |", "|---|---|---|---|---|---|---|---|---|"]
    for dataset, rows in results["datasets"].items():
        for side in ("queries", "documents"):
            r = rows[side]
            lines.append(f"| {dataset} | {side} | {r['count']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['max']} | "
                         f"{100 * r['truncated_before']:.1f}% | {r['width_after']} | {100 * r['truncated_after']:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.lengths", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "results" / "lengths.json"))
    parser.add_argument("--workdirs", default=str(REPO / "workdirs" / "ablations"), help="where synthetic is built")
    args = parser.parse_args()
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    start = time.time()
    results = {"command": "python -m experiments.lengths", "old_cut": OLD_CUT, "datasets": {}}
    for dataset in DATASETS:
        root = synthetic_root(Path(args.workdirs)) if dataset == "synthetic" else resolve_dataset_path(dataset)
        results["datasets"][dataset] = measure(root, tokenizer)
    results["wall_s"] = time.time() - start
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
