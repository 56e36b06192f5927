"""The CLI's commands against the sandbox: in process (`testing/cli.py`), and, marked `process`, the
`destination-planhat` console script and the secrets in a refused sync's process output."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from destination_planhat.planhat.api import Endpoint
from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import (
    ACTIVITY_SCHEMA,
    API_TOKEN,
    METRIC_SCHEMA,
    TENANT,
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

FIXED_FIELDS = ("tenant_uuid", "api_token", "batch_size", "streams", "analytics_base_url")
UNROUTABLE_SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}}
INTEGRATION_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_secrets(run) -> None:
    output = run.stdout + run.stderr
    assert API_TOKEN not in output, "the API token appeared in the output"
    assert TENANT not in output, "the tenant token appeared in the output"


# ----- spec -------------------------------------------------------------------------------------


def test_spec_is_valid_and_has_the_fixed_field_names(tmp_path):
    run = run_cli("spec", tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    [message] = run.of_type("SPEC")
    spec = message["spec"]
    schema = spec["connectionSpecification"]
    Draft7Validator.check_schema(schema)
    assert set(FIXED_FIELDS) <= set(schema["properties"])
    assert schema["required"] == []  # tenant_uuid: only for Metrics and User Activities streams (routing says so)
    assert schema["properties"]["tenant_uuid"]["airbyte_secret"] is True
    assert schema["properties"]["api_token"]["airbyte_secret"] is True
    assert schema["properties"]["analytics_base_url"]["airbyte_hidden"] is True
    assert schema["properties"]["analytics_base_url"]["default"] == "https://analytics.planhat.com"
    batch = schema["properties"]["batch_size"]
    assert (batch["type"], batch["minimum"], batch["maximum"], batch["default"]) == ("integer", 1, 100_000, 10_000)
    item = schema["properties"]["streams"]["items"]
    assert {"name", "namespace", "endpoint"} <= set(item["properties"])
    assert item["properties"]["endpoint"]["enum"] == [endpoint.value for endpoint in Endpoint]
    assert spec["supported_destination_sync_modes"] == ["append", "append_dedup"]
    assert spec["supportsIncremental"] is True
    validator = Draft7Validator(schema)
    assert not list(validator.iter_errors(sandbox_config("http://127.0.0.1:1")))
    assert list(validator.iter_errors(json.loads((INTEGRATION_DIR / "invalid_config.json").read_text())))


# ----- check ------------------------------------------------------------------------------------


def test_check_succeeds_and_writes_nothing(sandbox, tmp_path):
    run = run_cli("check", tmp_path, config=sandbox_config(sandbox.url))
    assert run.returncode == 0
    assert run.connection_status["status"] == "SUCCEEDED", run.connection_status
    assert sorted(r.endpoint for r in sandbox.requests) == ["metrics", "user_activities"]
    assert sandbox.received() == []
    no_secrets(run)


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"api_token": "wrong-token"}, "api_token"),
        ({"tenant_uuid": "wrong-tenant"}, "tenant_uuid"),
    ],
)
def test_check_fails_naming_the_refused_credential(sandbox, tmp_path, overrides, named):
    run = run_cli("check", tmp_path, config=sandbox_config(sandbox.url, **overrides))
    status = run.connection_status
    assert status["status"] == "FAILED"
    assert named in status["message"]
    assert "wrong-token" not in run.stdout + run.stderr
    assert sandbox.received() == []
    no_secrets(run)


def test_check_fails_naming_the_url_when_nothing_listens(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    run = run_cli("check", tmp_path, config=sandbox_config(url))
    status = run.connection_status
    assert status["status"] == "FAILED"
    assert url in status["message"]
    no_secrets(run)


def test_check_with_invalid_config_fails_naming_the_fields(tmp_path):
    config = json.loads((INTEGRATION_DIR / "invalid_config.json").read_text())
    run = run_cli("check", tmp_path, config=config)
    status = run.connection_status
    assert status["status"] == "FAILED"
    for field in ("tenant_uuid", "batch_size"):
        assert field in status["message"]
    assert config["tenant_uuid"] not in run.stdout + run.stderr


# ----- write: refused before anything is sent ---------------------------------------------------


def assert_one_config_error_and_no_request(run, sandbox, named):
    assert run.returncode != 0
    errors = run.errors
    assert len(errors) == 1, errors
    assert errors[0]["failure_type"] == "config_error"
    for text in named:
        assert text in errors[0]["message"]
    assert sandbox.requests == []
    assert run.states == []


def test_write_refuses_unroutable_and_non_append_streams_in_one_error(sandbox, tmp_path):
    configured = catalog(
        configured_stream("metrics_ok", METRIC_SCHEMA),
        configured_stream("plain_table", UNROUTABLE_SCHEMA),
        configured_stream("other_table", UNROUTABLE_SCHEMA, namespace="crm"),
        configured_stream("overwritten", ACTIVITY_SCHEMA, destination_sync_mode="overwrite"),
    )
    stdin = encode_lines([record("metrics_ok", metric(1)), stream_state("metrics_ok", 1)])
    run = run_cli("write", tmp_path, config=sandbox_config(sandbox.url), catalog=configured, stdin=stdin)
    assert_one_config_error_and_no_request(
        run, sandbox, ["plain_table", "crm.other_table", "overwritten", "`streams`", "append"]
    )
    assert "metrics_ok" not in run.errors[0]["message"]
    no_secrets(run)


def test_write_refuses_metrics_without_api_token(sandbox, tmp_path):
    configured = catalog(configured_stream("usage", METRIC_SCHEMA), configured_stream("events", ACTIVITY_SCHEMA))
    stdin = encode_lines([record("events", activity(1)), record("usage", metric(1))])
    config = sandbox_config(sandbox.url)
    del config["api_token"]
    run = run_cli("write", tmp_path, config=config, catalog=configured, stdin=stdin)
    assert_one_config_error_and_no_request(run, sandbox, ["usage", "api_token"])
    assert "'events'" not in run.errors[0]["message"]


# ----- write: what is sent ----------------------------------------------------------------------


def test_empty_input_succeeds_without_any_request(sandbox, tmp_path):
    configured = catalog(configured_stream("usage", METRIC_SCHEMA))
    run = run_cli("write", tmp_path, config=sandbox_config(sandbox.url), catalog=configured, stdin=b"")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not run.errors and run.states == []
    assert sandbox.requests == []


def test_records_of_streams_not_in_the_catalog_are_skipped_counted_and_warned_once(sandbox, tmp_path):
    configured = catalog(configured_stream("usage", METRIC_SCHEMA))
    messages = [record("usage", metric(0))]
    messages += [record("stranger", activity(i)) for i in range(5)]
    messages += [record("usage", metric(1)), stream_state("usage", "end")]
    run = run_cli(
        "write", tmp_path, config=sandbox_config(sandbox.url), catalog=configured, stdin=encode_lines(messages)
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert sandbox.received("metrics") == [metric(0), metric(1)]
    assert sandbox.received("user_activities") == []
    warnings = [line for line in run.log_lines("'stranger'") if not line.startswith("summary")]
    assert len(warnings) == 1 and "skipped" in warnings[0]
    # The summary table's row for the stream; its last seven columns are read, sent, ..., skipped.
    [row] = [line.split() for line in run.log_lines("summary: stranger ")]
    assert (row[-7], row[-6], row[-1]) == ("5", "0", "5")
    assert [s["destinationStats"]["recordCount"] for s in run.states] == [2]


def test_global_state_counts_the_records_of_every_stream(sandbox, tmp_path):
    configured = catalog(configured_stream("usage", METRIC_SCHEMA), configured_stream("events", ACTIVITY_SCHEMA))
    messages = [record("usage", metric(i)) for i in range(3)] + [record("events", activity(i)) for i in range(4)]
    messages += [global_state(1), record("events", activity(9)), global_state(2)]
    run = run_cli(
        "write", tmp_path, config=sandbox_config(sandbox.url), catalog=configured, stdin=encode_lines(messages)
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [
        (s["type"], s["global"]["shared_state"]["cursor"], s["destinationStats"]["recordCount"]) for s in run.states
    ] == [
        ("GLOBAL", 1, 7),
        ("GLOBAL", 2, 1),
    ]
    assert len(sandbox.received()) == 8


@pytest.mark.parametrize(
    "batch_size, records, expected_sizes",
    [
        (1, 5, [1, 1, 1, 1, 1]),
        (7, 25, [7, 7, 7, 4]),
        (10_000, 12_345, [10_000, 2_345]),
    ],
)
def test_batch_size_is_respected_exactly(sandbox, tmp_path, batch_size, records, expected_sizes):
    configured = catalog(configured_stream("usage", METRIC_SCHEMA))
    messages = [record("usage", metric(i)) for i in range(records)] + [stream_state("usage", records)]
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url, batch_size=batch_size),
        catalog=configured,
        stdin=encode_lines(messages),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted((r.items for r in sandbox.requests), reverse=True) == expected_sizes
    assert sorted(map(repr, sandbox.received("metrics"))) == sorted(repr(metric(i)) for i in range(records))
    [state] = run.states
    assert state["destinationStats"]["recordCount"] == records


def test_sample_messages_reach_both_endpoints_and_secrets_stay_out_of_the_output(sandbox, tmp_path):
    configured = json.loads((INTEGRATION_DIR / "configured_catalog.json").read_text())
    stdin = (INTEGRATION_DIR / "messages.jsonl").read_bytes()
    sent = [
        json.loads(line)["record"]
        for line in stdin.splitlines()
        if line.strip() and json.loads(line)["type"] == "RECORD"
    ]
    run = run_cli("write", tmp_path, config=sandbox_config(sandbox.url), catalog=configured, stdin=stdin)
    assert run.returncode == 0, run.stderr[-2000:]
    by_stream = Counter(r["stream"] for r in sent)
    assert len(sandbox.received("metrics")) == by_stream["product_usage"]
    assert len(sandbox.received("user_activities")) == by_stream["user_events"]
    assert {r.endpoint for r in sandbox.requests if r.authorization_present} == {"metrics"}
    no_secrets(run)


@pytest.mark.process
def test_secrets_stay_out_of_the_output_when_planhat_refuses_them(sandbox, tmp_path):
    configured = catalog(configured_stream("usage", METRIC_SCHEMA))
    sandbox.set_faults(script=[{"kind": "status", "status": 401}])
    messages = [record("usage", metric(1)), stream_state("usage", 1)]
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url),
        catalog=configured,
        stdin=encode_lines(messages),
        process=True,
    )
    assert run.returncode != 0
    assert [e["failure_type"] for e in run.errors] == ["config_error"]
    assert "api_token" in run.errors[0]["message"]
    assert run.states == []
    no_secrets(run)


# ----- the console script -----------------------------------------------------------------------


def console_script() -> Path:
    script = Path(sys.executable).parent / "destination-planhat"
    assert script.exists(), f"{script} is missing: `pip install -e .` installs it"
    return script


@pytest.mark.process
def test_console_script_spec_and_write(sandbox, tmp_path):
    spec = subprocess.run([str(console_script()), "spec"], capture_output=True, timeout=120, cwd=tmp_path)
    assert spec.returncode == 0, spec.stderr[-2000:]
    [line] = [json.loads(out) for out in spec.stdout.splitlines() if b'"SPEC"' in out]
    assert set(FIXED_FIELDS) <= set(line["spec"]["connectionSpecification"]["properties"])

    (tmp_path / "config.json").write_text(json.dumps(sandbox_config(sandbox.url)))
    (tmp_path / "catalog.json").write_text(json.dumps(catalog(configured_stream("events", ACTIVITY_SCHEMA))))
    write = subprocess.run(
        [str(console_script()), "write", "--config", "config.json", "--catalog", "catalog.json"],
        input=encode_lines([record("events", activity(1)), stream_state("events", 1)]),
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert write.returncode == 0, write.stderr[-2000:]
    states = [json.loads(out) for out in write.stdout.splitlines() if b'"STATE"' in out]
    assert len(states) == 1 and states[0]["state"]["destinationStats"]["recordCount"] == 1
    assert sandbox.received("user_activities") == [activity(1)]


def test_write_with_invalid_config_fails_with_one_config_error_naming_the_fields(sandbox, tmp_path):
    config = json.loads((INTEGRATION_DIR / "invalid_config.json").read_text())
    configured = json.loads((INTEGRATION_DIR / "configured_catalog.json").read_text())
    run = run_cli(
        "write", tmp_path, config=config, catalog=configured, stdin=(INTEGRATION_DIR / "messages.jsonl").read_bytes()
    )
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    assert "`tenant_uuid`" in error["message"] and "`batch_size`" in error["message"]
    assert config["tenant_uuid"] not in run.stdout + run.stderr
    assert sandbox.requests == [] and run.states == []
