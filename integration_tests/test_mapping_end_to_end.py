"""Mapped, unpivoted and invalid records through the real CLI into the sandbox; dry run sends nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import (
    catalog,
    configured_stream,
    encode_lines,
    record,
    sandbox_config,
    stream_state,
)

ORDERS_SCHEMA = {
    "type": "object",
    "properties": {"id": {}, "account": {"type": "object"}, "total": {}, "ordered_at": {}},
}
SIGNUPS_SCHEMA = {"type": "object", "properties": {"user_id": {}, "mail": {}, "created_at": {}}}
DAILY_SCHEMA = {"type": "object", "properties": {"company": {}, "day": {}, "mrr": {}, "seats": {}, "nps": {}}}

ORDERS = {
    "name": "orders",
    "endpoint": "metrics",
    "field_mappings": [
        {"planhat_field": "dimensionId", "constant": "order_total"},
        {"planhat_field": "value", "source_field": "total"},
        {"planhat_field": "externalId", "source_field": "account.id"},
        {"planhat_field": "date", "source_field": "ordered_at"},
    ],
}
SIGNUPS = {
    "name": "signups",
    "endpoint": "user_activities",
    "field_mappings": [
        {"planhat_field": "email", "source_field": "mail"},
        {"planhat_field": "euExtId", "source_field": "user_id"},
        {"planhat_field": "action", "constant": "signed_up"},
        {"planhat_field": "date", "source_field": "created_at"},
    ],
}
DAILY = {
    "name": "daily",
    "endpoint": "metrics",
    "unpivot_columns": ["mrr", "seats", "nps"],
    "field_mappings": [
        {"planhat_field": "externalId", "source_field": "company"},
        {"planhat_field": "date", "source_field": "day"},
    ],
}


def summary_row(run, stream: str) -> dict[str, str]:
    """The final summary table's row of a stream, by column title."""
    lines = [line[len("summary: ") :] for line in run.log_lines("summary: ")]
    table = [re.split(r" {2,}", line) for line in lines]
    header = next(cells for cells in table if cells[0] == "stream")
    row = next(cells for cells in table if cells[0] == stream)
    return dict(zip(header, row))


def summary_notes(run, stream: str) -> list[str]:
    return run.log_lines(f"summary: stream '{stream}': ")


def order(i: int, total: Any = None) -> dict[str, Any]:
    return {
        "id": i,
        "account": {"id": f"acct-{i % 7}"},
        "total": str(i) if total is None else total,
        "ordered_at": "2026-11-01T10:00:00+01:00",
    }


def write(sandbox, tmp_path, streams, messages, **config):
    return run_cli(
        "write",
        tmp_path,
        config=sandbox_config(sandbox.url, streams=streams, **config),
        catalog=catalog(
            *[
                configured_stream(name, schema)
                for name, schema in STREAM_SCHEMAS
                if any(s["name"] == name for s in streams)
            ]
        ),
        stdin=encode_lines(messages),
    )


STREAM_SCHEMAS = [("orders", ORDERS_SCHEMA), ("signups", SIGNUPS_SCHEMA), ("daily", DAILY_SCHEMA)]


def test_mapped_streams_of_both_endpoints(sandbox, tmp_path):
    messages = [record("orders", order(i)) for i in range(300)]
    messages += [
        record("signups", {"user_id": i, "mail": f"u{i}@example.com", "created_at": "2026-11-01 08:00:00"})
        for i in range(200)
    ]
    messages.append(stream_state("orders", 300))
    run = write(sandbox, tmp_path, [ORDERS, SIGNUPS], messages)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = sandbox.received("metrics")
    activities = sandbox.received("user_activities")
    assert metrics == [
        {"dimensionId": "order_total", "value": i, "externalId": f"acct-{i % 7}", "date": "2026-11-01T09:00:00.000Z"}
        for i in range(300)
    ]
    assert activities == [
        {"email": f"u{i}@example.com", "euExtId": str(i), "action": "signed_up", "date": "2026-11-01T08:00:00.000Z"}
        for i in range(200)
    ]
    assert len(run.states) == 1


def test_unpivoted_stream(sandbox, tmp_path):
    rows = [
        {"company": "acme", "day": "2026-11-01", "mrr": 1200, "seats": 14, "nps": None},
        {"company": "globex", "day": "2026-11-01", "mrr": "800.5", "seats": None, "nps": None},
        {"company": "initech", "day": "2026-11-01", "mrr": None, "seats": None, "nps": None},
    ]
    run = write(sandbox, tmp_path, [DAILY], [record("daily", row) for row in rows])
    assert run.returncode == 0, run.stderr[-2000:]
    assert sandbox.received("metrics") == [
        {"externalId": "acme", "date": "2026-11-01", "dimensionId": "mrr", "value": 1200},
        {"externalId": "acme", "date": "2026-11-01", "dimensionId": "seats", "value": 14},
        {"externalId": "globex", "date": "2026-11-01", "dimensionId": "mrr", "value": 800.5},
    ]
    row = summary_row(run, "daily")
    assert (row["read"], row["sent"]) == ("3", "3")
    [note] = summary_notes(run, "daily")
    assert (
        "unpivot made 3 items of 3 records (1 items beyond one per record, 1 records with no non-null unpivot column)"
        in note
    )


BAD_ORDERS = [order(1), order(2, total="n/a"), order(3, total="4"), order(4, total=True)]


@pytest.mark.parametrize(
    "invalid_records, sent_values, rejected_locally, rejected_by_planhat",
    [
        ("reject", [1, 4], 2, 0),
        ("send", [1, "n/a", 4, True], 0, 2),
    ],
)
def test_invalid_records_reject_or_send(
    sandbox, tmp_path, invalid_records, sent_values, rejected_locally, rejected_by_planhat
):
    run = write(sandbox, tmp_path, [ORDERS], [record("orders", o) for o in BAD_ORDERS], invalid_records=invalid_records)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = sandbox.summary()["metrics"]
    assert summary["items"] == len(sent_values)
    assert summary["errors"] == rejected_by_planhat
    assert [m["value"] for m in sandbox.received("metrics")] == sent_values  # "4" became 4 either way
    row = summary_row(run, "orders")
    assert row["rejected locally"] == str(rejected_locally)
    assert row["rejected by Planhat"] == str(rejected_by_planhat)
    if invalid_records == "reject":
        assert run.log_lines("an item was not sent: value is not a number (value='n/a')")
    else:
        assert run.log_lines(
            "sending an item that fails the local checks (invalid_records: send): value is not a number"
        )


def test_max_error_percent_fails_the_sync_naming_stream_share_and_reasons(sandbox, tmp_path):
    orders = [order(i, total="n/a" if i % 4 == 0 else None) for i in range(1, 101)]  # 25% invalid
    run = write(sandbox, tmp_path, [ORDERS], [record("orders", o) for o in orders], max_error_percent=20)
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    assert "stream 'orders': 25.0% of 100 items were rejected" in error["message"]
    assert "'value is not a number' x25" in error["message"]
    assert len(sandbox.received("metrics")) == 75  # judged at the end: the valid items were sent


def test_max_error_percent_not_passed_succeeds(sandbox, tmp_path):
    orders = [order(i, total="n/a" if i % 4 == 0 else None) for i in range(1, 101)]
    run = write(sandbox, tmp_path, [ORDERS], [record("orders", o) for o in orders], max_error_percent=25)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not run.errors


def test_dry_run_sends_nothing_and_emits_no_state(sandbox, tmp_path):
    messages = [record("orders", order(i, total="n/a" if i == 5 else None)) for i in range(1, 11)]
    messages.append(stream_state("orders", 10))
    run = write(sandbox, tmp_path, [ORDERS], messages, dry_run=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sandbox.requests == []
    assert run.states == []
    [counts] = run.log_lines("dry run: stream 'orders' -> metrics:")
    assert (
        "read 10 records, would send 9 items in 1 request(s), rejected by the connector's checks 1 ('value is not a number' x1)"
        in counts
    )
    samples = run.log_lines("dry run: stream 'orders' sample payload")
    assert len(samples) == 3
    assert (
        '{"dimensionId":"order_total","value":1,"externalId":"acct-1","date":"2026-11-01T09:00:00.000Z"}' in samples[0]
    )
    assert run.log_lines("1 state message(s) received and not emitted")


def test_every_mapping_mistake_is_one_config_error_before_anything_is_sent(sandbox, tmp_path):
    bad_orders = dict(
        ORDERS, field_mappings=ORDERS["field_mappings"] + [{"planhat_field": "email", "source_field": "mail"}]
    )
    bad_signups = dict(
        SIGNUPS, unpivot_columns=["mrr"], field_mappings=[{"planhat_field": "email", "source_field": "email_address"}]
    )
    run = write(sandbox, tmp_path, [bad_orders, bad_signups], [record("orders", order(1))])
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    message = error["message"]
    assert "stream 'orders' (Metrics), field_mappings entry 5: 'email' is a User Activities field" in message
    assert "stream 'signups' (User Activities): unpivot_columns only apply to Metrics" in message
    assert "source_field 'email_address' for 'email': 'email_address' is not a column of the stream's schema" in message
    assert sandbox.requests == []


def test_check_reports_mapping_mistakes_without_a_catalog(sandbox, tmp_path):
    bad = dict(ORDERS, field_mappings=[{"planhat_field": "count", "constant": "1"}])
    run = run_cli("check", tmp_path, config=sandbox_config(sandbox.url, streams=[bad]))
    status = run.connection_status
    assert status["status"] == "FAILED"
    assert "'count' is a User Activities field" in status["message"]


def test_max_error_percent_stops_a_sync_early_once_enough_items_were_judged(sandbox, tmp_path):
    orders = [order(i, total="n/a") for i in range(30_000)]  # a wrong mapping: every record invalid
    run = write(sandbox, tmp_path, [ORDERS], [record("orders", o) for o in orders], max_error_percent=50)
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    assert "checked during the sync, after at least 10000 items" in error["message"]
    assert summary_row(run, "orders")["read"] == "10,000"  # stopped reading there instead of rejecting all 30,000
