"""Two local CPU processes (gloo collectives, 2 devices each) give the same loss as one process."""

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("multihost_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_workers(num_processes: int, data_dir: Path) -> list[str]:
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), str(num_processes), port, str(data_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(num_processes)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(out)
    return outputs


@pytest.mark.slow
def test_two_processes_match_one(tiny_beir):
    two = run_workers(2, tiny_beir)
    one = run_workers(1, tiny_beir)
    parse = lambda out: re.search(r"devices=(\d+) processes=(\d+) loss=([-\d.]+)", out).groups()
    (d1, p1, loss1), = [parse(o) for o in one]
    two_parsed = [parse(o) for o in two]
    assert (d1, p1) == ("2", "1")
    assert all(d == "4" and p == "2" for d, p, _ in two_parsed)
    assert two_parsed[0][2] == two_parsed[1][2]
    assert abs(float(two_parsed[0][2]) - float(loss1)) <= 1e-5
