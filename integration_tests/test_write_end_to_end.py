"""The real CLI writes to the sandbox: everything arrives once, at the right endpoint, states behind records."""

from __future__ import annotations

from collections import Counter

import pytest

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import (
    API_TOKEN,
    cursors,
    encode_lines,
    mixed_catalog,
    mixed_messages,
    sandbox_config,
)


@pytest.mark.parametrize("parse_workers", [0, 2], ids=["parsing in process", "two parse workers"])
def test_two_endpoints_25k_records_several_states(parse_workers, sandbox, tmp_path):
    messages = list(mixed_messages(metrics=15_000, activities=12_000, state_every=2_500))
    sent = [m["record"] for m in messages if m["type"] == "RECORD"]
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url, batch_size=1_000, parse_workers=parse_workers),
        catalog=mixed_catalog(),
        stdin=encode_lines(messages),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert not run.errors

    metrics = sandbox.received("metrics")
    activities = sandbox.received("user_activities")
    assert sorted(map(repr, metrics)) == sorted(repr(r["data"]) for r in sent if r["stream"] == "metrics_stream")
    assert sorted(map(repr, activities)) == sorted(repr(r["data"]) for r in sent if r["stream"] == "activities_stream")
    # Order within a stream survives batching, per batch: each batch of 1,000 arrives whole and in order.
    # Batches themselves may arrive in any order, as several are in flight at once.
    for stream, received in (("metrics_stream", metrics), ("activities_stream", activities)):
        position = {repr(r["data"]): i for i, r in enumerate(r for r in sent if r["stream"] == stream)}
        arrived = [position[repr(item)] for item in received]
        batches = [arrived[i : i + 1_000] for i in range(0, len(arrived), 1_000)]
        assert all(batch == list(range(batch[0], batch[0] + len(batch))) for batch in batches), stream
        assert sorted(batch[0] for batch in batches) == list(range(0, len(arrived), 1_000)), stream

    requests = sandbox.requests
    assert all(r.items <= 1_000 for r in requests)
    assert {r.endpoint for r in requests if r.authorization_present} == {"metrics"}

    expected_states = [
        (m["state"]["stream"]["stream_descriptor"]["name"], m["state"]["stream"]["stream_state"]["cursor"])
        for m in messages
        if m["type"] == "STATE"
    ]
    assert cursors(run.states) == expected_states
    # Each state counts the records of its stream since that stream's previous state.
    counts = Counter()
    for state in run.states:
        counts[state["stream"]["stream_descriptor"]["name"]] += state["destinationStats"]["recordCount"]
    assert counts == {"metrics_stream": 15_000, "activities_stream": 12_000}
    assert API_TOKEN not in run.stdout + run.stderr
