"""The protocol-schema check itself: it accepts what the protocol allows and rejects what it does not.

If the validator accepted anything, every CLI test that runs it (integration_tests/
test_protocol_messages.py, and `run_connector` in sync_checks.py) would pass vacuously; these
messages, each broken in one way, prove that it rejects, and that it says where.
"""

from __future__ import annotations

import copy
import json

import pytest

from integration_tests.protocol_schema import (
    PROTOCOL_VERSION,
    assert_protocol_output,
    load_protocol_schema,
    message_errors,
    missing_schema_reason,
    schema_path,
)

if schema_path() is None:
    pytest.skip(missing_schema_reason(), allow_module_level=True)

STREAM_STATE = {
    "type": "STATE",
    "state": {
        "type": "STREAM",
        "stream": {"stream_descriptor": {"name": "usage", "namespace": "crm"}, "stream_state": {"cursor": 7}},
        "destinationStats": {"recordCount": 3.0},
    },
}
TRACE_ERROR = {
    "type": "TRACE",
    "trace": {
        "type": "ERROR",
        "emitted_at": 1_795_600_000_000.0,
        "error": {"message": "Planhat refused the credentials", "internal_message": "HTTP 401", "failure_type": "config_error"},
    },
}
VALID = [
    STREAM_STATE,
    # Unknown keys are allowed (additionalProperties), and protocol 0.18 has rejectedRecordCount.
    {"type": "STATE", "state": {**STREAM_STATE["state"], "id": 42, "destinationStats": {"recordCount": 3.0, "rejectedRecordCount": 1.0}}},
    {"type": "STATE", "state": {"type": "GLOBAL", "global": {"shared_state": {"cursor": 1}, "stream_states": []}, "destinationStats": {"recordCount": 0.0}}},
    {"type": "STATE", "state": {"type": "LEGACY", "data": {"cursor": 1}, "destinationStats": {"recordCount": 1.0}}},
    {"type": "STATE", "state": {"data": {"cursor": 1}}},  # LEGACY without a type
    TRACE_ERROR,
    {"type": "LOG", "log": {"level": "INFO", "message": "stream 'usage' -> Planhat Metrics"}},
    {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}},
    {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "FAILED", "message": "refused (HTTP 401)"}},
    {"type": "SPEC", "spec": {"connectionSpecification": {"type": "object"}, "supported_destination_sync_modes": ["append"]}},
]


def broken(message: dict, path: str, value: object = None, *, delete: bool = False) -> dict:
    """A deep copy of `message` with the dotted `path` set to `value`, or deleted."""
    out = copy.deepcopy(message)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize("message", VALID, ids=lambda m: m["type"])
def test_valid_messages_pass(message):
    assert message_errors(json.dumps(message)) == []


INVALID = [
    ("recordCount as a string", broken(STREAM_STATE, "state.destinationStats.recordCount", "3"), "$.state.destinationStats.recordCount", "not of type 'number'"),
    ("rejectedRecordCount as a string", broken(STREAM_STATE, "state.destinationStats.rejectedRecordCount", "1"), "$.state.destinationStats.rejectedRecordCount", "not of type 'number'"),
    ("TRACE without emitted_at", broken(TRACE_ERROR, "trace.emitted_at", delete=True), "$.trace", "'emitted_at' is a required property"),
    ("unknown failure_type", broken(TRACE_ERROR, "trace.error.failure_type", "oops"), "$.trace.error.failure_type", "is not one of"),
    ("error without message", broken(TRACE_ERROR, "trace.error.message", delete=True), "$.trace.error", "'message' is a required property"),
    ("state type PER_STREAM", broken(STREAM_STATE, "state.type", "PER_STREAM"), "$.state.type", "is not one of"),
    ("stream descriptor without name", broken(STREAM_STATE, "state.stream.stream_descriptor.name", delete=True), "$.state.stream.stream_descriptor", "'name' is a required property"),
    ("stream_state not an object", broken(STREAM_STATE, "state.stream.stream_state", [1]), "$.state.stream.stream_state", "not of type 'object'"),
    ("unknown message type", broken(STREAM_STATE, "type", "STATUS"), "$.type", "is not one of"),
    ("no type", broken(STREAM_STATE, "type", delete=True), "$", "'type' is a required property"),
    ("log level NOTICE", {"type": "LOG", "log": {"level": "NOTICE", "message": "x"}}, "$.log.level", "is not one of"),
    ("status OK", {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "OK"}}, "$.connectionStatus.status", "is not one of"),
    ("spec without connectionSpecification", {"type": "SPEC", "spec": {"documentationUrl": "https://example.com"}}, "$.spec", "'connectionSpecification' is a required property"),
    ("STATE without its state", {"type": "STATE"}, "$", "without its `state` field"),
]


@pytest.mark.parametrize("message, where, says", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_malformed_messages_are_rejected_naming_the_place(message, where, says):
    errors = message_errors(json.dumps(message))
    assert errors, "the validator accepted a malformed message"
    assert any(error.startswith(f"at {where}:") and says in error for error in errors), errors


@pytest.mark.parametrize("line", ["", "not json", "[1, 2]", '"STATE"'])
def test_lines_that_are_no_message_object_are_rejected(line):
    assert message_errors(line)


def test_output_check_names_each_bad_line_and_counts_the_good_ones():
    bad_state = broken(STREAM_STATE, "state.destinationStats.recordCount", "3")
    lines = [VALID[6], STREAM_STATE, bad_state, TRACE_ERROR, broken(TRACE_ERROR, "trace.emitted_at", delete=True)]
    stdout = "\n".join(json.dumps(m) for m in lines) + "\n"
    with pytest.raises(AssertionError) as raised:
        assert_protocol_output(stdout, source="write")
    text = str(raised.value)
    assert f"`write` printed 2 line(s) that are not valid Airbyte protocol v{PROTOCOL_VERSION} messages" in text
    assert "line 3: at $.state.destinationStats.recordCount: '3' is not of type 'number'" in text
    assert "line 5: at $.trace: 'emitted_at' is a required property" in text
    assert "line 1:" not in text and "line 2:" not in text and "line 4:" not in text

    counts = assert_protocol_output("\n".join(json.dumps(m) for m in lines[:2] + lines[3:4]), source="write")
    assert counts == {"LOG": 1, "STATE": 1, "TRACE": 1}


def test_the_schema_is_the_pinned_official_file(tmp_path):
    schema = load_protocol_schema()
    assert schema["title"] == "AirbyteProtocol"
    assert "AirbyteMessage" in schema["definitions"]
    assert "rejectedRecordCount" in schema["definitions"]["AirbyteStateStats"]["properties"]  # protocol 0.18
    altered = tmp_path / "airbyte_protocol.yaml"
    altered.write_bytes(schema_path().read_bytes() + b"# edited\n")
    with pytest.raises(ValueError, match="is not airbyte_protocol.yaml of airbyte-protocol v"):
        load_protocol_schema(altered)
