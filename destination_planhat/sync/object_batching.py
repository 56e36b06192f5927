"""The open request of one object stream: items by key, merged when a key comes twice, with their records.

Why not StreamBuffer's growing body: two records with the same key must never be in one request
(Planhat refuses the request as "duplicated"), so an item stays a dict until the batch is cut, and a
later record with the same key is merged into it (later values win, field by field). Each item keeps
the ordinals of every record merged into it, so that Planhat's answer for the item is the answer for
each of those records in the counts on states (sync/state_stats.py). Objects come in requests of at
most 5,000 items, so a dict per item costs little.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import orjson

from destination_planhat.mapping.objects import MergeKey, merge_items
from destination_planhat.mapping.routing import StreamRoute
from destination_planhat.planhat.api import Endpoint, id_growth
from destination_planhat.sync.batching import Batch, BatchBuffer, ItemTooLarge

_ARRAY_OVERHEAD = 2


class ObjectBatch(Batch):
    """A Batch whose items each know every record merged into them (`records`, one tuple of
    ordinals per item), and which parent batches it must wait for (`waits_for`, see sync/parents.py)."""

    __slots__ = ("records", "waits_for")

    def __init__(
        self,
        batch_id: int,
        route: StreamRoute,
        payload: bytes,
        records: tuple[tuple[int, ...], ...],
        opened_at: float = 0.0,
        number: int = 0,
    ) -> None:
        super().__init__(
            batch_id, route, payload, len(records), opened_at, number, ((0, records[0][0] if records else 0, 1),)
        )
        self.records = records
        self.waits_for: Mapping[Endpoint, frozenset[int]] = {}  # parent object -> its batches to wait for

    @classmethod
    def of_object_items(
        cls,
        batch_id: int,
        route: StreamRoute,
        items: list[Any],
        records: tuple[tuple[int, ...], ...],
        opened_at: float = 0.0,
        number: int = 0,
    ) -> ObjectBatch:
        return cls(batch_id, route, orjson.dumps(items), records, opened_at, number)

    def ordinal_at(self, position: int) -> tuple[int, bool]:
        return self.records[position][0], len(self.records[position]) > 1

    @property
    def one_item_per_record(self) -> bool:
        return all(len(ordinals) == 1 for ordinals in self.records)

    def split(self) -> tuple[ObjectBatch, ObjectBatch]:
        items = self.items()
        middle = len(items) // 2
        halves = []
        for part, records in ((items[:middle], self.records[:middle]), (items[middle:], self.records[middle:])):
            half = ObjectBatch.of_object_items(self.batch_id, self.route, part, records, self.opened_at, self.number)
            half.waits_for = self.waits_for
            halves.append(half)
        return halves[0], halves[1]


class ObjectBuffer(BatchBuffer):
    """The open batch of one object stream (used by the reading thread only). Every item carries the
    ordinals of its records, so the sinks' `skip_record` has nothing to do here."""

    def _clear(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._records: list[list[int]] = []
        self._sizes: list[int] = []
        self._index: dict[tuple[str, ...], int] = {}
        self._body = _ARRAY_OVERHEAD  # bytes of the body as it would be sent now
        self.count = 0  # items in the open batch: len(self._items), kept as the base class's attribute

    @property
    def body_bytes(self) -> int:
        return self._body if self._items else 0

    def _measure(self, item: dict[str, Any]) -> int:
        """The item's bytes in the body (with its ","), plus room for the parent keys in it to become
        Planhat ids before it is sent (sync/parent_ids.py): a batch never outgrows its size limit."""
        return len(orjson.dumps(item)) + 1 + id_growth(self.route.endpoint.target, item)

    def add(self, item: dict[str, Any], key: MergeKey, ordinal: int) -> tuple[Optional[ObjectBatch], bool]:
        """Add the item of the record `ordinal`. Returns (a batch to send, if one is complete; whether the
        item was merged into an earlier one of the same key). Raises ItemTooLarge for an item that fits
        no request body."""
        if key is not None:
            position = self._index.get(key)
            if position is not None:
                merged = merge_items(self._items[position], item)
                size = self._measure(merged)
                if self._body - self._sizes[position] + size <= self.max_body_bytes:
                    self._body += size - self._sizes[position]
                    self._items[position], self._sizes[position] = merged, size
                    self._records[position].append(ordinal)
                    return None, True
                # The merged item would not fit: the batch goes as it is, and this record starts the next.
                cut = self.take()
                self._append(item, key, ordinal)
                return cut, False
        size = self._measure(item)
        if size - 1 + _ARRAY_OVERHEAD > self.max_body_bytes:
            raise ItemTooLarge(size - 1 + _ARRAY_OVERHEAD, self.max_body_bytes)
        cut = None
        if self._items and self._body + size > self.max_body_bytes:
            cut = self.take()
        self._append(item, key, ordinal, size)
        if len(self._items) >= self.batch_size:
            return self.take(), False  # `cut` is None here: a cut batch leaves one item behind
        return cut, False

    def _append(self, item: dict[str, Any], key: MergeKey, ordinal: int, size: Optional[int] = None) -> None:
        if not self._items:
            self._start_batch()
        if key is not None:
            self._index[key] = len(self._items)
        self._items.append(item)
        self.count += 1
        self._records.append([ordinal])
        size = size if size is not None else self._measure(item)
        self._sizes.append(size)
        self._body += size

    def take(self) -> Optional[ObjectBatch]:
        if not self._items:
            return None
        records = tuple(tuple(ordinals) for ordinals in self._records)
        batch = ObjectBatch.of_object_items(
            self.batch_id, self.route, self._items, records, self.opened_at, self.batches_cut
        )
        self._clear()
        return batch
