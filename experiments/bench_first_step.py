"""First-call (trace + compile + one step) and steady-step time of the project's jitted train step.

    python experiments/bench_first_step.py --repo . --label new --out results/bench_first_step.json
    git worktree add /tmp/old 5896496 && python experiments/bench_first_step.py --repo /tmp/old --label old \
        --out results/bench_first_step.json      # the code of another commit, appended to the same JSON

`experiments/bench_gpu.build_hnm_step` of `--repo` (MiniLM shape, 64 x 64, float32, einsum attention, threefry
dropout) with the persistent compilation cache off, so the first call pays the whole compile. Run labels
alternately (old, new, old, new) on idle cores: one 2-core machine varies by +-15% between minutes. Each run
appends one row, with `uptime` before and after and XLA_FLAGS, to the JSON list at `--out`. The test suite's
compile flags (tests/conftest.py FAST_COMPILE), on the tiny model:

    XLA_FLAGS="--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false" python \
        experiments/bench_first_step.py --label fast --shape tiny --batch 8 --length 16 --out results/bench_test_compile.json

Per call it also records the process's system seconds and minor page faults, and its peak resident memory.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".", help="checkout whose hnm_jax and experiments/bench_gpu.py are timed")
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", default="results/bench_first_step.json")
    parser.add_argument("--shape", default="minilm")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="steady steps timed after the first call")
    args = parser.parse_args()
    repo = Path(args.repo).resolve()
    os.environ["HNM_COMPILATION_CACHE"] = "off"
    sys.path[:0] = [str(repo), str(repo / "experiments")]  # that checkout's hnm_jax, before the installed one
    import bench_gpu
    import jax

    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    step, _, _ = bench_gpu.build_hnm_step(args.shape, args.batch, args.length, "float32", "einsum", "threefry")
    times, system_s, faults = [], [], []
    for _ in range(1 + args.steps):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        jax.block_until_ready(step()["loss"])
        times.append(round(time.perf_counter() - start, 2))
        after = resource.getrusage(resource.RUSAGE_SELF)
        system_s.append(round(after.ru_stime - before.ru_stime, 2))
        faults.append(after.ru_minflt - before.ru_minflt)
    row = {"label": args.label, "repo": str(repo), "shape": args.shape, "batch": args.batch, "length": args.length,
           "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "first_call_s": times[0], "steady_step_s": times[1:], "system_s": system_s, "minor_faults": faults,
           "max_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
           "uptime_before": uptime_before,
           "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([*rows, row], indent=1) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
