"""The decode step's fast tries give exactly what the general mapper gives, for any record.

The Decoder (reading/decoder.py) maps the common record itself, first with msgspec's typed encoder,
then with orjson and the general mapper, and hands every other record back to the general path. These
tables feed the Decoder (with and without its typed try) and the general mapper the same records,
ordinary and odd, with the memos cold and then warm, and compare the results field by field and in
order: what a record becomes never depends on which way it went.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from destination_planhat.config import StreamSettings
from destination_planhat.mapping.analytics import Invalid, MappingPlan, build_mapper, compile_mapping, fast_plan
from destination_planhat.planhat.api import Endpoint
from destination_planhat.reading.decoder import FAST, Decoder
from destination_planhat.testing.odd_records import activity_records, fresh, metric_records

METRICS = Endpoint.METRICS
ACTIVITIES = Endpoint.USER_ACTIVITIES


def compiled(endpoint: Endpoint, settings: Any, schema: Any) -> MappingPlan:
    """A stream's plan as routing compiles it (these settings have nothing to fix)."""
    plan, problems = compile_mapping("s", endpoint, settings, schema)
    assert problems == []
    return plan


def paths(endpoint: Endpoint, mappings: list[dict[str, str]], typed: bool = True) -> tuple[Any, Any]:
    """(the Decoder's way, the general mapper) for one stream: the Decoder's way gives its item where
    it makes one, else what the general path makes of the record (the line is handed back)."""
    settings = StreamSettings(name="s", endpoint=endpoint, field_mappings=mappings) if mappings else None
    plan = compiled(endpoint, settings, None)
    fast_ = fast_plan(plan)
    assert fast_ is not None
    endpoint_, fields, constants = fast_
    decoder = Decoder(
        {
            "streams": [(0, None, "s", endpoint_.value, [(f, k, kind.value) for f, k, kind in fields], constants)],
            "max_part_bytes": 1 << 20,
        },
        typed=typed,
    )
    general = build_mapper(plan)

    def fast(data: Any) -> Any:
        line = json.dumps({"type": "RECORD", "record": {"stream": "s", "data": data}}).encode()  # NaN stays NaN
        [segment] = decoder.decode(line)
        if segment[0] == FAST:
            return [orjson.loads(bytes(segment[2][:-1]))]
        return general(data)

    return fast, general


def comparable(results: Any) -> list[Any]:
    """Items with their field order (it decides the JSON sent); Invalid as its reason, example and item."""
    return [
        ("invalid", r.reason, r.example, list(r.item.items())) if isinstance(r, Invalid) else list(r.items())
        for r in results
    ]


@pytest.mark.parametrize(
    "endpoint, mappings, records",
    [
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
                {"user_id": None, "at": "2026-11-01"},
                {"user_id": "u", "at": "yesterday"},
                {"at": "2026-11-01"},
            ],
            id="metrics with constants and renamed columns",
        ),
        pytest.param(
            ACTIVITIES,
            [{"planhat_field": "euExtId", "source_field": "id"}, {"planhat_field": "action", "constant": "signed_up"}],
            lambda: [{"id": 5}, {"id": "u5", "email": "x@example.com"}, {"id": None}, {"id": {"no": 1}}],
            id="user activities with a constant and a renamed column",
        ),
    ],
)
@pytest.mark.parametrize("typed", [True, False], ids=["with msgspec's typed try", "orjson and the general mapper"])
def test_the_fast_path_maps_every_record_as_the_general_mapper_does(endpoint, mappings, records, typed):
    fast, general = paths(endpoint, mappings, typed)
    for data in records():
        for _ in range(2):  # memos cold on the first pass for fresh values, warm on the second
            assert comparable(fast(dict(data))) == comparable(general(dict(data))), data


def test_a_stream_with_a_dot_path_has_no_plan_for_workers_and_is_mapped_by_the_general_mapper():
    nested = StreamSettings(
        name="s", endpoint=METRICS, field_mappings=[{"planhat_field": "externalId", "source_field": "a.b"}]
    )
    dotted = compiled(METRICS, nested, {})
    assert fast_plan(dotted) is None
    assert comparable(build_mapper(dotted)({"dimensionId": "d", "value": 1, "a": {"b": 7}})) == [
        [("dimensionId", "d"), ("value", 1), ("externalId", "7")]
    ]


def test_names_from_the_settings_never_become_code():
    hostile = "x'); raise SystemExit(3) #\n\"])\nraise SystemExit(4)"  # no dot: a column name, not a path
    fast, general = paths(METRICS, [{"planhat_field": "externalId", "source_field": hostile}])
    data = {"dimensionId": "logins", "value": 1, hostile: "c1"}
    assert (
        comparable(fast(data))
        == comparable(general(data))
        == [[("dimensionId", "logins"), ("value", 1), ("externalId", "c1")]]
    )
