"""orbax checkpoints of the train state, the data position and (when mining) the negative pool.

The mining state's checkpoint form is here too: `miner_template` (the shapes to restore), `miner_arrays` /
`miner_position` (what a save stores of a MinerState) and `restore_miner` (the MinerState they give back, its
retrievers rebuilt from the saved corpus embeddings, no re-mining).

Rerunning the same command restores the newest checkpoint that reads back. A checkpoint that fails to read
(truncated, corrupted, wrong shapes) is reported with its step and the previous one is used. orbax itself does
not notice flipped bytes inside an uncompressed array file, so each save also stores a CRC32 of every array in
the position item, and a restore recomputes and compares them. A save that fails (e.g. a full disk) raises a
CheckpointError naming the directory and the step, removes its partial folder and leaves older ones intact.
"""

import dataclasses
import errno
import logging
import os
import shutil
import time
import types
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hnm_jax.mining.negatives import Pool
from hnm_jax.training.miner import MinerContext, MinerState, with_embeddings
from hnm_jax.training.step import TrainState

log = logging.getLogger(__name__)

CHECKSUMS = "checksums"  # key of the per-array CRC32s inside the saved position item
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax writes `<step><TMP_SUFFIX>...`, then renames it to `<step>`


def miner_template(context: MinerContext, hidden_size: int) -> dict[str, np.ndarray] | None:
    """Shapes of `miner_arrays` for restoring (None: the run mines no pool)."""
    spec = context.spec
    if not context.enabled:
        return None
    q, m = len(context.split), spec.mining.pool_size
    f32 = np.zeros((q, m), np.float32)
    arrays = {"indices": np.zeros((q, m), np.int32), "dense": f32, "lexical": f32, "fused": f32,
              "positive": np.zeros((q,), np.float32), "doc_emb": np.zeros((context.num_docs, hidden_size), np.float32)}
    if context.guided:
        arrays.update(ce=f32, ce_positive=np.zeros((q,), np.float32))
    if spec.loss.hybrid_logits:
        arrays.update({name: np.zeros((q,), np.float32) for name in ("lexical_lo", "lexical_span", "hybrid_beta")})
    return arrays


def miner_arrays(state: MinerState) -> dict[str, np.ndarray] | None:
    """The arrays a checkpoint stores of a mining state: the pool, the corpus embeddings its index was built from
    and the positives' CE logits (None: no pool yet)."""
    if state.pool is None:
        return None
    arrays = {**state.pool.arrays(), "doc_emb": state.doc_emb}
    if state.ce_positive is not None:
        arrays["ce_positive"] = state.ce_positive
    return arrays


def miner_position(state: MinerState) -> dict[str, Any]:
    """What the checkpoint's position records of a mining state: the step its pool was mined at and whether the
    gate of that refresh let the CEs filter."""
    return {"pool_step": state.pool_step, "ce_filter_on": state.ce_filter_on}


def restore_miner(context: MinerContext, arrays: dict[str, np.ndarray], position: dict[str, Any]) -> MinerState:
    """The mining state of a checkpoint (`miner_arrays`, `miner_position`): its pool, the retrievers rebuilt over
    its corpus embeddings (no re-mining) and, when CE-guided, the CE logits of the pool's scored entries (so
    per-step filtering needs no re-scoring)."""
    pool = Pool(**{k: np.asarray(v) for k, v in arrays.items() if k not in ("doc_emb", "ce_positive")})
    state = MinerState(pool=pool, pool_step=position["pool_step"],
                       ce_filter_on=bool(position.get("ce_filter_on", True)))
    if "ce_positive" in arrays:
        scored = np.argwhere((pool.indices >= 0) & np.isfinite(pool.ce))
        scores = {(int(q), int(pool.indices[q, m])): float(pool.ce[q, m]) for q, m in scored}
        state = dataclasses.replace(state, ce_positive=np.asarray(arrays["ce_positive"]),
                                    ce_scores=types.MappingProxyType(scores))
    return with_embeddings(context, state, np.asarray(arrays["doc_emb"]))


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
