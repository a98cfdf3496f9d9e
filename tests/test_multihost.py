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
