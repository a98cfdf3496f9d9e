"""One process of the multi-host encode test: `python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT`.

Initializes jax.distributed on localhost with gloo CPU collectives (2 fake CPU devices per process), encodes the
tiny corpus with a tiny random encoder over the global mesh (each process feeds its share of every batch; params
start on one local device) and saves this process's [N, D] embeddings to OUT.
"""

import os
import re
import sys

# the test process's flags (conftest.xla_flags), with 2 devices per process
os.environ["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")
                                 ) + " --xla_force_host_platform_device_count=2"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

ENCODE_BATCH = 20  # divides by the 4 global devices; 144 tiny docs -> the last batch is padded


def encode(data_dir: str, out: str) -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from hnm_jax import sharding
    from hnm_jax.data.beir import load_beir
    from hnm_jax.data.tokenize import tokenize_texts
    from hnm_jax.models.encoder import BertConfig
    from hnm_jax.models.loading import TINY_TOKENIZER
    from hnm_jax.models.pretrained import random_encoder, resolve_model_dir

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(TINY_TOKENIZER))
    encoder = random_encoder(BertConfig.tiny(vocab_size=tokenizer.vocab_size), tokenizer, seed=0)
    # params committed to one local device, as orbax restores them (`hnm eval --workdir`)
    encoder.state = jax.device_put(encoder.state, jax.local_devices()[0])
    tokens = tokenize_texts(tokenizer, load_beir(data_dir, "train").corpus.texts, 16)
    mesh = sharding.make_mesh()
    emb = encoder.encode_tokens(tokens, ENCODE_BATCH, sharding=sharding.batch_sharding(mesh))
    np.save(out, emb)
    print(f"devices={jax.device_count()} processes={jax.process_count()} encoded={emb.shape}", flush=True)


def main() -> None:
    process_id, num_processes, port, data_dir, out = sys.argv[1:6]
    if int(num_processes) > 1:
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=int(num_processes),
                                   process_id=int(process_id))
    encode(data_dir, out)


if __name__ == "__main__":
    main()
