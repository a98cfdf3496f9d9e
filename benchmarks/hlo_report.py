"""What the jitted contrastive train step asks XLA for, by compute dtype and attention/PRNG setting, as JSON + markdown.

    python -m benchmarks.hlo_report --out results/hlo_report.json                 # this checkout (~4 min on 2 busy cores)
    python -m benchmarks.hlo_report --before 0abb00c --out results/hlo_report.json   # + that revision (~6 min)

The step is `train_step.jit_train_step` (InfoNCE, 1 explicit negative, dropout on) on a random BERT built with
`nnx.eval_shape` (nothing runs: the step is only traced, lowered and compiled for this CPU). Shapes: `tiny` (2 layers,
hidden 32, B=8, L=16) and `minilm` (6 layers, hidden 384, 12 heads, B=512, L=64: the GPU yardstick's shape).
`--before REV` reads hnm_jax at a git revision with `git archive` (read-only: the work tree and index are untouched)
into a temporary folder and runs the same settings against it in a subprocess.

Two views of each program:
  jaxpr     every primitive JAX emits (forward, backward, optimizer), what any backend receives: converts by
            (from -> to) dtype with elements, dot_generals by (lhs, rhs -> out) dtype with FLOPs, scatter-adds by
            dtype with table rows and update rows, gathers, reduce_sums over bf16, the PRNG work (threefry2x32
            words vs rng_bit_generator words).
  cpu_hlo   the CPU-optimized HLO (`compile().as_text()`): instructions, fusions, converts, dots and scatters by dtype.
            XLA:CPU has no bf16 dots or scatters, so it upcasts them to f32 here (float normalization); the jaxpr
            view is the one that says what a GPU runs.
"""

import argparse
import collections
import contextlib
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # name: (BertConfig kwargs, batch, length)
    "tiny": ({"vocab_size": 30522, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}, 8, 16),
    "minilm": ({"vocab_size": 30522, "hidden_size": 384, "num_layers": 6, "num_heads": 12,
                "intermediate_size": 1536}, 512, 64),
}
# variant: (compute dtype, attention, rng_impl). "auto" on a GPU resolves to cudnn (bf16) / xla and rbg; cuDNN
# attention cannot be traced without a GPU, so the accelerator variants here use XLA's dot_product_attention.
VARIANTS = {
    "f32": ("float32", "einsum", "threefry"),
    "bf16": ("bfloat16", "einsum", "threefry"),
    "bf16_xla_rbg": ("bfloat16", "xla", "rbg"),
    "f32_xla_rbg": ("float32", "xla", "rbg"),
}
OLD_VARIANTS = ("f32", "bf16")  # what a revision without model.attention / model.rng_impl can build


# ------------------------------------------------------------------------------------------------ jaxpr view
def _size(shape) -> int:
    return int(math.prod(shape)) if shape else 1


def _sub_jaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value, "consts"):
        yield value.jaxpr
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _sub_jaxprs(item)


def jaxpr_counts(jaxpr) -> dict:
    """Static counts over `jaxpr` and every sub-jaxpr (each nested jaxpr counted once per equation that holds it)."""
    c = {"eqns": 0, "primitives": collections.Counter(), "converts": collections.Counter(),
         "convert_elements": collections.Counter(), "dots": collections.Counter(), "dot_gflops": collections.Counter(),
         "scatter_adds": collections.Counter(), "scatter_updates": collections.Counter(),
         "gathers": collections.Counter(), "bf16_reduce_sums": 0, "bf16_reduce_sum_elements": 0,
         "random_bits": collections.Counter(), "random_words": collections.Counter()}

    def walk(j):
        for eqn in j.eqns:
            c["eqns"] += 1
            name = eqn.primitive.name
            c["primitives"][name] += 1
            ins = [v.aval for v in eqn.invars if hasattr(v, "aval")]
            outs = [v.aval for v in eqn.outvars]
            if name == "convert_element_type" and ins and hasattr(ins[0], "dtype"):
                key = f"{ins[0].dtype}->{outs[0].dtype}"
                c["converts"][key] += 1
                c["convert_elements"][key] += _size(ins[0].shape)
            elif name == "dot_general":
                (lc, _), _ = eqn.params["dimension_numbers"]
                algorithm = eqn.params.get("precision")  # a DotAlgorithmPreset, e.g. BF16_BF16_F32, when one is set
                tag = f" [{algorithm}]" if algorithm is not None and not isinstance(algorithm, tuple) else ""
                key = f"{ins[0].dtype},{ins[1].dtype}->{outs[0].dtype}{tag}"
                c["dots"][key] += 1
                c["dot_gflops"][key] += 2 * _size(outs[0].shape) * _size([ins[0].shape[d] for d in lc]) / 1e9
            elif name.startswith("scatter"):
                key = f"{name}:{ins[0].dtype}[{','.join(map(str, ins[0].shape))}]"
                c["scatter_adds"][key] += 1
                c["scatter_updates"][key] += _size(ins[2].shape) // max(ins[0].shape[-1], 1)
            elif name == "gather":
                c["gathers"][f"{ins[0].dtype}[{','.join(map(str, ins[0].shape))}]"] += 1
            elif name == "reduce_sum" and str(ins[0].dtype) == "bfloat16":
                c["bf16_reduce_sums"] += 1
                c["bf16_reduce_sum_elements"] += _size(ins[0].shape)
            elif name == "random_bits":  # by key implementation: key<fry> (threefry), key<rbg>, ...
                impl = str(ins[0].dtype)
                c["random_bits"][impl] += 1
                c["random_words"][impl] += _size(outs[0].shape)
            for value in eqn.params.values():
                for sub in _sub_jaxprs(value):
                    walk(sub)

    walk(jaxpr)
    return {k: dict(v) if isinstance(v, collections.Counter) else v for k, v in c.items()}


# ------------------------------------------------------------------------------------------------ HLO view
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_SHAPE = re.compile(r"^([a-z]+\d*)\[([\d,]*)\]")


def _split_type(rest: str) -> tuple[str, str]:
    """'f32[2,3]{1,0} dot(...)' -> ('f32[2,3]{1,0}', 'dot(...)'); tuple types are kept whole."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[: i + 1], rest[i + 1:].strip()
    head, _, tail = rest.partition(" ")
    return head, tail


def hlo_counts(text: str) -> dict:
    """Counts over every instruction of an optimized HLO module's text (fused computations included)."""
    types: dict[str, tuple[str, list[int]]] = {}
    rows = []
    for line in text.splitlines():
        m = _INSTR.match(line)
        if not m or line.lstrip().startswith(("HloModule", "ENTRY", "//")):
            continue
        name, rest = m.groups()
        type_str, op_str = _split_type(rest)
        opcode = op_str.split("(", 1)[0].strip()
        if not opcode or not re.fullmatch(r"[a-z][\w\-]*", opcode):
            continue
        shape = _SHAPE.match(type_str)
        if shape:
            types[name] = (shape.group(1), [int(d) for d in shape.group(2).split(",") if d])
        args = op_str.split("(", 1)[1] if "(" in op_str else ""
        operands = re.findall(r"%([\w.\-]+)", args.split(")", 1)[0])
        rows.append((name, opcode, operands, op_str))
    c = {"instructions": len(rows), "opcodes": collections.Counter(), "converts": collections.Counter(),
         "dots": collections.Counter(), "scatters": collections.Counter(), "custom_calls": collections.Counter(),
         "rng_bit_generators": 0, "u32_bit_op_elements": 0}
    for name, opcode, operands, op_str in rows:
        c["opcodes"][opcode] += 1
        out = types.get(name, ("tuple", []))
        ins = [types.get(o, ("?", [])) for o in operands]
        if opcode == "convert" and ins:
            c["converts"][f"{ins[0][0]}->{out[0]}"] += 1
        elif opcode == "dot" and len(ins) >= 2:
            c["dots"][f"{ins[0][0]},{ins[1][0]}->{out[0]}"] += 1
        elif opcode == "scatter" and ins:
            c["scatters"][f"{out[0]}[{','.join(map(str, out[1]))}]"] += 1
        elif opcode == "custom-call":
            target = re.search(r'custom_call_target="([^"]+)"', op_str)
            c["custom_calls"][target.group(1) if target else "?"] += 1
        elif opcode == "rng-bit-generator":
            c["rng_bit_generators"] += 1
        if out[0] == "u32" and opcode in ("xor", "shift-left", "shift-right-logical", "or", "add"):
            c["u32_bit_op_elements"] += _size(out[1])
    c["fusions"] = c["opcodes"].get("fusion", 0)
    c["opcodes"] = dict(c["opcodes"].most_common(12))
    return {k: dict(v) if isinstance(v, collections.Counter) else v for k, v in c.items()}


# ------------------------------------------------------------------------------------------------ one program
def analyse(shape_name: str, variant: str) -> dict:
    """Traces, lowers and compiles the train step of one (shape, variant) with the hnm_jax on sys.path."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hnm_jax import sharding
    from hnm_jax.config import load_config_file, spec_from_config
    from hnm_jax.models.encoder import BertConfig, BertEncoder, PoolingSpec
    from hnm_jax.training.optimizer import make_optimizer
    from hnm_jax.training.step import create_train_state, jit_train_step

    dtype, attention, rng_impl = VARIANTS[variant]
    kwargs, b, length = SHAPES[shape_name]
    config = BertConfig(**kwargs)
    model_kw = {"dtype": jnp.dtype(dtype)}
    if "attention" in inspect.signature(BertEncoder.__init__).parameters:
        model_kw["attention"] = attention
    elif attention != "einsum":
        raise SystemExit(f"this hnm_jax has no attention option: variant {variant} needs one")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(0), **model_kw)))
    import hnm_jax

    base = Path(hnm_jax.__file__).resolve().parents[1] / "configs/base.py"  # the source tree's own keys
    spec = spec_from_config(load_config_file(str(base)))
    tx = make_optimizer(spec.train, 1000)
    mesh = sharding.make_mesh()
    abstract = jax.eval_shape(lambda s: create_train_state(graphdef, s, tx, 0), state)
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
    step_kw = {}
    if "rng_impl" in inspect.signature(jit_train_step).parameters:
        step_kw["rng_impl"] = rng_impl
    elif rng_impl != "threefry":
        raise SystemExit(f"this hnm_jax has no rng_impl option: variant {variant} needs one")
    step = jit_train_step(tx, spec.loss, None, PoolingSpec(), True, state_sharding, sharding.batch_sharding(mesh),
                          **step_kw)

    def ints(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.int32)

    batch = {"query_ids": ints(b, length), "query_mask": ints(b, length), "pos_ids": ints(b, length),
             "pos_mask": ints(b, length), "neg_ids": ints(b, 1, length), "neg_mask": ints(b, 1, length),
             "pos_doc": ints(b), "neg_doc": ints(b, 1), "query_positives": ints(b, 1)}
    jaxpr = jax.make_jaxpr(step)(abstract, batch)
    compiled = step.lower(abstract, batch).compile()
    return {"shape": shape_name, "variant": variant, "dtype": dtype, "attention": attention, "rng_impl": rng_impl,
            "batch": b, "length": length, "jaxpr": jaxpr_counts(jaxpr.jaxpr), "cpu_hlo": hlo_counts(compiled.as_text()),
            "jax": jax.__version__}


# ------------------------------------------------------------------------------------------------ report
def _short(counter: dict, digits: int = 0, scale: float = 1.0) -> str:
    if not counter:
        return "-"
    return ", ".join(f"{k}: {v * scale:.{digits}f}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


def markdown(records: list[dict], before: str | None) -> str:
    lines = ["# HLO of the train step: what bf16 asks XLA for", "",
             "`python -m benchmarks.hlo_report" + (f" --before {before}" if before else "") +
             " --out results/hlo_report.json` (traced, lowered and compiled on CPU; nothing is run or timed).", "",
             "Sources: `before` = hnm_jax at the given revision, `after` = this checkout. Variants: compute dtype, "
             "attention (`einsum` = the explicit einsum + mask + softmax; `xla` = jax.nn.dot_product_attention), "
             "dropout PRNG (threefry | rbg). Counts are static (each nested jaxpr once).", "",
             "Reading (issue 13: bf16 training 9x slower than f32 on an H200 while bf16 *encoding* was faster): "
             "`before bf16` casts the three embedding tables to bf16 before the lookup, so their gradients are "
             "scatter-adds in bf16: every token of the batch adds into row 0 of the [2, H] token-type table "
             "(B*L*3 update rows into H addresses) and [CLS]/[SEP] into two word rows. bf16 has no native atomic "
             "add in XLA:GPU's scatter emitter, which then loops on compare-and-swap, collapsing under that "
             "contention (openxla/xla#26371); the forward pass has no scatter, hence fast encoding. `after`: "
             "lookups read the f32 tables (gradients scatter in f32, native atomics), positions are a slice (no "
             "scatter) and token types are selects (a reduction). The other bf16 costs are small: the einsum "
             "path's score-gradient dots are f32 x bf16 with no bf16 algorithm (TF32 on GPU; jax-ml/jax#24047), "
             "fixed by jax.nn.dot_product_attention's BF16_BF16_F32; dropout draws ~1 G threefry words per step "
             "at the MiniLM shape, ~0.5 G rbg words with the dot_product attention (no probability dropout).", ""]
    for shape in SHAPES:
        rows = [r for r in records if r.get("shape") == shape and "jaxpr" in r]
        if not rows:
            continue
        kwargs, b, length = SHAPES[shape]
        lines += [f"## {shape}: hidden {kwargs['hidden_size']}, {kwargs['num_layers']} layers, B={b}, L={length}, "
                  "1 negative (3 texts per example)", "",
                  "### jaxpr (what every backend receives)", "",
                  "| source | variant | eqns | dot_general by dtype (count) | dot GFLOP by dtype | converts (count) | "
                  "converted M elements | scatter-adds: table (update rows) | bf16 reduce_sums (M el.) | "
                  "random_bits calls: M words, by key |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            j = r["jaxpr"]
            scatters = "; ".join(f"{k.split(':', 1)[1]} x{n} ({j['scatter_updates'][k]:,} rows)"
                                 for k, n in sorted(j["scatter_adds"].items())) or "-"
            lines.append(
                f"| {r['source']} | {r['variant']} | {j['eqns']:,} | {_short(j['dots'])} | "
                f"{_short(j['dot_gflops'], 1)} | {sum(j['converts'].values())} | "
                f"{sum(j['convert_elements'].values()) / 1e6:.1f} | {scatters} | "
                f"{j['bf16_reduce_sums']} ({j['bf16_reduce_sum_elements'] / 1e6:.1f}) | "
                + "; ".join(f"{k} x{n}: {j['random_words'][k] / 1e6:.1f}" for k, n in j["random_bits"].items())
                + " |")
        lines += ["", "### CPU-optimized HLO (XLA:CPU upcasts bf16 dots and scatters: read dtypes in the jaxpr table)",
                  "", "| source | variant | instructions | fusions | converts (count by dtype) | dots by dtype | "
                  "scatters | rng-bit-generator | u32 bit-op M elements (threefry) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            h = r["cpu_hlo"]
            lines.append(f"| {r['source']} | {r['variant']} | {h['instructions']:,} | {h['fusions']:,} | "
                         f"{_short(h['converts'])} | {_short(h['dots'])} | {_short(h['scatters'])} | "
                         f"{h['rng_bit_generators']} | {h['u32_bit_op_elements'] / 1e6:.1f} |")
        lines.append("")
    lines += findings(records)
    failed = [r for r in records if "error" in r]
    if failed:
        lines += ["## Failed", ""] + [f"- {r['source']} {r['shape']} {r['variant']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def findings(records: list[dict]) -> list[str]:
    """The figures that explain the bf16 step, read off the records (per shape: the first bf16 record of each
    source, and the accelerator variant)."""
    lines = ["## Findings", ""]
    for shape in SHAPES:
        rows = {(r["source"].split(" ")[0], r["variant"]): r["jaxpr"] for r in records
                if r.get("shape") == shape and "jaxpr" in r}
        if not rows:
            continue
        lines.append(f"**{shape}**")
        for (source, variant), j in rows.items():
            narrow = {k: n for k, n in j["scatter_adds"].items() if "float32" not in k}
            narrow_rows = sum(j["scatter_updates"][k] for k in narrow)
            mixed = {k: n for k, n in j["dots"].items() if k.startswith("float32,bfloat16") and "[" not in k}
            mixed_gflop = sum(j["dot_gflops"][k] for k in mixed)
            words = "; ".join(f"{k} {w / 1e6:,.0f} M" for k, w in j["random_words"].items())
            lines.append(f"- {source} {variant}: {sum(narrow.values())} scatter-adds in a narrow dtype "
                         f"({narrow_rows:,} update rows); {sum(mixed.values())} f32 x bf16 dots with no bf16 "
                         f"algorithm ({mixed_gflop:,.1f} GFLOP, f32/TF32 rate on GPU); dropout bits: {words}")
        lines.append("")
    return lines


@contextlib.contextmanager
def revision_tree(rev: str):
    """hnm_jax and configs of git revision `rev` in a temporary folder (git archive: nothing in the repo changes)."""
    with tempfile.TemporaryDirectory(prefix="hnm_rev_") as tmp:
        data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "hnm_jax", "configs"],
                              check=True, capture_output=True).stdout
        archive = Path(tmp) / "rev.tar"
        archive.write_bytes(data)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def run_child(source_dir: Path, shape: str, variant: str, timeout: int) -> dict:
    # source_dir first (its hnm_jax and configs), then this checkout for the benchmarks package
    path = os.pathsep.join(dict.fromkeys([str(source_dir), str(REPO)]))
    env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu", "HNM_COMPILATION_CACHE": "off"}
    cmd = [sys.executable, "-m", "benchmarks.hlo_report", "--child", "--shape", shape, "--variant", variant]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(source_dir))
    except subprocess.TimeoutExpired:
        return {"shape": shape, "variant": variant, "error": f"timeout after {timeout} s"}
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        return {"shape": shape, "variant": variant, "error": done.stderr.strip().splitlines()[-1:] or "no output"}
    return json.loads(line[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hlo_report", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "results/hlo_report.json"))
    p.add_argument("--before", help="a git revision to compare with (read with git archive)")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--from-json", help="rebuild the markdown from a report JSON (no compiles)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(analyse(args.shape, args.variant)), flush=True)
        return
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        Path(args.from_json).with_suffix(".md").write_text(markdown(report["records"], report["before"]))
        return
    shapes, variants = args.shapes.split(","), args.variants.split(",")
    records, t0 = [], time.time()
    plan = [("after", REPO, v) for v in variants]
    with contextlib.ExitStack() as stack:
        if args.before:
            old = stack.enter_context(revision_tree(args.before))
            plan = [(f"before ({args.before})", old, v) for v in variants if v in OLD_VARIANTS] + plan
        for shape in shapes:
            for source, folder, variant in plan:
                record = {"source": source, **run_child(folder, shape, variant, args.timeout)}
                records.append(record)
                print(f"[{time.time() - t0:5.0f} s] {source} {shape} {variant}: "
                      f"{record.get('error') or str(record['jaxpr']['eqns']) + ' eqns'}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"before": args.before, "records": records}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(records, args.before))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
