"""Test set-up: 4 fake CPU devices (set before jax is imported) and a tiny BEIR dataset."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
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
