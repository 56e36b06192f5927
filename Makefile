# Two commands matter: `make demo` and `make test`. Both create the virtual environment first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test unit integration bench clean

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

setup: $(INSTALLED)

demo: setup
	$(BIN)/python -m integration_tests.demo

# Docker-based tests of the CDK's standard suite (marker image_tests) need a Docker engine and the
# internet; neither exists where this runs, so they are deselected here.
test: setup
	$(BIN)/python -m pytest -m "not image_tests" $(PYTEST_ARGS) unit_tests integration_tests

unit: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS) unit_tests

integration: setup
	$(BIN)/python -m pytest -m "not image_tests" $(PYTEST_ARGS) integration_tests

bench: setup
	$(BIN)/python bench/run_benchmark.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
