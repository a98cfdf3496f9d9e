"""keep_freed_memory: a freed large block is reused by the next allocation instead of being faulted in again."""

import json
import os
import platform
import subprocess
import sys

import pytest

# In a fresh interpreter (mallopt is process-wide): malloc + touch + free a 64 MB block 4 times, as XLA:CPU does with
# an execution's buffers, and count the minor page faults of rounds 2-4.
CHILD = """
import ctypes, json, resource
from hnm_jax.host_memory import keep_freed_memory
kept = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults[1:]}))
"""


def run_child(setting: str) -> dict:
    env = {**os.environ, "HNM_KEEP_FREED_MEMORY": setting}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_reuses_a_freed_block_without_page_faults():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    default, kept = run_child("0"), run_child("1")
    assert not default["kept"] and kept["kept"]
    # glibc by default: the 64 MB block is its own mmap, unmapped on free, so every round faults each page again.
    assert min(default["faults"]) > pages // 2
    # Kept: the block stays in the heap and the next malloc hands the same pages back.
    assert max(kept["faults"]) < pages // 50
