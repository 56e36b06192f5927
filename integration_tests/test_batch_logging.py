"""A long sync's log is not one line per batch: a clean batch (processed at the first attempt, nothing
refused) is logged at DEBUG, and the progress line and the summary count it. A batch with items
Planhat refused stays at INFO, with its examples."""

from __future__ import annotations

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import (
    METRIC_SCHEMA,
    catalog,
    configured_stream,
    encode_lines,
    metric,
    record,
    sandbox_config,
    stream_state,
)

BATCHES = 10
BATCH_SIZE = 20


def messages() -> bytes:
    lines = []
    for i in range(BATCHES * BATCH_SIZE):
        # one item Planhat refuses (a dimensionId with a space), in the fourth batch
        lines.append(record("usage", metric(i, dimension="bad id" if i == 3 * BATCH_SIZE + 5 else "logins")))
    lines.append(stream_state("usage", 1))
    return encode_lines(lines)


def batch_lines(run, level: str) -> list[str]:
    return [
        m["log"]["message"]
        for m in run.of_type("LOG")
        if m["log"]["level"] == level and " -> Metrics: sent " in m["log"]["message"]
    ]


def test_only_batches_with_refused_items_are_logged_at_info(sandbox, tmp_path):
    # invalid_records: send lets Planhat judge the bad dimensionId; one request in flight keeps batches whole
    config = sandbox_config(sandbox.url, batch_size=BATCH_SIZE, invalid_records="send", max_in_flight_requests=1)
    configured = catalog(configured_stream("usage", METRIC_SCHEMA))

    run = run_cli("write", tmp_path, config=config, catalog=configured, stdin=messages())
    debug = run_cli(
        "write", tmp_path, config=config, catalog=configured, stdin=messages(), extra_env={"LOG_LEVEL": "debug"}
    )

    assert run.returncode == 0 and debug.returncode == 0, run.stderr[-2000:]
    [refused] = batch_lines(run, "INFO")
    assert "batch 4" in refused and "errors 1" in refused and "bad id" in refused
    assert batch_lines(run, "DEBUG") == []  # not shown without LOG_LEVEL=debug
    assert len(batch_lines(debug, "DEBUG")) == BATCHES - 1
    assert len(batch_lines(debug, "INFO")) == 1
