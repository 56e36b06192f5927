"""An analytics stream's sink (Metrics, User Activities): records mapped (mapping/analytics.py), each
item encoded once and appended to the open request body (sync/batching.py's StreamBuffer), and counted.
This is the hot path of a sync: every line of `record` runs once per record. What it shares with an
object stream's sink (rejections, unreadable lines, items that fail the local checks) is sink.Sink's."""

from __future__ import annotations

from typing import Any

import orjson

from destination_planhat.mapping.analytics import Invalid, Mapper, MapResult, RecordRejected
from destination_planhat.sync.batching import ItemTooLarge, StreamBuffer, body_fits
from destination_planhat.sync.sink import SAMPLE_CHARS, Sink


class AnalyticsSink(Sink[Mapper, StreamBuffer]):
    """An analytics stream's sink: each item encoded once and appended to the open batch's body."""

    def record(self, data: Any) -> None:
        """One record. The hot path: every line here runs once per record (see bench/)."""
        stats = self.stats
        # `read` is the only counter per record: the counts on states are derived from it.
        stats.read += 1
        if type(data) is not dict:
            self.reject("the record's data is not a JSON object", repr(data)[:SAMPLE_CHARS], record=data)
            return
        try:
            items = self.mapper(data)
        except RecordRejected as rejected:
            self.reject(rejected.reason, repr(data)[:SAMPLE_CHARS], record=data)
            return
        if len(items) != 1:  # unpivot: a record makes one item per non-null column, maybe none
            self._add_items(items)
            return
        item = items[0]
        if isinstance(item, Invalid):
            self._invalid(item)
            return
        try:
            part = orjson.dumps(item)
        except orjson.JSONEncodeError as exc:
            self._unencodable(item, exc)
            return
        # StreamBuffer.add's common case (an open batch with room), inlined: it runs once per item.
        buffer = self.buffer
        body = buffer.body
        count = buffer.count
        if count and body_fits(len(body), len(part), buffer.max_body_bytes):
            body += part
            body += b","
            buffer.count = count = count + 1
            if count >= buffer.batch_size:
                self._submit(buffer.take())
        else:
            self._add_part(item, part)

    def add_encoded(self, encoded: bytes, ends: Any) -> None:
        """Items a parse worker mapped, checked and encoded (see StreamBuffer.add_run)."""
        self.buffer.add_run(encoded, ends, self._submit)

    def _add_items(self, items: MapResult) -> None:
        """A record that made no item or several (unpivot): each item through the general path."""
        stats = self.stats
        if not items:
            stats.empty_records += 1
            self.buffer.skip_record()
            return
        stats.extra_items += len(items) - 1
        self.buffer.begin_record(stats.read - 1)
        for item in items:
            if isinstance(item, Invalid):
                self._invalid(item)
            else:
                self._add_item(item)
        self.buffer.end_record()

    def _invalid(self, invalid: Invalid) -> None:
        item = self._invalid_to_send(invalid)
        if item is not None:
            self._add_item(item)

    def _add_item(self, item: dict[str, Any]) -> None:
        """One item into the buffer (`record` does the same inline for the common case)."""
        try:
            part = orjson.dumps(item)
        except orjson.JSONEncodeError as exc:
            self._unencodable(item, exc)
            return
        self._add_part(item, part)

    def _add_part(self, item: dict[str, Any], part: bytes) -> None:
        try:
            ready = self.buffer.add(part)
        except ItemTooLarge as exc:
            self._too_large(item, exc)
            return
        if ready is not None:
            self._submit(ready)
