"""Two local CPU processes (gloo collectives, 2 devices each) give the same numbers as one process: the CLI's
training (losses, eval metrics) and the corpus encode."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, xla_flags

WORKER = Path(__file__).with_name("multihost_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_all(commands: list[list[str]], env: dict[str, str] | None = None) -> list[str]:
    """Starts every command at once (the processes of one run), waits for all; returns their stdouts."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for c in commands]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


def run_workers(num_processes: int, data_dir: Path, out: str) -> list[str]:
    """The encode worker in `num_processes` processes; process i saves its embeddings to OUT.i.npy."""
    port = str(free_port())
    return run_all([[sys.executable, str(WORKER), str(i), str(num_processes), port, str(data_dir), f"{out}.{i}.npy"]
                    for i in range(num_processes)])


@pytest.mark.slow
def test_two_processes_encode_the_corpus_like_one(tiny_beir, tmp_path):
    two = run_workers(2, tiny_beir, str(tmp_path / "two"))
    run_workers(1, tiny_beir, str(tmp_path / "one"))
    assert all("devices=4 processes=2" in out for out in two)
    one = np.load(tmp_path / "one.0.npy")
    assert one.shape == (144, 32) and np.all(np.abs(np.linalg.norm(one, axis=1) - 1) < 1e-5)
    for i in range(2):  # every process holds every row
        np.testing.assert_allclose(np.load(tmp_path / f"two.{i}.npy"), one, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_cli_train_in_two_processes_matches_one(tiny_beir, tmp_path):
    from hnm_jax.main import main

    args = ["train", "--config", f"{REPO / 'configs/base.py'}:tiny", f"--config.data.path={tiny_beir}",
            "--config.train.max_steps=2"]
    env = {**os.environ, "XLA_FLAGS": xla_flags(2), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    port = free_port()
    run_all([[sys.executable, "-m", "hnm_jax.main", *args, f"--workdir={tmp_path / 'two'}", "--coordinator",
              f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)] for i in range(2)], env=env)
    assert main([*args, f"--workdir={tmp_path / 'one'}"]) == 0  # the same 4 global devices, in this process

    def read(workdir: Path) -> tuple[list[float], dict]:
        lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [line["train/loss"] for line in lines if "train/loss" in line], json.loads(
            (workdir / "eval_test.json").read_text())

    (loss_two, eval_two), (loss_one, eval_one) = read(tmp_path / "two"), read(tmp_path / "one")
    assert len(loss_one) == len(loss_two) == 2
    np.testing.assert_allclose(loss_two, loss_one, atol=1e-5, rtol=0)
    for key in ("accuracy@1", "mrr@10", "pairwise_accuracy"):
        assert abs(eval_two[key] - eval_one[key]) <= 1e-5, key
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["1", "2"]


LOST_PEER_STEPS = 8


def two_process_train(workdir: Path, port: int) -> list[list[str]]:
    """The two commands of a two-process `hnm train` of LOST_PEER_STEPS steps, a checkpoint after each."""
    return [[sys.executable, "-m", "hnm_jax.main", "train", "--config", f"{REPO / 'configs/base.py'}:tiny",
             f"--config.data.path={workdir.parent / 'data'}", f"--config.train.max_steps={LOST_PEER_STEPS}",
             "--config.train.checkpoint_every=1", f"--workdir={workdir}", "--coordinator", f"localhost:{port}",
             "--num-processes", "2", "--process-id", str(i)] for i in range(2)]


@pytest.fixture(scope="module")
def lost_peer_setup(tiny_beir, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(folder with the data and an uninterrupted two-process run in `straight`, the processes' environment)."""
    import shutil

    root = tmp_path_factory.mktemp("lost_peer")
    shutil.copytree(tiny_beir, root / "data")
    env = {**os.environ, "XLA_FLAGS": xla_flags(2), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": str(REPO), "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache")}
    run_all(two_process_train(root / "straight", free_port()), env=env)
    return root, env


def final_numbers(workdir: Path) -> tuple[dict, dict, list]:
    """(eval metrics, {step: train/loss} as last logged, parameter leaves of the newest checkpoint)."""
    from conftest import params_of

    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = {line["step"]: line["train/loss"] for line in lines if "train/loss" in line}  # a rerun's lines last
    return json.loads((workdir / "eval_test.json").read_text()), losses, params_of(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["worker killed", "coordinator killed"])
def test_lost_peer_ends_the_survivor_in_one_line_and_a_rerun_resumes(lost_peer_setup, victim):
    import signal
    import time

    root, env = lost_peer_setup
    workdir = root / f"killed{victim}"
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for c in two_process_train(workdir, free_port())]
    survivor = procs[1 - victim]
    try:
        deadline = time.time() + 300
        while not (workdir / "checkpoints" / "3").is_dir() and time.time() < deadline:  # mid-training
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
            time.sleep(0.05)
        procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = survivor.communicate(timeout=120)
        exit_s = time.monotonic() - killed_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    lost = "process 1 stopped sending heartbeats" if victim == 1 else "the coordinator, process 0, is gone"
    assert survivor.returncode != 0
    assert last.startswith(f"hnm train: lost a peer process of this multi-process run ({lost}); "), err[-3000:]
    assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
    assert exit_s <= 60, exit_s  # stated bound: HNM_PEER_TIMEOUT_S (15 s) + a heartbeat interval; measured ~10-16 s
    print(f"\nsurvivor (process {1 - victim}) exited {exit_s:.1f} s after process {victim} was killed: {last}")

    checkpoints = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints and checkpoints[-1] < LOST_PEER_STEPS  # killed mid-training
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for c in two_process_train(workdir, free_port())]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs[0][-3000:] + errs[1][-3000:]
    assert f"resumed from step {checkpoints[-1]}" in errs[0]
    (metrics, losses, params), (expected, expected_losses, expected_params) = (final_numbers(workdir),
                                                                            final_numbers(root / "straight"))
    for key in ("accuracy@1", "mrr@10", "ndcg@10", "pairwise_accuracy"):
        assert abs(metrics[key] - expected[key]) <= 1e-6, key
    assert sorted(losses) == sorted(expected_losses) and max(losses) == LOST_PEER_STEPS
    np.testing.assert_allclose([losses[s] for s in sorted(losses)], [expected_losses[s] for s in sorted(losses)],
                               atol=1e-6, rtol=0)
    for leaf, want in zip(params, expected_params, strict=True):
        np.testing.assert_allclose(leaf, want, atol=1e-6, rtol=0)


def test_init_distributed_single_process_and_bad_flags(monkeypatch, tmp_path):
    from hnm_jax.main import init_distributed, main

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed(None, None, None) == 1
    assert init_distributed("localhost:1234", 1, 0) == 1
    with pytest.raises(ValueError, match="--num-processes"):
        init_distributed("localhost:1234", None, None)
    with pytest.raises(ValueError, match="--coordinator"):
        init_distributed(None, 2, 0)
    with pytest.raises(ValueError, match="--process-id: expected 0..1, got 2"):
        init_distributed("localhost:1234", 2, 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        init_distributed(None, None, None)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    with pytest.raises(ValueError, match="--coordinator"):  # the env vars are read, and checked like the flags
        init_distributed(None, None, None)
    code = main(["train", "--config", str(REPO / "configs/base.py:tiny"), "--workdir", str(tmp_path), "--process-id=1"])
    assert code == 2 and not any(tmp_path.iterdir())
