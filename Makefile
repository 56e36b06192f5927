# The commands that matter: `make fast` after each change, `make test` before a submission, `make demo`.
# Each creates the virtual environment first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo lint fast test unit integration bench bench-objects clean e2e-pyairbyte sandbox

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

setup: $(INSTALLED)

demo: setup
	$(BIN)/python -m destination_planhat.testing.demo

# A local Planhat (analytics host and main API) on 127.0.0.1:8080 until Ctrl-C, which prints what it
# received: point check, discover and write at it with integration_tests/sandbox_config.json (README).
sandbox: setup
	$(BIN)/python -m destination_planhat.testing.sandbox --port 8080

# ruff (ruff.toml): the linter, and the formatter's check (`.venv/bin/ruff format .` formats).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The tiers (markers in conftest.py). `make fast`: lint, the unit tests and the integration tests that
# run the connector in process; about a minute here (58 s quiet). It leaves out the tests marked `process`
# (the connector as a process: exit codes, pipes, stderr, parse worker processes, the console script,
# packaging) and `slow` (tens of seconds each, or seconds spent waiting on purpose).
FAST_TESTS := not process and not slow and not image_tests
fast: lint
	$(BIN)/python -m pytest -m "$(FAST_TESTS)" $(PYTEST_ARGS) unit_tests integration_tests

# `make test`: lint and every test (.ci/run runs it). Docker-based tests of the CDK's standard suite
# (marker image_tests) need a Docker engine and the internet; neither exists where this runs, so they
# are deselected here.
test: lint
	$(BIN)/python -m pytest -m "not image_tests" $(PYTEST_ARGS) unit_tests integration_tests

unit: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS) unit_tests

integration: setup
	$(BIN)/python -m pytest -m "not image_tests" $(PYTEST_ARGS) integration_tests

# PyAirbyte end to end: source-faker -> this connector -> the sandbox, driven by PyPI `airbyte`.
# PyAirbyte and source-faker each get a virtual environment of their own (heavy dependencies; faker
# needs airbyte-cdk 6, the connector and PyAirbyte 7). Run by .ci/run after `make test`.
PYAIRBYTE_VENV ?= .venv-pyairbyte
FAKER_VENV ?= .venv-source-faker

$(PYAIRBYTE_VENV)/.installed: e2e_pyairbyte/requirements-pyairbyte.txt
	$(PYTHON) -m venv $(PYAIRBYTE_VENV)
	$(PYAIRBYTE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PYAIRBYTE_VENV)/bin/python -m pip install --quiet -r e2e_pyairbyte/requirements-pyairbyte.txt
	touch $@

$(FAKER_VENV)/.installed: e2e_pyairbyte/requirements-source-faker.txt
	$(PYTHON) -m venv $(FAKER_VENV)
	$(FAKER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FAKER_VENV)/bin/python -m pip install --quiet -r e2e_pyairbyte/requirements-source-faker.txt
	touch $@

e2e-pyairbyte: setup $(PYAIRBYTE_VENV)/.installed $(FAKER_VENV)/.installed
	AIRBYTE_OFFLINE_MODE=1 DO_NOT_TRACK=1 $(PYAIRBYTE_VENV)/bin/python -m pytest -p no:cacheprovider \
		-W ignore::FutureWarning $(PYTEST_ARGS) e2e_pyairbyte

bench: setup
	$(BIN)/python bench/run_benchmark.py

# Objects under Planhat's calls-per-minute limit (120 a minute, 300 ms per request): about 4 minutes.
bench-objects: setup
	$(BIN)/python bench/objects_benchmark.py
	$(BIN)/python bench/operations_benchmark.py

clean:
	rm -rf $(VENV) $(PYAIRBYTE_VENV) $(FAKER_VENV) build *.egg-info .pytest_cache
