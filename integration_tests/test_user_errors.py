"""What a user reads when the config or a file is wrong: one line naming the file or field and the fix,
as a config_error, with no Python traceback unless LOG_LEVEL=debug asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from destination_planhat.testing.cli import MAIN, CliRun, run_cli
from destination_planhat.testing.harness import REPO_ROOT, catalog, sandbox_config

NO_SUCH_FILE = "/nonexistent/planhat-config.json"


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> CliRun:
    """main.py with arguments as given (run_cli writes the files itself; these tests name broken ones)."""
    completed = subprocess.run(
        [sys.executable, str(MAIN), *args],
        capture_output=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )
    stdout = completed.stdout.decode()
    messages = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return CliRun(completed.returncode, stdout, completed.stderr.decode(), messages)


def assert_one_line_config_error(run: CliRun, *named: str) -> None:
    assert run.returncode == 1
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    assert "\n" not in error["message"] and "stack_trace" not in error
    for text in named:
        assert text in error["message"]
    assert [line for line in run.logs if "\n" in line] == []  # no traceback in any log line
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.process  # main.py as a process: the files are named on its command line
@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "there is no such file"),
        ("{bad json", "not valid JSON"),
        ("[]", "not an object"),
    ],
)
def test_an_unreadable_config_file_is_named_in_one_line(tmp_path, content, problem):
    path = NO_SUCH_FILE
    if content is not None:
        (tmp_path / "config.json").write_text(content)
        path = str(tmp_path / "config.json")
    (tmp_path / "catalog.json").write_text(json.dumps(catalog()))

    written = cli(tmp_path, "write", "--config", path, "--catalog", str(tmp_path / "catalog.json"))
    checked = cli(tmp_path, "check", "--config", path)

    assert_one_line_config_error(written, path, problem, "--config")
    status = checked.connection_status
    assert checked.returncode == 0 and status is not None and status["status"] == "FAILED"
    assert path in status["message"] and problem in status["message"]


@pytest.mark.process  # main.py as a process: the files are named on its command line
def test_a_missing_catalog_file_is_named_in_one_line(sandbox, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(sandbox_config(sandbox.url)))

    run = cli(tmp_path, "write", "--config", str(tmp_path / "config.json"), "--catalog", NO_SUCH_FILE)

    assert_one_line_config_error(run, NO_SUCH_FILE, "--catalog")
    assert sandbox.requests == []


def test_a_config_error_has_its_traceback_only_at_debug(sandbox, tmp_path):
    config = sandbox_config(sandbox.url, batch_size=0)

    run = run_cli("write", tmp_path, config=config, catalog=catalog())
    debug = run_cli("write", tmp_path, config=config, catalog=catalog(), extra_env={"LOG_LEVEL": "debug"})

    assert_one_line_config_error(run, "`batch_size`")
    tracebacks = [m["log"] for m in debug.of_type("LOG") if "Traceback" in m["log"]["message"]]
    assert [log["level"] for log in tracebacks] == ["DEBUG"]
    assert [e["message"] for e in debug.errors] == [e["message"] for e in run.errors]


@pytest.mark.process  # main.py as a process: the files are named on its command line
def test_help_lists_every_command(tmp_path):
    run = cli(tmp_path, "--help")
    assert run.returncode == 0
    usage = run.stdout.splitlines()[0]
    for command in ("spec", "check", "discover", "write"):
        assert command in usage
