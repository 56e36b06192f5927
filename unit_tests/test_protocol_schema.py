"""The protocol-schema check itself: it accepts what the protocol allows and rejects what it does not.

If the validator accepted anything, every CLI test (each run of `run_cli` in testing/cli.py validates
its output with it) would pass vacuously; these
messages, each broken in one way, prove that it rejects, and that it says where.
"""

from __future__ import annotations

import copy
import json
from importlib import metadata

import pytest

from destination_planhat.testing import protocol_schema
from destination_planhat.testing.protocol_schema import (
    PROTOCOL_PACKAGE,
    PROTOCOL_VERSION,
    assert_protocol_output,
    message_errors,
    message_schema,
    require_protocol_version,
    without_null,
)

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
        "error": {
            "message": "Planhat refused the credentials",
            "internal_message": "HTTP 401",
            "failure_type": "config_error",
        },
    },
}
VALID = [
    STREAM_STATE,
    # Unknown keys are allowed (additionalProperties), and protocol 0.18 has rejectedRecordCount.
    {
        "type": "STATE",
        "state": {
            **STREAM_STATE["state"],
            "id": 42,
            "destinationStats": {"recordCount": 3.0, "rejectedRecordCount": 1.0},
        },
    },
    {
        "type": "STATE",
        "state": {
            "type": "GLOBAL",
            "global": {"shared_state": {"cursor": 1}, "stream_states": []},
            "destinationStats": {"recordCount": 0.0},
        },
    },
    {"type": "STATE", "state": {"type": "LEGACY", "data": {"cursor": 1}, "destinationStats": {"recordCount": 1.0}}},
    {"type": "STATE", "state": {"data": {"cursor": 1}}},  # LEGACY without a type
    TRACE_ERROR,
    {"type": "LOG", "log": {"level": "INFO", "message": "stream 'usage' -> Planhat Metrics"}},
    {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "SUCCEEDED"}},
    {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "FAILED", "message": "refused (HTTP 401)"}},
    {
        "type": "SPEC",
        "spec": {"connectionSpecification": {"type": "object"}, "supported_destination_sync_modes": ["append"]},
    },
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
    (
        "recordCount as a string",
        broken(STREAM_STATE, "state.destinationStats.recordCount", "3"),
        "$.state.destinationStats.recordCount",
        "not of type 'number'",
    ),
    (
        "rejectedRecordCount as a string",
        broken(STREAM_STATE, "state.destinationStats.rejectedRecordCount", "1"),
        "$.state.destinationStats.rejectedRecordCount",
        "not of type 'number'",
    ),
    (
        "TRACE without emitted_at",
        broken(TRACE_ERROR, "trace.emitted_at", delete=True),
        "$.trace",
        "'emitted_at' is a required property",
    ),
    (
        "unknown failure_type",
        broken(TRACE_ERROR, "trace.error.failure_type", "oops"),
        "$.trace.error.failure_type",
        "is not one of",
    ),
    (
        "error without message",
        broken(TRACE_ERROR, "trace.error.message", delete=True),
        "$.trace.error",
        "'message' is a required property",
    ),
    ("state type PER_STREAM", broken(STREAM_STATE, "state.type", "PER_STREAM"), "$.state.type", "is not one of"),
    (
        "stream descriptor without name",
        broken(STREAM_STATE, "state.stream.stream_descriptor.name", delete=True),
        "$.state.stream.stream_descriptor",
        "'name' is a required property",
    ),
    (
        "stream_state not an object",
        broken(STREAM_STATE, "state.stream.stream_state", [1]),
        "$.state.stream.stream_state",
        "not of type 'object'",
    ),
    ("unknown message type", broken(STREAM_STATE, "type", "STATUS"), "$.type", "is not one of"),
    ("no type", broken(STREAM_STATE, "type", delete=True), "$", "'type' is a required property"),
    ("log level NOTICE", {"type": "LOG", "log": {"level": "NOTICE", "message": "x"}}, "$.log.level", "is not one of"),
    (
        "status OK",
        {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "OK"}},
        "$.connectionStatus.status",
        "is not one of",
    ),
    (
        "spec without connectionSpecification",
        {"type": "SPEC", "spec": {"documentationUrl": "https://example.com"}},
        "$.spec",
        "'connectionSpecification' is a required property",
    ),
    ("STATE without its state", {"type": "STATE"}, "$", "without its `state` field"),
    (
        "record without stream",
        {"type": "RECORD", "record": {"data": {}, "emitted_at": 1}},
        "$.record",
        "'stream' is a required property",
    ),
    (
        "record data not an object",
        {"type": "RECORD", "record": {"stream": "usage", "data": [], "emitted_at": 1}},
        "$.record.data",
        "not of type 'object'",
    ),
    # No null where the YAML defines a field (pydantic's rendering of Optional allows it; see without_null).
    (
        "recordCount null",
        broken(STREAM_STATE, "state.destinationStats.recordCount", None),
        "$.state.destinationStats.recordCount",
        "None is not of type 'number'",
    ),
    (
        "destinationStats null",
        broken(STREAM_STATE, "state.destinationStats", None),
        "$.state.destinationStats",
        "None is not of type 'object'",
    ),
    (
        "stream_state null",
        broken(STREAM_STATE, "state.stream.stream_state", None),
        "$.state.stream.stream_state",
        "None is not of type 'object'",
    ),
    ("state type null", broken(STREAM_STATE, "state.type", None), "$.state.type", "is not one of"),
    (
        "failure_type null",
        broken(TRACE_ERROR, "trace.error.failure_type", None),
        "$.trace.error.failure_type",
        "is not one of",
    ),
    ("LOG with log null", {"type": "LOG", "log": None}, "$.log", "None is not of type 'object'"),
    (
        "status message null",
        {"type": "CONNECTION_STATUS", "connectionStatus": {"status": "FAILED", "message": None}},
        "$.connectionStatus.message",
        "None is not of type 'string'",
    ),
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


def test_the_schema_is_the_pinned_package_of_protocol_0_18():
    assert metadata.version(PROTOCOL_PACKAGE) == PROTOCOL_VERSION == "0.18.0"
    schema = message_schema()
    assert schema["title"] == "AirbyteMessage"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "rejectedRecordCount" in schema["$defs"]["AirbyteStateStats"]["properties"]  # protocol 0.18
    with pytest.raises(RuntimeError, match=f"{PROTOCOL_PACKAGE} 0.17.0 is installed"):
        require_protocol_version("0.17.0")


def test_another_installed_version_is_refused_not_skipped(monkeypatch):
    monkeypatch.setattr(protocol_schema.metadata, "version", lambda name: "0.19.0")
    with pytest.raises(RuntimeError, match="0.19.0 is installed; the protocol tests check against 0.18.0"):
        protocol_schema.build_message_schema()


def _nulls(node, where="#"):
    """Every place in a schema that would accept null."""
    if isinstance(node, dict):
        kinds = node.get("type")
        if kinds == "null" or (isinstance(kinds, list) and "null" in kinds) or node.get("const", ...) is None:
            yield where
        if None in node.get("enum", ()):
            yield where
        for key, value in node.items():
            yield from _nulls(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _nulls(value, f"{where}/{index}")


def test_the_schema_accepts_null_nowhere():
    assert list(_nulls(message_schema())) == []


def test_without_null_keeps_the_field_and_its_other_alternatives():
    optional = {"anyOf": [{"$ref": "#/$defs/Level"}, {"type": "null"}], "default": None, "description": "d"}
    assert without_null(optional) == {"$ref": "#/$defs/Level", "description": "d"}
    union = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}], "default": False}
    assert without_null(union) == {"anyOf": [{"type": "string"}, {"type": "integer"}], "default": False}
    nested = {"properties": {"a": {"items": optional}}}
    assert without_null(nested)["properties"]["a"]["items"] == {"$ref": "#/$defs/Level", "description": "d"}
    assert nested["properties"]["a"]["items"] is optional  # the input is not changed


def test_the_enums_are_the_protocols():
    defs = message_schema()["$defs"]
    assert defs["Type"]["enum"] == list(protocol_schema.PAYLOAD_FIELDS)
    assert set(defs["AirbyteStateType"]["enum"]) == {"GLOBAL", "STREAM", "LEGACY"}
    assert set(defs["TraceType"]["enum"]) == {"ERROR", "ESTIMATE", "STREAM_STATUS", "ANALYTICS"}
    assert set(defs["FailureType"]["enum"]) == {"system_error", "config_error", "transient_error"}
    assert set(defs["Level"]["enum"]) == {"FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"}
    assert set(defs["Status"]["enum"]) == {"SUCCEEDED", "FAILED"}
