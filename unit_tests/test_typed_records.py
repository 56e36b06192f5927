"""msgspec's typed first try (reading/typed_records.py) makes exactly the item the general mapper makes, or passes.

Every record of the fast mapper's tables, and raw lines that only JSON text can hold (integers past
64 bits, numbers out of range, lone surrogates, bytes that are not UTF-8, repeated keys), go through
the typed encoder and through the general mapper. Where the typed encoder gives an item, it must be
the general mapper's valid item, field for field and in order; where the general mapper rejects a
record, or converts a value, the typed encoder must pass (None or a msgspec error).
"""

from __future__ import annotations

from typing import Any, Optional

import msgspec
import orjson
import pytest

from destination_planhat.config import StreamSettings
from destination_planhat.mapping.analytics import Invalid, MappingPlan, build_mapper, compile_mapping, fast_plan
from destination_planhat.mapping.unclean_json import parse_leniently
from destination_planhat.planhat.api import Endpoint
from destination_planhat.reading.decoder import FAST, Decoder
from destination_planhat.reading.typed_records import typed_item_encoder
from destination_planhat.testing.odd_records import activity_records, fresh, metric_records

METRICS = Endpoint.METRICS
ACTIVITIES = Endpoint.USER_ACTIVITIES

SETTINGS = [
    pytest.param(METRICS, [], metric_records, id="metrics, fields from same-named columns"),
    pytest.param(ACTIVITIES, [], activity_records, id="user activities, fields from same-named columns"),
    pytest.param(
        METRICS,
        [
            {"planhat_field": "dimensionId", "constant": "purchases"},
            {"planhat_field": "value", "constant": "1"},
            {"planhat_field": "externalId", "source_field": "user_id"},
            {"planhat_field": "date", "source_field": "at"},
        ],
        lambda: [
            {"user_id": 42, "at": "2026-11-01"},
            {"user_id": "u", "at": fresh("2026-11-01T10:00:0") + "+01:00"},
            {"user_id": "u", "at": "2026-11-01"},
            {"user_id": "", "at": "2026-11-01"},
            {"user_id": None, "at": "2026-11-01"},
            {"user_id": "u", "at": "yesterday"},
            {"at": "2026-11-01"},
        ],
        id="metrics with constants and renamed columns",
    ),
    pytest.param(
        ACTIVITIES,
        [{"planhat_field": "euExtId", "source_field": "id"}, {"planhat_field": "action", "constant": "signed_up"}],
        lambda: [{"id": 5}, {"id": "u5", "email": "x@example.com"}, {"id": None}, {"id": {"no": 1}}, {"id": "u6"}],
        id="user activities with a constant and a renamed column",
    ),
    pytest.param(
        ACTIVITIES,
        [{"planhat_field": "email", "constant": "team@example.com"}],
        lambda: [{"action": "x"}, {"email": "ignored@example.com", "count": 2}, {}],
        id="user activities whose identity is a constant",
    ),
]


def compiled(endpoint: Endpoint, mappings: list[dict[str, str]]) -> MappingPlan:
    """A stream's plan as routing compiles it (these settings have nothing to fix)."""
    settings = StreamSettings(name="s", endpoint=endpoint, field_mappings=mappings) if mappings else None
    plan, problems = compile_mapping("s", endpoint, settings, {})
    assert problems == []
    return plan


def typed_and_general(endpoint: Endpoint, mappings: list[dict[str, str]]) -> tuple[Any, Any]:
    plan = compiled(endpoint, mappings)
    fast = fast_plan(plan)
    assert fast is not None
    encoder = typed_item_encoder(*fast)
    assert encoder is not None
    return encoder, build_mapper(plan)


def typed_item(encoder: Any, raw: bytes) -> Optional[list[Any]]:
    try:
        encoded = encoder(msgspec.Raw(raw))
    except msgspec.MsgspecError:
        return None
    return None if encoded is None else list(orjson.loads(encoded).items())


def general_item(general: Any, data: Any) -> Optional[list[Any]]:
    """The general mapper's one valid item, or None (rejected; or the record is not strict JSON)."""
    try:
        items = general(data)
        (item,) = items
        if isinstance(item, Invalid):
            return None
        return list(orjson.loads(orjson.dumps(item)).items())  # as sent: what orjson can encode
    except (ValueError, TypeError):
        return None


@pytest.mark.parametrize("endpoint, mappings, records", SETTINGS)
def test_the_typed_path_makes_the_general_item_or_passes(endpoint, mappings, records):
    encoder, general = typed_and_general(endpoint, mappings)
    handled = 0
    for data in records():
        for _ in range(2):  # memos cold, then warm
            got = typed_item(encoder, orjson.dumps(data))
            if got is not None:
                handled += 1
                assert got == general_item(general, dict(data)), data
    assert handled, "the typed path handles the common record (else it would only cost time)"


RAW_METRICS = [
    (b'{"dimensionId":"logins","value":123456789012345678901234567890,"externalId":"c"}', "an integer past 64 bits"),
    (b'{"dimensionId":"logins","value":9223372036854775808,"externalId":"c"}', "just past a signed 64-bit integer"),
    (b'{"dimensionId":"logins","value":1e400,"externalId":"c"}', "a number out of range"),
    (b'{"dimensionId":"logins","value":1,"externalId":"\\ud800"}', "a lone surrogate"),
    (b'{"dimensionId":"logins","value":1,"externalId":"c\xff"}', "bytes that are not UTF-8 in a field sent"),
    (b'{"dimensionId":"logins","value":1,"externalId":"c","other":"\xff"}', "...and in a column not sent"),
    (b'{"dimensionId":"logins","value":1,"externalId":"a","externalId":"b"}', "a repeated key"),
    (
        b'{"dimensionId":"logins","value":-0.0,"externalId":"c","date":"2026-11-01T10:00:00Z"}',
        "minus zero, a date-time",
    ),
    (b'{"dimensionId":"logins\\n","value":1,"externalId":"c"}', "a dimensionId with a newline at its end"),
    (b'{"dimensionId":"logins","value":1E2,"externalId":"c","model":"EndUser"}', "an exponent"),
    (b"[1]", "not an object"),
]


@pytest.mark.parametrize("raw, what", RAW_METRICS)
def test_lines_only_json_text_can_hold(raw, what):
    encoder, general = typed_and_general(METRICS, [])
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = parse_leniently(raw)  # not strict JSON: read leniently, as the general path reads such a line
    got = typed_item(encoder, raw)
    if got is not None:
        assert got == general_item(general, data), what


def test_a_record_the_source_changed_is_left_to_the_general_path_which_counts_it():
    plan = {
        "streams": [
            (
                0,
                None,
                "s",
                "metrics",
                [
                    ["dimensionId", "dimensionId", "dimension_id"],
                    ["value", "value", "number"],
                    ["externalId", "externalId", "string"],
                ],
                {},
            )
        ],
        "max_part_bytes": 10_000,
    }
    line = b'{"type":"RECORD","record":{"stream":"s","data":{"dimensionId":"d","value":1,"externalId":"c"},"meta":{"changes":[{"field":"x"}]}}}'
    plain = line.replace(b',"meta":{"changes":[{"field":"x"}]}', b',"meta":{"changes":[]}')
    segments = Decoder(plan).decode(line + b"\n" + plain)
    assert [s[0] for s in segments] == [1, FAST] and segments[0][2] == [line]
