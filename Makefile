# Every target creates/uses .venv by itself.  llama-cpp-python compiles from source on first install
# (~10 min on 2 cores; pip caches the wheel afterwards).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-core
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: run test test-fast bench lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[embedded,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python examples/score_demo.py

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/run.py --out bench/results.json

lint: install
	$(BIN)/ruff check guardrail tests examples bench
	$(BIN)/ruff format --check guardrail tests examples bench || true

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
