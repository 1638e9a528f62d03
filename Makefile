# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The second test environment: openai 2.x on legacy httpx 0.28 (litellm's stack), which cannot
# share the main one (openai 3 on httpx2). Its packages: tests/envs/openai2.txt; its tests:
# tests/openai2/.
VENV_OPENAI2 := .venv-openai2
BIN_OPENAI2 := $(VENV_OPENAI2)/bin

.PHONY: demo test test-main test-openai2 lint bench clean

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

demo: $(VENV)/.installed
	$(BIN)/python examples/quickstart.py

# Both environments: the second one's tests first (they are quick), then the main suite.
test: lint test-openai2 test-main

test-main: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

test-openai2: $(VENV_OPENAI2)/.installed
	$(BIN_OPENAI2)/python -m pytest -q tests/openai2

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check journal replay tests examples benchmarks
	$(BIN)/ruff format --check journal replay tests examples benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) $(VENV_OPENAI2) .journal .pytest_cache .hypothesis
