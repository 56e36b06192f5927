"""What happened to every record, per stream: the numbers behind the logs and the final summary.

Invariant, per stream: read = sent + rejected_locally + skipped. Where Planhat's answers carry
counts: sent = processed + rejected_by_planhat + unconfirmed (sent, acknowledged without counts).
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
    planhat_reasons: Counter = field(default_factory=Counter)
    local_reasons: Counter = field(default_factory=Counter)

    def invariant_holds(self) -> bool:
        return self.read == self.sent + self.rejected_locally + self.skipped

    def summary_line(self) -> str:
        line = (
            f"stream '{self.stream}'" + (f" -> {self.endpoint}" if self.endpoint else "") + ": "
            f"read {self.read}, sent {self.sent}, processed by Planhat {self.processed}, "
            f"rejected by Planhat {self.rejected_by_planhat}{_top(self.planhat_reasons)}, "
            f"rejected locally {self.rejected_locally}{_top(self.local_reasons)}, skipped {self.skipped}"
        )
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

    def reject_locally(self, stream: str, reason: str, records: int = 1) -> None:
        with self._lock:
            stats = self._streams[stream]
            stats.rejected_locally += records
            stats.local_reasons[reason] += records

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
