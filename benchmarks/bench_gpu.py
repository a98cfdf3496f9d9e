"""Training speed on one GPU: hnm_jax's jitted train step vs a torch loop, MiniLM and BERT-base shapes, f32 and bf16.

    python -m benchmarks.bench_gpu --out results/bench_gpu.json             # a GPU machine: under 6 minutes
    python -m benchmarks.bench_gpu --smoke --out /tmp/bench_gpu.json        # any machine (CPU): tiny shapes, ~1 min

Each contender runs in its own subprocess, one after another (memory pools never overlap), on random weights
(speed does not depend on them) and fixed-shape random token ids with all-ones masks (no padding savings for
anyone); an example is a query, its positive and one negative (3 texts), the loss InfoNCE over [B, 2B] logits at
temperature 0.05, AdamW (lr 2e-5, weight decay 0.01, clip 1.0), dropout 0.1 on.

  hnm      `train_step.jit_train_step` on a random `BertEncoder`; settings are model.dtype / model.attention /
           model.rng_impl ("auto" = what a config gets by default: cuDNN attention for bf16 on GPU, rbg dropout).
           The first step's compile is cold (a fresh persistent cache per bench run); the "warm" row reruns a
           setting in a new process on that cache, which is what a second `hnm train` pays.
  torch    Hugging Face BertModel (attn_implementation="sdpa"), eager, AdamW(fused), bf16 autocast or f32 with
           TF32 matmuls (JAX's default f32 precision on GPU is TF32 too). Needs torch + transformers in the same
           Python (the GPU machine's own); skipped with the reason otherwise. Nothing here is a core dependency.

Reported per row: step seconds (median of timed steps after 2 warm-up steps), examples/s, model TFLOP/s and MFU
against the GPU's dense bf16 peak (`PEAK_TFLOPS` by device name, or --peak-tflops), first-step seconds, and for hnm
the compiles and compile seconds of the first step (`compile_stats.CompileCounter`). Rows run in plan order while
they fit in --budget-s (320 s: with start-up, the whole run stays under 6 minutes); the rest are listed as skipped.
JSON + markdown (same name, .md) are rewritten after every row.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # BERT shapes: MiniLM-L6 (the project's default model) and BERT-base (e5/bge-base size)
    "minilm": {"hidden_size": 384, "num_layers": 6, "num_heads": 12, "intermediate_size": 1536},
    "base": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64},
}
VOCAB = 30522
# Dense bf16 tensor-core peak, TFLOP/s, by a substring of the device name (first match wins).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
               "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}
# (shape, batch, length, dtype, contender, attention, rng_impl, note); in priority order.
PLAN = [
    ("minilm", 512, 64, "bfloat16", "hnm", "auto", "auto", "cold"),
    ("minilm", 512, 64, "bfloat16", "torch", "-", "-", ""),
    ("minilm", 512, 64, "float32", "hnm", "auto", "auto", "cold"),
    ("minilm", 512, 64, "float32", "torch", "-", "-", "TF32"),
    ("base", 256, 64, "bfloat16", "hnm", "auto", "auto", "cold"),
    ("base", 256, 64, "bfloat16", "torch", "-", "-", ""),
    ("minilm", 512, 64, "bfloat16", "hnm", "auto", "auto", "warm"),
    ("minilm", 512, 64, "bfloat16", "hnm", "xla", "rbg", "cold"),
    ("minilm", 512, 64, "bfloat16", "hnm", "einsum", "threefry", "cold"),
]
SMOKE_PLAN = [("tiny", 8, 16, dtype, who, att, rng, note) for dtype, who, att, rng, note in [
    ("bfloat16", "hnm", "auto", "auto", "cold"), ("bfloat16", "torch", "-", "-", ""),
    ("float32", "hnm", "auto", "auto", "cold"), ("float32", "hnm", "auto", "auto", "warm"),
    ("float32", "hnm", "xla", "rbg", "cold"), ("float32", "torch", "-", "-", "TF32")]]


def train_flops_per_example(shape: dict, length: int, texts: int = 3) -> float:
    """Forward + backward FLOPs of one example: 3x the forward's matmuls (2 FLOPs per multiply-add) per text,
    forward = 2 L P (the linear layers, P = n (4 H^2 + 2 H I) weights) + 4 n L^2 H (Q K^T and P V)."""
    h, n, i = shape["hidden_size"], shape["num_layers"], shape["intermediate_size"]
    linear = n * (4 * h * h + 2 * h * i)
    forward = 2 * length * linear + 4 * n * length * length * h
    return 3.0 * forward * texts


def random_ids(rng, rows: int, length: int):
    ids = rng.integers(1000, VOCAB - 1, size=(rows, length)).astype("int32")
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return ids


def timed_steps(step, sync, seconds: float, max_steps: int) -> list[float]:
    """Per-step seconds of up to `max_steps` steps, stopping once `seconds` have passed (at least 3 steps)."""
    times, start = [], time.perf_counter()
    while len(times) < max_steps and (len(times) < 3 or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------------------ contenders
def build_hnm_step(shape: str, batch: int, length: int, dtype: str, attention: str, rng_impl: str):
    """The project's jitted train step on a random `BertEncoder` of `shape` and one fixed batch of random ids.

    Returns (step, step_fn, state_and_batch): `step()` runs one update in place and returns its metrics;
    `step_fn` is the jitted function and `state_and_batch()` its current arguments (for `.lower`, e.g. to read HLO).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from hnm_jax import sharding
    from hnm_jax.config import load_config_file, spec_from_config
    from hnm_jax.models.encoder import BertConfig, BertEncoder, PoolingSpec
    from hnm_jax.training.optimizer import make_optimizer
    from hnm_jax.training.step import create_train_state, jit_train_step

    config = BertConfig(vocab_size=VOCAB, **SHAPES[shape])
    compute = jnp.dtype(dtype)

    def build():
        return BertEncoder(config, rngs=nnx.Rngs(0), dtype=compute, attention=attention)

    graphdef = nnx.graphdef(nnx.eval_shape(build))
    params = jax.jit(lambda: nnx.state(build()))()  # one compiled init instead of one dispatch per parameter
    spec = spec_from_config(load_config_file(str(REPO / "configs/base.py")))
    tx = make_optimizer(spec.train, 1000)
    mesh = sharding.make_mesh()
    state = create_train_state(graphdef, params, tx, 0)
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    state = jax.device_put(state, state_sharding)
    step_fn = jit_train_step(tx, spec.loss, None, PoolingSpec(), True, state_sharding, sharding.batch_sharding(mesh),
                             rng_impl=rng_impl)
    rng = np.random.default_rng(0)
    ones = np.ones((batch, length), np.int32)
    data = {"query_ids": random_ids(rng, batch, length), "query_mask": ones,
            "pos_ids": random_ids(rng, batch, length), "pos_mask": ones,
            "neg_ids": random_ids(rng, batch, length)[:, None], "neg_mask": ones[:, None],
            "pos_doc": np.arange(batch, dtype=np.int32), "neg_doc": np.arange(batch, 2 * batch, dtype=np.int32)[:, None],
            "query_positives": np.arange(batch, dtype=np.int32)[:, None]}
    data = sharding.to_global(data, mesh)
    holder = {"state": state}

    def step():
        holder["state"], metrics = step_fn(holder["state"], data)
        return metrics

    return step, step_fn, lambda: (holder["state"], data)


def run_hnm(shape: str, batch: int, length: int, dtype: str, attention: str, rng_impl: str, seconds: float,
            max_steps: int) -> dict:
    from hnm_jax.compile_stats import CompileCounter, enable_compilation_cache

    enable_compilation_cache()  # HNM_COMPILATION_CACHE: the bench's own folder (see main)
    import jax
    import jax.numpy as jnp

    from hnm_jax.models.encoder import resolve_attention
    from hnm_jax.training.step import resolve_rng_impl

    step, _, _ = build_hnm_step(shape, batch, length, dtype, attention, rng_impl)
    counter = CompileCounter().start()
    t0 = time.perf_counter()
    metrics = jax.block_until_ready(step())
    first_s = time.perf_counter() - t0
    compiles = counter.stop()
    for _ in range(2):
        jax.block_until_ready(step())
    times = timed_steps(step, jax.block_until_ready, seconds, max_steps)
    metrics = jax.device_get(step())
    device = jax.devices()[0]
    return {"step_s": statistics.median(times), "steps_timed": len(times), "first_step_s": first_s,
            "loss": float(metrics["loss"]), **{f"first_step_{k}": v for k, v in compiles.items()},
            "attention_resolved": resolve_attention(attention, jnp.dtype(dtype), device.platform),
            "rng_resolved": resolve_rng_impl(rng_impl, device.platform), "device": device.device_kind,
            "platform": device.platform, "jax": jax.__version__}


def run_torch(shape: str, batch: int, length: int, dtype: str, seconds: float, max_steps: int) -> dict:
    try:
        import numpy as np
        import torch
        from transformers import BertConfig, BertModel
    except ImportError as error:
        return {"skipped": f"torch/transformers not importable here ({error})"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "float32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    dims = SHAPES[shape]
    config = BertConfig(vocab_size=VOCAB, hidden_size=dims["hidden_size"], num_hidden_layers=dims["num_layers"],
                        num_attention_heads=dims["num_heads"], intermediate_size=dims["intermediate_size"],
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, attn_implementation="sdpa")
    net = BertModel(config, add_pooling_layer=False).to(device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-5, weight_decay=0.01, fused=device == "cuda")
    rng = np.random.default_rng(0)
    queries = torch.tensor(random_ids(rng, batch, length), device=device)
    docs = torch.tensor(random_ids(rng, 2 * batch, length), device=device)
    labels = torch.arange(batch, device=device)
    autocast = dtype == "bfloat16"

    def embed(ids):
        hidden = net(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        return torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            scores = embed(queries) @ embed(docs).T
        loss = torch.nn.functional.cross_entropy(scores.float() / 0.05, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    sync(step())
    first_s = time.perf_counter() - t0
    for _ in range(2):
        sync(step())
    times = timed_steps(step, sync, seconds, max_steps)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {"step_s": statistics.median(times), "steps_timed": len(times), "first_step_s": first_s,
            "loss": float(step()), "device": name, "platform": device, "torch": torch.__version__}


# ------------------------------------------------------------------------------------------------ parent
def peak_for(device: str, override: float | None) -> float | None:
    if override:
        return override
    return next((peak for name, peak in PEAK_TFLOPS.items() if name.lower() in device.lower()), None)


def markdown(rows: list[dict]) -> str:
    lines = ["# Training speed on one GPU: hnm_jax vs a torch loop", "",
             "`python -m benchmarks.bench_gpu` (see its docstring). An example = query + positive + negative; "
             "MFU against the device's dense bf16 peak. `hnm` settings: dtype / attention / dropout PRNG as "
             "configured (resolved). First step = compile + run (cold: empty persistent cache; warm: its second "
             "process).", "",
             "| shape | B x L | dtype | contender | settings | examples/s | vs torch | TFLOP/s | MFU | step ms | "
             "first step s | compiles (s) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    torch_rate = {(r["shape"], r["dtype"]): r["examples_per_s"] for r in rows
                  if r.get("contender") == "torch" and "examples_per_s" in r}
    for r in rows:
        head = f"| {r['shape']} | {r['batch']} x {r['length']} | {r['dtype']} | {r['contender']} | "
        if r["contender"] == "hnm":
            settings = (f"{r['attention']}->{r.get('attention_resolved', '?')}, {r['rng_impl']}->"
                        f"{r.get('rng_resolved', '?')}, {r['note']}")
        else:
            settings = f"SDPA eager{', ' + r['note'] if r['note'] else ''}"
        if "examples_per_s" not in r:
            why = r.get("skipped") or r.get("error") or "no result"
            lines.append(head + f"{settings} | {why} | | | | | | |")
            continue
        ratio = torch_rate.get((r["shape"], r["dtype"]))
        vs = f"{r['examples_per_s'] / ratio:.2f}x" if ratio and r["contender"] == "hnm" else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        compiles = (f"{r['first_step_compiles']:.0f} ({r['first_step_compile_s']:.1f}), "
                    f"{r['first_step_compile_cache_hits']:.0f} cached" if "first_step_compiles" in r else "-")
        lines.append(head + f"{settings} | {r['examples_per_s']:,.0f} | {vs} | {r['train_tflops']:.1f} | {mfu} | "
                            f"{1e3 * r['step_s']:.1f} | {r['first_step_s']:.1f} | {compiles} |")
    devices = sorted({r["device"] for r in rows if "device" in r})
    lines += ["", f"Devices: {', '.join(devices) or '-'}."]
    return "\n".join(lines) + "\n"


def child(args) -> None:
    if args.contender == "hnm":
        result = run_hnm(args.shape, args.batch, args.length, args.dtype, args.attention, args.rng_impl,
                         args.seconds, args.max_steps)
    else:
        result = run_torch(args.shape, args.batch, args.length, args.dtype, args.seconds, args.max_steps)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "results/bench_gpu.json"))
    p.add_argument("--smoke", action="store_true", help="tiny shapes, a few steps: checks the script on any machine")
    p.add_argument("--plan", help='JSON list of [shape, batch, length, dtype, contender, attention, rng_impl, note]')
    p.add_argument("--budget-s", type=float, default=320.0,
                   help="start no row expected (from the contender's slowest row so far) to end after this")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row (after 2 warm-up steps)")
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--timeout-s", type=int, default=150, help="per row")
    p.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the device (default: by device name)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("contender", "shape", "dtype", "attention", "rng_impl"):
        p.add_argument(f"--{name.replace('_', '-')}", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    plan = [tuple(x) for x in json.loads(args.plan)] if args.plan else (SMOKE_PLAN if args.smoke else PLAN)
    if args.smoke:
        args.seconds, args.max_steps = min(args.seconds, 0.5), min(args.max_steps, 3)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.time()
    with tempfile.TemporaryDirectory(prefix="hnm_bench_cache_") as cache:
        path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)  # benchmarks, hnm_jax
        env = {**os.environ, "HNM_COMPILATION_CACHE": cache, "PYTHONPATH": path}
        if args.smoke:
            env.setdefault("JAX_PLATFORMS", "cpu")
        for shape, batch, length, dtype, who, attention, rng_impl, note in plan:
            row = {"shape": shape, "batch": batch, "length": length, "dtype": dtype, "contender": who,
                   "attention": attention, "rng_impl": rng_impl, "note": note}
            expected = max((r["wall_s"] for r in rows if r["contender"] == who and "wall_s" in r), default=45.0)
            if time.time() - start + (0 if args.smoke else expected) > args.budget_s:
                rows.append({**row, "skipped": f"would pass the {args.budget_s:.0f} s budget"})
                continue
            cmd = [sys.executable, "-m", "benchmarks.bench_gpu", "--child", "--contender", who, "--shape", shape, "--batch", str(batch),
                   "--length", str(length), "--dtype", dtype, "--attention", attention, "--rng-impl", rng_impl,
                   "--seconds", str(args.seconds), "--max-steps", str(args.max_steps)]
            t0 = time.time()
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout_s)
                lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                row.update(json.loads(lines[-1][7:]) if lines else
                           {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][-300:]})
            except subprocess.TimeoutExpired:
                row["error"] = f"timeout after {args.timeout_s} s"
            row["wall_s"] = time.time() - t0
            if "step_s" in row:
                row["examples_per_s"] = batch / row["step_s"]
                row["train_tflops"] = row["examples_per_s"] * train_flops_per_example(SHAPES[shape], length) / 1e12
                peak = peak_for(row.get("device", ""), args.peak_tflops)
                row["peak_bf16_tflops"] = peak
                row["mfu"] = row["train_tflops"] / peak if peak else None
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.write_text(json.dumps({"smoke": args.smoke, "rows": rows}, indent=1) + "\n")
            out.with_suffix(".md").write_text(markdown(rows))
    out.write_text(json.dumps({"smoke": args.smoke, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(f"wrote {out} and {out.with_suffix('.md')} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
