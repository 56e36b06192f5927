"""What every stream's sink shares: its records mapped, checked and added to its open batch, and counted.

`Sink` is the base (the parts it is wired with, what becomes of a record that is not sent);
analytics_sink.AnalyticsSink is an analytics stream's, object_sink.ObjectSink an object stream's.
A sink belongs to the reading thread alone (no lock per record). It hands each batch that is ready
to `submit` (the writer's, which passes it to the sender). What becomes of a record that cannot be
sent (rejected locally, with its reason and an example in the log) is decided here too, and
counted in the ledger and in the counts on states (sync/state_stats.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, Optional, TypeVar

import orjson

from destination_planhat.mapping.analytics import Invalid
from destination_planhat.mapping.routing import StreamRoute
from destination_planhat.mapping.unclean_json import why_not_encodable
from destination_planhat.rejected.records import MISSING, RejectedRecords
from destination_planhat.sync.batching import Batch, BatchBuffer, ItemTooLarge
from destination_planhat.sync.ledger import Ledger, StreamStats
from destination_planhat.sync.state_stats import StateCounts

logger = logging.getLogger("airbyte")

SAMPLE_CHARS = 300
# Local rejections: the first few of each reason per stream are logged with the offending value.
EXAMPLES_PER_REASON = 3
# How often (in rejected records of a stream) the share of rejections is judged during the sync.
EARLY_CHECK_EVERY = 1_000


MapperT = TypeVar("MapperT")
BufferT = TypeVar("BufferT", bound=BatchBuffer)


class Sink(Generic[MapperT, BufferT]):
    """What every stream's sink shares, whatever its records become: the parts the writer wires in,
    and what becomes of a record that is not sent (`reject`, `skip_unreadable`, an item that fails
    the local checks, one that cannot be encoded or is too large). Each kind of sink adds `record`:
    analytics_sink.AnalyticsSink (items appended to the encoded body), object_sink.ObjectSink
    (objects: items merged by key)."""

    def __init__(
        self,
        route: StreamRoute,
        mapper: MapperT,
        buffer: BufferT,
        stats: StreamStats,
        *,
        ledger: Ledger,
        counts: StateCounts,
        send_invalid: bool,
        submit: Callable[[Optional[Batch]], None],
        judge_errors: Callable[[StreamStats], None],
        rejected: Optional[RejectedRecords] = None,
    ) -> None:
        self.route = route
        self.mapper = mapper
        self.buffer = buffer
        self.stats = stats
        self._ledger = ledger
        self._counts = counts
        self._send_invalid = send_invalid
        self._submit = submit
        self._judge_errors = judge_errors  # fails the sync when too many are rejected (max_error_percent)
        self._rejected = rejected  # where rejected records are stored (object_storage_config), if anywhere

    def record(self, data: Any) -> None:
        """One record's data: mapped, checked and added to the open batch, or rejected."""
        raise NotImplementedError

    def take(self) -> Optional[Batch]:
        """The open batch, closed (None when nothing is buffered)."""
        return self.buffer.take()

    def skip_unreadable(self, line_number: int, why: str, preview: str, line: bytes = b"") -> None:
        """An input line that names this stream but cannot be read: a record read and skipped."""
        stats = self.stats
        self._ledger.skip(stats.stream, "unreadable input line")  # counted as read: states count it too
        self._counts.reject(stats.stream, stats.read - 1)
        self.buffer.skip_record()
        if self._rejected is not None:
            self._rejected.add_by_connector(
                self.route.key, self.route.endpoint.value, stats.read, f"unreadable input line: {why}", line=line
            )
        logger.warning(f"stream '{stats.stream}': input line {line_number} skipped: {why} (starts with: {preview!r})")

    def reject(
        self, reason: str, example: str, *, record: Any = MISSING, item: Any = MISSING, stored_reason: str = ""
    ) -> None:
        """A record (or, while unpivot adds a record's items, one item) that will not be sent. `record`
        (the data as read) or `item` (as it would have been sent) is what a store of rejected records keeps,
        with `stored_reason` when the record's own reason says more than the one it is counted under."""
        stats = self.stats
        several = self.buffer.record_of_items
        if several is None:  # the whole record
            self._counts.reject(stats.stream, stats.read - 1)
            self.buffer.skip_record()
        else:  # one item of a record that made several (unpivot)
            self._counts.reject(stats.stream, several, several_items=True)
        if self._rejected is not None:
            ordinal = stats.read - 1 if several is None else several
            self._rejected.add_by_connector(
                self.route.key,
                self.route.endpoint.value,
                ordinal + 1,
                stored_reason or reason,
                record=record,
                item=item,
            )
        seen = self._ledger.reject_locally(stats.stream, reason)
        if seen <= EXAMPLES_PER_REASON:
            logger.warning(f"stream '{stats.stream}': an item was not sent: {reason} ({example})")
        if stats.rejected_locally % EARLY_CHECK_EVERY == 0:
            self._judge_errors(stats)

    def _invalid_to_send(self, invalid: Invalid) -> Optional[dict[str, Any]]:
        """An item that failed the local checks: rejected (None), or the item to send as it is
        (invalid_records: send), with an example in the log."""
        if not self._send_invalid:
            self.reject(invalid.reason, invalid.example, item=invalid.item)
            return None
        seen = self._ledger.sent_invalid(self.stats.stream, invalid.reason)
        if seen <= EXAMPLES_PER_REASON:
            logger.warning(
                f"stream '{self.stats.stream}': sending an item that fails the local checks "
                f"(invalid_records: send): {invalid.reason} ({invalid.example})"
            )
        return invalid.item

    def _too_large(self, item: dict[str, Any], exc: ItemTooLarge) -> None:
        self.reject(
            "larger than the request size limit (`max_request_body_bytes`)", f"{exc}{_largest_field(item)}", item=item
        )

    def _unencodable(self, item: dict[str, Any], exc: orjson.JSONEncodeError) -> None:
        self.reject(why_not_encodable(item, exc), repr(item)[:SAMPLE_CHARS], item=item)


def _largest_field(item: Mapping[str, Any]) -> str:
    """Which field makes an item too large, for the warning."""
    sizes = []
    for name, value in item.items():
        try:
            sizes.append((len(orjson.dumps(value)), name))
        except orjson.JSONEncodeError:
            continue
    if not sizes:
        return ""
    size, name = max(sizes)
    return f" (its largest field is '{name}', {size:,} bytes)"
