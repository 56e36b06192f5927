"""Mapping, unpivot and local validation, as tables of record -> items (or the reason it is rejected)."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from destination_planhat.config import StreamSettings
from destination_planhat.mapping.analytics import Invalid, MappingPlan, build_mapper, compile_mapping
from destination_planhat.mapping.value_checks import to_date, to_number
from destination_planhat.planhat.api import DIMENSION_ID_PATTERN, Endpoint

METRICS = Endpoint.METRICS
ACTIVITIES = Endpoint.USER_ACTIVITIES


def compiled(
    endpoint: Endpoint, mappings: Any = (), unpivot: Any = (), schema: Optional[dict] = None, name: str = "s"
) -> MappingPlan:
    """A stream's plan as routing compiles it (these settings have nothing to fix)."""
    settings = StreamSettings(
        name=name, endpoint=endpoint, field_mappings=list(mappings), unpivot_columns=list(unpivot)
    )
    plan, problems = compile_mapping(name, endpoint, settings, schema or {})
    assert problems == []
    return plan


def problems_of(label: str, endpoint: Endpoint, settings: StreamSettings, schema: Optional[dict]) -> list[str]:
    return compile_mapping(label, endpoint, settings, schema)[1]


def src(planhat_field: str, source_field: str) -> dict:
    return {"planhat_field": planhat_field, "source_field": source_field}


def const(planhat_field: str, constant: str) -> dict:
    return {"planhat_field": planhat_field, "constant": constant}


def outcome(results: Any) -> list:
    """Items as dicts; invalid ones as ('invalid', reason)."""
    return [("invalid", r.reason) if isinstance(r, Invalid) else r for r in results]


# ----- mapping ---------------------------------------------------------------------------------

MAPPING_CASES = [
    pytest.param(
        METRICS,
        [],
        {"dimensionId": "logins", "value": 3, "externalId": "c1", "extra": "x", "_ab_id": 1},
        {"dimensionId": "logins", "value": 3, "externalId": "c1"},
        id="unmapped fields come from same-named columns; other columns are not sent",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "account.id"), src("value", "n")],
        {"dimensionId": "d", "n": 2, "account": {"id": "a9"}},
        {"dimensionId": "d", "value": 2, "externalId": "a9"},
        id="dot path into a nested object",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "account.id")],
        {"dimensionId": "d", "value": 1, "account": "flat"},
        ("invalid", "externalId is missing"),
        id="dot path through a non-object finds nothing",
    ),
    pytest.param(
        METRICS,
        [
            const("dimensionId", "purchases"),
            const("value", "1"),
            src("externalId", "user_id"),
            const("model", "EndUser"),
        ],
        {"user_id": 42},
        {"dimensionId": "purchases", "value": 1, "externalId": "42", "model": "EndUser"},
        id="constants converted to the field's type; integer externalId becomes a string",
    ),
    pytest.param(
        METRICS,
        [const("value", "2.5")],
        {"dimensionId": "d", "externalId": "e"},
        {"dimensionId": "d", "value": 2.5, "externalId": "e"},
        id="decimal constant",
    ),
    pytest.param(
        ACTIVITIES,
        [src("email", "mail"), const("action", "signed_up"), src("date", "created_at")],
        {"mail": "a@b.co", "created_at": "2001-05-23T04:29:23+00:00", "name": "Ann", "weight": 70},
        {"email": "a@b.co", "action": "signed_up", "date": "2001-05-23T04:29:23.000Z", "name": "Ann", "weight": 70},
        id="activity: mapped, constant, date normalized, same-named name/weight defaulted",
    ),
    pytest.param(
        ACTIVITIES,
        [src("email", "mail"), const("weight", ""), const("name", "")],
        {"mail": "a@b.co", "name": "Ann", "weight": 70},
        {"email": "a@b.co"},
        id="an empty constant leaves a same-named column out",
    ),
    pytest.param(
        ACTIVITIES,
        [src("euExtId", "user_id"), const("count", "3"), const("info", '{"plan": "pro"}')],
        {"user_id": 7},
        {"euExtId": "7", "count": 3, "info": {"plan": "pro"}},
        id="euExtId from a number, count and info constants",
    ),
    pytest.param(
        ACTIVITIES,
        [],
        {"email": "a@b.co", "action": None, "count": None},
        {"email": "a@b.co"},
        id="nulls are left out",
    ),
]


@pytest.mark.parametrize("endpoint, mappings, record, expected", MAPPING_CASES)
def test_mapping(endpoint, mappings, record, expected):
    result = outcome(build_mapper(compiled(endpoint, mappings))(record))
    assert result == [expected]


def test_a_literal_column_with_dots_declared_in_the_schema_is_one_key():
    schema = {"properties": {"account.id": {"type": "string"}, "dimensionId": {}, "value": {}}}
    mapper = build_mapper(compiled(METRICS, [src("externalId", "account.id")], schema=schema))
    assert outcome(mapper({"dimensionId": "d", "value": 1, "account.id": "lit"})) == [
        {"dimensionId": "d", "value": 1, "externalId": "lit"}
    ]


# ----- validation ------------------------------------------------------------------------------

BASE_METRIC = {"dimensionId": "logins", "value": 1, "externalId": "c1"}

METRIC_VALIDATION = [
    ({}, None, None),
    ({"value": "12"}, "value", 12),
    ({"value": " -1.5 "}, "value", -1.5),
    ({"value": "2e3"}, "value", 2000.0),
    ({"value": 1.25}, "value", 1.25),
    ({"value": "abc"}, "invalid", "value is not a number"),
    ({"value": True}, "invalid", "value is not a number"),
    ({"value": "1_000"}, "invalid", "value is not a number"),
    ({"value": "1e999"}, "invalid", "value is not a number"),
    ({"value": None}, "invalid", "value is missing"),
    ({"externalId": 42}, "externalId", "42"),
    ({"externalId": 42.0}, "externalId", "42"),
    ({"externalId": ""}, "invalid", "externalId is missing"),
    ({"externalId": None}, "invalid", "externalId is missing"),
    ({"externalId": {"id": 1}}, "invalid", "externalId is not a string"),
    ({"dimensionId": "mrr.eur_v-2"}, "dimensionId", "mrr.eur_v-2"),
    (
        {"dimensionId": "has space"},
        "invalid",
        "dimensionId is not a text of letters A-Z and a-z, digits 0-9, underscore (_), dash (-) and dot (.) only",
    ),
    (
        {"dimensionId": "é"},
        "invalid",
        "dimensionId is not a text of letters A-Z and a-z, digits 0-9, underscore (_), dash (-) and dot (.) only",
    ),
    ({"dimensionId": None}, "invalid", "dimensionId is missing"),
    ({"model": "EndUser"}, "model", "EndUser"),
    ({"model": "enduser"}, "invalid", "model is not one of Company, EndUser, Asset, Project"),
    ({"date": "2026-11-01"}, "date", "2026-11-01"),
    ({"date": "2026-11-01T10:30:00+02:00"}, "date", "2026-11-01T08:30:00.000Z"),
    ({"date": "2026-11-01T10:30:00.123456Z"}, "date", "2026-11-01T10:30:00.123Z"),
    ({"date": "2026-11-01 10:30:00"}, "date", "2026-11-01T10:30:00.000Z"),
    ({"date": "2026-11-01T23:30:00-05:00"}, "date", "2026-11-02T04:30:00.000Z"),
    ({"date": "2026-02-30"}, "invalid", "date is not an ISO 8601 date or date-time"),
    ({"date": "2026-02-30T10:00:00Z"}, "invalid", "date is not an ISO 8601 date or date-time"),
    ({"date": "yesterday"}, "invalid", "date is not an ISO 8601 date or date-time"),
    ({"date": 1795600000}, "invalid", "date is not an ISO 8601 date or date-time"),
]


@pytest.mark.parametrize("change, field, expected", METRIC_VALIDATION)
def test_metric_validation(change, field, expected):
    record = {**BASE_METRIC, **change}
    [result] = outcome(build_mapper(compiled(METRICS))(record))
    if field is None:
        assert result == BASE_METRIC
    elif field == "invalid":
        assert result == ("invalid", expected)
    else:
        assert result[field] == expected


ACTIVITY_VALIDATION = [
    ({"email": "a@b.co"}, None),
    ({"euExtId": 17}, None),
    ({"email": "", "euExtId": None}, "email and euExtId are both missing"),
    ({"action": "x"}, "email and euExtId are both missing"),
    ({"email": "a@b.co", "count": "x"}, "count is not a number"),
    ({"email": "a@b.co", "weight": [1]}, "weight is not a number"),
    ({"email": "a@b.co", "info": "text"}, "info is not a JSON object"),
    ({"email": "a@b.co", "date": "not a date"}, "date is not an ISO 8601 date or date-time"),
]


@pytest.mark.parametrize("record, reason", ACTIVITY_VALIDATION)
def test_activity_validation(record, reason):
    [result] = outcome(build_mapper(compiled(ACTIVITIES))(record))
    if reason is None:
        assert isinstance(result, dict)
    else:
        assert result == ("invalid", reason)


def test_an_invalid_item_carries_what_send_mode_sends():
    [result] = build_mapper(compiled(METRICS))({"dimensionId": "d", "value": "abc", "externalId": 5})
    assert isinstance(result, Invalid)
    assert result.item == {"dimensionId": "d", "value": "abc", "externalId": "5"}  # failing field as it came
    assert "value='abc'" in result.example


def test_the_sandbox_and_the_connector_allow_the_same_dimension_id_characters():
    from destination_planhat.testing.sandbox import _DIMENSION_ID_PATTERN

    assert _DIMENSION_ID_PATTERN.pattern == DIMENSION_ID_PATTERN


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7", 7),
        ("+7", 7),
        ("007", 7),
        (".5", 0.5),
        ("5.", 5.0),
        ("", None),
        ("nan", None),
        ("inf", None),
        ("0x10", None),
        ("١٢", None),
    ],
)
def test_numeric_strings(text, expected):
    result = to_number(text)
    if expected is None:
        assert not isinstance(result, (int, float)), result
    else:
        assert result == expected and type(result) is type(expected)


def test_dates_are_memoized_without_changing_answers():
    first = to_date("2026-11-01T10:30:00+02:00")
    assert to_date("2026-11-01T10:30:00+02:00") == first == "2026-11-01T08:30:00.000Z"


# ----- unpivot ---------------------------------------------------------------------------------

UNPIVOT = [src("externalId", "company"), src("date", "day")]

UNPIVOT_CASES = [
    pytest.param(
        {"company": "acme", "day": "2026-11-01", "mrr": 1200, "seats": 14},
        [
            {"externalId": "acme", "date": "2026-11-01", "dimensionId": "mrr", "value": 1200},
            {"externalId": "acme", "date": "2026-11-01", "dimensionId": "seats", "value": 14},
        ],
        id="the issue's example: one row, two metrics",
    ),
    pytest.param(
        {"company": "acme", "day": "2026-11-01", "mrr": None, "seats": "14"},
        [{"externalId": "acme", "date": "2026-11-01", "dimensionId": "seats", "value": 14}],
        id="null column produces nothing; numeric string converted",
    ),
    pytest.param({"company": "acme", "mrr": None, "seats": None}, [], id="all columns null: no item"),
    pytest.param(
        {"company": "acme", "mrr": "n/a", "seats": 3},
        [("invalid", "unpivot column mrr is not a number"), {"externalId": "acme", "dimensionId": "seats", "value": 3}],
        id="a non-numeric column is one invalid item, the others still go",
    ),
    pytest.param(
        {"mrr": 1, "seats": 2},
        [("invalid", "externalId is missing"), ("invalid", "externalId is missing")],
        id="a missing externalId makes every item of the row invalid",
    ),
]


@pytest.mark.parametrize("record, expected", UNPIVOT_CASES)
def test_unpivot(record, expected):
    mapper = build_mapper(compiled(METRICS, UNPIVOT, unpivot=["mrr", "seats"]))
    assert outcome(mapper(record)) == expected


def test_unpivot_takes_model_from_a_constant():
    mapper = build_mapper(compiled(METRICS, UNPIVOT + [const("model", "Asset")], unpivot=["mrr"]))
    assert outcome(mapper({"company": 9, "mrr": 1})) == [
        {"externalId": "9", "model": "Asset", "dimensionId": "mrr", "value": 1}
    ]


# ----- config mistakes, all listed at once -----------------------------------------------------

SCHEMA = {
    "properties": {
        "company": {"type": "string"},
        "mrr": {"type": "number"},
        "account": {"type": "object", "properties": {"id": {}}},
    }
}

PROBLEM_CASES = [
    pytest.param(METRICS, [src("revenue", "mrr")], [], "'revenue' is not a Planhat field", id="unknown Planhat field"),
    pytest.param(
        METRICS, [src("email", "company")], [], "'email' is a User Activities field", id="field of the other endpoint"
    ),
    pytest.param(
        ACTIVITIES,
        [src("dimensionId", "company")],
        [],
        "'dimensionId' is a Metrics field",
        id="metric field on activities",
    ),
    pytest.param(
        ACTIVITIES,
        [src("email", "company")],
        ["mrr"],
        "unpivot_columns only apply to Metrics",
        id="unpivot on activities",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "compny")],
        ["mrr"],
        "source_field 'compny' for 'externalId': 'compny' is not a column",
        id="source field absent",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "account.uid")],
        ["mrr"],
        "'uid' is not a column of the object 'account'",
        id="nested source field absent",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "company")],
        ["arr"],
        "unpivot column 'arr' is not a column",
        id="unpivot column absent",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "company"), const("value", "1")],
        ["mrr"],
        "'value' comes from unpivot_columns",
        id="value mapped with unpivot",
    ),
    pytest.param(
        METRICS,
        [const("value", "one"), src("externalId", "company"), const("dimensionId", "d")],
        [],
        "the constant 'one' for 'value' is not valid",
        id="bad numeric constant",
    ),
    pytest.param(
        METRICS,
        [const("model", "Customer"), src("externalId", "company")],
        ["mrr"],
        "write one of Company, EndUser",
        id="bad model constant",
    ),
    pytest.param(
        METRICS,
        [const("dimensionId", "my metric"), const("value", "1"), src("externalId", "company")],
        [],
        "use letters",
        id="bad dimensionId constant",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "company"), src("externalId", "mrr")],
        ["mrr"],
        "'externalId' is mapped twice",
        id="mapped twice",
    ),
    pytest.param(
        METRICS,
        [src("externalId", "company")],
        [],
        "'dimensionId' is required by Planhat but neither mapped nor a column",
        id="required field unsourced",
    ),
    pytest.param(
        METRICS, [const("externalId", "")], ["mrr"], "'externalId' is required by Planhat", id="required field left out"
    ),
    pytest.param(
        ACTIVITIES, [const("action", "x")], [], "User Activities need 'email' or 'euExtId'", id="no end user identity"
    ),
]


@pytest.mark.parametrize("endpoint, mappings, unpivot, message", PROBLEM_CASES)
def test_config_mistakes(endpoint, mappings, unpivot, message):
    settings = StreamSettings(name="wide", endpoint=endpoint, field_mappings=mappings, unpivot_columns=unpivot)
    problems = problems_of("wide", endpoint, settings, SCHEMA)
    assert any(message in p for p in problems), problems
    assert all(p.startswith("stream 'wide'") for p in problems)


def test_every_mistake_is_listed_at_once():
    settings = StreamSettings(
        name="wide",
        endpoint=METRICS,
        field_mappings=[src("revenue", "mrr"), src("email", "company"), src("externalId", "nope")],
        unpivot_columns=["arr"],
    )
    problems = problems_of("wide", METRICS, settings, SCHEMA)
    assert len(problems) == 4, problems


def test_without_a_schema_the_schema_checks_are_left_out():
    settings = StreamSettings(
        name="s", endpoint=METRICS, field_mappings=[src("externalId", "anything.at.all")], unpivot_columns=["x"]
    )
    assert problems_of("s", METRICS, settings, {}) == []
    assert problems_of("s", METRICS, settings, None) == []


@pytest.mark.parametrize("column", ["MRR (EUR)", "seat count"])
def test_unpivot_columns_must_be_valid_dimension_ids(column):
    settings = StreamSettings(
        name="s", endpoint=METRICS, field_mappings=[src("externalId", "c")], unpivot_columns=[column]
    )
    assert any("cannot be a dimensionId" in p for p in problems_of("s", METRICS, settings, None))
