"""The one training loop of both phases (bi-encoder and cross-encoder): `run_loop` runs a jitted step function on a
batch source's global batches, logs each window's mean metrics, stops on a non-finite loss or gradient naming the
step range (`TrainingDiverged`), and checkpoints; `init_state` gives the replicated TrainState a run starts or
resumes from. The phases (`train.py`) differ only by step function, batch source and hooks.
"""

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from hnm_jax import sharding
from hnm_jax.metric_logging import MetricWriter
from hnm_jax.training.checkpointing import Checkpointer
from hnm_jax.training.step import create_train_state


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; the message names the step range."""


def _finite_or_raise(window: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Fetches the buffered step metrics; raises TrainingDiverged naming the steps if any is not finite."""
    fetched = [(step, jax.device_get(m)) for step, m in window]
    bad = [step for step, m in fetched if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]))]
    if bad:
        raise TrainingDiverged(
            f"non-finite loss or gradient at step {bad[0] + 1} (first bad step among {fetched[0][0] + 1}.."
            f"{fetched[-1][0] + 1}); the last checkpoint before it is kept"
        )
    return fetched


def init_state(graphdef, params, tx, seed: int, mesh: jax.sharding.Mesh, checkpointer: Checkpointer,
               pool_template: dict[str, np.ndarray] | None = None):
    """(replicated TrainState, its sharding, what `checkpointer.restore` gave): the newest checkpoint's state
    when there is one, else a fresh one."""
    state, state_sharding = sharding.put_replicated(create_train_state(graphdef, params, tx, seed), mesh)
    restored = checkpointer.restore(state, pool_template)
    if restored is not None:
        state = jax.device_put(restored[0], state_sharding)
    return state, state_sharding, restored


def run_loop(step_fn: Callable, state, batch_source: Callable[[int, Any], dict[str, np.ndarray]], *, total: int,
             batch_size: int, mesh: jax.sharding.Mesh, writer: MetricWriter, checkpointer: Checkpointer,
             log_every: int, checkpoint_every: int, prefix: str, desc: str,
             before_step: Callable[[int, Any], None] | None = None,
             log_extras: Callable[[int, float], dict[str, float]] | None = None,
             checkpoint_extras: Callable[[int], dict[str, Any]] | None = None):
    """Runs `step_fn` from the state's step to `total` on `batch_source(step, params)`'s global batches (this
    process's rows); returns the final state. `before_step(step, state)` runs first each step (the bi-encoder's
    refresh). Every `log_every` steps (and the last) the window's mean metrics, plus `log_extras(step, step_s)`,
    are written under `prefix`; a non-finite loss or gradient raises TrainingDiverged. Every `checkpoint_every`
    steps (and the last) a checkpoint is saved with `checkpoint_extras(step)` (default: position {"step"}).
    """
    start, local_rows = int(jax.device_get(state.step)), sharding.process_rows(batch_size)
    window: list[tuple[int, dict]] = []
    logged_at = time.perf_counter()
    with tqdm(total=total, initial=start, desc=desc, unit="step", disable=jax.process_index() != 0) as bar:
        for step in range(start, total):
            if before_step is not None:
                before_step(step, state)
            batch = batch_source(step, state.params)
            state, metrics = step_fn(state, sharding.to_global({k: v[local_rows] for k, v in batch.items()}, mesh))
            window.append((step, metrics))
            done = step + 1
            bar.update(1)
            if done % log_every == 0 or done == total:
                fetched = _finite_or_raise(window)
                means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
                now = time.perf_counter()  # wall-clock s/step of the window: refresh, compiles, saves included
                if log_extras is not None:
                    means.update(log_extras(step, (now - logged_at) / len(fetched)))
                logged_at = now
                writer.write(done, means, prefix=prefix)
                bar.set_postfix(loss=f"{means['loss']:.4f}")
                window = []
            if done % checkpoint_every == 0 or done == total:
                _finite_or_raise(window)
                extras = checkpoint_extras(step) if checkpoint_extras is not None else {"position": {"step": done}}
                checkpointer.save(state, **extras)
    return state
