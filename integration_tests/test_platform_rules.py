"""discover's catalog against the platform's connection checks (testing/platform_rules.py), and the
connector's own routing against the same configured catalogs: what the platform accepts, the
connector writes; what the platform refuses for the object, mode or key, the connector refuses too,
naming the stream."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.config import parse_config
from destination_planhat.discover import destination_catalog
from destination_planhat.mapping.routing import route_streams
from destination_planhat.planhat.api import Operation
from destination_planhat.planhat.custom_fields import group_custom_fields
from destination_planhat.testing.platform_rules import platform_problems

CUSTOM = group_custom_fields([{"name": "Tier", "type": "text", "parent": "Company"}])
CATALOG = destination_catalog(CUSTOM)
OPERATIONS: dict[str, dict[str, Any]] = {}
for _op in CATALOG["operations"]:
    OPERATIONS.setdefault(_op["object_name"], _op)  # each object's first: append_dedup (upsert)
CONFIG = parse_config(
    {
        "tenant_uuid": "t-1",
        "api_token": "token",
        "analytics_base_url": "http://127.0.0.1:9",
        "api_base_url": "http://127.0.0.1:9",
    }
)


def mapped(op: dict[str, Any], name: str = "") -> dict[str, Any]:
    """A stream as the UI maps one onto `op`: every required field, the first matching key as the
    primary key, and (for the catalog's one custom field) a custom column; names after renaming."""
    schema = op["json_schema"]
    fields = list(schema.get("required", []))
    if not fields and "email" in schema["properties"]:
        fields = ["email"]  # User Activities: one of email / euExtId
    primary_key = None
    if op.get("matching_keys"):
        primary_key = [[part] for part in op["matching_keys"][0]]
        fields += [part for part in op["matching_keys"][0] if part not in fields]
    fields += [field for field in schema["properties"] if field.startswith("custom.")]
    stream = {
        "stream": {
            "name": name or f"src_{op['object_name']}",
            "supported_sync_modes": ["full_refresh"],
            "json_schema": {"type": "object", "properties": {f: schema["properties"][f] for f in fields}},
        },
        "sync_mode": "full_refresh",
        "destination_sync_mode": op["sync_mode"],
        "destination_object_name": op["object_name"],
    }
    if primary_key:
        stream["primary_key"] = primary_key
    return stream


def routed(configured: dict[str, Any]) -> dict[Any, Any]:
    return route_streams(CONFIG, ConfiguredAirbyteCatalogSerializer.load(configured))


def test_a_catalog_built_from_discover_passes_the_platform_and_the_connector() -> None:
    # One stream per operation: every object in each of its four sync modes, analytics in append.
    streams = [mapped(op, f"src_{op['object_name']}_{op['sync_mode']}") for op in CATALOG["operations"]]
    configured = {"streams": streams}
    assert platform_problems(configured, CATALOG) == []
    routes = routed(configured)
    assert {route.endpoint.value for route in routes.values()} == set(OPERATIONS)
    companies = routes[(None, "src_companies_append_dedup")]
    assert companies.settings is not None and companies.settings.effective_match_on.value == "externalId"
    assert [m.planhat_field for m in companies.settings.field_mappings] == ["custom.Tier"]
    operations = {}
    for (_, name), route in routes.items():
        if route.endpoint.is_object:
            assert route.settings is not None
            operations[name.rsplit("_", 1)[0] if name.endswith("_append") else name] = (
                route.settings.effective_operation
            )
    assert operations["src_companies_append_dedup"] is Operation.UPSERT
    assert operations["src_companies_update"] is Operation.UPDATE
    assert operations["src_companies"] is Operation.INSERT
    assert operations["src_companies_soft_delete"] is Operation.DELETE
    assert len(operations) == 4 * len([op for op in OPERATIONS.values() if op.get("matching_keys")])


def _unknown_object(stream: dict[str, Any]) -> None:
    stream["destination_object_name"] = "users"  # team members: not a target


def _wrong_mode(stream: dict[str, Any]) -> None:
    stream["destination_sync_mode"] = "overwrite"  # append is Insert: offered


def _wrong_key(stream: dict[str, Any]) -> None:
    stream["primary_key"] = [["name"]]


def _no_key(stream: dict[str, Any]) -> None:
    del stream["primary_key"]


def _missing_required(stream: dict[str, Any]) -> None:
    del stream["stream"]["json_schema"]["properties"]["name"]


def _unknown_field(stream: dict[str, Any]) -> None:
    stream["stream"]["json_schema"]["properties"]["colour"] = {"type": "string"}


@pytest.mark.parametrize(
    "break_it, platform_says, connector_says",
    [
        (_unknown_object, "no operation 'users' with sync mode 'append_dedup'", "'users' is not a Planhat target"),
        (
            _wrong_mode,
            "no operation 'companies' with sync mode 'overwrite'",
            "the sync mode 'overwrite' does not fit Companies",
        ),
        (_wrong_key, "primary key [['name']] is none of the matching keys", "is not a matching key of Companies"),
        (_no_key, "no primary key, but 'companies' has matching keys", "append_dedup needs a primary key"),
        # The connector upserts: an update of an existing record needs no `name`, so only the
        # platform insists on the required field; the connector writes what it is given.
        (_missing_required, "required field 'name' of 'companies' is not mapped", None),
        # The platform refuses a field the operation does not have; the connector would not send it.
        (_unknown_field, "field 'colour' is not a field of 'companies'", None),
    ],
    ids=["unknown-object", "wrong-mode", "wrong-key", "no-key", "missing-required", "unknown-field"],
)
def test_broken_streams_fail_with_the_stream_named(
    break_it: Callable[[dict[str, Any]], None], platform_says: str, connector_says: Any
) -> None:
    good = mapped(OPERATIONS["endusers"], "contacts")
    broken = mapped(OPERATIONS["companies"], "accounts")
    break_it(broken)
    configured = {"streams": [good, copy.deepcopy(broken)]}
    problems = platform_problems(configured, CATALOG)
    assert len(problems) == 1, problems
    assert problems[0].startswith("stream 'accounts': ") and platform_says in problems[0]
    if connector_says is None:
        assert set(routed(configured)) == {(None, "contacts"), (None, "accounts")}
        return
    with pytest.raises(AirbyteTracedException) as raised:
        routed(configured)
    assert "stream 'accounts' (destination_object_name" in raised.value.message
    assert connector_says in raised.value.message
    assert "contacts" not in raised.value.message


def test_every_problem_of_every_stream_is_listed() -> None:
    a = mapped(OPERATIONS["companies"], "a")
    _wrong_key(a)
    _missing_required(a)
    b = mapped(OPERATIONS["metrics"], "b")
    b["destination_sync_mode"] = "update"
    problems = platform_problems({"streams": [a, b]}, CATALOG)
    assert [p.split(":")[0] for p in problems] == ["stream 'a'", "stream 'a'", "stream 'b'"]
