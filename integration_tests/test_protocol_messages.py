"""Every line the real CLI prints is an AirbyteMessage of the official protocol schema, and its exit
code says whether the command succeeded.

`python main.py spec | check | write` run as processes (`run_cli(..., process=True)`: the module is
marked `process`), against the sandbox where Planhat is needed: what a platform reads from the
connector's pipe, line framing and exit code included. Each stdout line is validated against the
protocol v0.18.0 schema (`testing/protocol_schema.py`, from the package airbyte-protocol-models-pdv2),
and each run must have printed the message types it is about, so that no test passes on an empty or
cut-short output. The state tests look at state types only: what else the connector echoes in a
state may change, as long as the schema accepts it. (Every other CLI test validates its output the
same way, in process.)
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import pytest

from destination_planhat.testing.cli import CliRun, run_cli
from destination_planhat.testing.harness import (
    ACTIVITY_SCHEMA,
    METRIC_SCHEMA,
    activity,
    catalog,
    configured_stream,
    encode_lines,
    global_state,
    metric,
    record,
    sandbox_config,
    stream_state,
)
from destination_planhat.testing.protocol_schema import assert_protocol_output

pytestmark = pytest.mark.process

UNROUTABLE_SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def validated(run: CliRun, command: str, **at_least: int) -> Counter:
    """Validate every stdout line; each type in `at_least` (e.g. STATE=3) must appear that often."""
    assert run.stdout.strip(), f"`{command}` printed nothing on stdout:\n{run.stderr[-2000:]}"
    counts = assert_protocol_output(run.stdout, source=command)
    assert sum(counts.values()) == len(run.stdout.splitlines())
    for kind, minimum in at_least.items():
        assert counts[kind] >= minimum, (
            f"`{command}` printed {counts[kind]} {kind} message(s), expected >= {minimum}: {dict(counts)}"
        )
    print(f"\n`{command}`: {len(run.stdout.splitlines())} line(s) valid: {dict(counts)}")
    return counts


def legacy_state(cursor: Any, *, typed: bool = True) -> dict[str, Any]:
    state: dict[str, Any] = {"data": {"cursor": cursor}}
    if typed:
        state["type"] = "LEGACY"
    return {"type": "STATE", "state": state}


def two_streams() -> dict[str, Any]:
    return catalog(configured_stream("usage", METRIC_SCHEMA), configured_stream("events", ACTIVITY_SCHEMA))


# ----- spec -------------------------------------------------------------------------------------


def test_spec(tmp_path):
    run = run_cli("spec", tmp_path, process=True)
    assert run.returncode == 0, run.stderr[-2000:]
    counts = validated(run, "spec", SPEC=1)
    assert counts["SPEC"] == 1


# ----- check ------------------------------------------------------------------------------------


def test_check_success(sandbox, tmp_path):
    run = run_cli("check", tmp_path, config=sandbox_config(sandbox.url), process=True)
    validated(run, "check", CONNECTION_STATUS=1)
    assert run.connection_status["status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    "how",
    ["wrong api_token", "wrong tenant_uuid", "nothing listens at the URL", "invalid config"],
)
def test_check_failure(sandbox, tmp_path, how):
    config = {
        "wrong api_token": sandbox_config(sandbox.url, api_token="wrong-token"),
        "wrong tenant_uuid": sandbox_config(sandbox.url, tenant_uuid="wrong-tenant"),
        "nothing listens at the URL": sandbox_config(f"http://127.0.0.1:{free_port()}"),
        "invalid config": {"tenant_uuid": "has spaces", "batch_size": 0},
    }[how]
    run = run_cli("check", tmp_path, config=config, process=True)
    validated(run, f"check ({how})", CONNECTION_STATUS=1)
    assert run.connection_status["status"] == "FAILED", run.connection_status


# ----- write ------------------------------------------------------------------------------------


def test_write_success_with_stream_global_and_legacy_states(sandbox, tmp_path):
    """Records of both endpoints, and every kind of state a source can send, with the extra keys a
    platform adds (`id`, `sourceStats`): every line printed is a valid message, every state too."""
    with_extras = stream_state("usage", 2)
    with_extras["state"]["id"] = 7
    with_extras["state"]["sourceStats"] = {"recordCount": 2.0}
    messages = [
        record("usage", metric(0)),
        record("events", activity(0)),
        stream_state("usage", 1),
        stream_state("events", 1),
        record("usage", metric(1)),
        with_extras,
        global_state(1),
        record("events", activity(1)),
        legacy_state(1),
        record("usage", metric(2)),
        legacy_state(2, typed=False),
        record("usage", {"externalId": "no dimensionId"}),  # rejected locally: a warning, a count
        global_state(2),
    ]
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url),
        catalog=two_streams(),
        stdin=encode_lines(messages),
        process=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    validated(run, "write", LOG=1, STATE=1)
    assert run.errors == []
    kinds = Counter(state.get("type", "LEGACY") for state in run.states)
    assert set(kinds) == {"STREAM", "GLOBAL", "LEGACY"}, kinds
    assert len(sandbox.received()) == 5


def test_write_success_with_an_empty_input(sandbox, tmp_path):
    run = run_cli("write", tmp_path, config=sandbox_config(sandbox.url), catalog=two_streams(), stdin=b"", process=True)
    assert run.returncode == 0, run.stderr[-2000:]
    validated(run, "write (no input)", LOG=1)


def test_write_failure_when_planhat_refuses_the_credentials(sandbox, tmp_path):
    messages = [record("usage", metric(0)), stream_state("usage", 1)]
    config = sandbox_config(sandbox.url, api_token="wrong-token")
    run = run_cli("write", tmp_path, config=config, catalog=two_streams(), stdin=encode_lines(messages), process=True)
    assert run.returncode != 0
    validated(run, "write (credentials refused)", LOG=1, TRACE=1)
    assert [e["failure_type"] for e in run.errors] == ["config_error"]


def test_write_failure_after_states_were_emitted(sandbox, tmp_path):
    """A sync that acknowledged some records, emitted their states, then failed: states, logs and
    the TRACE error in one output, all valid."""
    sandbox.set_faults(script=[{"kind": "ok"}, {"kind": "status", "status": 401}])
    messages = [
        record("usage", metric(0)),
        stream_state("usage", 1),
        record("usage", metric(1)),
        stream_state("usage", 2),
    ]
    config = sandbox_config(sandbox.url, batch_size=1, max_in_flight_requests=1)
    run = run_cli("write", tmp_path, config=config, catalog=two_streams(), stdin=encode_lines(messages), process=True)
    assert run.returncode != 0
    validated(run, "write (fails after a state)", LOG=1, STATE=1, TRACE=1)
    assert [e["failure_type"] for e in run.errors] == ["config_error"]


def test_write_failure_on_a_config_error(sandbox, tmp_path):
    configured = catalog(configured_stream("usage", METRIC_SCHEMA), configured_stream("plain_table", UNROUTABLE_SCHEMA))
    messages = [record("usage", metric(0)), stream_state("usage", 1)]
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url),
        catalog=configured,
        stdin=encode_lines(messages),
        process=True,
    )
    assert run.returncode != 0
    validated(run, "write (config error)", TRACE=1)
    assert [e["failure_type"] for e in run.errors] == ["config_error"]
    assert sandbox.requests == []


def test_write_failure_on_an_invalid_config(sandbox, tmp_path):
    messages = [record("usage", metric(0))]
    run = run_cli(
        "write",
        tmp_path,
        config={"tenant_uuid": "has spaces"},
        catalog=two_streams(),
        stdin=encode_lines(messages),
        process=True,
    )
    assert run.returncode != 0
    validated(run, "write (invalid config)", TRACE=1)
    assert [e["failure_type"] for e in run.errors] == ["config_error"]
