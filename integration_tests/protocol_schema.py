"""Check what the connector prints against the official Airbyte protocol schema, line by line.

The schema is `airbyte_protocol.yaml` of the airbytehq/airbyte-protocol repository, release
v0.18.0 (see `unit_tests/airbyte_protocol/README.md` for where it comes from and where it is looked
for). It is a JSON Schema (draft 7) whose `definitions` hold `AirbyteMessage` and everything it
refers to with local `$ref`s (`#/definitions/...`); every printed line must be one valid
`AirbyteMessage`.

    errors = message_errors(line)                # [] when the line is a valid AirbyteMessage
    counts = assert_protocol_output(run.stdout, source="write")   # AssertionError naming each bad line

The schema alone accepts `{"type": "STATE"}` (no payload field is required); the protocol says the
field that `type` names carries the message, so that is checked too (`PAYLOAD_FIELDS`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError, best_match

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_VERSION = "0.18.0"
# sha256 of protocol-models/src/main/resources/airbyte_protocol/v0/airbyte_protocol.yaml at tag v0.18.0.
PROTOCOL_SCHEMA_SHA256 = "ccc7c10a4711f2597ff26d0a15830a3a1c173cb504c1b566c44ec9d196d27381"
SCHEMA_ENV = "AIRBYTE_PROTOCOL_SCHEMA"
SCHEMA_NAME = Path("airbyte_protocol") / "airbyte_protocol.yaml"
# Where the file is looked for, after $AIRBYTE_PROTOCOL_SCHEMA: in the repository, then in the
# workplace's shared/ folder beside the repository (see the README next to the first one).
SCHEMA_PLACES = (REPO_ROOT / "unit_tests" / SCHEMA_NAME, REPO_ROOT.parent / "shared" / SCHEMA_NAME)

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


def schema_path() -> Optional[Path]:
    """The schema file to use, or None when there is none (see SCHEMA_PLACES)."""
    configured = os.environ.get(SCHEMA_ENV)
    if configured:
        return Path(configured)
    return next((place for place in SCHEMA_PLACES if place.is_file()), None)


def missing_schema_reason() -> str:
    places = ", ".join(str(p) for p in SCHEMA_PLACES)
    return (
        f"the Airbyte protocol schema (airbyte_protocol.yaml of airbytehq/airbyte-protocol v{PROTOCOL_VERSION}) "
        f"is not here: set ${SCHEMA_ENV} or put it at one of {places} (unit_tests/airbyte_protocol/README.md)"
    )


@lru_cache(maxsize=4)
def load_protocol_schema(path: Optional[Path] = None) -> dict[str, Any]:
    """The parsed schema, after checking that it is the pinned official file."""
    path = path or schema_path()
    if path is None:
        raise FileNotFoundError(missing_schema_reason())
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if digest != PROTOCOL_SCHEMA_SHA256:
        raise ValueError(
            f"{path} is not airbyte_protocol.yaml of airbyte-protocol v{PROTOCOL_VERSION} "
            f"(sha256 {digest}, expected {PROTOCOL_SCHEMA_SHA256}); update PROTOCOL_VERSION and "
            f"PROTOCOL_SCHEMA_SHA256 together with the file"
        )
    schema = yaml.safe_load(content)
    Draft7Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=4)
def message_validator(path: Optional[Path] = None) -> Draft7Validator:
    """A validator of one AirbyteMessage; `$ref`s resolve within the same document."""
    document = load_protocol_schema(path)
    schema = {
        "$schema": document["$schema"],
        "definitions": document["definitions"],
        # In draft 7 a `$ref` stands for the whole schema; it resolves against this document.
        "$ref": "#/definitions/AirbyteMessage",
    }
    return Draft7Validator(schema)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _describe(error: ValidationError) -> str:
    """`at $.state.destinationStats.recordCount: '3' is not of type 'number' (rule type: number)`."""
    deepest = best_match([error])  # under a oneOf / anyOf: the alternative that came closest
    rule = f"{deepest.validator}: {_short(deepest.validator_value)}"
    return f"at {deepest.json_path}: {_short(deepest.message)} (rule {rule})"


def message_errors(line: str, path: Optional[Path] = None) -> list[str]:
    """Every way `line` fails to be one AirbyteMessage; empty when it is one."""
    try:
        message = json.loads(line)
    except ValueError as error:
        return [f"not JSON ({error})"]
    validator = message_validator(path)
    errors = sorted(validator.iter_errors(message), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    problems = [_describe(error) for error in errors]
    if not problems and isinstance(message, dict):
        payload = PAYLOAD_FIELDS.get(message["type"])
        if payload is not None and payload not in message:
            problems.append(f"at $: a {message['type']} message without its `{payload}` field (the protocol's rule)")
    return problems


def assert_protocol_output(stdout: str, *, source: str, path: Optional[Path] = None) -> Counter:
    """Every stdout line is a valid AirbyteMessage; returns how many messages of each type.

    The AssertionError names each bad line by its number (1-based), the place in the message and
    the schema rule, then shows the start of the line.
    """
    counts: Counter = Counter()
    failures = []
    for number, line in enumerate(stdout.splitlines(), start=1):
        problems = message_errors(line, path)
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
