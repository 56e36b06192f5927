"""A user watching the Airbyte log of a long sync sees it move, then reads a summary table.

The sandbox answers each request after a fixed latency and only one request is in flight, so the
sync below cannot end before 25 x 0.1 s = 2.5 s: with a 1 s progress interval, progress lines are
certain without asserting anything about time.
"""

from __future__ import annotations

import re

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import (
    encode_lines,
    mixed_catalog,
    mixed_messages,
    record,
    sandbox_config,
)

METRICS, ACTIVITIES = 300, 200
BATCH_SIZE = 20
PROGRESS = re.compile(
    r"progress after \S+: read ([\d,]+) \([\d,]+/s\), sent ([\d,]+), acknowledged by Planhat ([\d,]+) \([\d,]+/s\), "
    r"rejected ([\d,]+) \(([\d,]+) locally, ([\d,]+) by Planhat\); "
    r"requests in flight: Metrics (\d+), User Activities (\d+) \(at most 1\); states emitted (\d+), waiting (\d+)$"
)


def as_int(text: str) -> int:
    return int(text.replace(",", ""))


def test_progress_lines_while_writing_then_a_summary_table(sandbox, tmp_path):
    sandbox.set_faults(latency_s=0.1)
    messages = list(mixed_messages(metrics=METRICS, activities=ACTIVITIES, state_every=100))
    messages.insert(3, record("metrics_stream", {"dimensionId": "no spaces allowed", "value": 1, "externalId": "acme"}))
    messages.insert(4, record("not_configured", {"anything": 1}))
    total_read = METRICS + ACTIVITIES + 2

    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(
            sandbox.url,
            batch_size=BATCH_SIZE,
            max_in_flight_requests=1,
            progress_interval_seconds=1,
            invalid_records="send",  # the bad dimensionId goes to Planhat, which rejects it
        ),
        catalog=mixed_catalog(),
        stdin=encode_lines(messages),
    )
    assert run.returncode == 0, run.stderr[-3000:]

    progress = [PROGRESS.fullmatch(line) for line in run.log_lines("progress after ")]
    assert progress and all(progress), run.log_lines("progress after ")
    previous = [0] * 3
    for match in progress:
        read, sent, acknowledged = (as_int(match.group(i)) for i in (1, 2, 3))
        in_flight = int(match.group(7)) + int(match.group(8))
        # Counters only grow, each stage is behind the one before, and one request at most is out.
        assert all(now >= before for now, before in zip((read, sent, acknowledged), previous))
        assert total_read >= read >= sent >= acknowledged
        assert in_flight <= 1
        previous = [read, sent, acknowledged]

    summary = [line[len("summary: ") :] for line in run.log_lines("summary: ")]
    rows = {cells[0]: cells[1:] for cells in (re.split(r" {2,}", line) for line in summary)}
    assert rows["stream"] == [
        "endpoint",
        "read",
        "sent",
        "acknowledged",
        "processed",
        "rejected by Planhat",
        "rejected locally",
        "skipped",
    ]
    assert rows["metrics_stream"] == ["Metrics", "301", "301", "301", "300", "1", "0", "0"]
    assert rows["activities_stream"] == ["User Activities", "200", "200", "200", "200", "0", "0", "0"]
    assert rows["not_configured"] == ["(not written)", "1", "0", "0", "0", "0", "0", "1"]
    assert rows["total"] == ["502", "501", "501", "500", "1", "0", "1"]
    assert any(
        line.startswith("stream 'metrics_stream': rejected by Planhat: ") and "x1" in line for line in summary
    ), summary
    # The table agrees with what Planhat (the sandbox) counted.
    counted = sandbox.summary()
    assert counted["metrics"]["processed"] == 300 and counted["metrics"]["errors"] == 1
    assert counted["user_activities"]["processed"] == 200
