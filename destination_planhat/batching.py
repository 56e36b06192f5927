"""Per-stream buffers that cut batches by record count and by encoded body size."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import orjson

from destination_planhat.planhat import Endpoint
from destination_planhat.routing import StreamRoute

# The JSON array around the items: "[" + items joined by "," + "]".
_ARRAY_OVERHEAD = 2


class ItemTooLarge(Exception):
    """One item that alone would not fit in a request body."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the item is {size:,} bytes as JSON, over the {limit:,}-byte request limit")
        self.size = size


@dataclass
class Batch:
    """Encoded items of one stream, on their way to one endpoint as one request (or a few, if split)."""

    batch_id: int
    route: StreamRoute
    parts: list[bytes] = field(default_factory=list)
    body_bytes: int = _ARRAY_OVERHEAD
    opened_at: float = field(default_factory=time.monotonic)
    number: int = 0  # per stream, 1-based, for the logs

    @property
    def endpoint(self) -> Endpoint:
        return self.route.endpoint

    def __len__(self) -> int:
        return len(self.parts)

    def body(self) -> bytes:
        return b"[" + b",".join(self.parts) + b"]"

    def split(self) -> tuple["Batch", "Batch"]:
        """Two halves, for a server that answered 413 although the body was under the limit we know."""
        middle = len(self.parts) // 2
        halves = []
        for parts in (self.parts[:middle], self.parts[middle:]):
            half = Batch(self.batch_id, self.route, list(parts), opened_at=self.opened_at, number=self.number)
            half.body_bytes = _ARRAY_OVERHEAD + sum(len(p) for p in parts) + max(len(parts) - 1, 0)
            halves.append(half)
        return halves[0], halves[1]


def encode_item(item: dict[str, Any]) -> bytes:
    """JSON for one item. orjson refuses what JSON cannot carry (too deep, huge ints) by raising."""
    return orjson.dumps(item)


class StreamBuffer:
    """The open batch of one stream. Owned by one writer instance; never shared between syncs."""

    def __init__(self, route: StreamRoute, batch_size: int, max_body_bytes: int) -> None:
        self.route = route
        self.batch_size = batch_size
        self.max_body_bytes = max_body_bytes
        self.open: Optional[Batch] = None
        self.batches_cut = 0

    def fits_alone(self, part: bytes) -> None:
        size = len(part) + _ARRAY_OVERHEAD
        if size > self.max_body_bytes:
            raise ItemTooLarge(size, self.max_body_bytes)

    def would_overflow(self, part: bytes) -> bool:
        """True when adding `part` to the open batch would pass the body cap."""
        return self.open is not None and self.open.body_bytes + len(part) + 1 > self.max_body_bytes

    def add(self, part: bytes, new_batch_id: int) -> bool:
        """Append an encoded item (opening a batch with `new_batch_id` if none is open); True when full."""
        batch = self.open
        if batch is None:
            self.batches_cut += 1
            batch = self.open = Batch(new_batch_id, self.route, number=self.batches_cut)
            batch.body_bytes += len(part)
        else:
            batch.body_bytes += len(part) + 1
        batch.parts.append(part)
        return len(batch.parts) >= self.batch_size

    def take(self) -> Optional[Batch]:
        batch, self.open = self.open, None
        return batch
