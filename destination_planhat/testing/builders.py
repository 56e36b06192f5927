"""Small builders shared by the unit tests: configs, catalogs and routes as the connector sees them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer

from destination_planhat.config import PlanhatConfig, parse_config
from destination_planhat.mapping.analytics import Mapper, MappingPlan, build_mapper
from destination_planhat.mapping.objects import ObjectMapper, ObjectPlan, build_object_mapper
from destination_planhat.mapping.routing import StreamRoute, route_streams
from destination_planhat.testing.harness import METRIC_SCHEMA, configured_stream

TENANT = "unit-tenant-0001"
API_TOKEN = "unit-api-token-secret"

ACTIVITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"email": {"type": "string"}, "action": {"type": "string"}, "count": {"type": "number"}},
}
UNROUTABLE_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"id": {"type": "integer"}}}


def config(**overrides: Any) -> PlanhatConfig:
    raw: dict[str, Any] = {"tenant_uuid": TENANT, "api_token": API_TOKEN, "analytics_base_url": "http://127.0.0.1:9"}
    raw.update(overrides)
    return parse_config({k: v for k, v in raw.items() if v is not None})


def catalog(*streams: dict[str, Any]):
    return ConfiguredAirbyteCatalogSerializer.load({"streams": list(streams)})


# Streams "m" (Metrics), "u" (User Activities) and "p" (Metrics unpivoted from two columns): a mix of
# records that are one item and records that are several.
PIVOT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"company": {"type": "string"}, "mrr": {}, "seats": {}}}
MIXED_STREAMS: list[dict[str, Any]] = [
    {
        "name": "p",
        "endpoint": "metrics",
        "unpivot_columns": ["mrr", "seats"],
        "field_mappings": [{"planhat_field": "externalId", "source_field": "company"}],
    },
]
MIXED_CATALOG = catalog(
    configured_stream("m", METRIC_SCHEMA), configured_stream("u", ACTIVITY_SCHEMA), configured_stream("p", PIVOT_SCHEMA)
)


def route(name: str = "s", schema: Mapping[str, Any] = METRIC_SCHEMA, **config_overrides: Any) -> StreamRoute:
    routes = route_streams(config(**config_overrides), catalog(configured_stream(name, schema)))
    return routes[(None, name)]


def mapper_of(route: StreamRoute) -> Mapper:
    """The mapper the writer builds for an analytics stream, from the plan routing compiled."""
    assert isinstance(route.plan, MappingPlan), route.endpoint
    return build_mapper(route.plan)


def object_mapper_of(route: StreamRoute) -> ObjectMapper:
    """The mapper the writer builds for an object stream, from the plan routing compiled."""
    assert isinstance(route.plan, ObjectPlan), route.endpoint
    return build_object_mapper(route.plan)


def legacy_state(cursor: Any) -> dict[str, Any]:
    return {"type": "STATE", "state": {"type": "LEGACY", "data": {"cursor": cursor}}}


def state_cursor(message: dict[str, Any]) -> Any:
    state = message["state"]
    if "stream" in state:
        return state["stream"]["stream_state"]["cursor"]
    if "global" in state:
        return state["global"]["shared_state"]["cursor"]
    return state["data"]["cursor"]


def state_counts(message: dict[str, Any]) -> tuple[float, float]:
    """(recordCount, rejectedRecordCount) of an emitted state."""
    stats = message["state"]["destinationStats"]
    return stats["recordCount"], stats["rejectedRecordCount"]
