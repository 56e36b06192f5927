"""What a test feeds the connector: messages, catalogs, configs for the sandbox, as JSON lines.

Shared by the unit and integration tests, the demo and the benchmarks, so they all build the same
input. Running the CLI on it is `testing/cli.py`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]
TENANT = "demo-tenant-0001"
API_TOKEN = "demo-api-token"

METRIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "dimensionId": {"type": "string"},
        "value": {"type": "number"},
        "externalId": {"type": "string"},
        "model": {"type": "string"},
        "date": {"type": "string"},
    },
}
ACTIVITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "email": {"type": "string"},
        "euExtId": {"type": "string"},
        "action": {"type": "string"},
        "count": {"type": "number"},
        "companyExternalId": {"type": "string"},
        "date": {"type": "string"},
    },
}


def sandbox_config(url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"tenant_uuid": TENANT, "api_token": API_TOKEN, "analytics_base_url": url}
    config.update(overrides)
    return config


def configured_stream(
    name: str, json_schema: Mapping[str, Any], namespace: Optional[str] = None, destination_sync_mode: str = "append"
) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "name": name,
        "json_schema": dict(json_schema),
        "supported_sync_modes": ["full_refresh", "incremental"],
    }
    if namespace:
        stream["namespace"] = namespace
    return {"stream": stream, "sync_mode": "incremental", "destination_sync_mode": destination_sync_mode}


def catalog(*streams: dict[str, Any]) -> dict[str, Any]:
    return {"streams": list(streams)}


def record(stream: str, data: Any, namespace: Optional[str] = None) -> dict[str, Any]:
    body: dict[str, Any] = {"stream": stream, "data": data, "emitted_at": 1_795_600_000_000}
    if namespace:
        body["namespace"] = namespace
    return {"type": "RECORD", "record": body}


def stream_state(stream: str, cursor: Any, namespace: Optional[str] = None) -> dict[str, Any]:
    descriptor: dict[str, Any] = {"name": stream}
    if namespace:
        descriptor["namespace"] = namespace
    return {
        "type": "STATE",
        "state": {"type": "STREAM", "stream": {"stream_descriptor": descriptor, "stream_state": {"cursor": cursor}}},
    }


def global_state(cursor: Any) -> dict[str, Any]:
    return {
        "type": "STATE",
        "state": {"type": "GLOBAL", "global": {"shared_state": {"cursor": cursor}, "stream_states": []}},
    }


def metric(i: int, dimension: str = "logins") -> dict[str, Any]:
    return {
        "dimensionId": dimension,
        "value": i % 97,
        "externalId": f"company-{i % 500}",
        "model": "Company",
        "date": "2026-11-01",
    }


def activity(i: int, action: str = "logged_in") -> dict[str, Any]:
    return {"email": f"user{i}@example.com", "action": action, "count": 1, "companyExternalId": f"company-{i % 500}"}


def mixed_messages(metrics: int, activities: int, state_every: int) -> Iterator[dict[str, Any]]:
    """Records of both endpoints interleaved; a STREAM state of each stream every `state_every`
    records and at the end."""
    total = metrics + activities
    m = a = 0
    for n in range(1, total + 1):
        if m < metrics and (a >= activities or n % 2):
            yield record("metrics_stream", metric(m))
            m += 1
        else:
            yield record("activities_stream", activity(a))
            a += 1
        if n % state_every == 0 or n == total:
            yield stream_state("metrics_stream", m)
            yield stream_state("activities_stream", a)


def mixed_catalog() -> dict[str, Any]:
    return catalog(
        configured_stream("metrics_stream", METRIC_SCHEMA), configured_stream("activities_stream", ACTIVITY_SCHEMA)
    )


def encode_lines(messages: Iterable[Any]) -> bytes:
    return b"".join((m if isinstance(m, (bytes, bytearray)) else orjson.dumps(m)) + b"\n" for m in messages)


def cursors(states: Sequence[Mapping[str, Any]]) -> list[Any]:
    out = []
    for state in states:
        if state.get("type") == "STREAM":
            out.append((state["stream"]["stream_descriptor"]["name"], state["stream"]["stream_state"]["cursor"]))
        else:
            out.append(("GLOBAL", state["global"]["shared_state"]["cursor"]))
    return out
