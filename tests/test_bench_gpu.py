"""benchmarks.bench_gpu: the FLOP count by hand, and a --smoke run on CPU (tiny shapes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_gpu as bench

REPO = Path(__file__).resolve().parents[1]


def test_train_flops_by_hand_and_peaks():
    shape = {"hidden_size": 4, "num_layers": 2, "num_heads": 2, "intermediate_size": 8}
    linear = 2 * (4 * 4 * 4 + 2 * 4 * 8)  # q, k, v, o: H x H each; the MLP: H x I and I x H, per layer
    forward = 2 * 10 * linear + 4 * 2 * 10 * 10 * 4  # 2 FLOPs per MAC over 10 tokens + QK^T and PV
    assert bench.train_flops_per_example(shape, 10) == 3 * 3 * forward  # backward = 2x forward; 3 texts
    assert bench.peak_for("NVIDIA H200", None) == 989.0 and bench.peak_for("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert bench.peak_for("cpu", None) is None and bench.peak_for("cpu", 7.0) == 7.0


@pytest.mark.slow
def test_smoke_run_on_cpu_writes_json_and_markdown(tmp_path):
    plan = [["tiny", 8, 16, "bfloat16", "hnm", "auto", "auto", "cold"],
            ["tiny", 8, 16, "bfloat16", "hnm", "auto", "auto", "warm"],
            ["tiny", 8, 16, "bfloat16", "torch", "-", "-", ""]]
    out = tmp_path / "bench_gpu.json"
    command = [sys.executable, "-m", "benchmarks.bench_gpu", "--smoke", "--out", str(out), "--plan", json.dumps(plan)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    cold, warm, torch = report["rows"]
    for row in (cold, warm):
        assert row["examples_per_s"] > 0 and row["platform"] == "cpu", row
        assert row["attention_resolved"] == "einsum" and row["rng_resolved"] == "threefry"  # auto on CPU
    assert cold["first_step_compiles"] >= 1 and cold["first_step_compile_cache_hits"] == 0
    assert warm["first_step_compile_cache_hits"] >= 1 and warm["first_step_compiles"] == 0  # the cold run's cache
    assert "examples_per_s" in torch or "torch" in torch["skipped"]
    text = out.with_suffix(".md").read_text()
    assert text.startswith("# Training speed on one GPU") and text.count("| tiny |") == 3
