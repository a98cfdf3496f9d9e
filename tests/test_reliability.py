"""Faults a long run meets, each injected on purpose: SIGKILL at random moments, corrupted or truncated
checkpoints, NaN/Inf losses, bad configs, and a full disk while saving. Each test states what the user sees
and checks that nothing that was saved is lost."""

import dataclasses
import errno
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, params_of, tiny_config, xla_flags

from hnm_jax.config import ConfigError, spec_from_config
from hnm_jax.models.loading import build_encoder
from hnm_jax.training import train
from hnm_jax.training.checkpointing import TMP_SUFFIX, Checkpointer, CheckpointError
from hnm_jax.training.loop import TrainingDiverged
from hnm_jax.training.optimizer import make_optimizer
from hnm_jax.training.runs import load_trained, load_trained_config
from hnm_jax.training.step import create_train_state, jit_train_step
from hnm_jax.training.train import train_and_evaluate

OFFLINE = "configs/ablations/offline.py"
ONLINE = "configs/ablations/online_band.py"


def read_checkpoint(workdir: Path, step: int | None = None) -> tuple[int, dict, dict, dict | None]:
    """(step, position, state tree, pool) of a checkpoint as raw numpy, read by orbax without templates."""
    manager = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints")
    try:
        step = manager.latest_step() if step is None else step
        items = {"state": ocp.args.StandardRestore(), "position": ocp.args.JsonRestore()}
        has_pool = (Path(workdir) / "checkpoints" / str(step) / "pool").is_dir()
        if has_pool:
            items["pool"] = ocp.args.StandardRestore()
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    finally:
        manager.close()
    position = dict(restored["position"])
    position.pop("checksums", None)
    return step, position, jax.device_get(restored["state"]), restored["pool"] if has_pool else None


def assert_trees_close(actual, expected, atol: float = 1e-6) -> None:
    """Leaf by leaf (an nnx.State and the plain dict orbax reads it back as flatten in the same order)."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, rtol=0)


# ------------------------------------------------------------------------------- 1. SIGKILL at random moments

KILL_CONFIG = f"{REPO / ONLINE}:tiny"  # online pool: mined at step 0 and re-mined at step 4 (4 steps per epoch)
KILL_OVERRIDES = ["--config.train.max_steps=8", "--config.train.checkpoint_every=1"]


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a training workdir shows at one moment."""

    checkpoints: frozenset[int]  # finished checkpoint steps
    newest_tmp: float  # creation time of the newest orbax temporary folder (0: none)
    train_lines: int  # lines of metrics.jsonl with train metrics
    refreshes_at_4: int  # lines of metrics.jsonl with the refresh before step 5


def progress_of(workdir: Path) -> Progress:
    checkpoints, newest_tmp = set(), 0.0
    folder = workdir / "checkpoints"
    for path in list(folder.iterdir()) if folder.is_dir() else []:
        if path.name.isdigit():
            checkpoints.add(int(path.name))
        elif TMP_SUFFIX in path.name:
            try:
                newest_tmp = max(newest_tmp, path.stat().st_ctime)
            except FileNotFoundError:  # renamed to its step while we looked
                continue
    train_lines = refreshes_at_4 = 0
    metrics = workdir / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        train_lines += "train/loss" in record
        refreshes_at_4 += record["step"] == 4 and "refresh/total_s" in record
    return Progress(frozenset(checkpoints), newest_tmp, train_lines, refreshes_at_4)


def _fired(phase: str, start: Progress, now: Progress, t0: float) -> bool:
    """Whether the moment `phase` waits for has come (then a random delay follows before the kill)."""
    if phase == "startup":  # loading, tokenizing, restoring, the first refresh
        return True
    if phase == "step":  # a checkpoint just finished: the next step (batch, negatives, jitted update) runs now
        return bool(now.checkpoints - start.checkpoints)
    if phase == "checkpoint write":  # orbax is writing a temporary folder
        return now.newest_tmp > t0
    if phase == "refresh":  # the save before the step-4 refresh finished (or the refresh did): re-mining now
        past = max(start.checkpoints, default=0) >= 5 and bool(now.checkpoints - start.checkpoints)
        return (4 in now.checkpoints - start.checkpoints) or now.refreshes_at_4 > start.refreshes_at_4 or past
    raise ValueError(phase)


# (phase, (min, max) random delay in seconds after the phase's moment), in an order that makes progress: each moment
# once (every attempt is a CLI start, ~15 s on 2 cores), then a kill anywhere in a step
KILL_PLAN = [("startup", (0.5, 4.0)), ("checkpoint write", (0.0, 0.3)), ("step", (0.0, 0.05)),
             ("refresh", (0.0, 0.1)), ("step", (0.0, 0.6))]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_matches_uninterrupted(tiny_beir, tmp_path):
    started = time.perf_counter()
    env = {**os.environ, "XLA_FLAGS": xla_flags(4),
           # compiled programs shared by every attempt: a restart costs seconds, not a recompile
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}

    def command(workdir: Path) -> list[str]:
        return [sys.executable, "-m", "hnm_jax.main", "train", "--config", KILL_CONFIG,
                f"--config.data.path={tiny_beir}", *KILL_OVERRIDES, "--workdir", str(workdir)]

    def run_to_end(workdir: Path) -> None:
        done = subprocess.run(command(workdir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=300, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    run_to_end(tmp_path / "straight")  # also fills the compilation cache
    killed = tmp_path / "killed"
    rng = random.Random(20240611)
    log = []
    for phase, (lo, hi) in KILL_PLAN:
        t0, start = time.time(), progress_of(killed)
        process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(lo, hi)
        while process.poll() is None and not _fired(phase, start, progress_of(killed), t0) and time.time() < t0 + 60:
            time.sleep(0.005)
        fired = time.time() - t0
        time.sleep(delay)
        alive = process.poll() is None
        if alive:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        after = progress_of(killed)
        log.append(f"{phase:16s} kill at {fired + delay:5.2f}s ({'killed' if alive else 'had finished'}): "
                   f"checkpoints {sorted(after.checkpoints)}, write in progress: {after.newest_tmp > t0}, "
                   f"step-4 refresh logged: {after.refreshes_at_4 > 0}, train lines: {after.train_lines}")
    run_to_end(killed)
    kills = sum("(killed)" in line for line in log)
    report = "\n".join(log)
    assert kills >= len(KILL_PLAN) - 1, report

    step, position, state, pool = read_checkpoint(killed)
    step_ref, position_ref, state_ref, pool_ref = read_checkpoint(tmp_path / "straight")
    assert step == step_ref == 8 and position == position_ref, report
    assert_trees_close(state, state_ref)
    np.testing.assert_array_equal(pool["indices"], pool_ref["indices"])
    assert_trees_close(pool, pool_ref)
    metrics = json.loads((killed / "eval_test.json").read_text())
    assert metrics["accuracy@1"] == json.loads((tmp_path / "straight" / "eval_test.json").read_text())["accuracy@1"]
    print(f"\n{report}\n{kills} kills; test took {time.perf_counter() - started:.1f} s")


# ------------------------------------------------------------------------------- 2. corrupted checkpoints


@pytest.fixture(scope="module")
def trained(tiny_beir, tmp_path_factory) -> Path:
    """A finished tiny run with a mined pool and checkpoints at steps 2 and 3."""
    workdir = tmp_path_factory.mktemp("trained")
    train_and_evaluate(tiny_config(tiny_beir, OFFLINE, train__max_steps=3, train__checkpoint_every=1), workdir)
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 3]
    return workdir


def _largest_array_file(item: Path) -> Path:
    return max((p for p in item.rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)


def _flip(path: Path) -> None:
    """Inverts 64 bytes in the middle of the file: same size, no error from orbax or tensorstore."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "state array bytes flipped": lambda step_dir: _flip(_largest_array_file(step_dir / "state")),
    "state array file truncated": lambda step_dir: _truncate(_largest_array_file(step_dir / "state")),
    "state array file empty": lambda step_dir: _largest_array_file(step_dir / "state").write_bytes(b""),
    "state metadata deleted": lambda step_dir: (step_dir / "state" / "_METADATA").unlink(),
    "pool array bytes flipped": lambda step_dir: _flip(_largest_array_file(step_dir / "pool")),
    "position json garbled": lambda step_dir: (step_dir / "position" / "metadata").write_text('{"step": 3, "ep'),
}


def _restore(workdir: Path) -> tuple:
    """Checkpointer.restore of a workdir as training does it: state and pool templates."""
    spec = spec_from_config(load_trained_config(workdir))
    encoder = build_encoder(spec.model, spec.seed)
    template = create_train_state(encoder.graphdef, encoder.state, make_optimizer(spec.train, 1), spec.seed)
    pool_template = {k: np.zeros_like(v) for k, v in read_checkpoint(workdir, 2)[3].items()}
    checkpointer = Checkpointer(workdir / "checkpoints", keep=2)
    try:
        return checkpointer.restore(template, pool_template)
    finally:
        checkpointer.close()


ORBAX_READ_NOISE = pytest.mark.filterwarnings(  # a failed orbax restore leaves its other reads un-awaited
    "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.slow
@ORBAX_READ_NOISE
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupted_newest_checkpoint_falls_back_to_the_previous(trained, tmp_path, caplog, corruption):
    workdir = shutil.copytree(trained, tmp_path / "run")
    _, position_2, state_2, pool_2 = read_checkpoint(workdir, 2)
    CORRUPTIONS[corruption](workdir / "checkpoints" / "3")
    with caplog.at_level(logging.WARNING, logger="hnm_jax.training.checkpointing"):
        state, position, pool = _restore(workdir)
    assert position == position_2 and int(state.step) == 2
    assert_trees_close(jax.device_get(state.params), state_2["params"], atol=0)
    assert_trees_close(pool, pool_2, atol=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "checkpoint at step 3" in warnings[0] and "unreadable" in warnings[0]
    assert len(warnings[0]) < 600  # one readable line, not a tensorstore spec dump
    if not corruption.startswith("pool"):  # load_trained reads the state only
        caplog.clear()
        encoder, _ = load_trained(workdir)
        assert_trees_close(jax.device_get(encoder.state), state_2["params"], atol=0)
        assert any("checkpoint at step 3" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@ORBAX_READ_NOISE
def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(trained, tmp_path):
    workdir = shutil.copytree(trained, tmp_path / "run")
    for step in (2, 3):
        _flip(_largest_array_file(workdir / "checkpoints" / str(step) / "state"))
    with pytest.raises(CheckpointError, match=r"no checkpoint reads back \(steps \[2, 3\]"):
        load_trained(workdir)


@pytest.mark.slow
@ORBAX_READ_NOISE
def test_rerun_after_corruption_resumes_from_the_previous_and_rewrites_the_bad_step(trained, tiny_beir, tmp_path,
                                                                                   caplog):
    workdir = shutil.copytree(trained, tmp_path / "run")
    _, position_3, state_3, pool_3 = read_checkpoint(workdir, 3)
    _flip(_largest_array_file(workdir / "checkpoints" / "3" / "state"))
    with caplog.at_level(logging.WARNING, logger="hnm_jax.training.checkpointing"):
        train_and_evaluate(tiny_config(tiny_beir, OFFLINE, train__max_steps=3, train__checkpoint_every=1), workdir)
    messages = [r.getMessage() for r in caplog.records]
    assert any("checkpoint at step 3" in m and "unreadable" in m for m in messages)
    assert any("replacing the unreadable checkpoint at step 3" in m for m in messages)
    _, position, state, pool = read_checkpoint(workdir, 3)  # step 3 retrained from step 2: the same numbers
    assert position == position_3
    assert_trees_close(state, state_3)
    assert_trees_close(pool, pool_3)


# ------------------------------------------------------------------------------- 3. NaN / Inf


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_range_and_keeps_the_last_good_checkpoint(tiny_beir, tmp_path):
    config = tiny_config(tiny_beir, train__max_steps=8, train__log_every=2, train__checkpoint_every=2,
                         train__keep_checkpoints=5, train__inject_nan_at_step=5)
    with pytest.raises(TrainingDiverged) as info:
        train_and_evaluate(config, tmp_path)
    message = str(info.value)
    assert "at step 5 (first bad step among 5..6)" in message and "\n" not in message
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 4]  # nothing at or after 5
    encoder, _ = load_trained(tmp_path)  # the kept checkpoint loads and is finite
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(encoder.state)))
    assert not (tmp_path / "eval_test.json").exists()


@pytest.mark.slow
def test_inf_loss_stops_at_that_step(tiny_beir, tmp_path, monkeypatch):
    def with_inf(*args, **kwargs):
        return jit_train_step(*args, **kwargs, fault_value=float("inf"))

    monkeypatch.setattr(train, "jit_train_step", with_inf)
    config = tiny_config(tiny_beir, train__max_steps=4, train__inject_nan_at_step=2)
    with pytest.raises(TrainingDiverged, match=r"at step 2 \(first bad step among 2\.\.2\)"):
        train_and_evaluate(config, tmp_path)
    assert [int(p.name) for p in (tmp_path / "checkpoints").iterdir()] == [1]
    assert read_checkpoint(tmp_path)[1]["step"] == 1


@pytest.mark.parametrize("value", [-2, 0])
def test_inject_nan_at_step_is_validated(tiny_beir, value):
    with pytest.raises(ConfigError, match=r"^train\.inject_nan_at_step: must be -1 \(off\) or a step >= 1"):
        spec_from_config(tiny_config(tiny_beir, train__inject_nan_at_step=value))


@pytest.mark.parametrize("error", [TrainingDiverged("non-finite loss or gradient at step 5 (first bad step among "
                                                    "5..6); the last checkpoint before it is kept"),
                                   CheckpointError("/w/checkpoints: could not write the checkpoint at step 4 "
                                                   "(OSError: [Errno 28] No space left on device)")])
def test_cli_prints_training_failures_as_one_line(tiny_beir, tmp_path, monkeypatch, capsys, error):
    from hnm_jax.main import main

    def fail(config, workdir):
        raise error

    monkeypatch.setattr(train, "train_and_evaluate", fail)
    args = ["train", "--config", f"{REPO / 'configs/base.py'}:tiny", "--workdir", str(tmp_path)]
    code = main(args)
    assert code not in (0, None)
    assert capsys.readouterr().err.strip().splitlines() == [f"hnm train: {error}"]


# ------------------------------------------------------------------------------- 4. config validation


def _edited(config: ml_collections.ConfigDict, section: str, key: str, value) -> ml_collections.ConfigDict:
    """A copy of `config` with section.key = value, bypassing the locked ConfigDict's own checks."""
    raw = config.to_dict()
    raw[section][key] = value
    return ml_collections.ConfigDict(raw)


CONFIG_ERRORS = {  # case -> (config file, edit, start of the message)
    "unknown key": ("configs/base.py", ("train", "batchsize", 8), "train.batchsize: unknown key; did you mean "
                                                                  "train.batch_size?"),
    "wrong type": ("configs/base.py", ("train", "batch_size", "8"), "train.batch_size: expected int, got str"),
    "band lo > hi": (OFFLINE, ("band", "lo", 2.5), "band.lo must be <= hi (the band is empty): lo=2.5 > hi=0.3"),
    "temperature 0": ("configs/base.py", ("loss", "temperature", 0.0), "loss.temperature: must be in"),
    "temperature < 0": ("configs/base.py", ("loss", "temperature", -0.05), "loss.temperature: must be in"),
    "num_negatives > pool_size": (OFFLINE, ("mining", "num_negatives", 40), "mining.pool_size: must be in "
                                                                            "[num_negatives=40, 1000], got 30"),
    "batch not divisible by 4 devices": ("configs/base.py", ("train", "batch_size", 6),
                                         "train.batch_size: 6 does not divide by the 4 devices"),
    "missing data path": ("configs/base.py", ("data", "path", "/nonexistent"),
                          "data.path: /nonexistent: not a directory"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_bad_config_fails_fast_with_one_line_naming_the_key(tiny_beir, tmp_path, monkeypatch, case):
    config_file, (section, key, value), expected = CONFIG_ERRORS[case]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the config error was raised")

    monkeypatch.setattr(train, "build_encoder", no_model)
    config = _edited(tiny_config(tiny_beir, config_file), section, key, value)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        train_and_evaluate(config, tmp_path)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    assert time.perf_counter() - started < 10


def test_cli_bad_data_path_is_one_line(tmp_path, capsys, monkeypatch):
    from hnm_jax.main import main

    args = ["train", "--config", f"{REPO / 'configs/base.py'}:tiny", "--config.data.path=/nonexistent",
            "--workdir", str(tmp_path)]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hnm train: data.path: /nonexistent: not a directory")


# ------------------------------------------------------------------------------- 6. full disk


@pytest.fixture(scope="module")
def tiny_state(tiny_beir):
    """A fresh tiny TrainState (no training needed to exercise the checkpointer)."""
    spec = spec_from_config(tiny_config(tiny_beir))
    encoder = build_encoder(spec.model, spec.seed)
    return create_train_state(encoder.graphdef, encoder.state, make_optimizer(spec.train, 10), spec.seed)


def _assert_step_1_intact(directory: Path, state, checkpointer: Checkpointer) -> None:
    assert checkpointer.all_steps() == [1]
    assert not list(directory.glob(f"*{TMP_SUFFIX}*")), "the partial folder of step 2 was left behind"
    restored, position, _ = checkpointer.restore(state)
    checkpointer.close()
    assert position == {"step": 1} and int(restored.step) == 1
    assert_trees_close(jax.device_get(restored.params), jax.device_get(state.params), atol=0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's event loop, after the error
def test_full_disk_during_save_fails_loudly_and_keeps_the_previous(tmp_path, tiny_state, monkeypatch):
    from orbax.checkpoint import handlers

    async def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    directory = tmp_path / "checkpoints"
    checkpointer = Checkpointer(directory, keep=2)
    checkpointer.save(tiny_state.replace(step=jax.numpy.int32(1)), position={"step": 1})
    monkeypatch.setattr(handlers.JsonCheckpointHandler, "_save_fn", disk_full)  # the state item is written first
    with pytest.raises(CheckpointError) as info:
        checkpointer.save(tiny_state.replace(step=jax.numpy.int32(2)), position={"step": 2})
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(f"{directory}: could not write the checkpoint at step 2")
    assert "No space left on device" in message and "checkpoints kept: 1" in message
    _assert_step_1_intact(directory, tiny_state, checkpointer)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 6 MiB tmpfs (a tiny checkpoint is ~4.3 MB: one fits, two do not); skipped where mounting is not allowed."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_real_full_disk_during_save_fails_loudly_and_keeps_the_previous(small_tmpfs, tiny_state):
    directory = small_tmpfs / "checkpoints"
    checkpointer = Checkpointer(directory, keep=2)
    checkpointer.save(tiny_state.replace(step=jax.numpy.int32(1)), position={"step": 1})
    with pytest.raises(CheckpointError) as info:
        checkpointer.save(tiny_state.replace(step=jax.numpy.int32(2)), position={"step": 2})
    message = str(info.value)
    assert message.startswith(f"{directory}: could not write the checkpoint at step 2"), message
    assert "No space left on device" in message and "checkpoints kept: 1" in message, message
    _assert_step_1_intact(directory, tiny_state, checkpointer)


# ------------------------------------------------------------------------------- 7. memory budget
@pytest.mark.slow
def test_corpus_over_the_memory_budget_streams_to_disk_with_identical_results(tiny_beir, tmp_path):
    from hnm_jax.data.tokenize import tokenize_texts

    spec = spec_from_config(tiny_config(tiny_beir))
    tokenizer = build_encoder(spec.model, 0).tokenizer
    texts = [f"record {i} acme widget" for i in range(100)]
    in_memory = tokenize_texts(tokenizer, texts, 16)
    streamed = tokenize_texts(tokenizer, texts, 16, cache_dir=tmp_path / "cache", memory_budget_bytes=1024)
    assert isinstance(streamed.input_ids, np.memmap) and not isinstance(in_memory.input_ids, np.memmap)
    np.testing.assert_array_equal(streamed.input_ids, in_memory.input_ids)
    np.testing.assert_array_equal(streamed.lengths, in_memory.lengths)

    budgeted = tiny_config(tiny_beir, train__max_steps=1, data__memory_budget_mb=0.001)
    plain = tiny_config(tiny_beir, train__max_steps=1)
    a = train_and_evaluate(budgeted, tmp_path / "budgeted")
    b = train_and_evaluate(plain, tmp_path / "plain")
    assert list((tmp_path / "budgeted" / "cache").glob("*.ids.npy"))
    assert a["accuracy@1"] == b["accuracy@1"]
    for x, y in zip(params_of(tmp_path / "budgeted"), params_of(tmp_path / "plain"), strict=True):
        np.testing.assert_array_equal(x, y)
