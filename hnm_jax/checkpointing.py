"""orbax checkpoints of the train state, the data position and (when mining) the negative pool.

Rerunning the same command restores the newest checkpoint that reads back; a checkpoint that fails to read
(truncated, corrupted) is reported with its step and the previous one is used.
"""

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hnm_jax.train_step import TrainState

log = logging.getLogger(__name__)


def _state_tree(state: TrainState) -> dict:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "rng": state.rng}


class Checkpointer:
    """Saves and restores {state, position[, pool]} under `directory/<step>/`."""

    def __init__(self, directory: str | Path, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, position: dict, pool: dict[str, np.ndarray] | None = None) -> None:
        """Writes a checkpoint at `state.step` (atomic: orbax writes a temporary folder, then renames it)."""
        step = int(jax.device_get(state.step))
        items = {"state": ocp.args.StandardSave(_state_tree(state)), "position": ocp.args.JsonSave(position)}
        if pool is not None:
            items["pool"] = ocp.args.StandardSave(pool)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        self._manager.wait_until_finished()

    def restore(self, template: TrainState, pool_template: dict[str, np.ndarray] | None = None,
                ) -> tuple[TrainState, dict, dict[str, np.ndarray] | None] | None:
        """The newest readable checkpoint as (state, position, pool), or None when there is none."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(template))
        for step in reversed(self.all_steps()):
            items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract), "position": ocp.args.JsonRestore()}
            if pool_template is not None:
                items["pool"] = ocp.args.StandardRestore(pool_template)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as error:  # noqa: BLE001 - any read failure means this checkpoint is unusable
                log.warning("checkpoint at step %d in %s is unreadable (%s: %s); trying the previous one",
                            step, self.directory, type(error).__name__, error)
                continue
            tree = restored["state"]
            state = template.replace(params=tree["params"], opt_state=tree["opt_state"], step=tree["step"],
                                     rng=tree["rng"])
            pool = restored["pool"] if pool_template is not None else None
            return state, dict(restored["position"]), pool
        return None

    def close(self) -> None:
        self._manager.close()
