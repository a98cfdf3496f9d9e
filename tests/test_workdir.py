"""One workdir, several processes: the workdir lock (hnm_jax/workdir.py) with real processes. A second trainer, or an
`hnm eval` beside a trainer, exits with status 2 naming the holder's pid and host and the lock file; readers share;
a lock left by a SIGKILLed process is taken over with a warning."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, xla_flags

from hnm_jax.workdir import WorkdirBusy, WorkdirLock

HOLD = """
import sys, time
from hnm_jax.workdir import WorkdirLock
lock = WorkdirLock(sys.argv[1], "holder", shared=sys.argv[2] == "shared").acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(workdir: Path, mode: str) -> subprocess.Popen:
    """A process holding `workdir`'s lock (`mode`: exclusive | shared) until killed; returns once it holds it."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir), mode], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == "held"
    return process


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_exclusive_holder_refuses_every_other_process_and_is_named(tmp_path):
    holder = hold(tmp_path, "exclusive")
    try:
        for shared in (False, True):
            with pytest.raises(WorkdirBusy) as info:
                WorkdirLock(tmp_path, "hnm train", shared=shared).acquire()
            message = str(info.value)
            assert message.startswith(f"{tmp_path / '.lock'}: {tmp_path} is in use by pid {holder.pid} on host "
                                      f"{socket.gethostname()} (holder, since "), message
            assert "\n" not in message
    finally:
        kill(holder)


def test_readers_share_and_refuse_a_trainer_naming_themselves(tmp_path):
    readers = [hold(tmp_path, "shared"), hold(tmp_path, "shared")]
    try:
        with WorkdirLock(tmp_path, "hnm eval", shared=True):  # a third reader
            pass
        with pytest.raises(WorkdirBusy) as info:
            WorkdirLock(tmp_path, "hnm train").acquire()
        for reader in readers:
            assert f"pid {reader.pid} on host {socket.gethostname()}" in str(info.value)
    finally:
        for reader in readers:
            kill(reader)
    with WorkdirLock(tmp_path, "hnm train"):  # readers gone: the trainer gets it
        assert not list(tmp_path.glob(".lock.reader.*"))  # their records were taken over


def test_lock_of_a_sigkilled_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    for mode in ("exclusive", "shared"):
        holder = hold(tmp_path, mode)
        kill(holder)  # no release: its record stays, the kernel drops its flock
        with caplog.at_level(logging.WARNING, logger="hnm_jax.workdir"):
            caplog.clear()
            with WorkdirLock(tmp_path, "hnm train"):
                assert str(os.getpid()) in (tmp_path / ".lock").read_text()
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and f"took over the lock of pid {holder.pid} on host" in warnings[0], warnings
    assert (tmp_path / ".lock").read_text() == ""  # a clean release leaves no record behind
    with caplog.at_level(logging.WARNING, logger="hnm_jax.workdir"):
        caplog.clear()
        with WorkdirLock(tmp_path, "hnm eval", shared=True):
            pass
    assert not caplog.records


def test_process_locks_of_a_multi_process_run_are_separate(tmp_path):
    with WorkdirLock(tmp_path, "hnm train", process_index=0), WorkdirLock(tmp_path, "hnm train", process_index=1):
        assert (tmp_path / ".lock.process1").read_text()
        with pytest.raises(WorkdirBusy, match=r"\.lock\.process1: "):
            WorkdirLock(tmp_path, "hnm train", process_index=1).acquire()


def _train(workdir: Path, data: Path, env: dict, steps: int) -> list[str]:
    return [sys.executable, "-m", "hnm_jax.main", "train", "--config", f"{REPO / 'configs/base.py'}:tiny",
            f"--config.data.path={data}", f"--config.train.max_steps={steps}", "--config.train.checkpoint_every=1",
            "--workdir", str(workdir)]


@pytest.mark.slow
def test_two_trainers_race_one_trains_eval_is_refused_then_takes_over_a_killed_trainers_lock(tiny_beir, tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": xla_flags(4), "HF_HUB_OFFLINE": "1",
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache")}
    racers = [subprocess.Popen(_train(workdir, tiny_beir, env, 200), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.time() + 240
        while all(r.poll() is None for r in racers) and time.time() < deadline:
            time.sleep(0.1)
        loser = next(r for r in racers if r.poll() is not None)
        winner = next(r for r in racers if r is not loser)
        err = loser.stderr.read()
        assert loser.returncode == 2, err
        line = err.strip().splitlines()[-1]
        assert line == (f"hnm train: {workdir / '.lock'}: {workdir} is in use by pid {winner.pid} on host "
                         f"{socket.gethostname()} (hnm train, since {line.split('since ')[1].split(')')[0]}); wait "
                         "for it to end or use another workdir"), err
        assert "Traceback" not in err
        while not (workdir / "checkpoints" / "1").is_dir() and winner.poll() is None:
            time.sleep(0.1)
        assert winner.poll() is None  # training

        evaluate = subprocess.run([sys.executable, "-m", "hnm_jax.main", "eval", "--workdir", str(workdir)], env=env,
                                  cwd=REPO, capture_output=True, text=True, timeout=240)
        assert evaluate.returncode == 2, evaluate.stderr
        assert evaluate.stderr.strip().splitlines()[-1].startswith(
            f"hnm eval: {workdir / '.lock'}: {workdir} is in use by pid {winner.pid} on host {socket.gethostname()} "
            "(hnm train, since ")
        assert winner.poll() is None  # still training: refused while it held the lock
        kill(winner)
    finally:
        for racer in racers:
            if racer.poll() is None:
                kill(racer)
    after = subprocess.run([sys.executable, "-m", "hnm_jax.main", "eval", "--workdir", str(workdir)], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=240)
    assert after.returncode == 0, after.stderr[-3000:]
    assert f"took over the lock of pid {winner.pid} on host {socket.gethostname()} (hnm train" in after.stderr
    assert (workdir / ".lock").read_text() == "" and (workdir / "eval_test.json").is_file()
