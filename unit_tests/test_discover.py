"""discover's catalog, as tables: each target of planhat.TARGETS -> its operation; each Planhat custom
field type -> its JSON schema; each way the custom fields cannot be read -> the warning."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from destination_planhat.discover import destination_catalog, kind_schema, operation
from destination_planhat.planhat.api import DIMENSION_ID_PATTERN, METRIC_MODELS, TARGETS, Endpoint, FieldKind
from destination_planhat.planhat.custom_fields import custom_field_schema, group_custom_fields, read_custom_fields
from destination_planhat.planhat.errors import PlanhatAuthError, PlanhatUnavailable
from destination_planhat.testing.protocol_schema import message_errors


@pytest.mark.parametrize(
    "kind, expected",
    [
        (FieldKind.STRING, {"type": "string"}),
        (FieldKind.NUMBER, {"type": "number"}),
        (FieldKind.OBJECT, {"type": "object"}),
        (FieldKind.BOOLEAN, {"type": "boolean"}),
        (FieldKind.ARRAY, {"type": "array"}),
        (FieldKind.MODEL, {"type": "string", "enum": list(METRIC_MODELS)}),
        (FieldKind.DIMENSION_ID, {"type": "string", "pattern": f"^{DIMENSION_ID_PATTERN}$"}),
    ],
)
def test_standard_field_kinds_as_json_schema(kind: FieldKind, expected: dict[str, Any]) -> None:
    assert kind_schema(kind) == expected


def test_dates_are_strings_that_say_what_planhat_takes() -> None:
    schema = kind_schema(FieldKind.DATE)
    assert (schema["type"], schema["format"]) == ("string", "date-time")
    assert "ISO 8601 date" in schema["description"]


def test_every_field_kind_has_a_schema() -> None:
    for kind in FieldKind:
        assert kind_schema(kind)["type"] in ("string", "number", "object", "boolean", "array")


OFFERED = [(endpoint, mode) for endpoint, target in TARGETS.items() for mode in target.sync_modes]


@pytest.mark.parametrize("endpoint, mode", OFFERED, ids=[f"{e.value}-{m}" for e, m in OFFERED])
def test_each_target_is_one_operation_per_sync_mode_built_from_its_description(endpoint: Endpoint, mode: str) -> None:
    target = TARGETS[endpoint]
    op = operation(target, {}, mode)
    schema = op["json_schema"]
    assert op["object_name"] == endpoint.value
    assert op["sync_mode"] == mode
    assert set(target.fields) <= set(schema["properties"])
    aliases = {alias for reference in target.references for alias, _ in reference.aliases}
    assert aliases <= set(schema["properties"])
    standing_in = {reference.field for reference in target.references}  # an alias may stand in
    filled = set(target.defaults)  # the connector sends a default
    creates = mode in ("append", "append_dedup")  # an update or a delete needs only the key
    expected = [name for name in target.required if name not in standing_in | filled] if creates else []
    assert schema.get("required", []) == expected
    assert schema["additionalProperties"] is False
    if endpoint.is_object and mode != "append":
        assert op["matching_keys"] == [[field] for field in target.keyables.values()]
    else:
        assert "matching_keys" not in op


def test_objects_are_offered_in_four_modes_and_analytics_in_append() -> None:
    catalog = destination_catalog()
    modes: dict[str, list[str]] = {}
    for op in catalog["operations"]:
        modes.setdefault(op["object_name"], []).append(op["sync_mode"])
    for endpoint in TARGETS:
        expected = ["append_dedup", "update", "append", "soft_delete"] if endpoint.is_object else ["append"]
        assert modes[endpoint.value] == expected, endpoint
    assert "Update:" in operation(TARGETS[Endpoint.COMPANIES], {}, "update")["json_schema"]["description"]
    assert "Soft delete:" in operation(TARGETS[Endpoint.COMPANIES], {}, "soft_delete")["json_schema"]["description"]


@pytest.mark.parametrize(
    "endpoint, required, keys",
    [
        (Endpoint.METRICS, ["dimensionId", "value", "externalId"], None),
        (Endpoint.USER_ACTIVITIES, None, None),
        (Endpoint.COMPANIES, ["name"], [["externalId"], ["sourceId"], ["_id"]]),
        (Endpoint.ASSETS, ["name"], [["externalId"], ["sourceId"], ["_id"]]),  # companyId: an alias may stand in
        (Endpoint.SALES, ["_currency", "salesDate", "value"], [["externalId"], ["sourceId"], ["_id"]]),
        (Endpoint.INVOICES, ["currency"], [["extId"], ["sourceId"], ["_id"]]),  # cId: an alias may stand in
        (Endpoint.NPS, ["email", "score"], [["sourceId"], ["_id"]]),
        (Endpoint.ISSUES, ["title"], [["sourceId"], ["_id"]]),
        (Endpoint.DEALS, None, [["externalId"], ["sourceId"], ["_id"]]),  # companyId: an alias may stand in
        (Endpoint.PRODUCTS, ["name"], [["externalId"], ["sourceId"], ["_id"]]),
        (Endpoint.LINE_ITEMS, ["fromDate"], [["externalId"], ["_id"]]),  # dealId: dealExternalId may stand in
        (Endpoint.NOTES, None, [["externalId"], ["sourceId"], ["_id"]]),  # type: "note" unless mapped
        (Endpoint.TICKETS, ["sourceId", "email"], [["sourceId"], ["_id"]]),
        (Endpoint.CHURN, ["isChurn"], [["externalId"], ["_id"]]),
        (Endpoint.OBJECTIVES, ["name"], [["externalId"], ["sourceId"], ["_id"]]),
        (Endpoint.TIME_ENTRIES, ["date", "hours"], [["externalId"], ["sourceId"], ["_id"]]),
    ],
)
def test_required_fields_and_matching_keys(
    endpoint: Endpoint, required: Optional[list[str]], keys: Optional[list[list[str]]]
) -> None:
    op = operation(TARGETS[endpoint], {})
    assert op["json_schema"].get("required") == required
    assert op.get("matching_keys") == keys


def test_descriptions_say_what_json_schema_cannot() -> None:
    activities = operation(TARGETS[Endpoint.USER_ACTIVITIES], {})["json_schema"]["description"]
    assert "at least one of email or euExtId" in activities
    assets = operation(TARGETS[Endpoint.ASSETS], {})["json_schema"]
    assert "companyId is required to create a record" in assets["description"]
    assert "companyExternalId or companySourceId" in assets["description"]
    assert "extid-" in assets["properties"]["companyExternalId"]["description"]


def test_references_to_deals_and_products_are_looked_up_and_notes_say_their_default() -> None:
    items = operation(TARGETS[Endpoint.LINE_ITEMS], {})["json_schema"]
    assert {"dealExternalId", "dealSourceId", "productExternalId", "productSourceId"} <= set(items["properties"])
    assert "looks up its Planhat id" in items["properties"]["dealExternalId"]["description"]
    assert "dealExternalId or dealSourceId can stand in" in items["description"]
    assert "productExternalId" not in items["description"]  # productId is not required
    notes = operation(TARGETS[Endpoint.NOTES], {})["json_schema"]
    assert notes["properties"]["type"]["description"] == "'note' when not mapped"
    assert "as companyExternalId as it is" in notes["properties"]["companyExternalId"]["description"]
    tickets = operation(TARGETS[Endpoint.TICKETS], {})["json_schema"]
    assert "email: every record needs it, an update too" in tickets["description"]


def test_notes_and_tickets_are_offered_the_custom_fields_of_conversations() -> None:
    custom = group_custom_fields([{"name": "Topic", "type": "text", "parent": "Conversation"}])
    assert {Endpoint.CONVERSATIONS, Endpoint.NOTES, Endpoint.TICKETS} <= set(custom.by_endpoint)
    for endpoint in (Endpoint.CONVERSATIONS, Endpoint.NOTES, Endpoint.TICKETS):
        assert "custom.Topic" in custom.by_endpoint[endpoint]


def test_the_catalog_message_is_a_valid_protocol_message() -> None:
    custom = group_custom_fields([{"name": "Tier", "type": "list", "parent": "Company", "listValues": ["a", "b"]}])
    line = json.dumps({"type": "DESTINATION_CATALOG", "destination_catalog": destination_catalog(custom)})
    assert message_errors(line) == []
    broken = json.dumps({"type": "DESTINATION_CATALOG", "destination_catalog": {"operations": [{"object_name": "x"}]}})
    assert message_errors(broken) != []  # the validator does look at the operations


# ----- custom fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "definition, expected",
    [
        ({"type": "number"}, {"type": "number"}),
        ({"type": "rating"}, {"type": "number"}),
        ({"type": "text"}, {"type": "string"}),
        ({"type": "rich text"}, {"type": "string"}),
        ({"type": "phone"}, {"type": "string"}),
        ({"type": "email"}, {"type": "string"}),
        ({"type": "url"}, {"type": "string"}),
        ({"type": "Checkbox"}, {"type": "boolean"}),
        ({"type": "date"}, {"type": "string", "format": "date"}),
        ({"type": "day"}, {"type": "string", "format": "date"}),
        ({"type": "list", "listValues": ["Gold", "Silver"]}, {"type": "string", "enum": ["Gold", "Silver"]}),
        ({"type": "list"}, {"type": "string"}),
        (
            {"type": "multipicklist", "listValues": ["EU", "US"]},
            {"type": "array", "items": {"type": "string", "enum": ["EU", "US"]}},
        ),
        ({"type": "team member"}, {"type": "string"}),
        ({"type": "team members"}, {"type": "array", "items": {"type": "string"}}),
        ({"type": "enduser"}, {"type": "string"}),
        ({"type": "endusers"}, {"type": "array", "items": {"type": "string"}}),
        ({"type": "company"}, {"type": "string"}),
    ],
)
def test_custom_field_types_as_json_schema(definition: dict[str, Any], expected: dict[str, Any]) -> None:
    schema, why = custom_field_schema({"name": "F", **definition})
    assert why == ""
    description = schema.pop("description")
    assert schema == expected
    assert description.startswith("Custom field 'F'")


@pytest.mark.parametrize(
    "definition, why",
    [
        ({"type": "number", "isFormula": True}, "formula"),
        ({"type": "text", "isLocked": True}, "locked"),
        ({"type": "hologram"}, "type 'hologram' not known to the connector"),
    ],
)
def test_custom_fields_left_out(definition: dict[str, Any], why: str) -> None:
    assert custom_field_schema({"name": "F", **definition}) == (None, why)


def test_custom_fields_are_grouped_by_parent_onto_each_object() -> None:
    grouped = group_custom_fields(
        [
            {"name": "Tier", "type": "text", "parent": "Company"},
            {"name": "Beta", "type": "checkbox", "parent": "enduser"},  # the parent's case does not matter
            {"name": "Score", "type": "number", "parent": "Nps"},
            {"name": "Nickname", "type": "text", "parent": "User"},  # team members: not written by the connector
            {"name": "Computed", "type": "number", "parent": "Company", "isFormula": True},
            {"type": "text", "parent": "Company"},
        ]
    )
    assert {e.value: sorted(fields) for e, fields in grouped.by_endpoint.items()} == {
        "companies": ["custom.Tier"],
        "endusers": ["custom.Beta"],
        "nps": ["custom.Score"],
    }
    assert grouped.count == 3
    assert grouped.left_out[0] == "Company 'Computed' (formula)"
    assert grouped.left_out[1].startswith("a definition without a name")


def _raises(error: Exception):
    def read() -> bytes:
        raise error

    return read


@pytest.mark.parametrize(
    "token, read, expected",
    [
        (None, _raises(AssertionError("must not be called")), "no `api_token` is set"),
        (
            "t",
            _raises(PlanhatAuthError("HTTP 403: {}", endpoint=Endpoint.COMPANIES, status=403)),
            "refused GET /customfields",
        ),
        (
            "t",
            _raises(PlanhatUnavailable("HTTP 503: busy", endpoint=Endpoint.COMPANIES, status=503)),
            "failed (HTTP 503: busy)",
        ),
        ("t", lambda: b"<html>", "did not answer with a JSON list"),
        ("t", lambda: b'{"fields": []}', "did not answer with a JSON list"),
    ],
)
def test_custom_fields_that_cannot_be_read_give_a_warning_not_an_error(
    token: Optional[str], read: Any, expected: str
) -> None:
    result = read_custom_fields(token, read, "http://127.0.0.1:9")
    assert result.by_endpoint == {}
    assert result.warning is not None and expected in result.warning
    assert result.warning.startswith("custom fields are not offered by discover")


def test_custom_fields_read_become_properties_of_their_object() -> None:
    body = json.dumps([{"name": "Tier", "type": "number", "parent": "Company"}]).encode()
    result = read_custom_fields("t", lambda: body, "http://127.0.0.1:9")
    assert result.warning is None
    catalog = destination_catalog(result)
    companies = next(op for op in catalog["operations"] if op["object_name"] == "companies")
    assert companies["json_schema"]["properties"]["custom.Tier"]["type"] == "number"
    assets = next(op for op in catalog["operations"] if op["object_name"] == "assets")
    assert "custom.Tier" not in assets["json_schema"]["properties"]
