# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The second test environment: openai 2.x on legacy httpx 0.28 (litellm's stack), which cannot
# share the main one (openai 3 on httpx2). Its packages: tests/envs/openai2.txt; its tests:
# tests/openai2/.
VENV_OPENAI2 := .venv-openai2
BIN_OPENAI2 := $(VENV_OPENAI2)/bin
# The third: crewai on the same openai 2.x stack, kept apart because it brings httpx2 (and
# about 1 GB of vector-store packages) with it. Its packages: tests/envs/crewai.txt; its tests:
# tests/crewai/.
VENV_CREWAI := .venv-crewai
BIN_CREWAI := $(VENV_CREWAI)/bin
# The fourth: Playbooks, which pins pytest-asyncio (and so pytest<9) as a runtime dependency.
# Its packages: tests/envs/playbooks.txt; its tests: tests/playbooks/.
VENV_PLAYBOOKS := .venv-playbooks
BIN_PLAYBOOKS := $(VENV_PLAYBOOKS)/bin
# The peers' benchmark (benchmarks/peers.py): DBOS and LangGraph at pinned versions, kept out of
# every test environment. Its packages: benchmarks/requirements-peers.txt.
VENV_PEERS := .venv-peers
BIN_PEERS := $(VENV_PEERS)/bin

.PHONY: demo test test-main test-openai2 test-crewai test-playbooks bytecode lint bench bench-peers mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV_OPENAI2)/.installed: pyproject.toml tests/envs/openai2.txt
	rm -rf $(VENV_OPENAI2)
	$(PYTHON) -m venv $(VENV_OPENAI2)
	$(BIN_OPENAI2)/python -m pip install -q -e . -r tests/envs/openai2.txt
	touch $@

$(VENV_CREWAI)/.installed: pyproject.toml tests/envs/crewai.txt
	rm -rf $(VENV_CREWAI)
	$(PYTHON) -m venv $(VENV_CREWAI)
	$(BIN_CREWAI)/python -m pip install -q -e . -r tests/envs/crewai.txt
	touch $@

$(VENV_PLAYBOOKS)/.installed: pyproject.toml tests/envs/playbooks.txt
	rm -rf $(VENV_PLAYBOOKS)
	$(PYTHON) -m venv $(VENV_PLAYBOOKS)
	$(BIN_PLAYBOOKS)/python -m pip install -q -e '.[playbooks]' -r tests/envs/playbooks.txt
	touch $@

$(VENV_PEERS)/.installed: pyproject.toml benchmarks/requirements-peers.txt
	rm -rf $(VENV_PEERS)
	$(PYTHON) -m venv $(VENV_PEERS)
	$(BIN_PEERS)/python -m pip install -q -e . -r benchmarks/requirements-peers.txt
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/quickstart.py

# Every environment: the second, third and fourth ones' tests first (they are quick), then the
# main suite.
test: lint test-openai2 test-crewai test-playbooks test-main

# The project's own modules compiled once before the tests. An editable install leaves them
# uncompiled, and where PYTHONDONTWRITEBYTECODE is set (as some CI images do) every process
# the suite starts (about 280: CLI calls, workers, processes killed with SIGKILL) compiled
# them again: about 0.1 s of CPU each. An installed wheel comes compiled.
bytecode:
	$(PYTHON) -m compileall -q journal replay tests examples

# Three workers on two cores: most of the suite's time is spent waiting on the subprocesses,
# servers and browsers it drives (pytest-xdist). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
test-main: $(VENV)/.installed-dev bytecode
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-openai2: $(VENV_OPENAI2)/.installed bytecode
	$(BIN_OPENAI2)/python -m pytest -q tests/openai2

test-crewai: $(VENV_CREWAI)/.installed bytecode
	$(BIN_CREWAI)/python -m pytest -q tests/crewai

test-playbooks: $(VENV_PLAYBOOKS)/.installed bytecode
	$(BIN_PLAYBOOKS)/python -m pytest -q tests/playbooks

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check journal replay tests examples benchmarks
	$(BIN)/ruff format --check journal replay tests examples benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/step_values.py

# journal-replay, DBOS and LangGraph on the same workloads (slow, about 10 minutes; not part of
# `make test`). PEERS="--quick" or PEERS="--postgres postgresql://..." passes options.
bench-peers: $(VENV_PEERS)/.installed
	$(BIN_PEERS)/python benchmarks/peers.py $(PEERS)

# Mutation testing of the core files (slow; a developer tool, not part of `make test`).
# MUTATE="journal/_chain.py --max 0" picks files and options.
mutate: $(VENV)/.installed-dev
	$(BIN)/python -m tests.mutate $(MUTATE)

clean:
	rm -rf $(VENV) $(VENV_OPENAI2) $(VENV_CREWAI) $(VENV_PLAYBOOKS) $(VENV_PEERS) .journal .pytest_cache .hypothesis
