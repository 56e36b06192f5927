"""Run the real connector CLI against the sandbox, the way Airbyte does: a subprocess, JSON lines.

Shared by the integration tests, the demo and the benchmark so they all exercise the same path.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

import orjson

from destination_planhat.testing.protocol_schema import assert_protocol_output

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN = REPO_ROOT / "main.py"
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


@dataclass
class CliRun:
    """What one run of the CLI printed, parsed."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["state"] for m in self.of_type("STATE")]

    @property
    def logs(self) -> list[str]:
        return [m["log"]["message"] for m in self.of_type("LOG")]

    @property
    def traces(self) -> list[dict[str, Any]]:
        return [m["trace"] for m in self.of_type("TRACE")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [t["error"] for t in self.traces if t.get("type") == "ERROR"]

    @property
    def connection_status(self) -> Optional[dict[str, Any]]:
        statuses = self.of_type("CONNECTION_STATUS")
        return statuses[-1]["connectionStatus"] if statuses else None

    def log_lines(self, containing: str) -> list[str]:
        return [line for line in self.logs if containing in line]


def run_cli(
    command: str,
    tmp_path: Path,
    *,
    config: Optional[Mapping[str, Any]] = None,
    catalog: Optional[Mapping[str, Any]] = None,
    stdin: bytes = b"",
    timeout: float = 300,
    extra_env: Optional[Mapping[str, str]] = None,
) -> CliRun:
    """`python main.py <command> --config ... --catalog ...` with `stdin` piped in."""
    args = [sys.executable, str(MAIN), command]
    if config is not None:
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        args += ["--config", str(config_path)]
    if catalog is not None:
        catalog_path = tmp_path / "catalog.json"
        catalog_path.write_text(json.dumps(catalog))
        args += ["--catalog", str(catalog_path)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    completed = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, cwd=REPO_ROOT, env=env)
    stdout = completed.stdout.decode("utf-8", "replace")
    assert_protocol_output(stdout, source=command)  # every line a valid Airbyte protocol message
    messages = []
    for line in stdout.splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            messages.append({"type": "_NOT_JSON", "line": line})
    return CliRun(completed.returncode, stdout, completed.stderr.decode("utf-8", "replace"), messages)


GIVE_UP_SECONDS = 120  # a bound for a hung connector, not an expectation


class OutputLines:
    """Lines of a running connector's stdout, handed over by a thread so a test can wait for one."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._queue: queue.Queue[Optional[bytes]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def next_state(self) -> dict[str, Any]:
        """The `state` of the next STATE message (the messages before it are kept in `seen`)."""
        while True:
            line = self._queue.get(timeout=GIVE_UP_SECONDS)
            assert line is not None, "the connector ended its output without emitting the state"
            message = json.loads(line)
            self.seen.append(message)
            if message.get("type") == "STATE":
                return message["state"]

    def until_end(self) -> list[dict[str, Any]]:
        """Every message up to the end of the output (after the process ended), kept in `seen` too."""
        while True:
            line = self._queue.get(timeout=GIVE_UP_SECONDS)
            if line is None:
                return self.seen
            self.seen.append(json.loads(line))


def start_write(
    tmp_path: Path, config: Mapping[str, Any], configured: Optional[Mapping[str, Any]] = None
) -> subprocess.Popen[bytes]:
    """`main.py write` running with its stdin a pipe the test writes to (and may leave open)."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "catalog.json").write_text(json.dumps(configured if configured is not None else mixed_catalog()))
    args = [
        sys.executable,
        str(MAIN),
        "write",
        "--config",
        str(tmp_path / "config.json"),
        "--catalog",
        str(tmp_path / "catalog.json"),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT, env=env
    )


def state_positions(run: CliRun) -> list[int]:
    """Indexes of STATE messages among all stdout messages, for ordering assertions."""
    return [i for i, m in enumerate(run.messages) if m.get("type") == "STATE"]


def cursors(states: Sequence[Mapping[str, Any]]) -> list[Any]:
    out = []
    for state in states:
        if state.get("type") == "STREAM":
            out.append((state["stream"]["stream_descriptor"]["name"], state["stream"]["stream_state"]["cursor"]))
        else:
            out.append(("GLOBAL", state["global"]["shared_state"]["cursor"]))
    return out
