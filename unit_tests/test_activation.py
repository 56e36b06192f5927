"""Streams mapped in the Airbyte UI (destination_object_name), as tables: how they combine with the
`streams` setting, which key they upsert on, and what their records become."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.mapping.routing import route_streams
from destination_planhat.planhat.api import Endpoint, MatchOn, Operation
from destination_planhat.testing.builders import METRIC_SCHEMA, catalog, config, mapper_of, object_mapper_of


def mapped(
    name: str, object_name: str, fields: list[str], mode: str, primary_key: Optional[list[list[str]]] = None
) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "stream": {
            "name": name,
            "supported_sync_modes": ["full_refresh"],
            "json_schema": {"type": "object", "properties": {f: {"type": "string"} for f in fields}},
        },
        "sync_mode": "full_refresh",
        "destination_sync_mode": mode,
        "destination_object_name": object_name,
    }
    if primary_key is not None:
        stream["primary_key"] = primary_key
    return stream


def route_of(stream: dict[str, Any], streams: Optional[list[dict[str, Any]]] = None):
    return route_streams(config(api_base_url="http://127.0.0.1:9", streams=streams or []), catalog(stream))[
        (None, stream["stream"]["name"])
    ]


@pytest.mark.parametrize(
    "object_name, primary_key, match_on",
    [
        ("companies", [["externalId"]], MatchOn.EXTERNAL_ID),
        ("companies", [["sourceId"]], MatchOn.SOURCE_ID),
        ("companies", [["_id"]], MatchOn.PLANHAT_ID),
        ("invoices", [["extId"]], MatchOn.EXTERNAL_ID),  # invoices' externalId is the item field extId
        ("nps", [["sourceId"]], MatchOn.SOURCE_ID),
    ],
)
def test_update_matches_on_the_primary_key(object_name: str, primary_key: list[list[str]], match_on: MatchOn) -> None:
    route = route_of(mapped("s", object_name, [primary_key[0][0]], "update", primary_key))
    assert route.endpoint is Endpoint(object_name)
    assert route.settings is not None and route.settings.effective_match_on is match_on


@pytest.mark.parametrize(
    "mode, primary_key, operation, match_on",
    [
        ("append_dedup", [["externalId"]], Operation.UPSERT, MatchOn.EXTERNAL_ID),
        ("update", [["sourceId"]], Operation.UPDATE, MatchOn.SOURCE_ID),
        ("append", None, Operation.INSERT, MatchOn.EXTERNAL_ID),  # no key: the default key is checked
        ("append", [["sourceId"]], Operation.INSERT, MatchOn.SOURCE_ID),
        ("soft_delete", [["externalId"]], Operation.DELETE, MatchOn.EXTERNAL_ID),
    ],
)
def test_each_offered_sync_mode_is_an_operation(
    mode: str, primary_key: Optional[list[list[str]]], operation: Operation, match_on: MatchOn
) -> None:
    route = route_of(mapped("s", "companies", ["externalId", "sourceId", "name"], mode, primary_key))
    assert route.settings is not None
    assert route.settings.effective_operation is operation
    assert route.settings.effective_match_on is match_on


def test_destination_object_name_wins_over_the_schema_rules() -> None:
    # A schema with every metric field still goes where the UI mapped it.
    stream = mapped("s", "user_activities", list(METRIC_SCHEMA["properties"]) + ["email"], "append")
    assert route_of(stream).endpoint is Endpoint.USER_ACTIVITIES


def test_a_streams_entry_of_the_same_endpoint_adds_its_settings() -> None:
    stream = mapped("accounts", "companies", ["externalId", "name", "custom.Tier", "plan"], "update", [["externalId"]])
    entry = {
        "name": "accounts",
        "endpoint": "companies",
        "unmapped_columns": "custom",
        "field_mappings": [{"planhat_field": "custom.Plan", "source_field": "plan"}],
    }
    route = route_of(stream, [entry])
    assert route.settings is not None
    assert [(m.planhat_field, m.source_field) for m in route.settings.field_mappings] == [
        ("custom.Plan", "plan"),
        ("custom.Tier", "custom.Tier"),
    ]
    item, key = object_mapper_of(route)({"externalId": "a", "name": "A", "custom.Tier": "gold", "plan": "pro", "x": 1})
    assert item == {"externalId": "a", "name": "A", "custom": {"Plan": "pro", "Tier": "gold", "x": 1}}
    assert key == ("a",)


def test_records_carry_planhat_names_so_they_map_to_themselves() -> None:
    stream = mapped(
        "contacts", "endusers", ["externalId", "email", "companyExternalId", "custom.Beta."], "update", [["externalId"]]
    )
    item, _ = object_mapper_of(route_of(stream))(
        {"externalId": "u1", "email": "a@b.example", "companyExternalId": "acme", "custom.Beta.": True, "other": 1}
    )
    # a custom field's name may end in a dot: it is one column, not a path
    assert item == {"externalId": "u1", "email": "a@b.example", "companyId": "extid-acme", "custom": {"Beta.": True}}
    metric = route_of(mapped("m", "metrics", ["dimensionId", "value", "externalId"], "append"))
    assert metric.settings is None
    assert mapper_of(metric)({"dimensionId": "logins", "value": "3", "externalId": 42}) == (
        {"dimensionId": "logins", "value": 3, "externalId": "42"},
    )


@pytest.mark.parametrize(
    "stream, streams, expected",
    [
        (
            mapped("s", "users", ["x"], "update", [["x"]]),
            [],
            "'users' is not a Planhat target of this connector; choose one of metrics, user_activities, companies",
        ),
        (
            mapped("s", "metrics", ["value"], "update"),
            [],
            "the sync mode 'update' does not fit Metrics, which is offered with 'append';",
        ),
        (
            mapped("s", "companies", ["name"], "overwrite", [["externalId"]]),
            [],
            "the sync mode 'overwrite' does not fit Companies, which is offered with 'append_dedup' or 'update' or "
            "'append' or 'soft_delete'",
        ),
        (mapped("s", "companies", ["name"], "soft_delete"), [], "soft_delete needs a primary key"),
        (
            mapped("s", "companies", ["externalId"], "update", [["externalId"]]),
            [{"name": "s", "endpoint": "companies", "operation": "delete"}],
            "its `streams` entry says operation 'delete', but the sync mode 'update' means 'update'",
        ),
        (mapped("s", "companies", ["name"], "update"), [], "update needs a primary key"),
        (
            mapped("s", "companies", ["a", "b"], "update", [["externalId"], ["sourceId"]]),
            [],
            "is not a matching key of Companies",
        ),
        (
            mapped("s", "issues", ["externalId"], "update", [["externalId"]]),
            [],
            "choose one of ['sourceId'] or ['_id']",
        ),
        (
            mapped("s", "companies", ["externalId"], "update", [["externalId"]]),
            [{"name": "s", "endpoint": "endusers"}],
            "its `streams` entry 's' sends it to endusers; remove that entry, or set its endpoint to companies",
        ),
        (
            mapped("s", "companies", ["externalId"], "update", [["externalId"]]),
            [{"name": "s", "endpoint": "companies", "match_on": "sourceId"}],
            "match_on 'sourceId', but the primary key says 'externalId'",
        ),
    ],
    ids=[
        "unknown",
        "metrics-update",
        "object-overwrite",
        "delete-no-key",
        "operation-differs",
        "no-key",
        "composite-key",
        "not-a-keyable",
        "other-endpoint",
        "match-on",
    ],
)
def test_streams_that_do_not_fit_are_config_errors_naming_them(
    stream: dict[str, Any], streams: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(AirbyteTracedException) as raised:
        route_of(stream, streams)
    assert raised.value.failure_type.value == "config_error"
    assert "stream 's' (destination_object_name" in raised.value.message
    assert expected in raised.value.message


def test_data_activation_streams_still_need_their_credentials() -> None:
    stream = mapped("m", "metrics", ["dimensionId", "value", "externalId"], "append")
    with pytest.raises(AirbyteTracedException) as raised:
        route_streams(config(api_token=None), catalog(stream))
    assert "stream 'm' goes to Metrics (destination_object_name 'metrics'" in raised.value.message
    assert "fill in `api_token`" in raised.value.message


def test_a_renamed_column_the_platform_left_without_a_schema_is_still_mapped() -> None:
    # DestinationCatalogGenerator copies the schema of an array/object column by its *new* name from the
    # source schema, which has only the old one: the property is there, its schema null.
    stream = mapped("a", "companies", ["externalId", "custom.Regions"], "update", [["externalId"]])
    stream["stream"]["json_schema"]["properties"]["custom.Regions"] = None
    item, _ = object_mapper_of(route_of(stream))({"externalId": "x", "custom.Regions": ["EU", "US"]})
    assert item == {"externalId": "x", "custom": {"Regions": ["EU", "US"]}}
