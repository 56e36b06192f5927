"""The naive reference sender the benchmark compares the connector with.

What a straightforward destination does: read a line, map it, put it in its stream's buffer, and when
a buffer is full POST it and wait for Planhat's answer before reading on. Same input parsing, same
mapping (the connector's own mappers), same batching (per stream, `batch_size` items), same requests;
the only difference from the connector is that nothing overlaps: while a request is out, nothing is
read, and while reading, nothing is sent.

    python bench/naive_sender.py --config config.json --catalog catalog.json < input.jsonl

Prints each STATE (with destinationStats.recordCount) once every record before it is acknowledged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer  # noqa: E402

from destination_planhat.config import parse_config  # noqa: E402
from destination_planhat.mapping.analytics import MappingPlan, build_mapper  # noqa: E402
from destination_planhat.mapping.routing import route_streams  # noqa: E402
from destination_planhat.planhat.api import ENDPOINT_NEEDS_API_TOKEN, endpoint_path  # noqa: E402


class _Buffer:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.parts: list[bytes] = []
        self.first_seq: Optional[int] = None  # input position of the oldest buffered record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--catalog", required=True)
    args = parser.parse_args()
    config = parse_config(orjson.loads(Path(args.config).read_bytes()))
    catalog = ConfiguredAirbyteCatalogSerializer.load(orjson.loads(Path(args.catalog).read_bytes()))
    routes = route_streams(config, catalog)
    session = requests.Session()
    buffers: dict[Any, _Buffer] = {}
    mappers = {}
    for key, route in routes.items():
        headers = {"Content-Type": "application/json"}
        if ENDPOINT_NEEDS_API_TOKEN[route.endpoint] and config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        buffers[key] = _Buffer(config.analytics_base_url + endpoint_path(route.endpoint, config.tenant), headers)
        if not isinstance(route.plan, MappingPlan):
            raise SystemExit(
                f"stream '{route.name}' goes to {route.endpoint.label}: the naive sender writes analytics streams only"
            )
        mappers[key] = build_mapper(route.plan)
    held: list[tuple[int, dict[str, Any]]] = []  # (input position, state message)
    counts: dict[Any, int] = {}
    out = sys.stdout.buffer

    def post(buffer: _Buffer) -> None:
        if not buffer.parts:
            return
        response = session.post(
            buffer.url, data=b"[" + b",".join(buffer.parts) + b"]", headers=buffer.headers, timeout=300
        )
        response.raise_for_status()
        buffer.parts, buffer.first_seq = [], None
        release()

    def release() -> None:
        oldest = min((b.first_seq for b in buffers.values() if b.first_seq is not None), default=None)
        while held and (oldest is None or held[0][0] < oldest):
            out.write(orjson.dumps(held.pop(0)[1]) + b"\n")
        out.flush()

    seq = 0
    for line in sys.stdin.buffer:
        seq += 1
        message = orjson.loads(line)
        if message.get("type") == "RECORD":
            record = message["record"]
            key = (record.get("namespace") or None, record["stream"])
            buffer = buffers.get(key)
            if buffer is None:
                continue
            counts[key] = counts.get(key, 0) + 1
            for item in mappers[key](record["data"]):
                if buffer.first_seq is None:
                    buffer.first_seq = seq
                buffer.parts.append(orjson.dumps(item))
                if len(buffer.parts) >= config.batch_size:
                    post(buffer)
        elif message.get("type") == "STATE":
            state = message["state"]
            descriptor = (state.get("stream") or {}).get("stream_descriptor") or {}
            key = (descriptor.get("namespace") or None, descriptor.get("name"))
            state["destinationStats"] = {"recordCount": float(counts.pop(key, 0))}
            held.append((seq, message))
            release()
    for buffer in buffers.values():
        post(buffer)
    release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
