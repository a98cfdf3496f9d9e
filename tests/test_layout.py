"""The test suite's own layout: shared helpers live in conftest.py, never in another test module."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another():
    test_modules = {path.stem for path in TESTS.glob("test_*.py")}
    offenders = {path.name: sorted(imported_modules(path) & test_modules) for path in sorted(TESTS.glob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}


# The package's layers, lowest first (docs/DESIGN.md): an import goes down or stays in its layer, never up, and no
# import cycle. A module's layer is its folder's, except the modules named in a layer. config.py, the composition
# root of the specs (each owned by the module that uses it), is in the layer of the training it configures: above
# every module whose spec it assembles.
PACKAGE = TESTS.parent / "hnm_jax"
LAYERS = (
    ("specs and pure math", ("hnm_jax.errors", "hnm_jax.losses", "hnm_jax.metrics", "hnm_jax.stats",
                             "hnm_jax.mining.schedules", "hnm_jax.sharding", "hnm_jax.atomic_write",
                             "hnm_jax.compile_stats", "hnm_jax.metric_logging", "hnm_jax.workdir",
                             "hnm_jax.distributed")),
    ("data", ("hnm_jax.data",)),
    ("models", ("hnm_jax.models",)),
    ("retrieval / mining", ("hnm_jax.mining",)),
    ("training and evaluation", ("hnm_jax.config", "hnm_jax.training", "hnm_jax.evaluate", "hnm_jax.mine")),
    ("CLI", ("hnm_jax.main", "hnm_jax")),  # `hnm_jax` itself: the public names, re-exported lazily
)


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at any depth of its code (lazy imports too)."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}:{node.lineno}: a relative import"
                if node.module and node.module.split(".")[0] == "hnm_jax":
                    found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                              for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "hnm_jax"}
        graph[name] = found - {name}
    return graph


def layer_of(module: str) -> int:
    """The index in LAYERS of `module`: the first layer naming it, else the layer of its nearest named folder."""
    for index, (_, names) in enumerate(LAYERS):
        if module in names:
            return index
    parent = module.rpartition(".")[0]
    assert parent, f"{module}: in no layer of tests/test_layout.py's LAYERS"
    return layer_of(parent)


def test_every_import_goes_down_or_stays_in_its_layer():
    upward = {(a, b): f"{LAYERS[layer_of(a)][0]} imports {LAYERS[layer_of(b)][0]}"
              for a, imported in package_imports().items() for b in imported if layer_of(b) > layer_of(a)}
    assert upward == {}


def test_no_import_cycle():
    graph = package_imports()
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                cycles.append(stack[stack.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_layers_are_read_from_the_imports():
    graph = package_imports()
    assert "hnm_jax.mining.scoring" in graph["hnm_jax.training.miner"]  # `from hnm_jax.mining.scoring import ...`
    assert "hnm_jax.training.step" in graph["hnm_jax.training.checkpointing"]
    assert "hnm_jax.models.pretrained" in graph["hnm_jax"]  # lazy, inside a function
    assert [layer_of(m) for m in ("hnm_jax.errors", "hnm_jax.data.beir", "hnm_jax.models", "hnm_jax.mining.pipeline",
                                  "hnm_jax.mining.schedules", "hnm_jax.config", "hnm_jax.training.runs",
                                  "hnm_jax.mine", "hnm_jax.main")] == [0, 1, 2, 3, 0, 4, 4, 4, 5]
