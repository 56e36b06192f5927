"""What happened to every record, per stream: the numbers behind the logs and the final summary.

Units: `read` and `empty_records` count records; everything after mapping counts items. A record
is one item, except with unpivot_columns, where one record becomes one item per non-null column:
`extra_items` counts the items beyond the first that records produced, `empty_records` the
records that produced none (every unpivot column null).

Invariant, per stream: read + extra_items = sent + rejected_locally + skipped + empty_records
(without unpivot: read = sent + rejected_locally + skipped). Where Planhat's answers carry counts:
sent = processed + rejected_by_planhat + unconfirmed (sent, acknowledged without counts).
`sent_invalid` (invalid_records: send) counts items among `sent` that failed the local checks.
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
    planhat_reasons: Counter = field(default_factory=Counter)
    local_reasons: Counter = field(default_factory=Counter)
    sent_invalid_reasons: Counter = field(default_factory=Counter)

    def invariant_holds(self) -> bool:
        return self.read + self.extra_items == self.sent + self.rejected_locally + self.skipped + self.empty_records

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

    def summary_line(self) -> str:
        line = (
            f"stream '{self.stream}'" + (f" -> {self.endpoint}" if self.endpoint else "") + ": "
            f"read {self.read}, sent {self.sent}, processed by Planhat {self.processed}, "
            f"rejected by Planhat {self.rejected_by_planhat}{_top(self.planhat_reasons)}, "
            f"rejected locally {self.rejected_locally}{_top(self.local_reasons)}, skipped {self.skipped}"
        )
        if self.extra_items or self.empty_records:
            items = self.read + self.extra_items - self.empty_records - self.skipped
            line += (
                f"; unpivot made {items} items of {self.read - self.skipped} records "
                f"({self.extra_items} items beyond one per record, {self.empty_records} records with no "
                "non-null unpivot column), so sent and rejected count items"
            )
        if self.sent_invalid:
            line += f", sent although invalid (invalid_records: send) {self.sent_invalid}{_top(self.sent_invalid_reasons)}"
        if self.unconfirmed:
            line += f", sent without a count from Planhat {self.unconfirmed}"
        if self.resent_after_ambiguous_failure:
            line += f", re-sent after an ambiguous failure (possible duplicates) {self.resent_after_ambiguous_failure}"
        return line


def _top(reasons: Counter) -> str:
    if not reasons:
        return ""
    return " (" + "; ".join(f"{reason!r} x{count}" for reason, count in reasons.most_common(TOP_REASONS)) + ")"


class Ledger:
    """Thread-safe counters: the reading thread counts records, sender threads count answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, StreamStats] = {}
        self.unparseable_lines = 0
        self.ignored_messages = 0
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

    def sent_invalid(self, stream: str, reason: str) -> int:
        """Count an item sent although it failed the local checks; returns the count for this reason."""
        with self._lock:
            stats = self._streams[stream]
            stats.sent_invalid += 1
            stats.sent_invalid_reasons[reason] += 1
            return stats.sent_invalid_reasons[reason]

    def record_answer(
        self, stream: str, items: int, processed: Optional[int], rejected_reasons: list[str], resent: int
    ) -> None:
        with self._lock:
            stats = self._streams[stream]
            stats.requests += 1
            stats.acknowledged += items
            stats.resent_after_ambiguous_failure += resent
            if processed is None:
                stats.unconfirmed += items
                return
            stats.processed += processed
            stats.rejected_by_planhat += len(rejected_reasons)
            stats.planhat_reasons.update(rejected_reasons)

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
