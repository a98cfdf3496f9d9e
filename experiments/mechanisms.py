"""Does each mechanism of the recipe change training? One table from the ablation runs of one dataset and seed.

    python experiments/ablate.py --seeds 0 --runs abt_buy:online_band,online_hardest,online_band_margin,online_band_curriculum,online_band_uniformity,online_band_hybrid_logits,online_band_ce --runs-dir results/mechanisms/runs --results results/mechanisms --workdirs workdirs/mechanisms
    python experiments/mechanisms.py --runs-dir results/mechanisms/runs --workdirs workdirs/mechanisms --params

For each mechanism: the run with it on vs the run with it off (same seed, dataset, budget): its per-step diagnostic
(mean over the logged steps, first and last), the final training loss, test accuracy@1 with the dense and the
hybrid retriever, pairwise accuracy vs the labelled near-duplicates, wall-clock; with --params also the L2 distance
between the two runs' final parameters relative to how far the "off" run moved from the pretrained model.
Writes <runs-dir>/../mechanisms.{json,md}.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# mechanism -> (config with it on, config with it off, diagnostic curve keys)
MECHANISMS = {
    "margin (additive, hardness-growing)": ("online_band_margin", "online_band",
                                            ("train/margin_active_fraction", "train/margin_grad_share",
                                             "train/margin_loss_delta")),
    "band (gap, semi-hard, refilled) vs hardest": ("online_band", "online_hardest",
                                                   ("train/explicit_negatives_per_query",
                                                    "train/explicit_negative_gap", "train/explicit_negative_score")),
    "curriculum (both edges, over the run)": ("online_band_curriculum", "online_band",
                                              ("train/band_lo", "train/band_hi", "train/explicit_negatives_per_query",
                                               "train/explicit_negative_gap")),
    "cross-encoder filter (cross-fitted)": ("online_band_ce", "online_band",
                                            ("refresh/ce_filter_on", "refresh/ce_removed_margin",
                                             "refresh/ce_removed_threshold", "refresh/ce_gate_precision",
                                             "refresh/ce_gate_recall", "refresh/ce_gate_negatives_removed")),
    "hybrid logits (deployed fusion)": ("online_band_hybrid_logits", "online_band",
                                        ("train/hybrid_beta_mean", "train/hardest_negative_score",
                                         "train/in_batch_accuracy")),
    "uniformity regularizer (0.05)": ("online_band_uniformity", "online_band", ("train/uniformity",)),
}


def load(runs_dir: Path, config: str, dataset: str, seed: int) -> dict | None:
    path = runs_dir / f"{config}-{dataset}-{seed}.json"
    return json.loads(path.read_text()) if path.exists() else None


def curve_summary(run: dict, key: str) -> dict | None:
    """{mean, first, last, n} of a curve, or None when the run did not log it."""
    points = run.get("curves", {}).get(key)
    if not points:
        return None
    values = [v for _, v in points]
    return {"mean": float(np.mean(values)), "first": values[0], "last": values[-1], "n": len(values)}


def outcome(run: dict) -> dict:
    metrics = run["metrics"]
    retrievers = metrics.get("retrievers", {})
    loss = run.get("curves", {}).get("train/loss", [[0, float("nan")]])
    return {"final_loss": loss[-1][1],
            "acc1_dense": retrievers.get("dense", {}).get("accuracy@1", float("nan")),
            "acc1_hybrid": retrievers.get("hybrid", {}).get("accuracy@1", float("nan")),
            "pairwise_accuracy": metrics.get("pairwise_accuracy", float("nan")),
            "search": metrics.get("search"), "wall_s": run.get("wall_s", float("nan"))}


def param_change(workdirs: Path, on: str, off: str, dataset: str, seed: int) -> dict | None:
    """||p_on - p_off|| / ||p_off - p_init|| over all parameters (None when a workdir is gone)."""
    from hnm_jax.models.loading import load_trained
    from hnm_jax.models.pretrained import load_encoder

    dirs = [workdirs / f"{config}-{dataset}-{seed}" for config in (on, off)]
    if not all((d / "checkpoints").exists() for d in dirs):
        return None
    flat = [np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in __import__("jax").tree.leaves(p)])
            for p in (load_trained(dirs[0])[0].state, load_trained(dirs[1])[0].state,
                      load_encoder("all-MiniLM-L6-v2").state)]
    between, moved = np.linalg.norm(flat[0] - flat[1]), np.linalg.norm(flat[1] - flat[2])
    return {"l2_on_off": float(between), "l2_off_init": float(moved), "relative": float(between / moved)}


def fmt(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def markdown(rows: list[dict], dataset: str, seed: int) -> str:
    lines = [f"## Mechanisms on {dataset}, seed {seed} (on vs off)", "",
             "| mechanism | arm | diagnostic: mean (first -> last) | final loss | acc@1 dense | acc@1 hybrid | "
             "pairwise acc. | wall-clock | params: ‖on−off‖ / ‖off−init‖ |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for arm in ("on", "off"):
            run = row[arm]
            if run is None:
                lines.append(f"| {row['mechanism']} | {arm}: {row[arm + '_config']} | (not run) | | | | | | |")
                continue
            diags = "; ".join(f"{k.split('/')[-1]} {fmt(v['mean'], 3)} ({fmt(v['first'], 3)} -> {fmt(v['last'], 3)})"
                              for k, v in run["diagnostics"].items() if v is not None) or "-"
            o = run["outcome"]
            params = row.get("params") if arm == "on" else None
            lines.append(f"| {row['mechanism'] if arm == 'on' else ''} | {arm}: {row[arm + '_config']} | {diags} | "
                         f"{fmt(o['final_loss'])} | {fmt(o['acc1_dense'])} | {fmt(o['acc1_hybrid'])} | "
                         f"{fmt(o['pairwise_accuracy'])} | {o['wall_s'] / 60:.1f} min | "
                         f"{fmt(params['relative'], 3) if params else '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=str(REPO / "results" / "mechanisms" / "runs"))
    parser.add_argument("--workdirs", default=str(REPO / "workdirs" / "mechanisms"))
    parser.add_argument("--dataset", default="abt_buy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", action="store_true", help="also compare final parameters (needs the workdirs)")
    args = parser.parse_args()
    runs_dir = Path(args.runs_dir)
    rows = []
    for mechanism, (on, off, keys) in MECHANISMS.items():
        row = {"mechanism": mechanism, "on_config": on, "off_config": off}
        for arm, config in (("on", on), ("off", off)):
            run = load(runs_dir, config, args.dataset, args.seed)
            row[arm] = None if run is None else {"diagnostics": {k: curve_summary(run, k) for k in keys},
                                                 "outcome": outcome(run)}
        if args.params and row["on"] and row["off"]:
            row["params"] = param_change(Path(args.workdirs), on, off, args.dataset, args.seed)
        rows.append(row)
    out = runs_dir.parent / "mechanisms"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, args.dataset, args.seed))
    print(markdown(rows, args.dataset, args.seed))


if __name__ == "__main__":
    main()
