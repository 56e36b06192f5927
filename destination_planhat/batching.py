"""Per-stream buffers that cut batches by record count and by encoded body size.

Why the items go straight into one growing request body (a bytearray) rather than a list of encoded
items joined at the end: nothing per item stays alive (a list of 100,000 small `bytes` objects costs
about 17 MB on top of the body, and joining it makes two more copies), and appending to a bytearray is
the cheapest thing the hot path can do with an item. See bench/ for the numbers.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Optional, Sequence

import orjson

from destination_planhat.planhat import Endpoint
from destination_planhat.routing import StreamRoute

# The JSON array around the items: "[" + items joined by "," + "]".
_ARRAY_OVERHEAD = 2
_OPEN = b"["
_SEPARATOR = b","
_CLOSE = ord("]")


class ItemTooLarge(Exception):
    """One item that alone would not fit in a request body."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the item is {size:,} bytes as JSON, over the {limit:,}-byte request limit")
        self.size = size


class Batch:
    """Items of one stream, encoded as one request body, on their way to one endpoint."""

    __slots__ = ("batch_id", "route", "payload", "count", "opened_at", "number")

    def __init__(
        self, batch_id: int, route: StreamRoute, payload: bytes, count: int, opened_at: float, number: int = 0
    ) -> None:
        self.batch_id = batch_id
        self.route = route
        self.payload = payload  # the JSON array, exactly as posted
        self.count = count
        self.opened_at = opened_at  # clock time of its first item
        self.number = number  # per stream, 1-based, for the logs

    @classmethod
    def of_items(cls, batch_id: int, route: StreamRoute, items: Sequence[Any], opened_at: float = 0.0, number: int = 0) -> "Batch":
        return cls(batch_id, route, orjson.dumps(list(items)), len(items), opened_at, number)

    @property
    def endpoint(self) -> Endpoint:
        return self.route.endpoint

    @property
    def body_bytes(self) -> int:
        return len(self.payload)

    def __len__(self) -> int:
        return self.count

    def body(self) -> bytes:
        return self.payload

    def items(self) -> list[Any]:
        """The items decoded again: for the rare paths (a split after 413) and for tests, not the hot path."""
        return orjson.loads(self.payload)

    def split(self) -> tuple["Batch", "Batch"]:
        """Two halves, in order, for a server that answered 413 although the body was under the limit we know."""
        items = self.items()
        middle = len(items) // 2
        first, second = (
            Batch.of_items(self.batch_id, self.route, half, self.opened_at, self.number)
            for half in (items[:middle], items[middle:])
        )
        return first, second


class StreamBuffer:
    """The open batch of one stream. Owned by one writer, used by one thread; never shared between syncs.

    `open_batch` hands out the id of a new batch (the writer's StateBarrier) when its first item arrives.
    """

    def __init__(
        self,
        route: StreamRoute,
        batch_size: int,
        max_body_bytes: int,
        open_batch: Callable[[], int] = itertools.count().__next__,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route = route
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self._open_batch = open_batch
        self._clock = clock
        # The open batch: "[" then every item followed by ","; take() turns the last "," into "]". The writer
        # appends to `body` and `count` itself in the common case (see PlanhatWriter.record): keep the
        # two in step with add().
        self.body = bytearray(_OPEN)
        self.count = 0
        self.batch_id = -1
        self.opened_at = 0.0
        self.batches_cut = 0

    def add(self, part: bytes) -> Optional[Batch]:
        """Append one encoded item. Returns a batch to send when one is complete: full by count, or cut
        early because `part` would have taken its body over the size cap. Raises ItemTooLarge (leaving
        the buffer as it was) for an item that cannot fit in any body."""
        body = self.body
        if len(body) + len(part) >= self.max_body_bytes:  # the body would pass the cap with this item and its ","
            return self._add_after_cut(part)
        if not self.count:
            self.open()
        body += part
        body += _SEPARATOR
        self.count += 1
        if self.count >= self.batch_size:
            return self.take()
        return None

    def _add_after_cut(self, part: bytes) -> Optional[Batch]:
        size = len(part) + _ARRAY_OVERHEAD
        if size > self.max_body_bytes:
            raise ItemTooLarge(size, self.max_body_bytes)
        cut = self.take()
        # `part` fits alone, and cannot fill the new batch: the cut one held an item without being full,
        # so batch_size >= 2. (With nothing buffered, a part that fits alone never gets here.)
        self.add(part)
        return cut

    def open(self) -> None:
        """Start the batch that the next item goes into (its id orders it for the states)."""
        self.batch_id = self._open_batch()
        self.opened_at = self._clock()
        self.batches_cut += 1

    @property
    def body_bytes(self) -> int:
        """Size of the open batch's body as it would be posted now."""
        return len(self.body) if self.count else 0

    def overdue(self, now: float, interval: float) -> bool:
        """True when the open batch's first item has waited `interval` seconds."""
        return self.count > 0 and now - self.opened_at >= interval

    def take(self) -> Optional[Batch]:
        """The open batch, closed, or None when nothing is buffered."""
        if not self.count:
            return None
        body = self.body
        body[-1] = _CLOSE
        batch = Batch(self.batch_id, self.route, bytes(body), self.count, self.opened_at, self.batches_cut)
        self.body = bytearray(_OPEN)
        self.count = 0
        return batch


def encode_item(item: dict[str, Any]) -> bytes:
    """JSON for one item. orjson refuses what JSON cannot carry (too deep, huge ints) by raising."""
    return orjson.dumps(item)
