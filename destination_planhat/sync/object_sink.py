"""One object stream's sink: records mapped (mapping/objects.py), merged by key into the open request
(sync/object_batching.py), and counted. What it shares with an analytics stream's sink (rejections,
unreadable lines, items that fail the local checks) is sink.Sink's.

The stream's operation (config.StreamSettings.operation) decides which items go, by the keys Planhat
has (sync/planhat_keys.py, read on the stream's first record): an update sends only items whose key
Planhat has, and rejects the others (`no company with externalId 'x'`: stored with the rejected
records, counted on states); an insert sends only items whose key Planhat lacks, and counts the
others as already present (not sent, never duplicated); an upsert sends every item; a delete (or an
archive) deletes each record's Planhat record by its key, one call each (sync/deletes.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn, Optional

import orjson
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.mapping.analytics import Invalid, RecordRejected
from destination_planhat.mapping.objects import ObjectMapper, ObjectPlan
from destination_planhat.planhat.api import Operation
from destination_planhat.planhat.errors import PlanhatError
from destination_planhat.sync.batching import ItemTooLarge
from destination_planhat.sync.deletes import ALREADY_ABSENT, Deletes
from destination_planhat.sync.object_batching import ObjectBuffer
from destination_planhat.sync.planhat_keys import KnownKeys, PlanhatKeys, fingerprint
from destination_planhat.sync.sink import SAMPLE_CHARS, Sink

# Why an insert's record was not sent: Planhat has its key already.
ALREADY_PRESENT = "already present in Planhat (insert): not sent again"
DRY_RUN_DELETE = "dry run: would be deleted (nothing is read or deleted in a dry run)"
# Airbyte's column for a row deleted at the source (CDC sources): set, the record is a delete of its key.
CDC_DELETED_AT = "_ab_cdc_deleted_at"
SOURCE_DELETE_IGNORED = (
    "deleted at the source (_ab_cdc_deleted_at), on_source_delete: ignore: not sent, nothing deleted in Planhat"
)
DELETING = frozenset({Operation.DELETE, Operation.ARCHIVE})
UNCHANGED = "unchanged: Planhat has these values already (skip_unchanged): not sent"


class ObjectSink(Sink[ObjectMapper, ObjectBuffer]):
    """An object stream's sink: one item per record, kept as a dict in the open request and merged
    into an earlier item of the same key (ObjectBuffer.add)."""

    planhat_keys: Optional[PlanhatKeys] = None  # set by the registry where the operation needs them
    deletes: Optional[Deletes] = None  # set by the writer (None in a dry run)
    fail: Optional[Callable[[BaseException], NoReturn]] = None  # the writer's: ends the sync
    _known: Optional[KnownKeys] = None
    _upserted_since_read = False  # items handed on since the keys were read: their ids are not known
    _current: Optional[dict[str, int]] = None  # skip_unchanged: key -> fingerprint of what Planhat has
    _compared: Optional[tuple[str, ...]] = None  # skip_unchanged: the fields compared (those the stream sends)

    def _unchanged(self, item: dict[str, Any], key: Any) -> bool:
        """skip_unchanged: whether Planhat has exactly the item's values. An item with a field Planhat returns
        in another form (custom, a reference) cannot be judged, and is sent."""
        settings = self.route.settings
        plan = self.route.plan
        if (
            key is None
            or settings is None
            or not settings.skip_unchanged
            or self.planhat_keys is None
            or not isinstance(plan, ObjectPlan)
            or not plan.key_field
        ):
            return False
        fields = self._compared
        if fields is None:
            target = self.route.endpoint.target
            mapped = {field.target for field in plan.fields} | set(plan.constants) | set(target.defaults)
            fields = self._compared = tuple(name for name in target.comparable_fields if name in mapped)
        if self._current is None:
            try:
                self._current = self.planhat_keys.values_of(
                    self.route.endpoint, plan.key_field, fields, self.stats.stream
                )
            except PlanhatError as exc:
                self._failed(exc)
        if any(name not in fields and name != plan.key_field for name in item):
            self._current.pop(key[0], None)  # sent: what Planhat will have is not known here
            return False
        mine = fingerprint([item.get(name) for name in fields])
        if self._current.get(key[0]) == mine:
            return True
        self._current[key[0]] = mine  # sent: Planhat will have these values
        return False

    def _failed(self, error: BaseException) -> NoReturn:
        if self.fail is None:
            raise error
        self.fail(error)

    @property
    def operation(self) -> Operation:
        settings = self.route.settings
        return settings.effective_operation if settings is not None else Operation.UPSERT

    @property
    def _source_delete(self) -> Optional[Operation]:
        settings = self.route.settings
        return settings.source_delete if settings is not None else None

    def _keys(self, *, fresh: bool = False) -> Optional[KnownKeys]:
        """The keys Planhat has for this stream's key field: read on first need (None without a key)."""
        plan = self.route.plan
        if (
            (self._known is None or fresh)
            and self.planhat_keys is not None
            and isinstance(plan, ObjectPlan)
            and plan.key_field
        ):
            with_ids = self.operation in DELETING or self._source_delete is not None
            try:
                self._known = self.planhat_keys.of(
                    self.route.endpoint, plan.key_field, self.stats.stream, with_ids=with_ids, fresh=fresh
                )
            except PlanhatError as exc:
                self._failed(exc)
            self._upserted_since_read = False
        return self._known

    def _delete(self, key: Any, *, archive: bool) -> None:
        """The record's Planhat record deleted (or archived) by its key; a key Planhat lacks is already absent.
        What was read for the object before it is sent and answered first (Deletes.settle)."""
        stream = self.stats.stream
        self.buffer.skip_record()
        deletes = self.deletes
        if deletes is None:  # a dry run
            self._ledger.settled(stream, DRY_RUN_DELETE)
            return
        value = key[0]
        try:
            deletes.settle(self.route.endpoint)
            known = self._keys()
            if known is not None and value not in known and self._upserted_since_read:
                known = self._keys(fresh=True)  # created by this stream since the keys were read
            planhat_id = known.planhat_id(value) if known is not None else ""
            if not planhat_id:
                self.stats.already_absent += 1
                self._ledger.settled(stream, ALREADY_ABSENT)
                return
            deletes.delete(stream, self.route.endpoint, planhat_id, value, archive=archive)
        except (PlanhatError, AirbyteTracedException) as exc:
            self._failed(exc)
        if known is not None:
            known.removed(value)

    def _deleted_at_source(self, key: Any) -> None:
        """A record of an upsert stream that the source deleted: a delete of its key, by on_source_delete."""
        action = self._source_delete
        if action is None or key is None:
            self.buffer.skip_record()
            self.stats.source_deletes_ignored += 1
            self._ledger.settled(self.stats.stream, SOURCE_DELETE_IGNORED)
            return
        self._delete(key, archive=action is Operation.ARCHIVE)

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
            thing = _words(self.route.endpoint.target.model)
            self.stats.not_found += 1
            # Counted (and logged) under one reason; stored with the record's own key.
            self.reject(
                f"no {thing} with this {field} in Planhat (update never creates)",
                f"{field} {value!r}",
                record=data,
                stored_reason=f"no {thing} with {field} {value!r} (update never creates)",
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
        operation = self.operation
        if key is not None and operation in DELETING:
            self._delete(key, archive=operation is Operation.ARCHIVE)  # only the key counts: no other field is checked
            return
        if operation is Operation.UPSERT and data.get(CDC_DELETED_AT) is not None:
            self._deleted_at_source(key)
            return
        if isinstance(item, Invalid):
            sent = self._invalid_to_send(item)
            if sent is None:
                return
            item = sent
        if not self._by_planhat_keys(data, key):
            return
        if self._unchanged(item, key):
            stats.skipped_unchanged += 1
            self._ledger.settled(stats.stream, UNCHANGED)
            self.buffer.skip_record()
            return
        try:
            ready, merged = self.buffer.add(item, key, stats.read - 1)
        except ItemTooLarge as exc:
            self._too_large(item, exc)
            return
        except orjson.JSONEncodeError as exc:
            self._unencodable(item, exc)
            return
        self._upserted_since_read = True
        if merged:
            stats.merged += 1
        if ready is not None:
            self._submit(ready)

    def add_encoded(self, encoded: bytes, ends: Any) -> None:
        raise RuntimeError(
            f"stream '{self.stats.stream}' goes to an object: its records are not mapped by parse workers"
        )


def _words(model: str) -> str:
    """Planhat's model name as words: EndUser -> end user."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", model).lower()
