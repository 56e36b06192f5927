"""A source that goes quiet does not hold records or states back: partial batches leave on their own.

The CLI reads a pipe that stays open: a few records and a STATE arrive, then nothing for as long as
it takes. The batch is far from full and a STATE does not force it out, yet with a 1-second
`flush_interval_seconds` the records reach Planhat and the state comes out while input is still
open. Nothing here is timed: the test waits for the state (giving up only after a generous bound
that a hung connector would hit), then checks what had happened by that moment.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from destination_planhat.testing.cli import GIVE_UP_SECONDS, run_cli, start_cli
from destination_planhat.testing.harness import (
    encode_lines,
    metric,
    mixed_catalog,
    record,
    sandbox_config,
    stream_state,
)


@pytest.mark.process
@pytest.mark.parametrize("parse_workers", [0, 2], ids=["parsing in process", "two parse workers"])
def test_a_state_comes_out_while_the_source_is_quiet_and_its_pipe_still_open(parse_workers, sandbox, tmp_path):
    config = sandbox_config(sandbox.url, batch_size=1_000, flush_interval_seconds=1, parse_workers=parse_workers)
    with start_cli("write", tmp_path, config=config, catalog=mixed_catalog()) as connector:
        first = [record("metrics_stream", metric(i)) for i in range(5)]
        connector.send(encode_lines([*first, stream_state("metrics_stream", "after-5")]))  # the pipe stays open

        state = connector.next_state()
        assert state["stream"]["stream_state"] == {"cursor": "after-5"}
        assert state["destinationStats"]["recordCount"] == 5
        assert sandbox.received("metrics") == [r["record"]["data"] for r in first], (
            "the five records were acknowledged before their state came out"
        )
        assert connector.running(), "the connector is still running: input has not ended"

        # The source resumes, then ends: the rest goes through as usual.
        later = [record("metrics_stream", metric(i)) for i in range(5, 8)]
        connector.send(encode_lines([*later, stream_state("metrics_stream", "after-8")]))
        connector.end_input()
        state = connector.next_state()
        assert (state["stream"]["stream_state"], state["destinationStats"]["recordCount"]) == ({"cursor": "after-8"}, 3)
        run = connector.finish()
    assert run.returncode == 0, run.stderr[-3000:]
    assert sandbox.received("metrics") == [r["record"]["data"] for r in first + later]
    assert [r.items for r in sandbox.requests] == [5, 3], "each pause sent one partial batch, not one per record"


def test_a_state_alone_does_not_push_out_a_partial_batch(sandbox, tmp_path):
    """With the default flush interval, a state arriving after two records waits for the end of input
    (or for the batch to fill) instead of sending a two-item request."""
    lines = [
        record("metrics_stream", metric(0)),
        record("metrics_stream", metric(1)),
        stream_state("metrics_stream", "after-2"),
        record("metrics_stream", metric(2)),
    ]
    config = sandbox_config(sandbox.url, batch_size=1_000)
    run = run_cli("write", tmp_path, config=config, catalog=mixed_catalog(), stdin=encode_lines(lines))
    assert run.returncode == 0, run.stdout[-3000:]
    assert [s["destinationStats"]["recordCount"] for s in run.states] == [2]
    assert [r.items for r in sandbox.requests] == [3], "one request at the end, holding the records after the state too"


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc; this kernel may lack /proc/<pid>/task/*/children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.process
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_parse_workers_end_when_the_connector_is_killed(sandbox, tmp_path):
    """Airbyte may kill a sync's container process outright: its parse workers must not outlive it
    (each ends on the end of its input pipe, which the kill closes)."""
    config = sandbox_config(sandbox.url, batch_size=1_000, flush_interval_seconds=1, parse_workers=2)
    with start_cli("write", tmp_path, config=config, catalog=mixed_catalog()) as connector:
        connector.send(encode_lines([record("metrics_stream", metric(1)), stream_state("metrics_stream", "after-1")]))
        connector.next_state()  # the sync is running, its workers started
        workers = _children(connector.pid)
        assert len(workers) == 2
        connector.kill()
    # Polled, not timed: the bound is one a worker that never ends would hit.
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers)), "a parse worker outlived the connector"
