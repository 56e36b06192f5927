"""Progress lines and the summary table: what a user watching the Airbyte log reads.

The progress reporter never reads a clock; these tests hand it `now`, so nothing here waits.
"""

from __future__ import annotations

import re

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.planhat.api import Endpoint
from destination_planhat.sync.ledger import Ledger
from destination_planhat.sync.reporting import (
    ProgressReporter,
    Totals,
    format_duration,
    summary_notes,
    summary_table,
    unconfirmed_error,
)


def ledger_with(**streams: dict[str, int]) -> Ledger:
    ledger = Ledger()
    for name, counts in streams.items():
        endpoint = counts.pop("endpoint", "metrics")
        ledger.stats(name, endpoint)
        ledger.count(name, **counts)
    return ledger


def numbers(line: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", line)]


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (0, "0s"),
        (0.9, "0s"),
        (59, "59s"),
        (60, "1m00s"),
        (90.5, "1m30s"),
        (3600, "1h00m00s"),
        (3 * 3600 + 5 * 60 + 7, "3h05m07s"),
        (-3, "0s"),
    ],
)
def test_durations(seconds, expected):
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    "interval, started_at, now, due",
    [
        (30, 100.0, 100.0, False),
        (30, 100.0, 104.9, False),
        (30, 100.0, 105.0, True),
        (30, 100.0, 500.0, True),
        (1, 0.0, 0.9, False),
        (1, 0.0, 1.0, True),
    ],
)
def test_the_first_progress_line_is_due_after_five_seconds_or_the_interval_if_shorter(interval, started_at, now, due):
    assert ProgressReporter(Ledger(), interval, started_at).due(now) is due


def test_after_the_first_line_a_progress_line_is_due_once_the_interval_has_passed():
    reporter = ProgressReporter(Ledger(), 30, started_at=100.0)
    reporter.line(105.0, {}, 4)
    assert not reporter.due(134.9)
    assert reporter.due(135.0)


def test_progress_counts_every_stream_and_rates_cover_the_time_since_the_previous_line():
    ledger = ledger_with(
        a={"read": 600, "sent": 500, "acknowledged": 400, "rejected_by_planhat": 3},
        b={"endpoint": "user_activities", "read": 300, "sent": 300, "acknowledged": 200, "rejected_locally": 2},
    )
    reporter = ProgressReporter(ledger, 30, started_at=1000.0)
    in_flight = {Endpoint.METRICS: 3, Endpoint.USER_ACTIVITIES: 1}

    first = reporter.line(1030.0, in_flight, 4)
    assert first == (
        "progress after 30s: read 900 (30/s), sent 800, acknowledged by Planhat 600 (20/s), "
        "rejected 5 (2 locally, 3 by Planhat); requests in flight: Metrics 3, User Activities 1 (at most 4)"
    )
    assert not reporter.due(1059.0) and reporter.due(1060.0)

    ledger.count("a", read=6_000, sent=6_000, acknowledged=3_000)
    second = reporter.line(1090.0, {Endpoint.METRICS: 0}, 4)
    # 6,000 more records read and 3,000 more acknowledged in the 60 s since the first line.
    assert second == (
        "progress after 1m30s: read 6,900 (100/s), sent 6,800, acknowledged by Planhat 3,600 (50/s), "
        "rejected 5 (2 locally, 3 by Planhat); requests in flight: Metrics 0 (at most 4)"
    )


def test_progress_before_anything_was_read():
    line = ProgressReporter(Ledger(), 30, started_at=0.0).line(30.0, {}, 4)
    assert line.startswith("progress after 30s: read 0 (0/s), sent 0, acknowledged by Planhat 0 (0/s)")
    assert "requests in flight: none" in line


def test_the_ledger_counts_requests_in_flight_per_endpoint():
    ledger = Ledger()
    for _ in range(3):
        ledger.request_started(Endpoint.METRICS)
    ledger.request_started(Endpoint.USER_ACTIVITIES)
    ledger.request_finished(Endpoint.METRICS)
    ledger.request_finished(Endpoint.USER_ACTIVITIES)
    assert ledger.in_flight() == {Endpoint.METRICS: 2, Endpoint.USER_ACTIVITIES: 0}


def test_the_summary_is_a_table_with_one_row_per_stream_and_a_total():
    ledger = ledger_with(
        metrics_stream={
            "read": 15_000,
            "sent": 15_000,
            "acknowledged": 15_000,
            "processed": 14_990,
            "rejected_by_planhat": 10,
        },
        activities={
            "endpoint": "user_activities",
            "read": 1_200,
            "sent": 1_195,
            "acknowledged": 1_195,
            "processed": 1_195,
            "rejected_locally": 5,
        },
        not_in_catalog={"endpoint": "", "read": 7, "skipped": 7},
    )
    lines = summary_table(ledger.all())

    cells = [re.split(r" {2,}", line) for line in lines]
    assert cells == [
        [
            "stream",
            "endpoint",
            "read",
            "sent",
            "acknowledged",
            "processed",
            "rejected by Planhat",
            "rejected locally",
            "skipped",
        ],
        ["metrics_stream", "Metrics", "15,000", "15,000", "15,000", "14,990", "10", "0", "0"],
        ["activities", "User Activities", "1,200", "1,195", "1,195", "1,195", "0", "5", "0"],
        ["not_in_catalog", "(not written)", "7", "0", "0", "0", "0", "0", "7"],
        ["total", "16,207", "16,195", "16,195", "16,185", "10", "5", "7"],  # no endpoint
    ]
    # Fixed width: every number ends where its column title ends.
    header = lines[0]
    for title in ("read", "sent", "acknowledged", "processed", "rejected by Planhat", "rejected locally", "skipped"):
        right_edge = header.index(title) + len(title)
        for row in lines[1:]:
            assert row[right_edge - 1].isdigit() and (right_edge == len(row) or row[right_edge] == " "), (title, row)


def test_long_stream_names_are_clipped_so_the_table_stays_readable():
    ledger = ledger_with(**{"s" * 80: {"read": 1}})
    row = summary_table(ledger.all())[1]
    assert row.startswith("s" * 45 + "...  ")


def test_the_table_totals_match_the_ledger():
    ledger = ledger_with(a={"read": 3, "sent": 2, "rejected_locally": 1}, b={"read": 4, "sent": 4})
    assert Totals.of(ledger.all()) == Totals(read=7, sent=6, rejected_locally=1)


def test_notes_below_the_table_name_the_stream_and_the_top_reasons():
    ledger = ledger_with(metrics_stream={}, quiet={})
    ledger.record_answer("metrics_stream", 5, 2, ["dimensionId must be specified"] * 2 + ["value must be a number"], 0)
    ledger.reject_locally("metrics_stream", "the record's data is not a JSON object", records=4)
    ledger.record_answer("metrics_stream", 10, None, [], 10)
    assert summary_notes(ledger.all()) == [
        "stream 'metrics_stream': rejected by Planhat: 'dimensionId must be specified' x2; 'value must be a number' x1",
        "stream 'metrics_stream': rejected locally (not sent): \"the record's data is not a JSON object\" x4",
        "stream 'metrics_stream': 10 item(s) NOT CONFIRMED: Planhat received them (HTTP 200) but its answers counted "
        "them neither as processed nor as rejected, so whether they were stored is unknown",
        "stream 'metrics_stream': 10 re-sent after a failure where Planhat may already have received them (possible duplicates)",
    ]


def test_a_sync_with_unconfirmed_items_does_not_end_as_succeeded():
    """All answered, not all confirmed (the analytics host's count fell short of the items sent): the
    sync fails at its end, naming the streams, even though their states went out (issue 19)."""
    ledger = ledger_with(usage={}, events={})
    ledger.record_answer("usage", 10, 10, [], 0)
    assert unconfirmed_error(ledger.all()) is None
    ledger.record_answer("events", 10, 7, ["count must be a number"], 0)
    error = unconfirmed_error(ledger.all())
    assert isinstance(error, AirbyteTracedException) and error.failure_type == FailureType.system_error
    assert "stream 'events': 2 item(s) NOT CONFIRMED" in error.message and "'usage'" not in error.message
    assert "the next sync does not send them again" in error.message
