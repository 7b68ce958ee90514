# Two commands for a fresh machine (see README.md):
#   make demo   set everything up, then run the main job offline (Claude CLI + demo backend)
#   make test   set everything up, then run the whole test suite
# `make lint` (which `make test` runs first) type-checks with mypy --strict and lints with ruff
# (the package, the tests, the benchmarks and the example notebooks' cells).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Login shells of Claude's Bash tool wait at most 2 s for a pyenv rehash lock a killed
# shell left behind (see tests/conftest.py), in the notebooks too.
PYENV_REHASH_TIMEOUT ?= 2
export PYENV_REHASH_TIMEOUT

.PHONY: setup demo lint test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# An older claude CLI (2.1.197) for the capture tests: it exits while output is still
# queued for a full pipe, the loss file capture prevents (tests/test_claude_capture.py).
CLI_197 := tests/cli-2.1.197
$(CLI_197)/node_modules/.installed: $(CLI_197)/package.json $(CLI_197)/package-lock.json
	npm ci --prefix $(CLI_197) --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed $(CLI_197)/node_modules/.installed

demo: setup
	$(PY) -m cc_executor_nb.demo.selftest --all --demo

NBVAL_ARGS := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

lint: setup
	$(PY) -m mypy
	$(PY) -m ruff check cc_executor_nb tests benchmarks notebooks

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) -m pytest $(NBVAL_ARGS) notebooks/ $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules $(CLI_197)/node_modules .pytest_cache
