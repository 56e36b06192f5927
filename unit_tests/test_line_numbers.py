"""A bad line is reported with its true line number, however far into the input and across however
many chunks, whether the lines are decoded in this process or in parse workers (the reader counts
lines as it applies each chunk's segments)."""

from __future__ import annotations

import io
import logging
import re

import orjson
import pytest

from destination_planhat.mapping.routing import route_streams
from destination_planhat.reading.decoder import CHUNK_MAX_BYTES
from destination_planhat.reading.pipeline import read_input
from destination_planhat.reading.worker_pool import ParseWorkers
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import ACTIVITY_SCHEMA, METRIC_SCHEMA, catalog, config, configured_stream
from destination_planhat.testing.fake_client import FakeClient
from destination_planhat.testing.harness import record, stream_state

CATALOG = catalog(configured_stream("m", METRIC_SCHEMA), configured_stream("u", ACTIVITY_SCHEMA))
BAD_AT = (1, 7_777, 12_001, 20_000, 31_313)  # 1-based line numbers of lines that are not JSON


def input_with_bad_lines() -> tuple[bytes, int]:
    lines = []
    for number in range(1, 36_001):
        if number in BAD_AT:
            lines.append(f"broken line {number}".encode())
        elif number % 5000 == 0:
            lines.append(orjson.dumps(stream_state("m", number)))
        elif number % 3:
            lines.append(
                orjson.dumps(record("m", {"dimensionId": "logins", "value": number, "externalId": f"c{number}"}))
            )
        else:
            lines.append(orjson.dumps(record("u", {"email": f"u{number}@example.com", "action": "seen"})))
    data = b"\n".join(lines) + b"\n" + b'{"type":"RECORD","record":{"stream":"m","data":{"dimensionId":"lo'
    return data, len(lines) + 1


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_lines_are_reported_with_their_line_numbers(workers, caplog):
    data, last = input_with_bad_lines()
    assert len(data) > 4 * CHUNK_MAX_BYTES, "the input spans many chunks"
    parsed = config(batch_size=500)
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), FakeClient(), lambda message: None).start()
    pool = ParseWorkers(workers, writer.parallel_plan()).start() if workers else None
    try:
        with caplog.at_level(logging.INFO, logger="airbyte"):
            read_input(io.BytesIO(data), writer, pool)
            writer.finish()
    finally:
        if pool is not None:
            pool.close()
        writer.close()
    numbers = sorted(int(n) for r in caplog.records for n in re.findall(r"input line (\d+)", r.getMessage()))
    assert numbers == [*BAD_AT, last]
