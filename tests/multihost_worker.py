"""One process of the multi-host test: `python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR`.

Initializes jax.distributed on localhost with gloo CPU collectives (2 fake CPU devices per process), builds the
same deterministic global batch in every process, feeds only this process's rows, and prints the loss.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main() -> None:
    process_id, num_processes, port, data_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if num_processes > 1:
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                                   process_id=process_id)
    jax.devices()  # start the backend now: importing conftest below must not change the device count
    sys.path.insert(0, os.path.dirname(__file__))
    import numpy as np
    from conftest import tiny_config
    from test_train import make_tiny_batch

    from hnm_jax import sharding
    from hnm_jax.config import spec_from_config
    from hnm_jax.train_step import contrastive_loss

    encoder, batch = make_tiny_batch(data_dir)
    loss_spec = spec_from_config(tiny_config(data_dir)).loss
    mesh = sharding.make_mesh()
    replicated = sharding.replicated(mesh)
    params = jax.tree.map(lambda p: jax.make_array_from_process_local_data(replicated, np.asarray(p)), encoder.state)
    local = {k: v[sharding.process_rows(len(v))] for k, v in batch.items()}
    fn = jax.jit(lambda p, b: contrastive_loss(p, encoder.graphdef, b, loss_spec, encoder.pooling, None)[0],
                 out_shardings=replicated)
    loss = fn(params, sharding.to_global(local, mesh))
    print(f"devices={jax.device_count()} processes={jax.process_count()} loss={float(loss):.8f}", flush=True)


if __name__ == "__main__":
    main()
