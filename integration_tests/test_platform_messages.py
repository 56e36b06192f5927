"""What today's Airbyte platform sends and expects, through the real CLI against the sandbox.

- Every STATE goes out exactly as it came in, plus `destinationStats`: the platform's `id` (it fails
  the sync when the echo lacks it), `sourceStats`, and keys no model knows, at every level, with
  their values and types (an integer stays an integer, however large).
- `destinationStats.recordCount` + `rejectedRecordCount` = the records of the state's scope read
  since the previous state of that scope; the platform compares the sum with `sourceStats.recordCount`.
- TRACE STREAM_STATUS COMPLETE sends the stream's partial batch at once; other messages the
  connector does not use warn once per type; `meta.changes` are counted; the configured catalog's
  protocol 0.17+ fields are read without a warning.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from destination_planhat.testing.cli import run_cli, start_cli
from destination_planhat.testing.harness import (
    ACTIVITY_SCHEMA,
    METRIC_SCHEMA,
    activity,
    catalog,
    configured_stream,
    metric,
    record,
    sandbox_config,
)
from destination_planhat.testing.sync_checks import sync_summary

WORKERS = pytest.mark.parametrize("parse_workers", [0, 2], ids=["parsing in process", "two parse workers"])
CATALOG = catalog(configured_stream("usage", METRIC_SCHEMA), configured_stream("events", ACTIVITY_SCHEMA))
BIG = 2**70  # past 64 bits: orjson would read it as a float

STREAM_STATE = {
    "type": "STATE",
    "state": {
        "type": "STREAM",
        "id": 4711,
        "stream": {
            "stream_descriptor": {"name": "usage"},
            "stream_state": {"cursor": BIG, "float": 1.0, "nested": {"list": [1, 2.5, None, "é"], "deep": {"x": True}}},
            "a_key_of_a_later_protocol": {"k": 1},
        },
        "sourceStats": {"recordCount": 3.0},
        "unknownTopLevelOfState": [1, {"a": None}],
    },
    "an_unknown_message_key": "kept",
}
GLOBAL_STATE = {
    "type": "STATE",
    "state": {
        "type": "GLOBAL",
        "id": 4712,
        "global": {
            "shared_state": {"lsn": BIG, "extra": {"k": [1]}},
            "stream_states": [
                {"stream_descriptor": {"name": "usage"}, "stream_state": {"cursor": 1}, "per_stream_unknown": 7},
                {"stream_descriptor": {"name": "events"}, "stream_state": {"cursor": "b"}},
            ],
            "unknown_in_global": {"z": 0},
        },
        "sourceStats": {"recordCount": 4.0},
    },
}
LEGACY_STATE = {"type": "STATE", "state": {"type": "LEGACY", "id": 4713, "data": {"cursor": 9, "more": {"a": [BIG]}}}}


def same_json(sent: Any, received: Any, path: str = "$") -> None:
    """Equal key by key, value by value, and type by type (1 and 1.0 differ here), with the path on failure."""
    assert type(sent) is type(received), f"{path}: {sent!r} came back as {received!r}"
    if isinstance(sent, dict):
        assert list(sent) == list(received), f"{path}: keys {list(sent)} came back as {list(received)}"
        for key in sent:
            same_json(sent[key], received[key], f"{path}.{key}")
    elif isinstance(sent, list):
        assert len(sent) == len(received), f"{path}: {sent!r} came back as {received!r}"
        for i, (a, b) in enumerate(zip(sent, received)):
            same_json(a, b, f"{path}[{i}]")
    else:
        assert sent == received, f"{path}: {sent!r} came back as {received!r}"


def echo_of(sent: dict[str, Any], written: int, rejected: int) -> dict[str, Any]:
    """What the connector must print for `sent`: the same message with destinationStats set."""
    expected = copy.deepcopy(sent)
    expected["state"]["destinationStats"] = {"recordCount": float(written), "rejectedRecordCount": float(rejected)}
    return expected


def stdin_of(*messages: Any) -> bytes:
    """JSON lines with the standard library's encoder, which writes integers past 64 bits as they are."""
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def printed_states(run) -> list[dict[str, Any]]:
    return [m for m in run.messages if m.get("type") == "STATE"]


@WORKERS
@pytest.mark.parametrize(
    "state, records, expected_counts",
    [
        (STREAM_STATE, 3, (3, 0)),
        (GLOBAL_STATE, 4, (4, 0)),
        (LEGACY_STATE, 2, (2, 0)),
    ],
    ids=["stream", "global", "legacy"],
)
def test_a_state_goes_out_exactly_as_it_came_in_plus_its_counts(
    sandbox, tmp_path, parse_workers, state, records, expected_counts
):
    messages = [record("usage", metric(i)) for i in range(records)] + [state]
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url, parse_workers=parse_workers),
        catalog=CATALOG,
        stdin=stdin_of(*messages),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    [printed] = printed_states(run)
    same_json(echo_of(state, *expected_counts), printed)
    assert f'"cursor":{BIG}' in run.stdout or f'"lsn":{BIG}' in run.stdout or f"[{BIG}]" in run.stdout


@WORKERS
def test_counts_add_up_to_what_was_read_with_accepted_rejected_and_skipped_records(sandbox, tmp_path, parse_workers):
    """Per STREAM state of "usage": written (acknowledged by Planhat) and rejected: by the connector's
    checks (data that is not an object), by Planhat (a value that is not a number, sent because of
    invalid_records: send, and refused by the sandbox), and skipped (an unreadable line of the stream).
    Batches of 2 span the states, so Planhat's rejections must be charged to the right state."""
    bad_for_planhat = dict(metric(0), value="not a number")
    sent_first = [
        record("usage", metric(1)),
        record("usage", "not an object"),
        record("usage", bad_for_planhat),
        record("events", activity(1)),
        b'{"type":"RECORD","record":{"stream":"usage","data":{"value":1,,}}}',
        record("usage", metric(2)),
    ]
    sent_second = [record("usage", bad_for_planhat), record("usage", metric(3)), record("stranger", metric(4))]
    first = {
        "type": "STATE",
        "state": {
            "type": "STREAM",
            "id": 1,
            "stream": {"stream_descriptor": {"name": "usage"}},
            "sourceStats": {"recordCount": 5.0},
        },
    }
    second = {
        "type": "STATE",
        "state": {
            "type": "STREAM",
            "id": 2,
            "stream": {"stream_descriptor": {"name": "usage"}},
            "sourceStats": {"recordCount": 2.0},
        },
    }
    events = {
        "type": "STATE",
        "state": {"type": "STREAM", "id": 3, "stream": {"stream_descriptor": {"name": "events"}}},
    }
    stranger = {
        "type": "STATE",
        "state": {"type": "STREAM", "id": 4, "stream": {"stream_descriptor": {"name": "stranger"}}},
    }
    lines = [*sent_first, first, *sent_second, second, events, stranger]
    stdin = b"".join(line + b"\n" if isinstance(line, bytes) else stdin_of(line) for line in lines)
    config = sandbox_config(sandbox.url, parse_workers=parse_workers, batch_size=2, invalid_records="send")
    run = run_cli("write", tmp_path, config=config, catalog=CATALOG, stdin=stdin)
    assert run.returncode == 0, run.stderr[-2000:]
    printed = printed_states(run)
    assert [s["state"]["id"] for s in printed] == [1, 2, 3, 4]
    # usage, first: metric(1) and metric(2) written; not an object, bad value, unreadable line rejected.
    same_json(echo_of(first, 2, 3), printed[0])
    same_json(echo_of(second, 1, 1), printed[1])
    same_json(echo_of(events, 1, 0), printed[2])
    same_json(echo_of(stranger, 0, 1), printed[3])
    for state in printed[:2]:  # what the platform checks
        stats = state["state"]["destinationStats"]
        assert stats["recordCount"] + stats["rejectedRecordCount"] == state["state"]["sourceStats"]["recordCount"]
    usage = sync_summary(run)["streams"]["usage"]
    assert (usage["rejected_locally"], usage["rejected_by_planhat"], usage["skipped"]) == (1, 2, 1)


@WORKERS
def test_a_global_state_counts_every_stream_since_the_previous_global_state(sandbox, tmp_path, parse_workers):
    first = {
        "type": "STATE",
        "state": {"type": "GLOBAL", "id": 10, "global": {"shared_state": {"c": 1}, "stream_states": []}},
    }
    second = {
        "type": "STATE",
        "state": {"type": "GLOBAL", "id": 11, "global": {"shared_state": {"c": 2}, "stream_states": []}},
    }
    lines = [
        record("usage", metric(1)),
        record("events", activity(1)),
        record("usage", "not an object"),
        first,
        record("stranger", metric(2)),
        record("events", activity(2)),
        second,
    ]
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url, parse_workers=parse_workers),
        catalog=CATALOG,
        stdin=stdin_of(*lines),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    printed = printed_states(run)
    same_json(echo_of(first, 2, 1), printed[0])
    same_json(echo_of(second, 1, 1), printed[1])


@pytest.mark.process
@WORKERS
def test_stream_complete_sends_the_partial_batch_while_the_source_is_silent(sandbox, tmp_path, parse_workers):
    """With the longest flush interval (600 s) the partial batch would wait ten minutes; after the
    platform's COMPLETE for its stream it goes at once, and its state follows, while the source's pipe
    is still open. Not a timing test: it waits (up to a bound a hung connector would hit) and prints
    how long it took."""
    config = sandbox_config(sandbox.url, batch_size=1_000, flush_interval_seconds=600, parse_workers=parse_workers)
    with start_cli("write", tmp_path, config=config, catalog=CATALOG) as connector:
        state = {
            "type": "STATE",
            "state": {"type": "STREAM", "id": 7, "stream": {"stream_descriptor": {"name": "usage"}}},
        }
        complete = {
            "type": "TRACE",
            "trace": {
                "type": "STREAM_STATUS",
                "emitted_at": 1_795_600_000_000.0,
                "stream_status": {"stream_descriptor": {"name": "usage"}, "status": "COMPLETE"},
            },
        }
        connector.send(stdin_of(*[record("usage", metric(i)) for i in range(3)], state, complete))  # pipe kept open
        started = time.monotonic()
        printed = connector.next_state()
        print(f"state printed {time.monotonic() - started:.2f} s after COMPLETE (flush interval 600 s)")
        assert printed["id"] == 7 and printed["destinationStats"]["recordCount"] == 3.0
        assert [r.items for r in sandbox.requests] == [3]
        assert connector.running(), "input has not ended"
        run = connector.finish()
    assert run.returncode == 0, run.stderr[-3000:]
    assert not [line for line in run.logs if "TRACE" in line and "ignoring" in line], (
        "STREAM_STATUS is used, not ignored"
    )
    assert "Traceback" not in run.stderr


def test_messages_the_connector_does_not_use_warn_once_per_type(sandbox, tmp_path):
    log = {"type": "LOG", "log": {"level": "INFO", "message": "hello"}}
    estimate = {
        "type": "TRACE",
        "trace": {"type": "ESTIMATE", "emitted_at": 1.0, "estimate": {"name": "usage", "type": "STREAM"}},
    }
    control = {
        "type": "CONTROL",
        "control": {"type": "CONNECTOR_CONFIG", "emitted_at": 1.0, "connectorConfig": {"config": {}}},
    }
    unknown = {"type": "SOMETHING_NEW", "something": 1}
    status = {
        "type": "TRACE",
        "trace": {
            "type": "STREAM_STATUS",
            "emitted_at": 1.0,
            "stream_status": {"stream_descriptor": {"name": "events"}, "status": "RUNNING"},
        },
    }
    lines = [log] * 20 + [estimate] * 5 + [control] * 3 + [unknown] * 4 + [status] * 6 + [record("usage", metric(1))]
    run = run_cli("write", tmp_path, config=sandbox_config(sandbox.url), catalog=CATALOG, stdin=stdin_of(*lines))
    assert run.returncode == 0, run.stderr[-2000:]
    warnings = [
        m["log"]["message"]
        for m in run.of_type("LOG")
        if m["log"]["level"] == "WARN" and "ignoring" in m["log"]["message"]
    ]
    assert len(warnings) == 4, warnings  # LOG, TRACE (the estimate), CONTROL, SOMETHING_NEW: one each
    assert sum("'SOMETHING_NEW'" in w and "not an Airbyte message type" in w for w in warnings) == 1
    summary = sync_summary(run)
    assert (summary["ignored_messages"], summary["unknown_message_types"]) == (32, 4)


@WORKERS
def test_fields_the_source_changed_are_counted_per_stream_and_shown_in_the_summary(sandbox, tmp_path, parse_workers):
    changed = record("usage", metric(1))
    changed["record"]["meta"] = {
        "changes": [
            {"field": "note", "change": "TRUNCATED", "reason": "SOURCE_FIELD_SIZE_LIMITATION"},
            {"field": "date", "change": "NULLED", "reason": "SOURCE_SERIALIZATION_ERROR"},
        ]
    }
    plain = record("usage", metric(2))
    plain["record"]["meta"] = {"changes": []}
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url, parse_workers=parse_workers),
        catalog=CATALOG,
        stdin=stdin_of(changed, plain, changed),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    usage = sync_summary(run)["streams"]["usage"]
    assert usage["records_changed_by_source"] == 2
    assert usage["source_changes"] == {
        "note: TRUNCATED (SOURCE_FIELD_SIZE_LIMITATION)": 2,
        "date: NULLED (SOURCE_SERIALIZATION_ERROR)": 2,
    }
    assert run.log_lines("2 record(s) arrived changed by the source")
    assert len(sandbox.received("metrics")) == 3


def test_the_configured_catalog_of_protocol_0_17_is_read_without_a_warning(sandbox, tmp_path):
    """PyAirbyte sets generation_id = minimum_generation_id = 1 on every run; the platform sets them
    with sync_id; destination_object_name and include_files come with newer platforms."""
    configured = copy.deepcopy(CATALOG)
    for stream in configured["streams"]:
        stream.update(generation_id=1, minimum_generation_id=1, sync_id=42, include_files=False)
    run = run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url),
        catalog=configured,
        stdin=stdin_of(record("usage", metric(1)), record("events", activity(1))),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [m["log"]["message"] for m in run.of_type("LOG") if m["log"]["level"] in ("WARN", "ERROR")] == []
    assert len(sandbox.received()) == 2
