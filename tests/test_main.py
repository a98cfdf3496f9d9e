"""The `hnm` CLI's user errors: every subcommand's bad paths (missing, not a folder, not a run, no weights, an
output in a missing folder) end in one line naming the path and what was expected, exit status 2, no traceback,
and nothing written. They fail before any model work, so the whole table runs in seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, tiny_config

from hnm_jax.main import main

CONFIG = f"{REPO / 'configs/base.py'}:tiny"


@pytest.fixture
def places(tiny_beir, tmp_path) -> dict[str, str]:
    """Paths the cases below name, fresh for each case: {NAME} in a case's arguments becomes one of these."""
    root = tmp_path / "places"
    root.mkdir()
    not_a_run = root / "not_a_run"
    not_a_run.mkdir()
    untrained = root / "untrained"  # config.json, no checkpoints
    untrained.mkdir()
    (untrained / "config.json").write_text(tiny_config(tiny_beir).to_json())
    no_weights = root / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "bert"}))
    a_file = root / "a_file.txt"
    a_file.write_text("x")
    return {"DATA": str(tiny_beir), "NOT_A_RUN": str(not_a_run), "UNTRAINED": str(untrained),
            "NO_WEIGHTS": str(no_weights), "FILE": str(a_file), "OUT": str(root / "out"),
            "MISSING": str(root / "missing"), "NEW": str(root / "new_workdir")}


# (subcommand arguments, what the one line must contain); {NAME} is a path from `places`
BAD_PATHS = {
    "train --config missing": (["train", "--config", "{MISSING}.py", "--workdir", "{NEW}"],
                               ["{MISSING}.py: no such file", "expected a config file"]),
    "train --workdir a file": (["train", "--config", CONFIG, "--workdir", "{FILE}"],
                               ["{FILE}: not a folder", "expected a workdir folder"]),
    "train data.path missing": (["train", "--config", CONFIG, "--workdir", "{NEW}", "--config.data.path={MISSING}"],
                                ["data.path: {MISSING}: not a directory"]),
    "train model.name missing": (["train", "--config", CONFIG, "--workdir", "{NEW}", "--config.data.path={DATA}",
                                  "--config.model.name={MISSING}"],
                                 ["model.name: {MISSING}: no such folder", "expected a model folder"]),
    "train model.name without weights": (["train", "--config", CONFIG, "--workdir", "{NEW}",
                                          "--config.data.path={DATA}", "--config.model.name={NO_WEIGHTS}"],
                                         ["model.name: {NO_WEIGHTS}: no model.safetensors"]),
    "train-ce --config missing": (["train-ce", "--config", "{MISSING}.py", "--workdir", "{NEW}"],
                                  ["{MISSING}.py: no such file"]),
    "train-ce --workdir a file": (["train-ce", "--config", CONFIG, "--workdir", "{FILE}"], ["{FILE}: not a folder"]),
    "train-ce ce.model missing": (["train-ce", "--config", CONFIG, "--workdir", "{NEW}", "--config.data.path={DATA}",
                                   "--config.ce.model={MISSING}"], ["ce.model: {MISSING}: no such folder"]),
    "eval --workdir missing": (["eval", "--workdir", "{MISSING}", "--split", "test", "--output", "{OUT}.json"],
                               ["{MISSING}: no such folder", "expected a training workdir"]),
    "eval --workdir not a run": (["eval", "--workdir", "{NOT_A_RUN}"], ["{NOT_A_RUN}: no config.json"]),
    "eval --workdir a file": (["eval", "--workdir", "{FILE}"], ["{FILE}: not a folder"]),
    "eval --workdir untrained": (["eval", "--workdir", "{UNTRAINED}"], ["{UNTRAINED}/checkpoints: no checkpoint"]),
    "eval --model missing": (["eval", "--model", "{MISSING}", "--data", "abt_buy", "--split", "test", "--output",
                              "{OUT}.json"], ["--model: {MISSING}: no such folder", "expected a model folder"]),
    "eval --model without weights": (["eval", "--model", "{NO_WEIGHTS}", "--data", "{DATA}"],
                                     ["--model: {NO_WEIGHTS}: no model.safetensors"]),
    "eval --data missing": (["eval", "--model", "all-MiniLM-L6-v2", "--data", "{MISSING}"],
                            ["{MISSING}: no such folder", "expected a BEIR folder"]),
    "eval --output a folder": (["eval", "--model", "all-MiniLM-L6-v2", "--data", "{DATA}", "--output",
                                "{NOT_A_RUN}"], ["{NOT_A_RUN}: is a folder", "--output"]),
    "eval --output under a file": (["eval", "--model", "all-MiniLM-L6-v2", "--data", "{DATA}", "--output",
                                    "{FILE}/o.json"], ["{FILE}: not a folder", "--output"]),
    "eval --rerank missing": (["eval", "--model", "all-MiniLM-L6-v2", "--data", "{DATA}", "--rerank", "{MISSING}"],
                              ["--rerank: {MISSING}: no such folder"]),
    "export --workdir missing": (["export", "--workdir", "{MISSING}", "--out", "{OUT}"], ["{MISSING}: no such folder"]),
    "export --workdir not a run": (["export", "--workdir", "{NOT_A_RUN}", "--out", "{OUT}"],
                                   ["{NOT_A_RUN}: no config.json", "expected a training workdir"]),
    "export --workdir untrained": (["export", "--workdir", "{UNTRAINED}", "--out", "{OUT}"],
                                   ["{UNTRAINED}/checkpoints: no checkpoint"]),
    "export --cross-encoder untrained": (["export", "--workdir", "{UNTRAINED}", "--out", "{OUT}", "--cross-encoder"],
                                         ["{UNTRAINED}/ce/checkpoints: no checkpoint"]),
    "export --out a file": (["export", "--workdir", "{UNTRAINED}", "--out", "{FILE}"],
                            ["{FILE}: not a folder", "--out"]),
    "mine --output in a missing folder": (["mine", "--model", "all-MiniLM-L6-v2", "--data", "{DATA}", "--output",
                                           "{MISSING}/n.jsonl"], ["{MISSING}: no such folder", "--output"]),
    "mine --output a folder": (["mine", "--model", "all-MiniLM-L6-v2", "--data", "{DATA}", "--output", "{NOT_A_RUN}"],
                               ["{NOT_A_RUN}: is a folder"]),
    "mine --model missing": (["mine", "--model", "{MISSING}", "--data", "{DATA}", "--output", "{OUT}.jsonl"],
                             ["--model: {MISSING}: no such folder"]),
    "mine --model without weights": (["mine", "--model", "{NO_WEIGHTS}", "--data", "{DATA}", "--output",
                                      "{OUT}.parquet"], ["--model: {NO_WEIGHTS}: no model.safetensors"]),
    "mine unknown split": (["mine", "--model", "all-MiniLM-L6-v2", "--data", "{DATA}", "--split", "nosuch",
                            "--output", "{OUT}.jsonl"], ["qrels/nosuch.tsv: no split 'nosuch'"]),
    "mine --data missing": (["mine", "--model", "all-MiniLM-L6-v2", "--data", "{MISSING}", "--output",
                             "{OUT}.jsonl"], ["{MISSING}: no such folder"]),
    "mine --workdir not a run": (["mine", "--workdir", "{NOT_A_RUN}", "--output", "{OUT}.jsonl"],
                                 ["{NOT_A_RUN}: no config.json"]),
    "mine --cross-encoder missing": (["mine", "--model", "all-MiniLM-L6-v2", "--data", "{DATA}", "--cross-encoder",
                                      "{MISSING}", "--output", "{OUT}.jsonl"],
                                     ["--cross-encoder: {MISSING}: no such folder"]),
}


def _written(places: dict[str, str]) -> set[Path]:
    """Every path under the cases' folder but the lock files a workdir check leaves (an empty .lock)."""
    return {p for p in Path(places["OUT"]).parent.rglob("*") if not p.name.startswith(".lock")}


def _fill(text: str, places: dict[str, str]) -> str:
    for name, path in places.items():
        text = text.replace("{" + name + "}", path)
    return text


@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_every_subcommand_bad_path_is_one_line_with_status_2(case, places, capsys):
    args, expected = BAD_PATHS[case]
    before = _written(places)
    code = main([_fill(a, places) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"hnm {args[0]}: "), err
    for text in expected:
        assert _fill(text, places) in lines[0], lines[0]
    assert _written(places) == before  # nothing written: no output, no workdir
    assert not Path(places["NEW"]).exists()


def test_bad_path_in_a_real_process_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "hnm_jax.main", "eval", "--workdir", str(tmp_path / "nope"),
                           "--split", "test", "--output", str(tmp_path / "o.json")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"hnm eval: {tmp_path / 'nope'}: no such folder (expected a training workdir, "
                                   "with config.json)")
    assert not any(tmp_path.iterdir())
