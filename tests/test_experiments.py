"""experiments/ and benchmarks/ as tools: packages of modules run with `python -m`, no sys.path edits, no module
loaded from a file path."""

import ast
import importlib
from pathlib import Path

import pytest

from experiments import lengths

REPO = Path(__file__).resolve().parents[1]
DRIVERS = {"suite", "report", "demo", "lengths"}  # research drivers; PROTOCOL.md beside them
PROBES = {"bench_train", "bench_vs_peers", "bench_gpu", "bench_index", "bench_freeze", "hlo_report", "profile_step"}


def modules(folder: str) -> set[str]:
    return {p.stem for p in (REPO / folder).glob("*.py")} - {"__init__"}


def test_experiments_hold_the_research_drivers_and_benchmarks_the_probes():
    assert modules("experiments") == DRIVERS
    assert {p.name for p in (REPO / "experiments").iterdir() if p.suffix != ".py" and p.name != "__pycache__"} == {
        "PROTOCOL.md"}
    assert modules("benchmarks") == PROBES


def path_hacks(path: Path) -> list[str]:
    """`sys.path` used at all, or a module loaded from a file path (importlib.util.spec_from_file_location)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: sys.path")
        if isinstance(node, ast.Attribute) and node.attr == "spec_from_file_location":
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: spec_from_file_location")
    return found


def test_no_sys_path_edits_and_no_module_loaded_by_path():
    files = [p for folder in ("experiments", "benchmarks", "tests") for p in sorted((REPO / folder).glob("*.py"))]
    files += sorted((REPO / "hnm_jax").rglob("*.py"))
    found = [hack for path in files for hack in path_hacks(path)]
    # config files are loaded by path on purpose (`--config configs/x.py`): the one exception
    assert [hack for hack in found if not hack.startswith("hnm_jax/config.py:")] == []
    assert not [hack for hack in found if "sys.path" in hack]


MODULES = sorted(f"experiments.{m}" for m in DRIVERS) + sorted(f"benchmarks.{m}" for m in PROBES)


@pytest.mark.parametrize("name", MODULES)
def test_every_driver_and_probe_imports_as_a_module_with_a_main(name):
    module = importlib.import_module(name)
    assert callable(module.main)
    assert 'if __name__ == "__main__":' in Path(module.__file__).read_text()


def test_lengths_census_writes_the_synthetic_folder_once(tmp_path, monkeypatch):
    monkeypatch.setattr(lengths, "SYNTHETIC_SIZE", "tiny")
    root = lengths.synthetic_root(tmp_path)
    assert root == tmp_path.resolve() / "datasets" / "synthetic_tiny"
    corpus = root / "corpus.jsonl"
    stamp = corpus.stat().st_mtime_ns
    assert sum(1 for _ in corpus.open()) > 0 and (root / "qrels" / "test.tsv").is_file()
    assert lengths.synthetic_root(tmp_path) == root and corpus.stat().st_mtime_ns == stamp  # written once


def test_lengths_markdown_row_by_hand():
    side = {"count": 10, "p50": 12.0, "p95": 30.4, "max": 41, "truncated_before": 0.25, "width_after": 32,
            "truncated_after": 0.05}
    text = lengths.markdown({"datasets": {"d": {"queries": side, "documents": side}}})
    assert "| d | queries | 10 | 12 | 30 | 41 | 25.0% | 32 | 5.0% |" in text.splitlines()
    assert len(text.splitlines()) == 4
