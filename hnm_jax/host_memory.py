"""Host memory that a step frees stays with the process for the next step, instead of going back to the OS.

XLA:CPU mallocs each execution's buffers and frees them when it ends. glibc serves every allocation above its mmap
threshold (32 MB at most) with a fresh mmap and unmaps it on free, so a MiniLM train step at batch 64 x length 64
maps ~4 GB of new pages every step: ~1.05M minor page faults and ~2 s of system CPU time, which the kernel spends
zeroing pages the previous step had just returned (measured on 2 cores: `experiments/bench_vs_peers.py` records
each contender's system seconds and page faults per step). `keep_freed_memory()` has glibc serve every size from its
heap and never trim it, so a step reuses the pages of the steps before: after the first steps, no page faults, and
the 64x64 step takes ~6% less wall time (14.5-15.1 s against 15.6-16.0 s). The cost is the one of every caching
allocator, a larger resident set: the heap keeps the holes that compilation and the first steps leave, so the
64x64 process's peak grew from 4.8 GB to 8.5-12.2 GB in our runs. No numeric effect.

HNM_KEEP_FREED_MEMORY=0 (or off, false, no) leaves malloc as it is; outside glibc (macOS, musl) this is a no-op.
The `hnm` CLI and `train_and_evaluate` call it first.
"""

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

ENV = "HNM_KEEP_FREED_MEMORY"
OFF = ("0", "off", "false", "no")
# mallopt(3) parameters (glibc malloc.h); each call returns 1 on success.
M_TRIM_THRESHOLD = -1  # free memory at the heap's top beyond this many bytes goes back to the OS (-1: never)
M_MMAP_MAX = -4  # how many allocations may be served by their own mmap at once (0: none)
M_ARENA_MAX = -8  # heaps for threads; 1: the main heap only (a thread's extra heap caps at 64 MB, and mmaps beyond)
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory for reuse (see the module docstring); True when it is set.

    Process-wide and idempotent; best called before the first large allocation (a thread that already has its own
    heap keeps it).
    """
    if os.environ.get(ENV, "").strip().lower() in OFF or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    if not all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS):
        log.warning("mallopt refused a setting; freed host memory may still go back to the OS between steps")
        return False
    return True
