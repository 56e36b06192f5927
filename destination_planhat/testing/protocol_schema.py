"""Check what the connector prints against the official Airbyte protocol schema, line by line.

The schema comes from the PyPI package `airbyte-protocol-models-pdv2` at version 0.18.0 (a test
requirement in setup.py): pydantic v2 models that Airbyte generates from `airbyte_protocol.yaml` of
airbytehq/airbyte-protocol, release v0.18.0 (the one with `destinationStats.rejectedRecordCount`).
`AirbyteMessage.model_json_schema()` renders them back into a JSON Schema (draft 2020-12, the
definitions under `$defs`); every printed line must be one valid `AirbyteMessage` of it. Any other
installed version of the package is refused, not skipped.

    errors = message_errors(line)                # [] when the line is a valid AirbyteMessage
    counts = assert_protocol_output(run.stdout, source="write")   # AssertionError naming each bad line

Two rules are added to what pydantic renders, so that the check is as strict as the YAML:

- no `null` anywhere the protocol defines a field: pydantic renders each optional field
  (`Optional[X]`, how the generator writes a property the YAML does not require) as
  `anyOf: [X, {"type": "null"}]`, while the YAML allows `null` nowhere; so every `{"type": "null"}`
  alternative is dropped (`without_null`). Free-form objects (record `data`, `stream_state`, ...)
  keep accepting any value inside them, `null` included.
- the field that `type` names must be there: the schema requires only `type`, so it accepts
  `{"type": "STATE"}`; the protocol says the field that `type` names carries the message
  (`PAYLOAD_FIELDS`).

Everything else (required fields, types, enum values, extra keys allowed) is the package's.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from importlib import metadata
from typing import Any

from airbyte_protocol.models import AirbyteMessage
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

PROTOCOL_PACKAGE = "airbyte-protocol-models-pdv2"
PROTOCOL_VERSION = "0.18.0"
JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_NULL = {"type": "null"}

# The message type -> the field that carries it (AirbyteMessage's properties).
PAYLOAD_FIELDS = {
    "RECORD": "record",
    "STATE": "state",
    "LOG": "log",
    "SPEC": "spec",
    "CONNECTION_STATUS": "connectionStatus",
    "CATALOG": "catalog",
    "TRACE": "trace",
    "CONTROL": "control",
    "DESTINATION_CATALOG": "destination_catalog",
}
_SHOWN_CHARS = 300


def require_protocol_version(found: str) -> None:
    """Refuse any version of the package but the one the tests are about."""
    if found != PROTOCOL_VERSION:
        raise RuntimeError(
            f"{PROTOCOL_PACKAGE} {found} is installed; the protocol tests check against "
            f"{PROTOCOL_VERSION} (setup.py pins it: reinstall with `pip install -e '.[dev]'`, or "
            f"update the pin and PROTOCOL_VERSION together)"
        )


def without_null(node: Any) -> Any:
    """`node` with every `{"type": "null"}` alternative of an `anyOf` removed (a copy).

    `anyOf: [X, {"type": "null"}]` becomes X itself, keeping the field's own keys (description,
    default) beside X's; an `anyOf` of several non-null alternatives stays one, without the null.
    """
    if isinstance(node, list):
        return [without_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: without_null(value) for key, value in node.items()}
    alternatives = out.get("anyOf")
    if isinstance(alternatives, list) and _NULL in alternatives:
        rest = [alternative for alternative in alternatives if alternative != _NULL]
        del out["anyOf"]
        if len(rest) == 1:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
        if out.get("default", ...) is None:
            del out["default"]
    return out


def build_message_schema() -> dict[str, Any]:
    """The JSON Schema of one AirbyteMessage: the package's, plus the no-`null` rule."""
    require_protocol_version(metadata.version(PROTOCOL_PACKAGE))
    schema = without_null(AirbyteMessage.model_json_schema())  # validation mode, by alias
    schema = {"$schema": JSON_SCHEMA_DRAFT, **schema}
    Draft202012Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def message_schema() -> dict[str, Any]:
    return build_message_schema()


@lru_cache(maxsize=1)
def message_validator() -> Draft202012Validator:
    """A validator of one AirbyteMessage; `$ref`s (`#/$defs/...`) resolve within the schema."""
    return Draft202012Validator(message_schema())


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _describe(error: ValidationError) -> str:
    """`at $.state.destinationStats.recordCount: '3' is not of type 'number' (rule type: number)`."""
    deepest = best_match([error])  # under an anyOf: the alternative that came closest
    rule = f"{deepest.validator}: {_short(deepest.validator_value)}"
    return f"at {deepest.json_path}: {_short(deepest.message)} (rule {rule})"


def message_errors(line: str) -> list[str]:
    """Every way `line` fails to be one AirbyteMessage; empty when it is one."""
    try:
        message = json.loads(line)
    except ValueError as error:
        return [f"not JSON ({error})"]
    errors = sorted(
        message_validator().iter_errors(message), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    problems = [_describe(error) for error in errors]
    if not problems and isinstance(message, dict):
        payload = PAYLOAD_FIELDS.get(message["type"])
        if payload is not None and payload not in message:
            problems.append(f"at $: a {message['type']} message without its `{payload}` field (the protocol's rule)")
    return problems


def assert_protocol_output(stdout: str, *, source: str) -> Counter:
    """Every stdout line is a valid AirbyteMessage; returns how many messages of each type.

    The AssertionError names each bad line by its number (1-based), the place in the message and
    the schema rule, then shows the start of the line.
    """
    counts: Counter = Counter()
    failures = []
    for number, line in enumerate(stdout.splitlines(), start=1):
        problems = message_errors(line)
        if problems:
            failures.append(f"line {number}: " + "; ".join(problems) + f"\n    the line: {_short(line)}")
        else:
            counts[json.loads(line)["type"]] += 1
    if failures:
        raise AssertionError(
            f"`{source}` printed {len(failures)} line(s) that are not valid Airbyte protocol "
            f"v{PROTOCOL_VERSION} messages:\n" + "\n".join(failures)
        )
    return counts
