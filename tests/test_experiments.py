"""experiments/ and benchmarks/ as tools: packages of modules run with `python -m`, no sys.path edits, no module
loaded from a file path, and every command the docs show names a module that exists."""

import ast
import importlib
import re
from pathlib import Path

import pytest

from experiments import lengths

REPO = Path(__file__).resolve().parents[1]
# research drivers; PROTOCOL.md beside them
DRIVERS = {"suite", "report", "demo", "lengths", "peers_mine_check", "st_anchor", "headline", "fusion"}
PROBES = {"bench_train", "bench_vs_peers", "bench_gpu", "bench_index", "bench_freeze", "hlo_report", "profile_step"}
# `python -m experiments.x` / `python -m benchmarks.x`, or `python experiments/x.py` (the old form)
COMMAND = re.compile(r"python3?\s+(?:-m\s+(experiments|benchmarks)\.(\w+)|(experiments|benchmarks)/(\w+)\.py)")


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


def documented_files() -> list[Path]:
    return [REPO / "README.md", REPO / "Makefile", *sorted((REPO / "docs").glob("*.md")),
            *sorted((REPO / "configs").rglob("*.py")), *sorted((REPO / "experiments").glob("*.py")),
            *sorted((REPO / "experiments").glob("*.md")), *sorted((REPO / "benchmarks").glob("*.py"))]


def removed_in_header(text: str) -> set[str]:
    """The scripts a record (docs/HISTORY.md, ...) declares gone, on its line `Removed since (last at <commit>): ...`:
    its commands that run them are history, runnable from that commit."""
    removed = set()
    for names in re.findall(r"^Removed since \(last at [0-9a-f]{7,40}\): (.*)$", text, re.MULTILINE):
        removed |= set(re.findall(r"((?:experiments|benchmarks)/\w+)\.py", names))
    return removed


def test_every_command_in_the_docs_names_a_module_that_exists():
    missing = []
    for path in documented_files():
        text = path.read_text()
        removed = removed_in_header(text)
        for number, line in enumerate(text.splitlines(), 1):
            for match in COMMAND.finditer(line):
                folder, name = match.group(1) or match.group(3), match.group(2) or match.group(4)
                if not (REPO / folder / f"{name}.py").is_file() and f"{folder}/{name}" not in removed:
                    missing.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert missing == []
    assert removed_in_header("Removed since (last at 8c7cd93): experiments/ablate.py, experiments/x.py.") == {
        "experiments/ablate", "experiments/x"}


def test_readme_is_at_most_150_lines_and_links_the_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    linked = set(re.findall(r"\(?(docs/[\w.]+\.md)", readme))
    assert linked >= {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert all((REPO / link).is_file() for link in linked)


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


def test_fusion_pick_is_the_highest_accuracy_ties_to_the_earlier_fusion():
    from experiments import fusion

    accuracy = dict.fromkeys(fusion.FUSIONS, 0.5) | {"weighted_0.5": 0.75, "rrf": 0.75}
    record = {"workdir": "runs/a", "fusions": {name: {"accuracy@1": value} for name, value in accuracy.items()}}
    assert fusion.picked(record) == ("weighted_0.5", 0.75)
    record["fusions"]["rrf"]["accuracy@1"] = 0.8
    assert fusion.picked(record) == ("rrf", 0.8)
    assert "| picked on this split | rrf: 0.8000 | 0.8000 |" in fusion.table([record])

