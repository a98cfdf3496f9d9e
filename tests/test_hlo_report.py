"""benchmarks.hlo_report: its jaxpr and HLO counters on a small program whose counts are known by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import hlo_report as report


def program(table, ids, x):
    """A gather (its gradient: a scatter-add into the table) and one bf16 [4, 8] x [8, 4] matmul."""
    xb = x.astype(jnp.bfloat16)
    return jnp.sum(jnp.take(table, ids, axis=0)) + jnp.sum((xb @ xb.T).astype(jnp.float32))


def test_counts_by_hand():
    args = (np.ones((10, 3), np.float32), np.array([1, 1, 1, 2, 7], np.int32), np.ones((4, 8), np.float32))
    grad = jax.jit(jax.grad(program, argnums=(0, 2)))
    counts = report.jaxpr_counts(jax.make_jaxpr(grad)(*args).jaxpr)
    # x [4, 8] to bf16, and the [4, 4] cotangent of the matmul's f32 cast back to bf16
    assert counts["converts"]["float32->bfloat16"] == 2 and counts["convert_elements"]["float32->bfloat16"] == 48
    assert counts["dots"] == {"bfloat16,bfloat16->bfloat16": 3}  # forward + the two transposes
    np.testing.assert_allclose(counts["dot_gflops"]["bfloat16,bfloat16->bfloat16"], 3 * 2 * 4 * 4 * 8 / 1e9)
    assert counts["scatter_adds"] == {"scatter-add:float32[10,3]": 1}
    assert counts["scatter_updates"]["scatter-add:float32[10,3]"] == 5  # one update row per id
    # XLA:CPU's default emitters keep the scatter; the suite's legacy ones (conftest.FAST_COMPILE) expand it to a loop
    hlo = report.hlo_counts(grad.lower(*args).compile({"xla_cpu_use_fusion_emitters": True}).as_text())
    assert hlo["instructions"] > 0 and sum(hlo["dots"].values()) >= 1
    assert any(key.startswith("f32[10,3]") for key in hlo["scatters"])
