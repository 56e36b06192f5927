"""Per-stream buffers that cut batches by record count and by encoded body size.

Why the items go straight into one growing request body (a bytearray) rather than a list of encoded
items joined at the end: nothing per item stays alive (a list of 100,000 small `bytes` objects costs
about 17 MB on top of the body, and joining it makes two more copies), and appending to a bytearray is
the cheapest thing the hot path can do with an item. See bench/ for the numbers.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import orjson

from destination_planhat.sync.ledger import StreamStats

if TYPE_CHECKING:  # parse workers import this module for the body size rule: no CDK at run time
    from destination_planhat.mapping.routing import StreamRoute
    from destination_planhat.planhat.api import Endpoint

# Which record each item of a batch came from (for the counts on states, sync/state_stats.py): runs of
# (index of the run's first item, ordinal of that item's record, step). With step 1 every item of the
# run is the next record; with step 0 they are all items of one record (unpivot).
Origins = tuple[tuple[int, int, int], ...]

# A request body is a JSON array, built as it is filled: "[", then every item followed by ",";
# when the batch is taken, its last "," becomes "]".
_OPEN = b"["
_SEPARATOR = b","
_CLOSE = ord("]")


# ----- the body size rule: written here only ----------------------------------------------------


def body_fits(body_bytes: int, item_bytes: int, limit: int) -> bool:
    """Whether an item of `item_bytes` (without its ",") may join an open body of `body_bytes`
    ("[" and the items so far, each with its ","), for a posted body of at most `limit` bytes.
    The item's "," is the posted body's "]" if it stays the last, so the body then has exactly
    body_bytes + item_bytes + 1 bytes."""
    return body_bytes + item_bytes + len(_SEPARATOR) <= limit


def largest_item_bytes(limit: int) -> int:
    """The largest item (encoded, without its ",") that fits a request body alone."""
    return limit - len(_OPEN) - len(_SEPARATOR)


class ItemTooLarge(Exception):
    """One item that alone would not fit in a request body."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the item is {size:,} bytes as JSON, over the {limit:,}-byte request limit")
        self.size = size


class Batch:
    """Items of one stream, encoded as one request body, on their way to one endpoint."""

    __slots__ = ("batch_id", "route", "payload", "count", "opened_at", "number", "origins")

    def __init__(
        self,
        batch_id: int,
        route: StreamRoute,
        payload: bytes,
        count: int,
        opened_at: float,
        number: int = 0,
        origins: Origins = ((0, 0, 1),),
    ) -> None:
        self.batch_id = batch_id
        self.route = route
        self.payload = payload  # the JSON array, exactly as posted
        self.count = count
        self.opened_at = opened_at  # clock time of its first item
        self.number = number  # per stream, 1-based, for the logs
        self.origins = origins

    @classmethod
    def of_items(
        cls,
        batch_id: int,
        route: StreamRoute,
        items: Sequence[Any],
        opened_at: float = 0.0,
        number: int = 0,
        origins: Origins = ((0, 0, 1),),
    ) -> Batch:
        return cls(batch_id, route, orjson.dumps(list(items)), len(items), opened_at, number, origins)

    def ordinal_at(self, position: int) -> tuple[int, bool]:
        """(ordinal of the record the item at `position` came from, whether that record made several items)."""
        origins = self.origins
        run = bisect.bisect_right(origins, (position, float("inf"), 0)) - 1
        start, ordinal, step = origins[run]
        return ordinal + (position - start) * step, step == 0

    @property
    def one_item_per_record(self) -> bool:
        return all(step == 1 for _, _, step in self.origins)

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

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, in order, for a server that answered 413 although the body was under the limit we know."""
        items = self.items()
        middle = len(items) // 2
        ordinal, several = self.ordinal_at(middle)
        later = tuple((start - middle, o, step) for start, o, step in self.origins if start > middle)
        first_origins = tuple(run for run in self.origins if run[0] < middle)
        second_origins = ((0, ordinal, 0 if several else 1),) + later
        first = Batch.of_items(self.batch_id, self.route, items[:middle], self.opened_at, self.number, first_origins)
        second = Batch.of_items(self.batch_id, self.route, items[middle:], self.opened_at, self.number, second_origins)
        return first, second


class BatchBuffer:
    """What the open batch of every stream keeps, however it holds its items (StreamBuffer below: one
    encoded body; object_batching.ObjectBuffer: items by key): the request's limits, and the id,
    opening time and number of the batch. Owned by one writer, used by one thread; never shared
    between syncs.

    `open_batch` hands out the id of a new batch (the writer's StateBarrier) when its first item arrives.
    The sinks (sync/sink.py, sync/analytics_sink.py) tell the buffer which record comes next through
    `record_of_items` and `skip_record`, which a buffer that keeps each item's records itself may ignore.
    """

    count: int  # items in the open batch

    def __init__(
        self,
        route: StreamRoute,
        batch_size: int,
        max_body_bytes: int,
        open_batch: Optional[Callable[[], int]] = None,
        clock: Callable[[], float] = time.monotonic,
        stats: Optional[StreamStats] = None,
    ) -> None:
        self.route = route
        max_items = route.endpoint.target.max_items  # the target's own cap per request, if it has one
        self.batch_size = min(batch_size, max_items) if max_items else batch_size
        self.max_body_bytes = max_body_bytes
        self._open_batch = open_batch or itertools.count().__next__
        self._clock = clock
        self._stats = stats if stats is not None else StreamStats(route.name)
        self.record_of_items: Optional[int] = None  # set while the items of one record are added
        self.batch_id = -1
        self.opened_at = 0.0
        self.batches_cut = 0
        self._clear()

    def _clear(self) -> None:
        """Empty the open batch (at the start, and once `take` has closed it)."""
        raise NotImplementedError

    def _start_batch(self) -> None:
        """The next item opens a batch: its id (which orders it for the states), its time and number."""
        self.batch_id = self._open_batch()
        self.opened_at = self._clock()
        self.batches_cut += 1

    def skip_record(self) -> None:
        """The current record put no item here (rejected, skipped, or no items)."""

    def overdue(self, now: float, interval: float) -> bool:
        """True when the open batch's first item has waited `interval` seconds."""
        return self.count > 0 and now - self.opened_at >= interval

    def take(self) -> Optional[Batch]:
        """The open batch, closed, or None when nothing is buffered."""
        raise NotImplementedError


class StreamBuffer(BatchBuffer):
    """The open batch of one analytics stream: its items encoded into one growing request body.

    It also keeps which record each item came from (`Origins`), at no cost per record: the next item
    is taken to come from the record after the previous item's, and whoever feeds the buffer says
    when that is not so (`skip_record`, `begin_record` / `end_record`). `stats.read` is the number
    of the stream's records read, the current one included.
    """

    def _clear(self) -> None:
        # The open batch: "[" then every item followed by ","; take() turns the last "," into "]".
        self.body = bytearray(_OPEN)
        self.count = 0
        self._runs: list[tuple[int, int, int]] = []

    def add(self, part: bytes) -> Optional[Batch]:
        """Append one encoded item. Returns a batch to send when one is complete: full by count, or cut
        early because `part` would have taken its body over the size cap. Raises ItemTooLarge (leaving
        the buffer as it was) for an item that cannot fit in any body."""
        body = self.body
        if not body_fits(len(body), len(part), self.max_body_bytes):
            return self._add_after_cut(part)
        if not self.count:
            self.open()
        body += part
        body += _SEPARATOR
        self.count += 1
        if self.count >= self.batch_size:
            return self.take()
        return None

    def add_run(self, encoded: bytes, ends: Sequence[int], submit: Callable[[Batch], None]) -> None:
        """Items already encoded (by a parse worker), one record each, in input order, each followed by
        "," in `encoded` and ending at the offsets `ends`: what `add` does for each of them, a run at a
        time, handing each batch that fills to `submit`. Each run is counted as read once placed."""
        stats = self._stats
        view = memoryview(encoded)
        count = len(ends)
        done = start = 0
        while done < count:
            room = self.batch_size - self.count
            upto = count if count - done <= room else done + room
            end = ends[upto - 1]
            if body_fits(len(self.body), end - start - len(_SEPARATOR), self.max_body_bytes):  # the run as one item
                if not self.count:
                    self.open(stats.read)
                self.body += view[start:end]
                self.count += upto - done
                stats.read += upto - done
                done, start = upto, end
                full = self.take() if self.count >= self.batch_size else None
                if full is not None:
                    submit(full)
            else:  # the size cap falls inside this run: one item, through `add`'s own cut
                end = ends[done]
                stats.read += 1
                ready = self.add(bytes(view[start : end - 1]))
                done, start = done + 1, end
                if ready is not None:
                    submit(ready)

    def _add_after_cut(self, part: bytes) -> Optional[Batch]:
        if len(part) > largest_item_bytes(self.max_body_bytes):
            raise ItemTooLarge(len(part) + len(_OPEN) + len(_SEPARATOR), self.max_body_bytes)
        cut = self.take()
        # `part` fits alone, and cannot fill the new batch: the cut one held an item without being full,
        # so batch_size >= 2. (With nothing buffered, a part that fits alone never gets here.)
        self.add(part)
        return cut

    def open(self, first_ordinal: Optional[int] = None) -> None:
        """Start the batch that the next item goes into (its id orders it for the states). The item's
        record is the current one (`stats.read - 1`) unless `first_ordinal` says otherwise."""
        self._start_batch()
        several = self.record_of_items
        if several is not None:
            self._runs = [(0, several, 0)]
        else:
            self._runs = [(0, self._stats.read - 1 if first_ordinal is None else first_ordinal, 1)]

    def _new_run(self, ordinal: int, step: int) -> None:
        if not self.count:
            return  # open() starts the runs of the next batch
        runs = self._runs
        if runs[-1][0] == self.count:
            runs[-1] = (self.count, ordinal, step)
        else:
            runs.append((self.count, ordinal, step))

    def skip_record(self) -> None:
        """The current record put no item here (rejected, skipped, or no items): the next item is the next record's."""
        self._new_run(self._stats.read, 1)

    def begin_record(self, ordinal: int) -> None:
        """The items added until `end_record` all come from the record with this ordinal."""
        self.record_of_items = ordinal
        self._new_run(ordinal, 0)

    def end_record(self) -> None:
        self.record_of_items = None
        self._new_run(self._stats.read, 1)

    @property
    def body_bytes(self) -> int:
        """Size of the open batch's body as it would be posted now."""
        return len(self.body) if self.count else 0

    def take(self) -> Optional[Batch]:
        if not self.count:
            return None
        body = self.body
        body[-1] = _CLOSE
        batch = Batch(
            self.batch_id, self.route, bytes(body), self.count, self.opened_at, self.batches_cut, tuple(self._runs)
        )
        self._clear()
        return batch


def encode_item(item: dict[str, Any]) -> bytes:
    """JSON for one item. orjson refuses what JSON cannot carry (too deep, huge ints) by raising."""
    return orjson.dumps(item)
