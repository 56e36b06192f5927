"""`check` and `write` apply one rule for what a config needs (routing.credential_problems): through
the CLI, check fails exactly where write would for lack of a credential, and succeeds where write does."""

from __future__ import annotations

from typing import Any

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import (
    API_TOKEN,
    METRIC_SCHEMA,
    TENANT,
    catalog,
    configured_stream,
    encode_lines,
    metric,
    record,
    sandbox_config,
    stream_state,
)


def companies_stream(name: str) -> dict[str, Any]:
    """A stream mapped onto companies in the Airbyte UI (data activation): no `streams` entry."""
    return {
        "stream": {
            "name": name,
            "json_schema": {
                "type": "object",
                "properties": {"externalId": {"type": "string"}, "name": {"type": "string"}},
            },
            "supported_sync_modes": ["full_refresh"],
        },
        "sync_mode": "full_refresh",
        "destination_sync_mode": "append_dedup",
        "destination_object_name": "companies",
        "primary_key": [["externalId"]],
    }


def test_a_metrics_entry_without_api_token_fails_check_as_it_fails_write(sandbox, tmp_path):
    config = sandbox_config(sandbox.url, streams=[{"name": "usage", "endpoint": "metrics"}])
    del config["api_token"]

    checked = run_cli("check", tmp_path, config=config)
    written = run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=catalog(configured_stream("usage", METRIC_SCHEMA)),
        stdin=encode_lines([record("usage", metric(1)), stream_state("usage", 1)]),
    )

    status = checked.connection_status
    assert status is not None and status["status"] == "FAILED", checked.stdout
    assert "stream 'usage'" in status["message"] and "`api_token`" in status["message"]
    assert written.returncode != 0 and [e["failure_type"] for e in written.errors] == ["config_error"]
    assert written.errors[0]["message"] == status["message"]  # the same rule, the same words
    assert sandbox.requests == [] and sandbox.main_api_requests == []


def test_an_objects_only_setup_without_tenant_token_passes_check_and_writes(sandbox, tmp_path):
    config = sandbox_config(sandbox.url, api_base_url=sandbox.url)
    del config["tenant_uuid"]

    checked = run_cli("check", tmp_path, config=config)

    status = checked.connection_status
    assert status is not None and status["status"] == "SUCCEEDED", status
    assert [(r.method, r.endpoint) for r in sandbox.main_api_requests] == [("GET", "companies")]
    assert checked.log_lines("no `tenant_uuid` set")

    written = run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=catalog(companies_stream("accounts")),
        stdin=encode_lines([record("accounts", {"externalId": "acme", "name": "Acme"}), stream_state("accounts", 1)]),
    )

    assert written.returncode == 0 and not written.errors, written.stdout[-2000:]
    assert len(written.states) == 1
    assert [(c["externalId"], c["name"]) for c in sandbox.objects("companies")] == [("acme", "Acme")]
    assert sandbox.requests == []  # nothing went to the analytics host
    output = checked.stdout + written.stdout + checked.stderr + written.stderr
    assert API_TOKEN not in output and TENANT not in output


def test_with_neither_credential_check_names_both(sandbox, tmp_path):
    config = {"analytics_base_url": sandbox.url}

    checked = run_cli("check", tmp_path, config=config)

    status = checked.connection_status
    assert status is not None and status["status"] == "FAILED"
    assert "`tenant_uuid`" in status["message"] and "`api_token`" in status["message"]
    assert sandbox.requests == [] and sandbox.main_api_requests == []
