"""Data activation through the CLI against the sandbox: `discover` (custom fields, no token, Planhat
failing) and a `write` routed only by `destination_object_name`, as the platform hands it over.

Every run goes through testing/cli.run_cli (each stdout line validated against the protocol schema,
and no secret in the output). A configured catalog is built from discover's own output the
way the Airbyte UI builds one (destination_planhat/testing/platform_rules.py checks it as the platform does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import pytest

from destination_planhat.planhat.api import TARGETS
from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import catalog, encode_lines, record, stream_state
from destination_planhat.testing.platform_rules import platform_problems
from destination_planhat.testing.sandbox import MAIN_API, PlanhatSandbox
from destination_planhat.testing.sync_checks import assert_books_balance, connector_config, sync_summary

CUSTOM_FIELDS: list[dict[str, Any]] = [
    {"name": "Plan tier", "type": "list", "parent": "Company", "listValues": ["free", "pro"]},
    {"name": "Regions", "type": "multipicklist", "parent": "Company", "listValues": ["EU", "US"]},
    {"name": "Seats", "type": "number", "parent": "Company"},
    {"name": "Health formula", "type": "number", "parent": "Company", "isFormula": True},
    {"name": "Locked note", "type": "text", "parent": "Company", "isLocked": True},
    {"name": "Beta user", "type": "checkbox", "parent": "EndUser"},
]


def discover(tmp_path: Path, sandbox: PlanhatSandbox, **overrides: Any) -> Any:
    config = connector_config(sandbox, tenant_uuid=None, api_base_url=sandbox.url, **overrides)
    return run_cli("discover", tmp_path, config=config)


def operations(run: Any) -> dict[str, dict[str, Any]]:
    [message] = run.of_type("DESTINATION_CATALOG")
    ops: dict[str, dict[str, Any]] = {}
    for op in message["destination_catalog"]["operations"]:
        ops.setdefault(op["object_name"], op)  # each object's first: append_dedup (upsert)
    return ops


def warnings(run: Any) -> list[str]:
    return [m["log"]["message"] for m in run.of_type("LOG") if m["log"]["level"] == "WARN"]


def assert_nothing_written(sandbox: PlanhatSandbox) -> None:
    assert sandbox.received() == []
    assert [(r.method, r.endpoint) for r in sandbox.main_api_requests if r.method != "GET"] == []
    assert sandbox.all_objects() == {name: [] for name in sandbox.all_objects()}


def test_discover_offers_every_target_with_the_tenants_custom_fields(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.configure_main_api(custom_fields=CUSTOM_FIELDS)
    run = discover(tmp_path, planhat)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.of_type("DESTINATION_CATALOG")) == 1
    ops = operations(run)
    assert list(ops) == [endpoint.value for endpoint in TARGETS]
    companies = ops["companies"]["json_schema"]["properties"]
    assert companies["custom.Plan tier"]["enum"] == ["free", "pro"]
    assert companies["custom.Regions"]["items"]["enum"] == ["EU", "US"]
    assert companies["custom.Seats"]["type"] == "number"
    assert "custom.Health formula" not in companies and "custom.Locked note" not in companies
    assert ops["endusers"]["json_schema"]["properties"]["custom.Beta user"]["type"] == "boolean"
    assert not any(name.startswith("custom.") for name in ops["assets"]["json_schema"]["properties"])
    assert warnings(run) == []
    assert run.log_lines("4 custom field(s) offered")
    assert run.log_lines("Company 'Health formula' (formula)") and run.log_lines("Company 'Locked note' (locked)")
    assert [(r.method, r.endpoint) for r in planhat.main_api_requests] == [("GET", "customfields")]
    assert_nothing_written(planhat)


def test_discover_without_a_token_offers_the_standard_fields_and_says_why(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    planhat.configure_main_api(custom_fields=CUSTOM_FIELDS)
    run = discover(tmp_path, planhat, api_token=None)
    assert run.returncode == 0, run.stderr[-2000:]
    ops = operations(run)
    assert list(ops) == [endpoint.value for endpoint in TARGETS]
    assert not any(name.startswith("custom.") for op in ops.values() for name in op["json_schema"]["properties"])
    [warning] = warnings(run)
    assert "no `api_token` is set" in warning and "custom fields are not offered" in warning
    assert planhat.main_api_requests == []
    assert_nothing_written(planhat)


@pytest.mark.parametrize(
    "fault, expected, settings",
    [
        ({"kind": "status", "status": 500}, "failed (HTTP 500", {}),
        ({"kind": "status", "status": 403}, "refused GET /customfields", {}),
        # A delay far longer than a 1 s read timeout (discover's only request is this one): the sandbox
        # stops waiting when the connector hangs up, so the delay costs nothing. Only here is the read
        # timeout short: an answer that is due, on a busy machine, must not be taken for a timeout.
        ({"kind": "delay", "seconds": 120}, "failed (ReadTimeout", {"request_timeout_seconds": 1}),
    ],
    ids=["500", "403", "timeout"],
)
def test_discover_when_custom_fields_cannot_be_read_still_answers(
    tmp_path: Path, planhat: PlanhatSandbox, fault: Mapping[str, Any], expected: str, settings: dict[str, Any]
) -> None:
    planhat.configure_main_api(custom_fields=CUSTOM_FIELDS)
    planhat.set_faults(api=MAIN_API, script=[fault])
    run = discover(tmp_path, planhat, **settings)
    assert run.returncode == 0, run.stderr[-2000:]
    ops = operations(run)
    assert "custom.Plan tier" not in ops["companies"]["json_schema"]["properties"]
    assert "name" in ops["companies"]["json_schema"]["properties"]
    [warning] = warnings(run)
    assert expected in warning, warning
    assert "custom fields are not offered" in warning
    assert_nothing_written(planhat)


def test_discover_with_a_wrong_token_warns_with_the_fix(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    run = discover(tmp_path, planhat, api_token="not-the-token")
    assert run.returncode == 0, run.stderr[-2000:]
    [warning] = warnings(run)
    assert "(HTTP 401)" in warning and "check `api_token`" in warning
    assert_nothing_written(planhat)


def test_an_invalid_config_fails_discover_with_a_config_error(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    run = discover(tmp_path, planhat, batch_size=0)
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error" and "batch_size" in error["message"]
    assert run.of_type("DESTINATION_CATALOG") == []


# ----- write, routed by destination_object_name ------------------------------------------------


def mapped_stream(
    name: str, op: Mapping[str, Any], fields: list[str], primary_key: Optional[list[str]] = None
) -> dict[str, Any]:
    """A configured stream as the platform writes it after the UI's field renaming: the mapped fields
    under their Planhat names, with the schemas of the destination's fields."""
    properties = {field: op["json_schema"]["properties"][field] for field in fields}
    stream: dict[str, Any] = {
        "stream": {
            "name": name,
            "json_schema": {"type": "object", "properties": properties, "additionalProperties": True},
            "supported_sync_modes": ["full_refresh", "incremental"],
        },
        "sync_mode": "full_refresh",
        "destination_sync_mode": op["sync_mode"],
        "destination_object_name": op["object_name"],
    }
    if primary_key:
        stream["primary_key"] = [[key] for key in primary_key]
    return stream


def test_a_write_routed_only_by_destination_object_name(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.configure_main_api(custom_fields=CUSTOM_FIELDS)
    ops = operations(discover(tmp_path, planhat))
    configured = catalog(
        # names and columns that no schema rule would route: only destination_object_name does
        mapped_stream("usage_daily", ops["metrics"], ["dimensionId", "value", "externalId", "date"]),
        mapped_stream("web_events", ops["user_activities"], ["email", "action", "companyExternalId"]),
        mapped_stream(
            "crm_accounts", ops["companies"], ["externalId", "name", "custom.Plan tier", "custom.Seats"], ["externalId"]
        ),
        mapped_stream(
            "crm_contacts",
            ops["endusers"],
            ["externalId", "email", "companyExternalId", "custom.Beta user"],
            ["externalId"],
        ),
    )
    assert platform_problems(configured, {"operations": list(ops.values())}) == []
    messages: list[Any] = [
        record("crm_accounts", {"externalId": "acme", "name": "Acme", "custom.Plan tier": "pro", "custom.Seats": 12}),
        record("crm_accounts", {"externalId": "globex", "name": "Globex"}),
        stream_state("crm_accounts", 2),
        record(
            "crm_contacts",
            {"externalId": "u1", "email": "ada@acme.example", "companyExternalId": "acme", "custom.Beta user": True},
        ),
        stream_state("crm_contacts", 1),
        record("usage_daily", {"dimensionId": "logins", "value": 3, "externalId": "acme", "date": "2026-11-01"}),
        record("usage_daily", {"dimensionId": "logins", "value": 5, "externalId": "globex", "date": "2026-11-01"}),
        stream_state("usage_daily", 2),
        record("web_events", {"email": "ada@acme.example", "action": "exported", "companyExternalId": "acme"}),
        stream_state("web_events", 1),
    ]
    config = connector_config(planhat, api_base_url=planhat.url)  # no `streams` setting at all
    run = run_cli("write", tmp_path, config=config, catalog=configured, stdin=encode_lines(messages), watch=planhat)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.log_lines("stream 'crm_accounts' -> Planhat Companies (destination_object_name 'companies'")
    companies = {c["externalId"]: c for c in planhat.objects("companies")}
    assert companies["acme"]["name"] == "Acme" and companies["acme"]["custom"] == {"Plan tier": "pro", "Seats": 12}
    assert set(companies) == {"acme", "globex"}
    [contact] = planhat.objects("endusers")
    assert contact["companyId"] == companies["acme"]["_id"] and contact["custom"] == {"Beta user": True}
    assert sorted((m["externalId"], m["value"]) for m in planhat.received("metrics")) == [("acme", 3), ("globex", 5)]
    [activity] = planhat.received("user_activities")
    assert activity == {"email": "ada@acme.example", "action": "exported", "companyExternalId": "acme"}
    counts = {
        s["stream"]["stream_descriptor"]["name"]: (
            s["destinationStats"]["recordCount"],
            s["destinationStats"]["rejectedRecordCount"],
        )
        for s in run.states
    }
    assert counts == {
        "crm_accounts": (2.0, 0.0),
        "crm_contacts": (1.0, 0.0),
        "usage_daily": (2.0, 0.0),
        "web_events": (1.0, 0.0),
    }
    assert_books_balance(sync_summary(run))
    # A second run of the same records updates, matched on the primary key (externalId): nothing new.
    run = run_cli("write", tmp_path, config=config, catalog=configured, stdin=encode_lines(messages), watch=planhat)
    assert run.returncode == 0
    assert len(planhat.objects("companies")) == 2 and len(planhat.objects("endusers")) == 1


def test_update_matches_on_the_primary_key_it_is_given(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.seed("companies", [{"name": "Acme", "sourceId": "sf-1"}])
    ops = operations(discover(tmp_path, planhat, api_token=None))
    configured = catalog(mapped_stream("accounts", ops["companies"], ["sourceId", "name"], ["sourceId"]))
    messages = [
        record("accounts", {"sourceId": "sf-1", "name": "Acme Inc"}),
        record("accounts", {"name": "no key"}),
        stream_state("accounts", 2),
    ]
    run = run_cli(
        "write",
        tmp_path,
        config=connector_config(planhat, api_base_url=planhat.url),
        catalog=configured,
        stdin=encode_lines(messages),
        watch=planhat,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [(c["sourceId"], c["name"]) for c in planhat.objects("companies")] == [("sf-1", "Acme Inc")]
    [state] = run.states
    assert (state["destinationStats"]["recordCount"], state["destinationStats"]["rejectedRecordCount"]) == (1.0, 1.0)
    assert any(
        "sourceId is missing (match_on: sourceId)" in reason
        for reason in sync_summary(run)["streams"]["accounts"]["local_reasons"]
    )


def test_streams_that_do_not_fit_their_object_fail_before_anything_is_sent(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    ops = operations(discover(tmp_path, planhat, api_token=None))
    wrong_mode = {
        **mapped_stream("metrics_upserted", ops["metrics"], ["dimensionId", "value", "externalId"]),
        "destination_sync_mode": "update",
    }
    unknown = {  # team members: not a target of this connector
        **mapped_stream("team", ops["companies"], ["name"], ["externalId"]),
        "destination_object_name": "users",
    }
    wrong_key = mapped_stream("accounts_by_name", ops["companies"], ["name", "externalId"], ["name"])
    no_key = mapped_stream("accounts_no_key", ops["endusers"], ["email"])
    clash = mapped_stream("contacts", ops["endusers"], ["email", "externalId"], ["externalId"])
    configured = catalog(wrong_mode, unknown, wrong_key, no_key, clash)
    config = connector_config(
        planhat, api_base_url=planhat.url, streams=[{"name": "contacts", "endpoint": "companies"}]
    )
    messages = [record("contacts", {"email": "a@b.example", "externalId": "x"}), stream_state("contacts", 1)]
    run = run_cli("write", tmp_path, config=config, catalog=configured, stdin=encode_lines(messages))
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    message = error["message"]
    assert (
        "stream 'metrics_upserted' (destination_object_name 'metrics'" in message and "'update' does not fit" in message
    )
    assert "stream 'team' (destination_object_name 'users'" in message and "is not a Planhat target" in message
    assert "stream 'accounts_by_name'" in message and "[['name']] is not a matching key of Companies" in message
    assert "stream 'accounts_no_key'" in message and "append_dedup needs a primary key" in message
    assert "stream 'contacts'" in message and "sends it to companies" in message
    assert planhat.received() == [] and planhat.main_api_requests == []
    assert run.states == []
