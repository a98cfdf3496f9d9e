"""compile_stats: the persistent compilation cache and the compile counter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnm_jax import compile_stats
from hnm_jax.compile_stats import CompileCounter, enable_compilation_cache

REPO = Path(__file__).resolve().parents[1]

# A tiny jitted contrastive train step (2 layers, hidden 32), compiled and run once; prints the CompileCounter summary.
CHILD = """
import json, sys
import numpy as np
from hnm_jax.compile_stats import CompileCounter, enable_compilation_cache
enable_compilation_cache(sys.argv[1], min_compile_s=0.0)
counter = CompileCounter().start()
import jax, jax.numpy as jnp
from flax import nnx
from hnm_jax.config import load_config_file, spec_from_config
from hnm_jax.models.encoder import BertConfig, BertEncoder, PoolingSpec
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.step import create_train_state, train_step
spec = spec_from_config(load_config_file("configs/base.py:tiny"))
tx = make_optimizer(spec.train, 10)
graphdef, params = nnx.split(BertEncoder(BertConfig.tiny(vocab_size=64), rngs=nnx.Rngs(0)))
state = create_train_state(graphdef, params, tx, 0)
step = jax.jit(lambda s, b: train_step(s, b, tx=tx, loss_spec=spec.loss, band_spec=None, pooling=PoolingSpec(),
                                       dropout=True))
ids, ones = np.arange(4 * 8, dtype=np.int32).reshape(4, 8) % 60 + 4, np.ones((4, 8), np.int32)
batch = {"query_ids": ids, "query_mask": ones, "pos_ids": ids[::-1], "pos_mask": ones,
         "neg_ids": ids[:, None], "neg_mask": ones[:, None], "pos_doc": np.arange(4, dtype=np.int32),
         "neg_doc": np.arange(4, 8, dtype=np.int32)[:, None], "query_positives": np.arange(4, dtype=np.int32)[:, None]}
state, metrics = step(state, batch)
print("RESULT " + json.dumps({**counter.stop(), "loss": float(metrics["loss"])}))
"""


def run_child(cache_dir: Path) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(cache_dir)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_second_run_reads_its_compiles_from_the_persistent_cache(tmp_path):
    first = run_child(tmp_path / "cache")
    assert first["compiles"] >= 1 and first["compile_cache_writes"] >= 1 and first["compile_cache_hits"] == 0
    assert any((tmp_path / "cache").iterdir())
    second = run_child(tmp_path / "cache")
    assert second["loss"] == first["loss"]  # the cached program computes the same step
    assert second["compile_cache_hits"] >= 1  # at least the train step
    assert second["compiles"] < first["compiles"]
    assert second["compile_cache_writes"] < first["compile_cache_writes"]


def test_compile_counter_counts_new_programs_only():
    def fn(x):
        return jnp.tanh(x) * 3.0 + x.sum()

    jitted = jax.jit(fn)
    x = np.arange(7, dtype=np.float32)
    with CompileCounter() as counter:
        jitted(x).block_until_ready()
        jitted(x).block_until_ready()  # cached in memory: no second compile
    summary = counter.summary()
    assert summary["compiles"] + summary["compile_cache_hits"] == 1
    assert summary["compile_s"] > 0 and set(summary) >= {"compiles", "compile_s", "compile_cache_hits", "trace_s"}
    with CompileCounter() as idle:
        jitted(x).block_until_ready()
    assert idle.summary()["compiles"] == 0 and idle.summary()["compile_cache_hits"] == 0


def test_enable_compilation_cache_folder_and_off(tmp_path, monkeypatch):
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    try:
        monkeypatch.setenv(compile_stats.ENV, "off")
        assert enable_compilation_cache() is None and not jax.config.jax_enable_compilation_cache
        monkeypatch.setenv(compile_stats.ENV, str(tmp_path / "c"))
        assert enable_compilation_cache() == tmp_path / "c" and (tmp_path / "c").is_dir()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c") and jax.config.jax_enable_compilation_cache
        assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_stats.MIN_COMPILE_S == 0.0
        monkeypatch.delenv(compile_stats.ENV)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert compile_stats.default_cache_dir() == tmp_path / "xdg" / "hnm_jax" / "jax"
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_enable_compilation_cache", before[1])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[2])
