"""The Decoder's one-call typed path makes exactly what its general path (orjson + the general
mapper, `typed=False`) makes, line for line, segment for segment: the typed path is only ever
faster, never different. Plans are written out here as a worker gets them (JSON-able)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from destination_planhat.reading.decoder import FAST, ODD, TYPED_MISSES_TO_DROP, Decoder
from destination_planhat.testing.harness import record, stream_state

METRIC_FIELDS = [
    ["dimensionId", "dimensionId", "dimension_id"],
    ["value", "value", "number"],
    ["externalId", "externalId", "string"],
    ["model", "model", "model"],
    ["date", "date", "date"],
]
ACTIVITY_FIELDS = [
    ["email", "email", "string"],
    ["euExtId", "euExtId", "string"],
    ["action", "action", "string"],
    ["count", "count", "number"],
    ["companyExternalId", "companyExternalId", "string"],
    ["weight", "weight", "number"],
    ["date", "date", "date"],
    ["info", "info", "object"],
    ["name", "name", "string"],
]
METRIC_FIELDS_BUT_MODEL = [field for field in METRIC_FIELDS if field[0] != "model"]
RENAMED_ACTIVITY_FIELDS = [["euExtId", "user_id", "string"], ["count", "n", "number"], ["date", "at", "date"]]


# (As mapping.fast_plan makes them: a field with a constant has no source, and an empty constant
# leaves its field out, so it is not among the constants.)
def plan(*streams: tuple[Any, ...], max_part_bytes: int = 4096) -> dict[str, Any]:
    return {"streams": [[i, *stream] for i, stream in enumerate(streams)], "max_part_bytes": max_part_bytes}


PLANS = {
    "metrics and activities": plan(
        [None, "m", "metrics", METRIC_FIELDS, {}], [None, "u", "user_activities", ACTIVITY_FIELDS, {}]
    ),
    "one name in two namespaces": plan(
        [None, "m", "metrics", METRIC_FIELDS, {}], ["ns", "m", "metrics", METRIC_FIELDS_BUT_MODEL, {"model": "EndUser"}]
    ),
    "a namespaced stream": plan(["ns", "m", "metrics", METRIC_FIELDS, {}]),
    "renamed columns and constants": plan([None, "u", "user_activities", RENAMED_ACTIVITY_FIELDS, {"action": "seen"}]),
    "metrics with a constant": plan([None, "m", "metrics", METRIC_FIELDS_BUT_MODEL, {"model": "Asset"}]),
}


def metric(i: int, **changes: Any) -> dict[str, Any]:
    return {"dimensionId": "logins", "value": i, "externalId": f"c-{i}", **changes}


def activity(i: int, **changes: Any) -> dict[str, Any]:
    return {"email": f"u{i}@example.com", "action": "login", **changes}


def line(message: Any) -> bytes:
    return message if isinstance(message, bytes) else orjson.dumps(message)


LINES = [
    record("m", metric(1)),
    record("m", metric(2, model="EndUser", date="2026-11-01")),
    record("m", metric(3, date="2026-11-01T10:00:00+02:00")),  # a date-time: normalized to UTC
    record("m", metric(4, value="4.5")),  # a number as text: converted by the general mapper
    record("m", metric(5, externalId=5)),  # an id as a number: converted
    record("m", metric(6, value="x")),  # not a number: rejected by the general path
    record("m", metric(7, dimensionId="bad id")),  # characters a dimensionId may not have
    record("m", metric(8, date="yesterday")),
    record("m", metric(9), namespace="ns"),
    record("m", metric(10), namespace="elsewhere"),
    record("m", metric(11), namespace=""),
    {
        "type": "RECORD",
        "record": {
            "stream": "m",
            "data": metric(12),
            "emitted_at": 1,
            "meta": {"changes": [{"field": "x", "change": "NULLED", "reason": "SOURCE_FIELD_SIZE_LIMITATION"}]},
        },
    },
    {"type": "RECORD", "record": {"stream": "m", "data": metric(13), "emitted_at": 1, "meta": {"changes": []}}},
    record("m", metric(14, value=True)),
    record("m", metric(15, externalId="")),
    record("m", {**metric(16), "extra": {"deep": [1, 2]}}),
    record("m", metric(17, externalId="x" * 5000)),  # larger than a request may be
    record("u", activity(1)),
    record("u", activity(2, info={"plan": "pro"})),
    record("u", activity(3, email="", euExtId="e-3")),
    record("u", activity(4, email=None)),
    record("u", {"user_id": "e-5", "n": 2, "at": "2026-11-02"}),
    record("u", {"user_id": 6, "n": "2"}),
    record("u", {"user_id": "e-7", "euExtId": "not this one"}),
    record("other", metric(1)),
    stream_state("m", 1),
    b"not json",
    b'{"type":"RECORD","record":{"stream":"m","data":{"dimensionId":"a","value":NaN,"externalId":"c"}}}',
    b'{"type":"RECORD","record":{"stream":"m","data":{"dimensionId":"a","value":1,"externalId":"c\\ud800"}}}',
    b'{"type":"RECORD","record":{"stream":"m","data":{"dimensionId":"a","value":99999999999999999999,"externalId":"c"}}}',
    b'{"type":"RECORD","record":{"data":{"dimensionId":"a","value":1,"externalId":"c"},"stream":"m"}}',
    {"type": "RECORD", "record": {"stream": "m"}},
    {"type": "RECORD", "record": {"stream": ["m"], "data": metric(1)}},
    record("m", metric(18)),
]


def readable(segments: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [
        ("FAST", s[1], orjson.loads(b"[" + bytes(s[2])[:-1] + b"]"), bytes(s[2]), list(s[3]))
        if s[0] == FAST
        else ("ODD", s[1], s[2])
        for s in segments
    ]


@pytest.mark.parametrize("name", PLANS)
def test_the_typed_path_makes_what_the_general_path_makes(name):
    chunk = b"\n".join(map(line, LINES))
    typed, general = Decoder(PLANS[name]), Decoder(PLANS[name], typed=False)
    got, expected = readable(typed.decode(chunk)), readable(general.decode(chunk))
    assert got == expected
    assert any(s[0] == "FAST" for s in got) and any(s[0] == "ODD" for s in got), "the table exercises both"
    # Line by line too: each line alone as its own chunk (no neighbour to hide a leftover byte).
    for one in LINES:
        assert readable(typed.decode(line(one))) == readable(general.decode(line(one))), one


def test_a_stream_most_of_whose_records_need_converting_loses_the_typed_path_and_nothing_else_changes():
    chosen = PLANS["metrics and activities"]
    decoder, general = Decoder(chosen), Decoder(chosen, typed=False)
    assert decoder.typed_streams == {"m", "u"}
    converting = b"\n".join(line(record("m", metric(i, externalId=i))) for i in range(TYPED_MISSES_TO_DROP * 2))
    mixed = b"\n".join(line(record("m", metric(i))) + b"\n" + line(record("u", activity(i))) for i in range(300))
    for chunk in (mixed, converting, mixed, converting):
        assert readable(decoder.decode(chunk)) == readable(general.decode(chunk))
    assert decoder.typed_streams == {"u"}, "m's records were mostly converted: its typed path went"


def test_a_few_records_to_convert_keep_the_typed_path():
    chosen = PLANS["metrics and activities"]
    decoder, general = Decoder(chosen), Decoder(chosen, typed=False)
    chunk = b"\n".join(line(record("m", metric(i, externalId=i if i % 10 == 0 else f"c-{i}"))) for i in range(1000))
    for _ in range(3):
        assert readable(decoder.decode(chunk)) == readable(general.decode(chunk))
    assert decoder.typed_streams == {"m", "u"}


def test_an_item_too_large_for_a_request_leaves_no_trace_in_the_body():
    chosen = plan([None, "m", "metrics", METRIC_FIELDS, {}], max_part_bytes=200)
    small, large = record("m", metric(1)), record("m", metric(2, externalId="x" * 300))
    segments = Decoder(chosen).decode(b"\n".join([line(small), line(large), line(small)]))
    first = orjson.dumps(metric(1)) + b","
    assert [(s[0], s[1], bytes(s[2]) if s[0] == FAST else s[2]) for s in segments] == [
        (FAST, 0, first),
        (ODD, 1, [line(large)]),
        (FAST, 0, first),
    ]
