"""`run_loop`'s hooks, driven directly with a fake step function, batch source, writer and checkpointer."""

from typing import NamedTuple

import numpy as np
import pytest

from hnm_jax import sharding
from hnm_jax.training.loop import TrainingDiverged, run_loop


class FakeState(NamedTuple):
    step: int
    params: dict


class FakeWriter:
    def __init__(self):
        self.rows = []

    def write(self, step, values, prefix=""):
        self.rows.append((step, dict(values), prefix))


class FakeCheckpointer:
    def __init__(self):
        self.saved = []

    def save(self, state, **extras):
        self.saved.append((int(state.step), extras))


def _run(start=0, total=7, log_every=3, checkpoint_every=4, losses=None, with_extras=True, writer=None,
         checkpointer=None):
    """Runs the loop on a step function whose loss at step s is `losses[s]` (default s) and returns the calls."""
    calls = {"before": [], "source": [], "batches": [], "log_extras": [], "ckpt_extras": []}
    losses = losses if losses is not None else [float(s) for s in range(total)]

    def source(step, params):
        calls["source"].append((step, params["tag"]))
        return {"x": np.full((4, 2), step, np.int32)}

    def step_fn(state, batch):
        calls["batches"].append(np.asarray(batch["x"]))
        s = state.step
        return FakeState(s + 1, {"tag": s + 1}), {"loss": np.float32(losses[s]), "grad_norm": np.float32(2 * s)}

    def before_step(step, state):
        calls["before"].append((step, state.step))

    def log_extras(step, step_s):
        calls["log_extras"].append(step)
        assert step_s >= 0.0
        return {"extra": 100.0 + step}

    def checkpoint_extras(step):
        calls["ckpt_extras"].append(step)
        return {"position": {"step": step + 1, "tag": "mine"}}

    writer, checkpointer = writer or FakeWriter(), checkpointer or FakeCheckpointer()
    hooks = dict(before_step=before_step, log_extras=log_extras, checkpoint_extras=checkpoint_extras)
    final = run_loop(step_fn, FakeState(start, {"tag": start}), source, total=total, batch_size=4,
                     mesh=sharding.make_mesh(), writer=writer, checkpointer=checkpointer, log_every=log_every,
                     checkpoint_every=checkpoint_every, prefix="train/", desc="test",
                     **(hooks if with_extras else {}))
    return final, calls, writer, checkpointer


def test_hooks_run_at_the_right_steps_with_the_right_arguments():
    final, calls, writer, checkpointer = _run()
    assert final.step == 7
    # before_step(step, state) before every step, on the state that step starts from; the source gets its params
    assert calls["before"] == [(s, s) for s in range(7)]
    assert calls["source"] == [(s, s) for s in range(7)]
    assert [b.tolist() for b in calls["batches"]] == [[[s, s]] * 4 for s in range(7)]
    # logs after steps 3, 6 and the last (7): window means of loss s and grad_norm 2s, plus log_extras(step, s/step)
    assert calls["log_extras"] == [2, 5, 6]
    assert writer.rows == [
        (3, {"loss": 1.0, "grad_norm": 2.0, "extra": 102.0}, "train/"),
        (6, {"loss": 4.0, "grad_norm": 8.0, "extra": 105.0}, "train/"),
        (7, {"loss": 6.0, "grad_norm": 12.0, "extra": 106.0}, "train/"),
    ]
    # checkpoints after steps 4 and the last (7), with checkpoint_extras(step)'s keywords, on the state after it
    assert calls["ckpt_extras"] == [3, 6]
    assert checkpointer.saved == [(4, {"position": {"step": 4, "tag": "mine"}}),
                                  (7, {"position": {"step": 7, "tag": "mine"}})]


def test_resumes_from_the_state_step_and_defaults_the_checkpoint_position():
    final, calls, writer, checkpointer = _run(start=5, total=9, log_every=2, checkpoint_every=3, with_extras=False)
    assert final.step == 9 and [s for s, _ in calls["source"]] == [5, 6, 7, 8]
    assert writer.rows == [(6, {"loss": 5.0, "grad_norm": 10.0}, "train/"),
                           (8, {"loss": 6.5, "grad_norm": 13.0}, "train/"),
                           (9, {"loss": 8.0, "grad_norm": 16.0}, "train/")]
    assert checkpointer.saved == [(6, {"position": {"step": 6}}), (9, {"position": {"step": 9}})]


def test_non_finite_loss_stops_at_its_window_keeping_the_checkpoint_before_it():
    losses = [0.0, 1.0, float("nan"), 3.0, 4.0, 5.0]
    writer, checkpointer = FakeWriter(), FakeCheckpointer()
    with pytest.raises(TrainingDiverged, match=r"at step 3 \(first bad step among 1\.\.3\)"):
        _run(total=6, log_every=3, checkpoint_every=2, losses=losses, writer=writer, checkpointer=checkpointer)
    assert writer.rows == [] and [s for s, _ in checkpointer.saved] == [2]
