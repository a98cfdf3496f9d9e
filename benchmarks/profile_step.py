"""Where the train step's time goes on this machine: a `jax.profiler` trace of the jitted step, per HLO op.

    python -m benchmarks.profile_step --out results/profile_step.json          # MiniLM shape, 64 x 64, CPU
    python -m benchmarks.profile_step --variants einsum:threefry,xla:rbg --batch 32 --length 32

Each variant (model.attention : model.rng_impl, optionally `+FLAG=VALUE` XLA flags) runs in its own subprocess:
`bench_gpu.build_hnm_step` (random weights of the MiniLM shape, fixed random ids, one explicit negative, float32),
2 warm-up steps, then `--steps` steps under `jax.profiler.trace`. The trace's XLA events are HLO instruction names;
the events of the ENTRY computation's instructions (a while loop counts once, its body inside it) are summed and
grouped by what the instruction does, read from the optimized HLO: its opcode and, through its metadata op_name,
the JAX operation it came from (`CATEGORIES`, first match wins). Thunks run on two threads, so the summed op time
can exceed the step's wall time; shares are of the summed time.

Writes JSON (per variant: step seconds, per-category ms per step, the 15 costliest instructions) and markdown.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (category, opcode regex, op_name regex): first match wins; op_name is the instruction's metadata (JAX's path)
CATEGORIES = [
    ("dropout PRNG", r".*", r"random_bits|_bernoulli|_uniform|threefry|rng_bit_generator|random_wrap|fold_in"),
    ("dropout apply", r".*", r"/dropout/"),
    ("optimizer (AdamW, clip)", r".*", r"/optimizer/"),
    ("embedding gradient (scatter)", r".*", r"scatter-add|scatter_add|/scatter"),
    ("attention softmax", r".*", r"softmax|reduce_max|dot_product_attention(?!.*dot_general)"),
    ("matmul", r"dot|custom-call|fusion:ynn|fusion:onednn|fusion:.*dot", r"dot_general|.*"),
    ("layer norm / reductions", r"fusion:.*reduce|reduce", r".*"),
    ("copies / transposes", r"copy|transpose|fusion:.*(copy|transpose)", r".*"),
    ("elementwise (GELU, residual adds, ...)", r".*", r".*"),
]
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$")


def parse_hlo(text: str) -> dict[str, dict]:
    """ENTRY instructions of optimized HLO text -> {name: {"opcode", "op_name", "fused"}} (fused: opcodes inside)."""
    computations: dict[str, list[tuple[str, str, str]]] = {}
    entry, current = None, None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%([\w.\-]+) .*\{\s*$", line)
        if head:
            current = head.group(2)
            computations[current] = []
            entry = current if head.group(1) else entry
            continue
        found = INSTRUCTION.match(line)
        if found and current:
            op_name = re.search(r'op_name="([^"]*)"', line)
            calls = re.search(r"calls=%([\w.\-]+)", line)
            computations[current].append((found.group(1), found.group(3), (op_name.group(1) if op_name else ""),
                                          calls.group(1) if calls else ""))
    out = {}
    for name, opcode, op_name, calls in computations.get(entry, []):
        fused = {op for _, op, _, _ in computations.get(calls, [])} if calls else set()
        kind = opcode
        if opcode == "fusion":
            kind = "fusion:" + ("ynn" if name.startswith("ynn") else "onednn" if "onednn" in name else
                                "dot" if "dot" in fused else "+".join(sorted(fused & {"reduce", "copy", "transpose",
                                                                                      "scatter"})))
        out[name] = {"opcode": kind, "op_name": op_name}
    return out


def categorize(opcode: str, op_name: str) -> str:
    for category, opcode_re, op_name_re in CATEGORIES:
        if re.fullmatch(opcode_re, opcode) and re.search(op_name_re, op_name):
            return category
    return CATEGORIES[-1][0]


def op_times(trace_dir: str, instructions: dict[str, dict]) -> Counter:
    """Summed nanoseconds per ENTRY instruction over every XLA event of the trace."""
    import jax

    path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    totals: Counter = Counter()
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                if event.name in instructions:
                    totals[event.name] += event.duration_ns
    return totals


def child(args) -> None:
    import jax

    from benchmarks import bench_gpu

    step, step_fn, arguments = bench_gpu.build_hnm_step(args.shape, args.batch, args.length, "float32",
                                                        args.attention, args.rng_impl)
    for _ in range(2):
        jax.block_until_ready(step())
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(step())
        times.append(time.perf_counter() - t0)
    instructions = parse_hlo(step_fn.lower(*arguments()).compile().as_text())
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.steps):
                jax.block_until_ready(step())
        totals = op_times(trace_dir, instructions)
    per_category: Counter = Counter()
    for name, ns in totals.items():
        per_category[categorize(instructions[name]["opcode"], instructions[name]["op_name"])] += ns
    steps = args.steps
    top = [{"instruction": n, "opcode": instructions[n]["opcode"], "op_name": instructions[n]["op_name"][-120:],
            "ms_per_step": ns / 1e6 / steps} for n, ns in totals.most_common(15)]
    result = {"step_s": statistics.median(times), "step_times_s": times,
              "ms_per_step": {c: ns / 1e6 / steps for c, ns in per_category.most_common()},
              "summed_op_ms_per_step": sum(totals.values()) / 1e6 / steps, "top": top,
              "instructions": len(instructions), "jax": jax.__version__}
    print("RESULT " + json.dumps(result), flush=True)


def markdown(rows: list[dict], args) -> str:
    lines = ["# Where the train step's time goes (jax.profiler trace, CPU)", "",
             f"`python -m benchmarks.profile_step {' '.join(sys.argv[1:])}`: random MiniLM-shaped weights, "
             f"batch {args.batch} x length {args.length}, one explicit negative (3 texts an example), float32; "
             f"{args.steps} traced steps per variant. ms per step summed over both threads; share of the summed op "
             "time.", ""]
    categories = [c for c, _, _ in CATEGORIES]
    lines += ["| variant | step s | examples/s | " + " | ".join(categories) + " |",
              "|---|---|---|" + "---|" * len(categories)]
    for r in rows:
        if "step_s" not in r:
            lines.append(f"| {r['variant']} | {r.get('error', '?')} |")
            continue
        total = r["summed_op_ms_per_step"]
        cells = [f"{r['ms_per_step'].get(c, 0):.0f} ({100 * r['ms_per_step'].get(c, 0) / total:.0f}%)"
                 for c in categories]
        lines.append(f"| {r['variant']} | {r['step_s']:.2f} | {args.batch / r['step_s']:.1f} | " + " | ".join(cells)
                     + " |")
    for r in rows:
        if "top" in r:
            lines += ["", f"Costliest instructions, {r['variant']}:", "", "| instruction | opcode | ms/step | op_name |",
                      "|---|---|---|---|"]
            lines += [f"| {t['instruction']} | {t['opcode']} | {t['ms_per_step']:.1f} | `{t['op_name']}` |"
                      for t in r["top"][:8]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="einsum:threefry,einsum:rbg,xla:threefry,xla:rbg",
                   help="attention:rng_impl[+XLA_FLAG=VALUE...], comma separated")
    p.add_argument("--shape", default="minilm")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="results/profile_step.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--attention", help=argparse.SUPPRESS)
    p.add_argument("--rng-impl", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    rows, out = [], Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load = {"uptime_before": os.getloadavg()}
    for variant in args.variants.split(","):
        setting, *flags = variant.split("+")
        attention, rng_impl = setting.split(":")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "HNM_COMPILATION_CACHE": "off",
               "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", "")] + [f"--{f}" for f in flags]).strip()}
        cmd = [sys.executable, "-m", "benchmarks.profile_step", "--child", "--attention", attention, "--rng-impl", rng_impl, "--shape",
               args.shape, "--batch", str(args.batch), "--length", str(args.length), "--steps", str(args.steps)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        found = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        row = {"variant": variant, **(json.loads(found[-1][7:]) if found else
                                      {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][-300:]})}
        rows.append(row)
        print(variant, row.get("step_s"), row.get("ms_per_step") or row.get("error"), flush=True)
    load["uptime_after"] = os.getloadavg()
    out.write_text(json.dumps({"shape": args.shape, "batch": args.batch, "length": args.length, **load,
                               "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, args))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
