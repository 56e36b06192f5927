"""One object stream's sink: records mapped (mapping/objects.py), merged by key into the open request
(sync/object_batching.py), and counted. What it shares with an analytics stream's sink (rejections,
unreadable lines, items that fail the local checks) is sink.Sink's."""

from __future__ import annotations

from typing import Any

import orjson

from destination_planhat.mapping.analytics import Invalid, RecordRejected
from destination_planhat.mapping.objects import ObjectMapper
from destination_planhat.sync.batching import ItemTooLarge
from destination_planhat.sync.object_batching import ObjectBuffer
from destination_planhat.sync.sink import SAMPLE_CHARS, Sink


class ObjectSink(Sink[ObjectMapper, ObjectBuffer]):
    """An object stream's sink: one item per record, kept as a dict in the open request and merged
    into an earlier item of the same key (ObjectBuffer.add)."""

    def record(self, data: Any) -> None:
        stats = self.stats
        stats.read += 1
        if type(data) is not dict:
            self.reject("the record's data is not a JSON object", repr(data)[:SAMPLE_CHARS], record=data)
            return
        try:
            item, key = self.mapper(data)
        except RecordRejected as rejected:
            self.reject(rejected.reason, repr(data)[:SAMPLE_CHARS], record=data)
            return
        if isinstance(item, Invalid):
            sent = self._invalid_to_send(item)
            if sent is None:
                return
            item = sent
        try:
            ready, merged = self.buffer.add(item, key, stats.read - 1)
        except ItemTooLarge as exc:
            self._too_large(item, exc)
            return
        except orjson.JSONEncodeError as exc:
            self._unencodable(item, exc)
            return
        if merged:
            stats.merged += 1
        if ready is not None:
            self._submit(ready)

    def add_encoded(self, encoded: bytes, ends: Any) -> None:
        raise RuntimeError(
            f"stream '{self.stats.stream}' goes to an object: its records are not mapped by parse workers"
        )
