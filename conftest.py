"""Repository-wide pytest setup: the markers of the tiers, the CDK's standard-test plugin and when
its tests cannot run.

Tiers (Makefile): `make fast` runs every test not marked `process`, `slow` or `image_tests`; `make
test` runs all but `image_tests` (which need Docker and the internet).

pytest accepts `pytest_plugins` only in the rootdir's conftest (this file, next to setup.py), so
the plugin of the CDK's standard connector tests (integration_tests/test_standard_suite.py) is
loaded here rather than next to the test class.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from destination_planhat.testing import cli

pytest_plugins = ["airbyte_cdk.test.standard_tests.pytest_hooks"]

CONNECTOR_ROOT = Path(__file__).resolve().parent
SECRETS_CONFIG = CONNECTOR_ROOT / "secrets" / "config.json"
DOCKER_INFO_TIMEOUT_SECONDS = 10


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "image_tests: the CDK's Docker-based standard tests (need a Docker engine and the internet)",
    )
    config.addinivalue_line(
        "markers",
        "requires_creds: standard tests of secrets/config.json (real Planhat credentials)",
    )
    config.addinivalue_line(
        "markers",
        "process: runs the connector as a process, for what only a process shows (exit codes, pipes, stderr, "
        "parse worker processes, the console script); left out of `make fast`",
    )
    config.addinivalue_line(
        "markers",
        "slow: takes tens of seconds (a fresh virtualenv install, a benchmark, the soak), or seconds spent waiting "
        "on purpose (a pause, a latency); left out of `make fast`",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip, with the reason, tests whose prerequisites are missing instead of failing them; tell
    testing/cli.py whether this test may start the connector as a process."""
    if item.get_closest_marker("requires_creds") and not SECRETS_CONFIG.is_file():
        pytest.skip(
            f"needs real Planhat credentials in {SECRETS_CONFIG.relative_to(CONNECTOR_ROOT)} "
            '(not in the repository; see the README, "The CDK\'s standard tests")'
        )
    if item.get_closest_marker("image_tests") and not docker_engine_running():
        pytest.skip("no Docker engine answers here (`docker info` failed); the image tests need one")
    cli.process_runs_allowed = item.get_closest_marker("process") is not None


@lru_cache(maxsize=1)
def docker_engine_running() -> bool:
    """The CDK skips its image tests only when the docker CLI is missing; a CLI without an engine
    would make them fail instead, so ask the engine once per session."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        completed = subprocess.run(
            [docker, "info"], capture_output=True, timeout=DOCKER_INFO_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0
