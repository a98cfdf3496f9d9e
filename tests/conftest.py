"""Test set-up: 4 fake CPU devices (set before jax is imported) and a tiny BEIR dataset."""

import os

# The suite compiles a few hundred small programs and runs each a few times, so compiling is most of its time; LLVM's
# optimizer (XLA's default backend level 3) is most of a compile (a tiny train step: ~21 s at 3, ~8 s at 0 on a
# 2 GHz core) and buys nothing at tiny sizes. Level 0 leaves XLA's HLO passes and float semantics as they are.
# XLA's legacy fusion emitters (instead of the MLIR ones) cut what is left by a third: the tiny train step's first
# call takes 4.8-5.0 s instead of 7.5-7.9 s (results/bench_test_compile.json, recorded at 02c6022).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for the test process and the processes tests start: `devices` fake CPU devices, FAST_COMPILE."""
    return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(4)).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"

BRANDS = ["acme", "zenith", "orbit", "nova", "apex", "lumen", "vertex", "pulse"]
ITEMS = ["camera", "speaker", "router", "monitor", "keyboard", "headphones", "charger", "tablet"]
COLORS = ["black", "white", "silver", "red"]


def write_tiny_beir(root: Path, num_queries: int = 48, seed: int = 0) -> Path:
    """A small product-matching BEIR folder: each query has one positive and near-duplicate siblings."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "candidates").mkdir(exist_ok=True)
    docs, queries, qrels, candidates = [], [], {"train": [], "test": []}, {"train": [], "test": []}
    for q in range(num_queries):
        brand, item, color = BRANDS[q % 8], ITEMS[(q // 8) % 8], COLORS[q % 4]
        model = f"{brand[:2].upper()}-{100 + q}"
        pos = f"d{len(docs)}"
        docs.append({"_id": pos, "title": "", "text": f"{brand} {item} {model} {color} price: {10 + q}.99"})
        siblings = []
        for variant in (f"{brand} {item} {brand[:2].upper()}-{200 + q} {color}", f"{brand} {item} {model} pro"):
            siblings.append(f"d{len(docs)}")
            docs.append({"_id": siblings[-1], "title": "", "text": variant})
        queries.append({"_id": f"q{q}", "text": f"{brand.title()} {model} {item} ({color})"})
        split = "test" if q % 4 == 3 else "train"
        qrels[split].append((f"q{q}", pos))
        candidates[split] += [(f"q{q}", pos, 1)] + [(f"q{q}", s, 0) for s in siblings]
    rng.shuffle(docs)
    with open(root / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    with open(root / "queries.jsonl", "w") as f:
        f.writelines(json.dumps(q) + "\n" for q in queries)
    for split in ("train", "test"):
        with open(root / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t1\n" for q, d in qrels[split])
        with open(root / "candidates" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tlabel\n")
            f.writelines(f"{q}\t{d}\t{label}\n" for q, d, label in candidates[split])
    return root


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (v2 `cpu.max`, v1
    `cfs_quota_us`), which a container's `os.cpu_count()` and affinity do not show."""
    cores = len(os.sched_getaffinity(0))
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            fields = Path(quota_file).read_text().split()
            quota, period = fields[0], fields[1] if period_file is None else Path(period_file).read_text().strip()
        except (OSError, IndexError):
            continue
        if quota not in ("max", "-1"):
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    return cores


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: no error where xdist is not loaded
def pytest_xdist_auto_num_workers(config) -> int | None:
    """`pytest -n auto` (make test): one worker per usable core; PYTEST_XDIST_AUTO_NUM_WORKERS still wins."""
    return None if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") else usable_cores()


def pytest_collection_modifyitems(config, items) -> None:
    """Modules with slow tests run first, each module's tests together and in order (module fixtures are built
    once): longest-first keeps both xdist workers of `make test` (`-n auto --dist worksteal`) busy to the end
    instead of leaving one long test for last."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("data") / "tiny")


def tiny_config(data_path: Path, config_file: str = "configs/base.py", **overrides):
    """A config file's tiny variant pointed at `data_path`, with dotted-key overrides."""
    from hnm_jax.config import load_config_file

    config = load_config_file(f"{REPO / config_file}:tiny")
    config.data.path = str(data_path)
    for key, value in overrides.items():
        section, name = key.split("__")
        config[section][name] = value
    return config


def make_tiny_batch(tiny_beir, num_negatives=2, batch_size=8, max_length=16):
    """(tiny encoder, one training batch of the tiny BEIR set) for step-level tests."""
    from hnm_jax.config import spec_from_config
    from hnm_jax.data import batches
    from hnm_jax.data.beir import load_beir
    from hnm_jax.data.tokenize import tokenize_texts
    from hnm_jax.mining.negatives import Candidates, SelectSpec, random_negatives
    from hnm_jax.models.loading import build_encoder

    data = load_beir(tiny_beir, "train")
    spec = spec_from_config(tiny_config(tiny_beir))
    encoder = build_encoder(spec.model, seed=0)
    doc_tokens = tokenize_texts(encoder.tokenizer, data.corpus.texts, max_length)
    query_tokens = tokenize_texts(encoder.tokenizer, data.queries.texts, max_length)
    rng = batches.step_rng(0, 0, 0)
    rows = batches.batch_rows(0, 0, 0, len(data.split), batch_size)
    pos = batches.sample_positives(data.split.positives[rows], rng)
    candidates = Candidates(data.split.positives[rows], len(data.corpus), None, (-1.0, 1.0), "absolute")
    neg = random_negatives(candidates, SelectSpec(num_negatives), rng)
    neg[0, 0] = pos[1]  # a document twice in the batch: must be counted once
    return encoder, batches.make_batch(rows, data.split, query_tokens, doc_tokens, pos, neg,
                                      batches.canonical_rows(data.corpus.texts))


def params_of(workdir):
    """The parameter leaves of a training workdir's newest checkpoint."""
    import jax

    from hnm_jax.training.runs import load_trained

    encoder, _ = load_trained(workdir)
    return jax.tree.leaves(jax.device_get(encoder.state))
