"""orbax checkpoints of the train state, the data position and (when mining) the negative pool.

Rerunning the same command restores the newest checkpoint that reads back. A checkpoint that fails to read
(truncated, corrupted, wrong shapes) is reported with its step and the previous one is used. orbax itself does
not notice flipped bytes inside an uncompressed array file, so each save also stores a CRC32 of every array in
the position item, and a restore recomputes and compares them. A save that fails (e.g. a full disk) raises a
CheckpointError naming the directory and the step, removes its partial folder and leaves older ones intact.
"""

import errno
import logging
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hnm_jax.training.step import TrainState

log = logging.getLogger(__name__)

CHECKSUMS = "checksums"  # key of the per-array CRC32s inside the saved position item
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax writes `<step><TMP_SUFFIX>...`, then renames it to `<step>`


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or none of the existing ones reads back; names the directory."""


def _state_tree(state: TrainState) -> dict:
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "rng": state.rng}


def _checksums(items: dict[str, Any]) -> dict[str, int]:
    """{'item/path/of/array': CRC32 of its bytes} over every array of every item."""
    sums = {}
    for name, tree in items.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            data = np.ascontiguousarray(jax.device_get(leaf))
            sums[f"{name}{jax.tree_util.keystr(path)}"] = zlib.crc32(data.tobytes())
    return sums


def _check_shapes(name: str, restored: Any, template: Any) -> None:
    """Raises ValueError naming the first array whose shape or dtype differs from the template's."""
    expected = dict(jax.tree_util.tree_flatten_with_path(template)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]:
        want = expected.get(path)
        if want is None or (leaf.shape, leaf.dtype) != (want.shape, want.dtype):
            got, exp = (leaf.shape, leaf.dtype), None if want is None else (want.shape, want.dtype)
            raise ValueError(f"{name}{jax.tree_util.keystr(path)}: got shape/dtype {got}, expected {exp}")


def _short(error: BaseException) -> str:
    """`Type: first line of the message`, at most ~300 characters (tensorstore errors run to pages); a full disk
    is named even when tensorstore mentions it only at the end."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    text = text if len(text) <= 300 else text[:297] + "..."
    full_disk = os.strerror(errno.ENOSPC)
    return text + f" [{full_disk}]" if full_disk in str(error) and full_disk not in text else text


class Checkpointer:
    """Saves and restores {state, position[, pool]} under `directory/<step>/`."""

    def __init__(self, directory: str | Path, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def _remove_partial(self) -> None:
        """Deletes temporary folders left by an interrupted or failed save (a run is the only writer)."""
        if jax.process_index() == 0:
            for path in self.directory.glob(f"*{TMP_SUFFIX}*"):
                shutil.rmtree(path, ignore_errors=True)

    def save(self, state: TrainState, position: dict, pool: dict[str, np.ndarray] | None = None) -> None:
        """Writes a checkpoint at `state.step` (atomic: orbax writes a temporary folder, then renames it).

        Raises CheckpointError (naming the directory and the step) if the write fails; the partial folder is
        removed and the previous checkpoints are kept.
        """
        step = int(jax.device_get(state.step))
        trees = {"state": _state_tree(state)} | ({} if pool is None else {"pool": pool})
        position = {**position, CHECKSUMS: _checksums(trees)}
        items = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
        items["position"] = ocp.args.JsonSave(position)
        self._remove_partial()
        if step in self._manager.all_steps():  # only when restore skipped it as unreadable: training resumed earlier
            log.warning("replacing the unreadable checkpoint at step %d in %s", step, self.directory)
            self._manager.delete(step)
        try:
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)
            self._manager.wait_until_finished()
        except Exception as error:
            for _ in range(20):  # the failed save's other writes may still land for a moment: remove until none does
                self._remove_partial()
                time.sleep(0.25)
                if not any(self.directory.glob(f"*{TMP_SUFFIX}*")):
                    break
            kept = ", ".join(str(s) for s in self.all_steps() if s != step) or "none"
            raise CheckpointError(f"{self.directory}: could not write the checkpoint at step {step} "
                                  f"({_short(error)}); checkpoints kept: {kept}") from error

    def _restore_step(self, step: int, template: TrainState, pool_template: dict[str, np.ndarray] | None,
                      ) -> tuple[TrainState, dict, dict[str, np.ndarray] | None]:
        """Reads and verifies (shapes, checksums) the checkpoint at `step`; raises on any problem."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(template))
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract), "position": ocp.args.JsonRestore()}
        if pool_template is not None:
            items["pool"] = ocp.args.StandardRestore(pool_template)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        trees = {"state": restored["state"]} | ({} if pool_template is None else {"pool": restored["pool"]})
        _check_shapes("state", trees["state"], abstract)
        if pool_template is not None:
            _check_shapes("pool", trees["pool"], pool_template)
        position = dict(restored["position"])
        saved = position.pop(CHECKSUMS, None)
        if saved is not None:  # checkpoints written before checksums existed are taken as they are
            computed = _checksums(trees)
            bad = [name for name in computed if saved.get(name) != computed[name]]
            if bad:
                raise ValueError(f"checksum mismatch in {len(bad)} array(s), first {bad[0]}")
        tree = trees["state"]
        state = template.replace(params=tree["params"], opt_state=tree["opt_state"], step=tree["step"],
                                 rng=tree["rng"])
        return state, position, trees.get("pool")

    def restore(self, template: TrainState, pool_template: dict[str, np.ndarray] | None = None,
                ) -> tuple[TrainState, dict, dict[str, np.ndarray] | None] | None:
        """The newest readable checkpoint as (state, position, pool), or None when there is none.

        Raises CheckpointError when checkpoints exist but none reads back (rather than silently starting over).
        """
        steps = self.all_steps()
        for step in reversed(steps):
            try:
                return self._restore_step(step, template, pool_template)
            except Exception as error:  # noqa: BLE001 - any read failure means this checkpoint is unusable
                log.warning("checkpoint at step %d in %s is unreadable (%s); trying the previous one",
                            step, self.directory, _short(error))
        if steps:
            raise CheckpointError(f"{self.directory}: no checkpoint reads back (steps {steps}, see the warnings); "
                                  "move the folder away to start over")
        return None

    def close(self) -> None:
        self._manager.close()
