"""Syncs to Planhat's objects in tests: the streams' schemas and settings, the config, a write, and
what its states counted. Shared by the integration tests of objects end to end and of pacing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from destination_planhat.testing.cli import GIVE_UP_SECONDS, CliRun, run_cli
from destination_planhat.testing.harness import encode_lines
from destination_planhat.testing.sandbox import PlanhatSandbox
from destination_planhat.testing.sync_checks import connector_config

COMPANY_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "plan": {"type": "string"},
        "seats": {"type": "integer"},
    },
}
ENDUSER_SCHEMA = {
    "type": "object",
    "properties": {
        "email": {"type": "string"},
        "externalId": {"type": "string"},
        "companyExternalId": {"type": "string"},
        "firstName": {"type": "string"},
    },
}
LICENSE_SCHEMA = {
    "type": "object",
    "properties": {
        "externalId": {"type": "string"},
        "companyExternalId": {"type": "string"},
        "_currency": {"type": "string"},
        "fromDate": {"type": "string"},
        "mrr": {"type": "number"},
    },
}
COMPANY_SETTINGS = {
    "name": "accounts",
    "endpoint": "companies",
    "field_mappings": [
        {"planhat_field": "externalId", "source_field": "id"},
        {"planhat_field": "custom.Plan tier", "source_field": "plan"},
    ],
    "unmapped_columns": "custom",
}


def objects_config(sandbox: PlanhatSandbox, streams: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """A config writing `streams` to the sandbox's main API only (no tenant: no analytics stream)."""
    return connector_config(sandbox, tenant_uuid=None, api_base_url=sandbox.url, streams=streams, **overrides)


def write(
    tmp_path: Path,
    sandbox: PlanhatSandbox,
    config: dict[str, Any],
    configured: dict[str, Any],
    messages: list[Any],
    timeout: float = GIVE_UP_SECONDS,
) -> CliRun:
    """The CLI's write, in process, its states stamped against the sandbox's log; `timeout` bounds a
    hung connector (the test then fails instead of hanging)."""
    return run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=configured,
        stdin=encode_lines(messages),
        watch=sandbox,
        timeout=timeout,
    )


def company(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"acct-{i}", "name": f"Company {i}", "plan": "pro", "seats": i, **extra}


def state_counts(run: CliRun) -> list[tuple[float, float]]:
    """(recordCount, rejectedRecordCount) of each state printed."""
    return [(s["destinationStats"]["recordCount"], s["destinationStats"]["rejectedRecordCount"]) for s in run.states]
