"""The stderr filter of a multi-process run (hnm_jax/distributed.py): output passes through unchanged, and the fatal
block JAX prints when it ends a survivor becomes one line saying which peer was lost. The blocks below are what
JAX 0.10 printed in tests/test_multihost.py's lost-peer runs, shortened. The real processes: test_multihost.py."""

import subprocess
import sys

import pytest

from hnm_jax import distributed

PROGRESS = b"INFO hnm_jax.training.train: resumed from step 2\ntrain:  25%|##5  | 3/12 [00:07<00:19, loss=2.2065]\r" \
           b"train:  25%|##5  | 3/12 [00:08<00:25, loss=1.9520]"
STACK = b"*** Check failure stack trace: ***\n    @     0x7f239422520d  nanobind::detail::nb_func_vectorcall()\n"
WORKER_LOST = (
    b"E1206 02:31:00.493669   18924 coordination_service.cc:1549] [519589] Use error polling to propagate the "
    b"following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n1\n"
    b"The tasks have crashed. Check the task logs for an earlier error.\n"
    b"E1206 02:31:00.493700   18930 coordination_service_agent.cc:289] Polled an error from coordination service "
    b"(this can be an error from this or another task).\n"
    b"F1206 02:31:00.493800   18930 client.h:80] Terminating process because the JAX distributed service detected "
    b"fatal errors. This most likely indicates that another task died; absl::Status: INTERNAL: Task 1 heartbeat "
    b"timeout.\n" + STACK)
COORDINATOR_LOST = (
    b"E1206 02:19:59.711100    9434 coordination_service_agent.cc:289] Polled an error from coordination service "
    b"(this can be an error from this or another task).\n"
    b"F1206 02:19:59.711205    9434 client.h:80] Terminating process because the JAX distributed service detected "
    b"fatal errors. This most likely indicates that another task died; absl::Status: UNAVAILABLE: Failed to send "
    b"RPC to coordination service. Either the leader task was preempted/died/restarted unexpectedly\n" + STACK)
OTHER_ERROR = b"E1206 02:40:00.000001    1234 cpu_client.cc:12] something this process reports\nmore text\n"


def filtered(data: bytes) -> bytes:
    """`data` through the filter process, as a multi-process `hnm train` starts it."""
    done = subprocess.run([sys.executable, "-I", distributed.__file__, "hnm train"], input=data,
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stderr == b""
    return done.stdout


@pytest.mark.parametrize("block, lost", [(WORKER_LOST, "process 1 stopped sending heartbeats"),
                                         (COORDINATOR_LOST, "the coordinator, process 0, is gone")])
def test_fatal_block_of_a_lost_peer_becomes_one_line(block, lost):
    out = filtered(PROGRESS + block)
    assert out == PROGRESS + (f"\nhnm train: lost a peer process of this multi-process run ({lost}); this process "
                              "stops too. Rerun every process with the same command to resume from the last "
                              "checkpoint\n").encode()


@pytest.mark.parametrize("data", [PROGRESS, PROGRESS + b"\n" + OTHER_ERROR, b"", b"no newline at the end"])
def test_everything_else_passes_through_unchanged(data):
    assert filtered(data) == data


def test_peer_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.PEER_TIMEOUT_ENV, raising=False)
    assert distributed.peer_timeout_s() == distributed.DEFAULT_PEER_TIMEOUT_S == 15
    monkeypatch.setenv(distributed.PEER_TIMEOUT_ENV, "7")
    assert distributed.peer_timeout_s() == 7
    monkeypatch.setenv(distributed.PEER_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="HNM_PEER_TIMEOUT_S='soon': expected a positive number of seconds"):
        distributed.peer_timeout_s()
