"""The test runner of the CLI itself (destination_planhat/testing/cli.py): a run in process says what the
process says, and leaves the test's process as it found it.

The in-process mode stands in for `python main.py` in most CLI tests, so the tests marked `process`
here compare the two on the same commands: what is printed, and the exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from airbyte_cdk.utils import airbyte_secrets_utils

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import encode_lines, metric, mixed_catalog, record, stream_state
from destination_planhat.testing.sandbox import PlanhatSandbox
from destination_planhat.testing.sync_checks import connector_config


def both(command: str, tmp_path: Path, **kwargs: Any) -> tuple[Any, Any]:
    """The same command in process and as a process (each with files of its own)."""
    (tmp_path / "here").mkdir()
    (tmp_path / "process").mkdir()
    return (
        run_cli(command, tmp_path / "here", **kwargs),
        run_cli(command, tmp_path / "process", process=True, **kwargs),
    )


@pytest.mark.process
def test_spec_prints_the_same_lines_in_process_and_as_a_process(tmp_path):
    here, process = both("spec", tmp_path)
    assert (here.returncode, process.returncode) == (0, 0)
    assert here.stdout == process.stdout


@pytest.mark.process
def test_a_failing_check_says_the_same_in_process_and_as_a_process(planhat, tmp_path):
    config = connector_config(planhat, api_token="wrong-token-0123456789")
    here, process = both("check", tmp_path, config=config)
    assert (here.returncode, process.returncode) == (0, 0)
    assert here.connection_status == process.connection_status
    assert here.connection_status is not None and here.connection_status["status"] == "FAILED"


@pytest.mark.process
def test_an_uncaught_exception_is_exit_code_1_and_one_trace_in_process_and_as_a_process(planhat, tmp_path):
    """A catalog that is not a catalog: the CDK's excepthook logs it and prints a TRACE; the interpreter
    then exits with 1, which the in-process run reports too."""
    stdin = encode_lines([record("metrics_stream", metric(1))])
    here, process = both(
        "write", tmp_path, config=connector_config(planhat), catalog={"streams": [{"stream": 5}]}, stdin=stdin
    )
    assert (here.returncode, process.returncode) == (1, 1)
    assert [e["failure_type"] for e in here.errors] == [e["failure_type"] for e in process.errors] == ["system_error"]
    assert here.errors[0]["message"] == process.errors[0]["message"]


@pytest.mark.process
def test_a_usage_error_is_exit_code_2_in_process_and_as_a_process(planhat, tmp_path):
    """argparse's refusal (`write` without `--catalog`): usage on stderr, exit code 2."""
    here, process = both("write", tmp_path, config=connector_config(planhat))
    assert (here.returncode, process.returncode) == (2, 2)
    assert "--catalog" in here.stderr and "--catalog" in process.stderr
    assert here.stdout == process.stdout == ""


@pytest.mark.process
def test_a_sync_prints_the_same_states_in_process_and_as_a_process(tmp_path):
    """Two sandboxes, the same input: the same states with the same counts, the same summary rows."""
    messages = [record("metrics_stream", metric(i)) for i in range(30)] + [stream_state("metrics_stream", 30)]
    runs = []
    for mode, process in (("here", False), ("process", True)):
        with PlanhatSandbox(tenant="t-0001", api_token="token-0001") as sandbox:
            config = {"tenant_uuid": "t-0001", "api_token": "token-0001", "analytics_base_url": sandbox.url}
            (tmp_path / mode).mkdir()
            run = run_cli(
                "write",
                tmp_path / mode,
                config=config,
                catalog=mixed_catalog(),
                stdin=encode_lines(messages),
                process=process,
                watch=sandbox,
            )
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            assert len(sandbox.received("metrics")) == 30
            runs.append(run)
    here, process = runs
    assert here.states == process.states
    assert here.log_lines("summary: ") == process.log_lines("summary: ")
    assert here.state_checkpoints is not None and process.state_checkpoints is not None
    assert len(here.state_checkpoints) == len(process.state_checkpoints) == 1


def test_a_run_in_process_leaves_the_test_process_as_it_found_it(planhat, tmp_path):
    streams, hook = (sys.stdin, sys.stdout, sys.stderr), sys.excepthook
    root = logging.getLogger()
    handlers, levels = root.handlers[:], (root.level, logging.getLogger("airbyte").level)
    run = run_cli(
        "write",
        tmp_path,
        config=connector_config(planhat),
        catalog=mixed_catalog(),
        stdin=encode_lines([record("metrics_stream", metric(1)), stream_state("metrics_stream", 1)]),
        extra_env={"DESTINATION_PLANHAT_TEST_ONLY": "set for the run"},
    )
    assert run.returncode == 0 and len(run.states) == 1 and run.logs
    assert (sys.stdin, sys.stdout, sys.stderr) == streams and sys.excepthook is hook
    assert root.handlers == handlers and (root.level, logging.getLogger("airbyte").level) == levels
    assert airbyte_secrets_utils.filter_secrets(planhat.api_token) == planhat.api_token, "a secret stayed registered"
    assert "DESTINATION_PLANHAT_TEST_ONLY" not in os.environ


def test_a_process_run_is_refused_in_a_test_not_marked_process(tmp_path):
    with pytest.raises(AssertionError, match="mark it @pytest.mark.process"):
        run_cli("spec", tmp_path, process=True)
