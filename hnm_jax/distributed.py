"""Joining a multi-process run (`jax.distributed` with gloo collectives on CPU), and leaving it when a peer is lost.

A process of a multi-process run that is killed (SIGKILL, the OOM killer, a lost host) leaves the others blocked in
a collective or failing in gloo. JAX's coordination service notices: a process that stopped sending heartbeats
within `heartbeat_timeout_seconds` (here PEER_TIMEOUT_S, default 15 s; JAX's default is 100 s), a lost coordinator
(process 0, which hosts the service) at once. Either way JAX ends every surviving process from C++ (SIGABRT, exit
status 134) with a fatal log and a stack trace. So `join` routes each process's stderr through a small filter
process (this file run as a script) that passes everything through unchanged, and turns that fatal block
into one line:

    hnm train: lost a peer process of this multi-process run (process 1 stopped sending heartbeats); ...

A survivor thus exits within PEER_TIMEOUT_S of the loss (plus up to a heartbeat interval) or at once, and never
waits for CI's limit. Rerunning every process with the same command resumes from the last checkpoint.
"""

import os
import re
import select
import signal
import subprocess
import sys
import time

PEER_TIMEOUT_ENV = "HNM_PEER_TIMEOUT_S"
DEFAULT_PEER_TIMEOUT_S = 15
# An error or fatal log line of XLA's C++ (the block that ends a survivor starts with one), and what in that block
# says that the process is being ended; a block without the latter is passed on as it is.
CPP_ERROR = re.compile(rb"[EF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\] ")
FATAL = b"JAX distributed service detected fatal errors"
_filter: subprocess.Popen | None = None  # this process's stderr filter (kept referenced: it outlives us briefly)


def peer_timeout_s() -> int:
    """Seconds without heartbeats after which a process counts as lost ($HNM_PEER_TIMEOUT_S, default 15)."""
    value = os.environ.get(PEER_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_PEER_TIMEOUT_S
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{PEER_TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return int(value)


def joined() -> bool:
    """Whether this process joined a multi-process run with `join`."""
    return _filter is not None


def join(coordinator: str, num_processes: int, process_id: int, prog: str) -> None:
    """`jax.distributed.initialize` with gloo CPU collectives and the peer timeout, stderr through the filter."""
    global _filter
    timeout = peer_timeout_s()
    if _filter is None:
        # run as a script (-I: stdlib only, whatever sys.path this process has)
        _filter = subprocess.Popen([sys.executable, "-I", __file__, prog], stdin=subprocess.PIPE,
                                   stdout=sys.stderr.fileno(), stderr=sys.stderr.fileno())
        sys.stderr.flush()
        os.dup2(_filter.stdin.fileno(), sys.stderr.fileno())
        _filter.stdin.close()
    import jax

    # Cross-process collectives of the CPU backend (the default has none); GPU and TPU backends ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=timeout)


def await_peer_loss(error: BaseException) -> None:
    """In a joined process, on an error that an XLA runtime error caused (a failed collective, also inside a failed
    checkpoint save): when a peer died, JAX ends this process within the peer timeout (the filter's one line). Waits
    that long, so the error is not reported for nothing; returns when that did not come (the error is this
    process's own). Returns at once outside a multi-process run or for other errors."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError"):
            if joined():
                time.sleep(peer_timeout_s() + 15)
            return
        error = error.__cause__ or error.__context__


def _peer_lost_line(prog: str, fatal: bytes) -> str:
    text = fatal.decode("utf-8", "replace")
    tasks = sorted({int(t) for t in re.findall(r"Task (\d+) heartbeat timeout", text)})
    if not tasks and (match := re.search(r"stopped sending heartbeats\):\s*([\d,\s]+)", text)):
        tasks = sorted({int(t) for t in re.findall(r"\d+", match.group(1))})
    if tasks:
        what = f"process {', '.join(map(str, tasks))} stopped sending heartbeats"
    elif "leader task" in text or "Failed to send RPC to coordination service" in text:
        what = "the coordinator, process 0, is gone"
    else:
        fatal_line = next((line for line in text.splitlines() if "fatal errors" in line), text.splitlines()[0])
        what = " ".join(fatal_line.split())[:300]
    return (f"{prog}: lost a peer process of this multi-process run ({what}); this process stops too. Rerun every "
            "process with the same command to resume from the last checkpoint\n")


def filter_stderr(prog: str, source: int = 0, sink: int = 1) -> None:
    """Copies `source` to `sink` until EOF, except JAX's fatal block on a lost peer, which becomes one line.

    From the first C++ error line on, the rest is held back; at EOF it becomes the one line
    when it holds JAX's fatal message, else it is passed on unchanged."""
    pending, held, line_open = b"", b"", False

    def flush(data: bytes) -> None:
        nonlocal line_open
        if data:
            line_open = not data.endswith(b"\n")
        while data:
            data = data[os.write(sink, data):]

    while True:
        ready, _, _ = select.select([source], [], [], 0.2)
        if not ready:  # quiet: pass on a partial line (a progress bar) as it is
            flush(pending)
            pending = b""
            continue
        chunk = os.read(source, 1 << 16)
        if not chunk:
            break
        if held:
            held += chunk
            continue
        pending += chunk
        match = CPP_ERROR.search(pending)
        if match:
            flush(pending[:match.start()])
            held, pending = pending[match.start():], b""
            continue
        cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1  # whole lines now, a partial one when quiet
        flush(pending[:cut])
        pending = pending[cut:]
    if held and FATAL in held:
        flush((b"\n" if line_open else b"") + _peer_lost_line(prog, held).encode())
    else:
        flush(held + pending)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: outlive the process
    filter_stderr(sys.argv[1] if len(sys.argv) > 1 else "hnm")
