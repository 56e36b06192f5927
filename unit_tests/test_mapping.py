"""The default mapper, as a table: record data -> the Planhat item sent for it."""

from __future__ import annotations

import pytest

from destination_planhat.testing.builders import ACTIVITY_SCHEMA, METRIC_SCHEMA, mapper_of, route

METRIC = {"dimensionId": "logins", "value": 3, "externalId": "acme", "model": "Company", "date": "2026-11-01"}
ACTIVITY = {
    "email": "ada@acme.example",
    "euExtId": "u-1",
    "action": "login",
    "count": 2,
    "companyExternalId": "acme",
    "weight": 1.5,
    "date": "2026-11-01T09:30:00Z",
    "info": {"plan": "pro"},
    "name": "Ada",
}
AIRBYTE_COLUMNS = {"_ab_cdc_updated_at": "x", "_ab_source_file_url": "y", "_airbyte_raw_id": "z"}


@pytest.mark.parametrize(
    "schema, data, expected",
    [
        # Every documented field of the endpoint is sent as is.
        (METRIC_SCHEMA, METRIC, METRIC),
        (ACTIVITY_SCHEMA, ACTIVITY, {**ACTIVITY, "date": "2026-11-01T09:30:00.000Z"}),  # date-times go in UTC, ms, Z
        # Null and absent fields are omitted, not sent as null.
        (
            METRIC_SCHEMA,
            {**METRIC, "model": None, "date": None},
            {"dimensionId": "logins", "value": 3, "externalId": "acme"},
        ),
        (
            METRIC_SCHEMA,
            {"dimensionId": "logins", "value": 3, "externalId": "acme"},
            {"dimensionId": "logins", "value": 3, "externalId": "acme"},
        ),
        (ACTIVITY_SCHEMA, {"email": "a@b.c", "action": None}, {"email": "a@b.c"}),
        # Falsy values that are not null are real values and are kept.
        (METRIC_SCHEMA, {**METRIC, "value": 0}, {**METRIC, "value": 0}),
        (
            ACTIVITY_SCHEMA,
            {"euExtId": "u", "count": 0, "action": "", "info": {}},
            {"euExtId": "u", "count": 0, "action": "", "info": {}},
        ),
        # Airbyte's own columns and unknown columns are dropped.
        (METRIC_SCHEMA, {**METRIC, **AIRBYTE_COLUMNS, "extra": 1}, METRIC),
        (
            ACTIVITY_SCHEMA,
            {**ACTIVITY, **AIRBYTE_COLUMNS, "phone": "555"},
            {**ACTIVITY, "date": "2026-11-01T09:30:00.000Z"},
        ),
        # Fields of the other endpoint are unknown columns too.
        (METRIC_SCHEMA, {**METRIC, "email": "a@b.c", "action": "x"}, METRIC),
        (ACTIVITY_SCHEMA, {"email": "a@b.c", "dimensionId": "d", "value": 1, "externalId": "e"}, {"email": "a@b.c"}),
    ],
)
def test_default_mapper(schema, data, expected):
    items = mapper_of(route("s", schema))(data)
    assert list(items) == [expected]


def test_mapper_does_not_change_the_record():
    data = {**METRIC, "_ab_cdc_deleted_at": None, "extra": [1]}
    before = dict(data)
    mapper_of(route("s", METRIC_SCHEMA))(data)
    assert data == before


def test_override_to_the_other_endpoint_maps_to_that_endpoints_fields():
    mapper = mapper_of(route("s", METRIC_SCHEMA, streams=[{"name": "s", "endpoint": "user_activities"}]))
    assert list(mapper({**METRIC, "email": "a@b.c"})) == [{"email": "a@b.c", "date": "2026-11-01"}]
