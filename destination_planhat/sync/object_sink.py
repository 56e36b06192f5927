"""One object stream's sink: records mapped (mapping/objects.py), merged by key into the open request
(sync/object_batching.py), and counted. What it shares with an analytics stream's sink (rejections,
unreadable lines, items that fail the local checks) is sink.Sink's.

The stream's operation (config.StreamSettings.operation) decides which items go, by the keys Planhat
has (sync/planhat_keys.py, read on the stream's first record): an update sends only items whose key
Planhat has, and rejects the others (`no company with externalId 'x'`: stored with the rejected
records, counted on states); an insert sends only items whose key Planhat lacks, and counts the
others as already present (not sent, never duplicated); an upsert sends every item."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from destination_planhat.mapping.analytics import Invalid, RecordRejected
from destination_planhat.mapping.objects import ObjectMapper, ObjectPlan
from destination_planhat.planhat.api import Operation
from destination_planhat.sync.batching import ItemTooLarge
from destination_planhat.sync.object_batching import ObjectBuffer
from destination_planhat.sync.planhat_keys import KnownKeys, PlanhatKeys
from destination_planhat.sync.sink import SAMPLE_CHARS, Sink

# Why an insert's record was not sent: Planhat has its key already.
ALREADY_PRESENT = "already present in Planhat (insert): not sent again"


class ObjectSink(Sink[ObjectMapper, ObjectBuffer]):
    """An object stream's sink: one item per record, kept as a dict in the open request and merged
    into an earlier item of the same key (ObjectBuffer.add)."""

    planhat_keys: Optional[PlanhatKeys] = None  # set by the registry where the operation needs them
    _known: Optional[KnownKeys] = None

    @property
    def operation(self) -> Operation:
        settings = self.route.settings
        return settings.effective_operation if settings is not None else Operation.UPSERT

    def _keys(self) -> Optional[KnownKeys]:
        """The keys Planhat has for this stream's key field: read on first need (None without a key)."""
        plan = self.route.plan
        if self._known is None and self.planhat_keys is not None and isinstance(plan, ObjectPlan) and plan.key_field:
            self._known = self.planhat_keys.of(self.route.endpoint, plan.key_field, self.stats.stream)
        return self._known

    def _by_planhat_keys(self, data: Any, key: Any) -> bool:
        """Whether the item goes, by the stream's operation and the keys Planhat has; counts those that do not."""
        operation = self.operation
        if key is None or operation not in (Operation.UPDATE, Operation.INSERT):
            return True
        known = self._keys()
        if known is None:
            return True
        value = key[0]
        if operation is Operation.UPDATE:
            if value in known:
                return True
            plan = self.route.plan
            field = plan.key_field if isinstance(plan, ObjectPlan) else "key"
            self.stats.not_found += 1
            self.reject(
                f"no {self.route.endpoint.target.model.lower()} with {field} {value!r} (update never creates)",
                repr(data)[:SAMPLE_CHARS],
                record=data,
            )
            return False
        if value in known:
            self.stats.already_present += 1
            self._ledger.settled(self.stats.stream, ALREADY_PRESENT)
            self.buffer.skip_record()
            return False
        known.added(value)
        return True

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
        if not self._by_planhat_keys(data, key):
            return
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
