"""What the log says while a sync runs and when it ends: progress lines and the summary table.

Everything is computed from the Ledger, so the numbers a user reads in the log are the numbers
the sync accounts with. Nothing here reads a clock: callers pass `now`, so tests can drive it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Optional

import orjson

from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import system_error
from destination_planhat.sync.ledger import TOP_REASONS, Ledger, StreamStats

logger = logging.getLogger("airbyte")

STREAM_COLUMN_MAX = 48
# The end-of-sync summary as one JSON object, for machines (tests, log scrapers); the lines before it
# say the same for people.
SUMMARY_JSON_PREFIX = "sync summary (JSON): "


@dataclass(frozen=True)
class Totals:
    read: int = 0
    sent: int = 0
    acknowledged: int = 0
    processed: int = 0
    rejected_by_planhat: int = 0
    rejected_locally: int = 0
    skipped: int = 0

    @classmethod
    def of(cls, streams: Iterable[StreamStats]) -> Totals:
        sums = {f.name: 0 for f in fields(cls)}
        for stats in streams:
            for name in sums:
                sums[name] += getattr(stats, name)
        return cls(**sums)


FIRST_PROGRESS_SECONDS = 5.0


class ProgressReporter:
    """Decides when a progress line is due and writes it, with rates since the previous line.

    A long sync is otherwise silent between batch lines; a user watching the Airbyte log (or a
    stuck sync) needs to see whether records still come in and whether Planhat still answers.
    """

    def __init__(self, ledger: Ledger, interval_seconds: float, started_at: float) -> None:
        self._ledger = ledger
        self._interval = interval_seconds
        self._started_at = started_at
        self._last_at = started_at
        self._last = Totals()
        self._lines = 0

    def due(self, now: float) -> bool:
        """The first line comes after FIRST_PROGRESS_SECONDS (so a long sync shows it is moving within
        seconds), the others every `interval_seconds`."""
        wait = self._interval if self._lines else min(self._interval, FIRST_PROGRESS_SECONDS)
        return now - self._last_at >= wait

    def line(self, now: float, in_flight: Mapping[Endpoint, int], max_in_flight: int) -> str:
        """One progress line; the rates cover the time since the previous line."""
        totals = Totals.of(self._ledger.all())
        window = max(now - self._last_at, 1e-9)
        read_rate = (totals.read - self._last.read) / window
        ack_rate = (totals.acknowledged - self._last.acknowledged) / window
        self._last_at, self._last = now, totals
        self._lines += 1
        rejected = totals.rejected_locally + totals.rejected_by_planhat
        flying = ", ".join(f"{endpoint.label} {count}" for endpoint, count in in_flight.items()) or "none"
        return (
            f"progress after {format_duration(now - self._started_at)}: "
            f"read {totals.read:,} ({read_rate:,.0f}/s), sent {totals.sent:,}, "
            f"acknowledged by Planhat {totals.acknowledged:,} ({ack_rate:,.0f}/s), "
            f"rejected {rejected:,} ({totals.rejected_locally:,} locally, {totals.rejected_by_planhat:,} by Planhat); "
            f"requests in flight: {flying} (at most {max_in_flight})"
        )


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# (StreamStats attribute, column title), in the order printed.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("read", "read"),
    ("sent", "sent"),
    ("acknowledged", "acknowledged"),
    ("processed", "processed"),
    ("rejected_by_planhat", "rejected by Planhat"),
    ("rejected_locally", "rejected locally"),
    ("skipped", "skipped"),
)


# Added to the table when a stream goes to a Planhat object (what the upsert answers count).
OBJECT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("created", "created"),
    ("updated", "updated"),
    ("unchanged", "unchanged"),
    ("merged", "merged duplicates"),
)
# Added when a stream counts any of them (an update, insert or delete stream: see config's `operation`).
OPERATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("deleted", "deleted"),
    ("archived", "archived"),
    ("already_absent", "already absent"),
    ("not_found", "not found"),
    ("already_present", "already present"),
    ("source_deletes_ignored", "source deletes ignored"),
    ("skipped_unchanged", "unchanged, not sent"),
)


def _is_object(stats: StreamStats) -> bool:
    try:
        return Endpoint(stats.endpoint).is_object
    except ValueError:
        return False


def summary_table(streams: Sequence[StreamStats]) -> list[str]:
    """The final per-stream counts as fixed-width lines: a header, one row per stream, a total.

    One log line per row, so that each line stays aligned under the log viewer's own prefix.
    """
    names = [_clip(stats.stream) for stats in streams]
    endpoints = [_endpoint_label(stats.endpoint) for stats in streams]
    columns = SUMMARY_COLUMNS + (OBJECT_COLUMNS if any(_is_object(stats) for stats in streams) else ())
    columns += tuple(column for column in OPERATION_COLUMNS if any(getattr(stats, column[0]) for stats in streams))
    rows = [
        [name, endpoint, *(f"{getattr(stats, attribute):,}" for attribute, _ in columns)]
        for name, endpoint, stats in zip(names, endpoints, streams)
    ]
    header = ["stream", "endpoint", *(title for _, title in columns)]
    total = ["total", "", *(f"{sum(getattr(stats, attribute) for stats in streams):,}" for attribute, _ in columns)]
    table = [header, *rows, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def render(row: list[str]) -> str:
        text = [cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(text).rstrip()

    return [render(row) for row in table]


def summary_notes(streams: Sequence[StreamStats]) -> list[str]:
    """What the table cannot hold: the top rejection reasons and counts that need a word of warning."""
    notes: list[str] = []
    for stats in streams:
        where = f"stream '{stats.stream}'"
        if stats.planhat_reasons:
            notes.append(f"{where}: rejected by Planhat: {_top(stats.planhat_reasons)}")
        if stats.local_reasons:
            notes.append(f"{where}: rejected locally (not sent): {_top(stats.local_reasons)}")
        if stats.skip_reasons:
            notes.append(f"{where}: skipped: {_top(stats.skip_reasons)}")
        if stats.settled_reasons:
            notes.append(f"{where}: not sent, Planhat already is as asked: {_top(stats.settled_reasons)}")
        if stats.extra_items or stats.empty_records:
            records = stats.read - stats.skipped
            items = records + stats.extra_items - stats.empty_records
            notes.append(
                f"{where}: unpivot made {items:,} items of {records:,} records ({stats.extra_items:,} items beyond "
                f"one per record, {stats.empty_records:,} records with no non-null unpivot column); from sent on, "
                "the columns count items"
            )
        if stats.sent_invalid:
            notes.append(
                f"{where}: sent although they fail the local checks (invalid_records: send): "
                f"{stats.sent_invalid:,}: {_top(stats.sent_invalid_reasons)}"
            )
        if stats.changed_records:
            notes.append(
                f"{where}: {stats.changed_records:,} record(s) arrived changed by the source (Airbyte's meta.changes): "
                f"{_top(stats.source_changes)}"
            )
        if stats.unconfirmed:
            notes.append(f"{where}: {_unconfirmed(stats)}")
        if stats.retries:
            notes.append(f"{where}: {stats.requests:,} request(s) answered, after {stats.retries:,} retries")
        if stats.not_sent or stats.not_acknowledged:
            notes.append(
                f"{where}: the sync stopped with {stats.not_sent:,} item(s) not sent and {stats.not_acknowledged:,} "
                "sent but not acknowledged by Planhat; the next attempt sends them again"
            )
        if stats.resent_after_ambiguous_failure:
            notes.append(
                f"{where}: {stats.resent_after_ambiguous_failure:,} re-sent after a failure where Planhat may "
                "already have received them (possible duplicates)"
            )
    return notes


def _unconfirmed(stats: StreamStats) -> str:
    return (
        f"{stats.unconfirmed:,} item(s) NOT CONFIRMED: Planhat received them (HTTP 200) but its answers counted "
        "them neither as processed nor as rejected, so whether they were stored is unknown"
    )


def unconfirmed_error(streams: Iterable[StreamStats]) -> Optional[Exception]:
    """The error that ends a sync whose records were all answered but not all confirmed (see
    docs/planhat.md, What counts as an acknowledgement), or None.

    Only the analytics host can leave items unconfirmed: its 200 with Planhat's counts is Planhat's
    receipt, so their states went out and they are not sent again (a metric sent twice may be summed);
    but the sync must not report success over records that may be lost."""
    notes = [f"stream '{stats.stream}': {_unconfirmed(stats)}" for stats in streams if stats.unconfirmed]
    if not notes:
        return None
    return system_error(
        "Planhat did not confirm every record: "
        + "; ".join(notes)
        + ". Their states were emitted (Planhat's 200 means it received the data), so the next sync does not send "
        "them again; look for them in Planhat (metrics: Data > Metrics, and Review > Failed Metrics)."
    )


def _top(reasons: Counter) -> str:
    return "; ".join(f"{reason!r} x{count:,}" for reason, count in reasons.most_common(TOP_REASONS))


def _clip(name: str) -> str:
    return name if len(name) <= STREAM_COLUMN_MAX else name[: STREAM_COLUMN_MAX - 3] + "..."


def _endpoint_label(value: str) -> str:
    try:
        return Endpoint(value).label
    except ValueError:
        return value or "(not written)"


class SyncReport:
    """The log of one sync: a progress line when due, and the summary once at the end (also of a
    failed sync), from the ledger and the states' counts."""

    def __init__(
        self,
        ledger: Ledger,
        progress: ProgressReporter,
        endpoints: Sequence[Endpoint],
        max_in_flight: int,
        states: Callable[[], tuple[int, int]],
    ) -> None:
        self._ledger = ledger
        self._progress = progress
        self._endpoints = list(endpoints)
        self._max_in_flight = max_in_flight
        self._states = states  # (emitted, waiting)
        self.summary_logged = False

    def progress_line(self, now: float) -> Optional[str]:
        """The progress line, when one is due (none after the summary)."""
        if self.summary_logged or not self._progress.due(now):
            return None
        in_flight = self._ledger.in_flight()
        per_endpoint = {endpoint: in_flight.get(endpoint, 0) for endpoint in self._endpoints}
        line = self._progress.line(now, per_endpoint, self._max_in_flight)
        emitted, waiting = self._states()
        return f"{line}; states emitted {emitted}, waiting {waiting}"

    def log_summary(self, failed: bool, buffered: Mapping[str, int], cancelled: bool = False) -> None:
        """Once per sync. `buffered`: items never sent, per stream (they count as not sent). `cancelled`:
        the failure was the platform's cancel (the JSON line's status says "cancelled")."""
        if self.summary_logged:
            return
        self.summary_logged = True
        self._ledger.close_books(failed, dict(buffered))
        streams = self._ledger.all()
        for line in (*summary_table(streams), *summary_notes(streams)):
            logger.info("summary: " + line)
        if self._ledger.unparseable_lines:
            logger.warning(
                f"summary: {self._ledger.unparseable_lines} input line(s) could not be read and named no stream "
                "of the catalog; they were skipped"
            )
        emitted, waiting = self._states()
        logger.info(f"summary: {emitted} state message(s) emitted, {waiting} held back")
        summary = {
            "status": "cancelled" if cancelled else "failed" if failed else "succeeded",
            "streams": self._ledger.snapshot(),
            "unreadable_lines_without_stream": self._ledger.unparseable_lines,
            "ignored_messages": self._ledger.ignored_messages,
            "unknown_message_types": self._ledger.unknown_messages,
            "states_emitted": emitted,
            "states_held_back": waiting,
        }
        logger.info(SUMMARY_JSON_PREFIX + orjson.dumps(summary).decode())
