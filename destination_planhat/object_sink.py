"""One object stream's sink: records mapped (object_mapping.py), merged by key into the open request
(object_batching.py), and counted; the object counterpart of sink.StreamSink, with the same interface
towards the writer."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import orjson

from destination_planhat.accounting import Ledger, StreamStats
from destination_planhat.bad_input import why_not_encodable
from destination_planhat.batching import Batch, ItemTooLarge
from destination_planhat.mapping import Invalid, RecordRejected
from destination_planhat.object_batching import ObjectBatch, ObjectBuffer
from destination_planhat.object_mapping import ObjectMapper
from destination_planhat.rejected_records import MISSING, RejectedRecords
from destination_planhat.routing import StreamRoute
from destination_planhat.sink import EARLY_CHECK_EVERY, EXAMPLES_PER_REASON, SAMPLE_CHARS
from destination_planhat.state_counts import StateCounts

logger = logging.getLogger("airbyte")


class ObjectSink:
    def __init__(
        self,
        route: StreamRoute,
        mapper: ObjectMapper,
        buffer: ObjectBuffer,
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
        self._judge_errors = judge_errors
        self._rejected = rejected

    def record(self, data: Any) -> None:
        stats = self.stats
        stats.read += 1
        ordinal = stats.read - 1
        if type(data) is not dict:
            self.reject("the record's data is not a JSON object", repr(data)[:SAMPLE_CHARS], record=data)
            return
        try:
            item, key = self.mapper(data)
        except RecordRejected as rejected:
            self.reject(rejected.reason, repr(data)[:SAMPLE_CHARS], record=data)
            return
        if isinstance(item, Invalid):
            if not self._send_invalid:
                self.reject(item.reason, item.example, item=item.item)
                return
            if self._ledger.sent_invalid(stats.stream, item.reason) <= EXAMPLES_PER_REASON:
                logger.warning(
                    f"stream '{stats.stream}': sending an item that fails the local checks (invalid_records: send): "
                    f"{item.reason} ({item.example})"
                )
            item = item.item
        try:
            ready, merged = self.buffer.add(item, key, ordinal)
        except ItemTooLarge as exc:
            self.reject("larger than the request size limit (`max_request_body_bytes`)", str(exc), item=item)
            return
        except orjson.JSONEncodeError as exc:
            self.reject(why_not_encodable(item, exc), repr(item)[:SAMPLE_CHARS], item=item)
            return
        if merged:
            stats.merged += 1
        if ready is not None:
            self._submit(ready)

    def add_encoded(self, encoded: bytes, ends: Any) -> None:
        raise RuntimeError(f"stream '{self.stats.stream}' goes to an object: its records are not mapped by parse workers")

    def skip_unreadable(self, line_number: int, why: str, preview: str, line: bytes = b"") -> None:
        stats = self.stats
        self._ledger.skip(stats.stream, "unreadable input line")
        self._counts.reject(stats.stream, stats.read - 1)
        if self._rejected is not None:
            self._rejected.add_by_connector(self.route.key, self.route.endpoint.value, stats.read,
                                            f"unreadable input line: {why}", line=line)
        logger.warning(f"stream '{stats.stream}': input line {line_number} skipped: {why} (starts with: {preview!r})")

    def reject(self, reason: str, example: str, *, record: Any = MISSING, item: Any = MISSING) -> None:
        stats = self.stats
        self._counts.reject(stats.stream, stats.read - 1)
        if self._rejected is not None:
            self._rejected.add_by_connector(self.route.key, self.route.endpoint.value, stats.read, reason,
                                            record=record, item=item)
        seen = self._ledger.reject_locally(stats.stream, reason)
        if seen <= EXAMPLES_PER_REASON:
            logger.warning(f"stream '{stats.stream}': an item was not sent: {reason} ({example})")
        if stats.rejected_locally % EARLY_CHECK_EVERY == 0:
            self._judge_errors(stats)

    def take(self) -> Optional[ObjectBatch]:
        return self.buffer.take()
