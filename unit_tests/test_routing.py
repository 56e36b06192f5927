"""Routing, as a table: a configured stream -> its Planhat endpoint, or one config error naming every stream to fix."""

from __future__ import annotations

from typing import Any

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.mapping.routing import route_streams
from destination_planhat.planhat.api import Endpoint
from destination_planhat.testing.builders import (
    ACTIVITY_SCHEMA,
    METRIC_SCHEMA,
    UNROUTABLE_SCHEMA,
    catalog,
    config,
    configured_stream,
)

M, U = Endpoint.METRICS, Endpoint.USER_ACTIVITIES


def schema(*fields: str) -> dict[str, Any]:
    return {"type": "object", "properties": {f: {"type": "string"} for f in fields}}


@pytest.mark.parametrize(
    "json_schema, overrides, namespace, expected",
    [
        # By schema.
        (schema("dimensionId", "value", "externalId"), [], None, M),
        (METRIC_SCHEMA, [], None, M),
        (schema("email"), [], None, U),
        (schema("euExtId"), [], None, U),
        (schema("email", "euExtId", "action"), [], None, U),
        # All three metric fields beat an end-user field.
        (schema("dimensionId", "value", "externalId", "email"), [], None, M),
        # Two metric fields of three are not a metric; an identity field then decides.
        (schema("dimensionId", "value", "email"), [], None, U),
        # An entry in `streams` wins over the schema, in both directions.
        (METRIC_SCHEMA, [{"name": "s", "endpoint": "user_activities"}], None, U),
        (ACTIVITY_SCHEMA, [{"name": "s", "endpoint": "metrics"}], None, M),
        (UNROUTABLE_SCHEMA, [{"name": "s", "endpoint": "metrics"}], None, M),
        (UNROUTABLE_SCHEMA, [{"name": "s", "endpoint": "user_activities"}], "ns", U),
        # An entry without a namespace matches the stream in any namespace.
        (UNROUTABLE_SCHEMA, [{"name": "s", "endpoint": "metrics"}], "ns", M),
        # An entry naming the namespace beats one that does not, whatever their order.
        (
            UNROUTABLE_SCHEMA,
            [{"name": "s", "endpoint": "metrics"}, {"name": "s", "namespace": "ns", "endpoint": "user_activities"}],
            "ns",
            U,
        ),
        (
            UNROUTABLE_SCHEMA,
            [{"name": "s", "namespace": "ns", "endpoint": "user_activities"}, {"name": "s", "endpoint": "metrics"}],
            "ns",
            U,
        ),
        # An entry for another namespace does not apply; the schema decides.
        (METRIC_SCHEMA, [{"name": "s", "namespace": "other", "endpoint": "user_activities"}], "ns", M),
        # An entry for another stream name does not apply.
        (ACTIVITY_SCHEMA, [{"name": "t", "endpoint": "metrics"}], None, U),
    ],
)
def test_route(json_schema, overrides, namespace, expected):
    routes = route_streams(config(streams=overrides), catalog(configured_stream("s", json_schema, namespace)))
    assert {key: r.endpoint for key, r in routes.items()} == {(namespace, "s"): expected}
    assert routes[(namespace, "s")].why, "the log must be able to say why a stream went where it went"


def test_every_stream_of_the_catalog_is_routed():
    routes = route_streams(
        config(),
        catalog(
            configured_stream("a", METRIC_SCHEMA),
            configured_stream("b", ACTIVITY_SCHEMA),
            configured_stream("a", ACTIVITY_SCHEMA, namespace="n"),
        ),
    )
    assert {key: r.endpoint for key, r in routes.items()} == {(None, "a"): M, (None, "b"): U, ("n", "a"): U}


def test_an_empty_catalog_routes_nothing():
    assert route_streams(config(), catalog()) == {}


@pytest.mark.parametrize(
    "streams, config_overrides, named, fixes",
    [
        ([configured_stream("plain", UNROUTABLE_SCHEMA)], {}, ["'plain'"], ["`streams`"]),
        ([configured_stream("empty", {})], {}, ["'empty'"], ["`streams`"]),
        ([configured_stream("plain", UNROUTABLE_SCHEMA, namespace="ns")], {}, ["'ns.plain'"], ["`streams`"]),
        ([configured_stream("m", METRIC_SCHEMA)], {"api_token": None}, ["'m'"], ["`api_token`"]),
        ([configured_stream("m", METRIC_SCHEMA)], {"api_token": "  "}, ["'m'"], ["`api_token`"]),
        (
            [configured_stream("u", ACTIVITY_SCHEMA, destination_sync_mode="overwrite")],
            {},
            ["'u'", "overwrite"],
            ["append"],
        ),
        (
            [
                configured_stream("ok", ACTIVITY_SCHEMA),
                configured_stream("plain", UNROUTABLE_SCHEMA),
                configured_stream("m", METRIC_SCHEMA),
                configured_stream("forced", ACTIVITY_SCHEMA),
                configured_stream("dedup", METRIC_SCHEMA, destination_sync_mode="append_dedup"),
            ],
            {"api_token": None, "streams": [{"name": "forced", "endpoint": "metrics"}]},
            ["'plain'", "'m'", "'forced'", "'dedup'"],
            ["`streams`", "`api_token`", "append"],
        ),
    ],
)
def test_unroutable_streams_fail_together_in_one_config_error(streams, config_overrides, named, fixes):
    with pytest.raises(AirbyteTracedException) as raised:
        route_streams(config(**config_overrides), catalog(*streams))
    error = raised.value
    assert error.failure_type == FailureType.config_error
    for text in named + fixes:
        assert text in error.message
    assert "'ok'" not in error.message


def test_user_activities_alone_need_no_api_token():
    routes = route_streams(config(api_token=None), catalog(configured_stream("u", ACTIVITY_SCHEMA)))
    assert routes[(None, "u")].endpoint is U


@pytest.mark.parametrize("mode", ["append_dedup", "overwrite", "update", "soft_delete"])
def test_modes_other_than_append_are_refused_with_the_fix_for_the_ui_and_pyairbyte(mode):
    # PyAirbyte's default strategy asks for append_dedup on streams with a primary key: the error says
    # how to ask for append instead, since Planhat cannot deduplicate (re-sent rows inflate totals).
    with pytest.raises(AirbyteTracedException) as raised:
        route_streams(config(), catalog(configured_stream("u", ACTIVITY_SCHEMA, destination_sync_mode=mode)))
    assert raised.value.failure_type == FailureType.config_error
    for text in ("'u'", f"'{mode}'", "choose 'append'", "write_strategy='append'"):
        assert text in raised.value.message
