# make demo: set up .venv with every runtime extra and run the demo API behind every guard.
# make test: set up .venv with the test extras, then ruff, mypy and pytest.
# make dist: build the sdist and the wheel into dist/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# pip prints what it collects and installs (no long silence); CI gets the quiet form.
PIP_QUIET := $(if $(filter true,$(CI)),-q,--progress-bar off)

.PHONY: demo test lint typecheck pytest bench services browser bench-tools dist clean

$(BIN)/python:
	@echo "make: creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "make: installing bastion with every runtime extra (redis, postgres, gateway, otel)"
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[all]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "make: installing bastion with its test extras"
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[all,test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-test
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	@echo
	@echo "bastion is installed in $(VENV). In another terminal, run it with"
	@echo "    $(BIN)/bastion --help        (or: source $(BIN)/activate, then bastion --help)"
	@echo
	$(BIN)/bastion demo

services:
	@./scripts/services.sh

browser:
	@./scripts/browser.sh

bench-tools:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } || echo "bench: wrk is missing; bench/gateway.py will skip its load runs"
	@command -v nginx >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get install -y -q nginx >/dev/null; } || echo "bench: nginx is missing; bench/gateway.py will compare with the bare aiohttp proxy instead"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy src

pytest: $(VENV)/.installed-test services browser
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(VENV)/.installed-bench services bench-tools
	$(BIN)/python bench/run.py

dist: | $(BIN)/python
	$(BIN)/python -m pip install -q 'build>=1.2'
	rm -rf dist
	$(BIN)/python -m build --outdir dist
	@ls -1 dist

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist
