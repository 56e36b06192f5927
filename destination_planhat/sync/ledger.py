"""What happened to every record, per stream: the numbers behind the logs and the final summary.

Units: `read` and `empty_records` count records; everything after mapping counts items. A record
is one item, except with unpivot_columns, where one record becomes one item per non-null column:
`extra_items` counts the items beyond the first that records produced, `empty_records` the
records that produced none (every unpivot column null).

Invariants, per stream (`books_balance`):
  read + extra_items = sent + rejected_locally + skipped + empty_records + not_sent + merged
  sent = processed + rejected_by_planhat + unconfirmed + not_acknowledged
(without unpivot and without a failure: read = sent + rejected_locally + skipped). `unconfirmed`
are items of an acknowledged request that Planhat's counts leave out (the analytics host's 200 is its
receipt even when its counts fall short; docs/planhat.md, What counts as an acknowledgement): the sync
then ends failed (sync/reporting.py, unconfirmed_error).
`not_sent` and `not_acknowledged` are zero unless the sync failed: items still buffered, and items
handed to a sender whose batch never got a 2xx answer. Items re-sent after an ambiguous failure
(the server may have kept the first copy) are counted apart, as possible duplicates; they do not
enter the invariants. `sent_invalid` (invalid_records: send) counts items among `sent` that failed
the local checks.

Objects (the main API): `merged` counts records merged into an earlier item with the same key in
the same request (one item is sent for them all); of `processed`, `created` and `updated` are what
Planhat's answer counts, and `unchanged` (its `nonupdates`) the updated items that changed nothing.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

TOP_REASONS = 3


@dataclass
class StreamStats:
    stream: str
    endpoint: str = ""
    read: int = 0
    sent: int = 0
    acknowledged: int = 0
    processed: int = 0
    rejected_by_planhat: int = 0
    unconfirmed: int = 0
    rejected_locally: int = 0
    skipped: int = 0
    resent_after_ambiguous_failure: int = 0
    requests: int = 0
    extra_items: int = 0
    empty_records: int = 0
    sent_invalid: int = 0
    retries: int = 0
    not_sent: int = 0
    not_acknowledged: int = 0
    merged: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # By the stream's operation (config.StreamSettings.operation): records Planhat already is as asked
    # for (`settled`: not sent), of which already present (insert) and already absent (delete); updates
    # whose key Planhat lacks (`not_found`, also rejected locally); deletes and archives acknowledged.
    settled: int = 0
    already_present: int = 0
    already_absent: int = 0
    not_found: int = 0
    deleted: int = 0
    archived: int = 0
    source_deletes_ignored: int = 0  # records deleted at the source, on_source_delete: ignore (also settled)
    skipped_unchanged: int = 0  # skip_unchanged: items equal to what Planhat has, not sent (also settled)
    settled_reasons: Counter = field(default_factory=Counter)
    planhat_reasons: Counter = field(default_factory=Counter)
    local_reasons: Counter = field(default_factory=Counter)
    sent_invalid_reasons: Counter = field(default_factory=Counter)
    skip_reasons: Counter = field(default_factory=Counter)
    # Records whose `meta.changes` say the source changed them (a field nulled or truncated), and the
    # changes by "field: change (reason)".
    changed_records: int = 0
    source_changes: Counter = field(default_factory=Counter)

    def invariant_holds(self) -> bool:
        """Every record read is accounted for: sent, rejected here, skipped, or left behind by a failure."""
        return (
            self.read + self.extra_items
            == self.sent
            + self.rejected_locally
            + self.skipped
            + self.empty_records
            + self.not_sent
            + self.merged
            + self.settled
        )

    def answers_add_up(self) -> bool:
        """Every item sent is accounted for by Planhat's answers, or by the failure that ended the sync."""
        return self.sent == self.processed + self.rejected_by_planhat + self.unconfirmed + self.not_acknowledged

    def books_balance(self) -> bool:
        return self.invariant_holds() and self.answers_add_up()

    def as_dict(self) -> dict[str, object]:
        """The counts for the machine-readable summary line."""
        return {
            "endpoint": self.endpoint,
            "read": self.read,
            "extra_items": self.extra_items,
            "empty_records": self.empty_records,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "processed": self.processed,
            "rejected_by_planhat": self.rejected_by_planhat,
            "unconfirmed": self.unconfirmed,
            "rejected_locally": self.rejected_locally,
            "skipped": self.skipped,
            "not_sent": self.not_sent,
            "not_acknowledged": self.not_acknowledged,
            "merged": self.merged,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "archived": self.archived,
            "already_absent": self.already_absent,
            "not_found": self.not_found,
            "already_present": self.already_present,
            "source_deletes_ignored": self.source_deletes_ignored,
            "skipped_unchanged": self.skipped_unchanged,
            "settled": self.settled,
            "settled_reasons": dict(self.settled_reasons.most_common(10)),
            "sent_invalid": self.sent_invalid,
            "resent_after_ambiguous_failure": self.resent_after_ambiguous_failure,
            "requests": self.requests,
            "retries": self.retries,
            "planhat_reasons": dict(self.planhat_reasons.most_common(10)),
            "local_reasons": dict(self.local_reasons.most_common(10)),
            "skip_reasons": dict(self.skip_reasons.most_common(10)),
            "records_changed_by_source": self.changed_records,
            "source_changes": dict(self.source_changes.most_common(10)),
            "books_balance": self.books_balance(),
        }

    def error_share(self, *, judged_without_answers: bool = False) -> tuple[float, int]:
        """(percent of judged items that were rejected, judged items).

        Judged: rejected locally, or answered by Planhat. With `judged_without_answers` (dry run,
        where nothing is answered) every item that would be sent counts as judged and accepted.
        """
        judged = self.rejected_locally + (self.sent if judged_without_answers else self.acknowledged)
        if judged == 0:
            return 0.0, 0
        return 100.0 * (self.rejected_locally + self.rejected_by_planhat) / judged, judged

    def top_reasons(self) -> str:
        reasons = self.local_reasons + self.planhat_reasons
        return "; ".join(f"{reason!r} x{count}" for reason, count in reasons.most_common(TOP_REASONS))


class Ledger:
    """Thread-safe counters: the reading thread counts records, sender threads count answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, StreamStats] = {}
        self.unparseable_lines = 0  # lines that could not be read and named no stream of the catalog
        self.ignored_messages = 0
        self.unknown_messages = 0  # of which: a type the Airbyte protocol does not have
        self._in_flight: Counter = Counter()

    def stats(self, stream: str, endpoint: str = "") -> StreamStats:
        stats = self._streams.get(stream)
        if stats is None:
            with self._lock:
                stats = self._streams.setdefault(stream, StreamStats(stream, endpoint))
        return stats

    def count(self, stream: str, **deltas: int) -> None:
        with self._lock:
            stats = self._streams[stream]
            for name, delta in deltas.items():
                setattr(stats, name, getattr(stats, name) + delta)

    def reject_locally(self, stream: str, reason: str, records: int = 1) -> int:
        """Count items not sent; returns how many were rejected for this reason so far (to log the first)."""
        with self._lock:
            stats = self._streams[stream]
            stats.rejected_locally += records
            stats.local_reasons[reason] += records
            return stats.local_reasons[reason]

    def skip(self, stream: str, reason: str, records: int = 1) -> None:
        """Records of a stream that were read but cannot be used at all (unreadable line, unknown stream)."""
        with self._lock:
            stats = self._streams[stream]
            stats.read += records
            stats.skipped += records
            stats.skip_reasons[reason] += records

    def settled(self, stream: str, reason: str) -> None:
        """A record read and not sent because Planhat already is as it asks (a key an insert finds present,
        one a delete finds absent): done, and counted as written on states."""
        with self._lock:
            stats = self._streams[stream]
            stats.settled += 1
            stats.settled_reasons[reason] += 1

    def read_of(self, stream: str) -> int:
        """Records of the stream read so far (0 for a stream never seen)."""
        stats = self._streams.get(stream)
        return stats.read if stats is not None else 0

    def source_changes(self, stream: str, changes: list) -> None:
        """One record's `meta.changes` (Airbyte's record meta: the source nulled or truncated fields)."""
        with self._lock:
            stats = self._streams[stream]
            stats.changed_records += 1
            for change in changes:
                if type(change) is dict:
                    what = f"{change.get('field')}: {change.get('change')}"
                    if change.get("reason"):
                        what += f" ({change.get('reason')})"
                else:
                    what = repr(change)[:100]
                stats.source_changes[what] += 1

    def sent_invalid(self, stream: str, reason: str) -> int:
        """Count an item sent although it failed the local checks; returns the count for this reason."""
        with self._lock:
            stats = self._streams[stream]
            stats.sent_invalid += 1
            stats.sent_invalid_reasons[reason] += 1
            return stats.sent_invalid_reasons[reason]

    def record_answer(
        self,
        stream: str,
        items: int,
        processed: Optional[int],
        rejected_reasons: list[str],
        resent: int,
        attempts: int = 1,
        created: Optional[int] = None,
        updated: Optional[int] = None,
        unchanged: Optional[int] = None,
    ) -> int:
        """A 2xx answer for `items` items. Counts Planhat's answer gave for more items than were sent
        are capped, and items its counts leave out are `unconfirmed`, so the books always balance
        (the writer logs such answers). Returns how many items were counted as rejected by Planhat:
        the first that many of `rejected_reasons`."""
        with self._lock:
            stats = self._streams[stream]
            stats.requests += 1
            stats.retries += max(attempts - 1, 0)
            stats.acknowledged += items
            stats.resent_after_ambiguous_failure += resent
            if processed is None:
                stats.unconfirmed += items
                return 0
            counted_processed = min(max(processed, 0), items)
            counted_rejected = min(len(rejected_reasons), items - counted_processed)
            stats.processed += counted_processed
            if created is not None or updated is not None:
                # Capped like `processed`, created first: the books never count more than was sent.
                counted_created = min(max(created or 0, 0), counted_processed)
                counted_updated = min(max(updated or 0, 0), counted_processed - counted_created)
                stats.created += counted_created
                stats.updated += counted_updated
                stats.unchanged += min(max(unchanged or 0, 0), counted_updated)
            stats.rejected_by_planhat += counted_rejected
            stats.unconfirmed += items - counted_processed - counted_rejected
            stats.planhat_reasons.update(rejected_reasons)
            return counted_rejected

    def close_books(self, failed: bool, buffered: dict[str, int]) -> None:
        """At the end of a sync: what a failure left behind (buffered items, unanswered batches)."""
        with self._lock:
            for stream, items in buffered.items():
                if stream in self._streams:
                    self._streams[stream].not_sent += items
            if failed:
                for stats in self._streams.values():
                    stats.not_acknowledged = max(stats.sent - stats.acknowledged, 0)

    def snapshot(self) -> dict[str, dict[str, object]]:
        with self._lock:
            return {stats.stream: stats.as_dict() for stats in self._streams.values()}

    def request_started(self, endpoint: str) -> None:
        """A batch was handed to the senders: it is in flight until `request_finished`."""
        with self._lock:
            self._in_flight[endpoint] += 1

    def request_finished(self, endpoint: str) -> None:
        with self._lock:
            self._in_flight[endpoint] -= 1

    def in_flight(self) -> dict[str, int]:
        """Batches handed over and not yet answered, per endpoint (for the progress line)."""
        with self._lock:
            return dict(self._in_flight)

    def all(self) -> list[StreamStats]:
        with self._lock:
            return list(self._streams.values())
