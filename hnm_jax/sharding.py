"""A 1-D 'data' mesh over every device; batches sharded on their leading axis, parameters replicated."""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over 'data'; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def put_replicated(tree: Any, mesh: Mesh) -> tuple[Any, Any]:
    """(`tree` replicated on every device of `mesh`, the tree of its shardings)."""
    shardings = jax.tree.map(lambda _: replicated(mesh), tree)
    return jax.device_put(tree, shardings), shardings


def check_batch_size(batch_size: int, mesh: Mesh, key: str = "train.batch_size") -> None:
    """Raises ValueError naming `key` when the global batch does not split evenly over the devices."""
    if batch_size % mesh.size:
        raise ValueError(f"{key}: {batch_size} does not divide by the {mesh.size} devices of the mesh")


def process_rows(global_size: int) -> slice:
    """This process's contiguous share of a global batch of `global_size` rows (multi-host)."""
    per_process = global_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def to_global(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local arrays (this process's rows) -> global arrays sharded over the 'data' axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def to_replicated(tree: Any, mesh: Mesh) -> Any:
    """Arrays (the same values in every process) -> arrays replicated over `mesh`; leaves already so are kept.

    One process: `jax.device_put`. Several: each process builds the global array from its own copy with
    `jax.make_array_from_process_local_data`, since a committed single-device array (e.g. restored by orbax)
    cannot be `device_put` to devices of other processes.
    """
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put(leaf: Any) -> jax.Array:
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(put, tree)
