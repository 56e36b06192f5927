"""Batches are cut by record count and by encoded body size, per stream, per buffer instance."""

from __future__ import annotations

import itertools

import orjson
import pytest

from destination_planhat.sync.batching import Batch, ItemTooLarge, StreamBuffer, encode_item
from destination_planhat.testing.builders import METRIC_SCHEMA, route

ROUTE = route("s", METRIC_SCHEMA)


def fill(buffer: StreamBuffer, parts: list[bytes]) -> list[list[bytes]]:
    """Feed parts the way the writer does; return the items of each batch cut, in order (the last one included)."""
    batches = [buffer.add(part) for part in parts] + [buffer.take()]
    return [split_body(batch) for batch in batches if batch is not None]


def split_body(batch: Batch) -> list[bytes]:
    """A body's items as the bytes they were added as (every test item is a flat JSON object)."""
    body = batch.body()
    assert body.startswith(b"[{") and body.endswith(b"}]"), body[:40]
    items = [b"{" + piece + b"}" for piece in body[2:-2].split(b"},{")]
    assert len(items) == len(batch), "the item count matches the body"
    return items


def parts(n: int, size: int = 10) -> list[bytes]:
    """n distinct JSON items of exactly `size` bytes each."""
    out = []
    for i in range(n):
        prefix = b'{"v":"%d' % i
        out.append(prefix + b"x" * (size - len(prefix) - 2) + b'"}')
        assert len(out[-1]) == size
    return out


@pytest.mark.parametrize(
    "records, batch_size, expected_sizes",
    [
        (0, 3, []),
        (1, 1, [1]),
        (3, 1, [1, 1, 1]),
        (7, 7, [7]),
        (8, 7, [7, 1]),
        (21, 7, [7, 7, 7]),
        (25, 10, [10, 10, 5]),
        (5, 10_000, [5]),
    ],
)
def test_batches_by_count(records, batch_size, expected_sizes):
    items = parts(records)
    batches = fill(StreamBuffer(ROUTE, batch_size, 10**9), items)
    assert [len(b) for b in batches] == expected_sizes
    assert [p for b in batches for p in b] == items, "every item once, in order"


@pytest.mark.parametrize(
    "records, item_bytes, max_body_bytes, expected_sizes",
    [
        # A body is "[" + items joined by "," + "]": n items of s bytes take n*s + (n-1) + 2 bytes.
        (6, 10, 2 + 3 * 10 + 2, [3, 3]),  # exactly 3 fit
        (6, 10, 2 + 3 * 10 + 2 - 1, [2, 2, 2]),  # one byte less: only 2 fit
        (5, 10, 12, [1, 1, 1, 1, 1]),  # one item alone fills the cap
        (4, 100, 10**6, [4]),
    ],
)
def test_batches_by_bytes(records, item_bytes, max_body_bytes, expected_sizes):
    items = parts(records, item_bytes)
    batches = fill(StreamBuffer(ROUTE, 1000, max_body_bytes), items)
    assert [len(b) for b in batches] == expected_sizes
    assert [p for b in batches for p in b] == items


def test_every_batch_body_is_valid_json_within_the_cap_and_its_byte_count_is_exact():
    cap = 500
    buffer = StreamBuffer(ROUTE, 1000, cap)
    items = [encode_item({"dimensionId": "d", "value": i, "externalId": "e" * (i % 37)}) for i in range(200)]
    seen = []
    for part in items:
        before = buffer.body_bytes
        batch = buffer.add(part)
        if batch is not None:
            assert len(batch.body()) == batch.body_bytes == before <= cap, "the cut batch is the body as it was"
            assert before + len(part) + 1 > cap, "a batch is cut only when the next item would not fit"
            seen.extend(batch.items())
        assert buffer.body_bytes <= cap
    batch = buffer.take()
    assert len(batch.body()) == batch.body_bytes <= cap
    seen.extend(batch.items())
    assert seen == [orjson.loads(p) for p in items]


def test_an_item_larger_than_the_cap_alone_is_refused_and_the_buffer_is_left_as_it_was():
    buffer = StreamBuffer(ROUTE, 10, 12)
    assert buffer.add(b"x" * 10) is None  # 10 + "[]" = 12: fits exactly
    with pytest.raises(ItemTooLarge) as raised:
        buffer.add(b"y" * 11)
    assert raised.value.size == 13
    assert "13" in str(raised.value) and "12" in str(raised.value)
    assert buffer.take().body() == b"[" + b"x" * 10 + b"]"


def test_a_batch_gets_its_id_and_opening_time_when_its_first_item_arrives_and_numbers_per_stream():
    opened = []
    ids = itertools.count(40)

    def open_batch() -> int:
        opened.append(next(ids))
        return opened[-1]

    clock = iter([7.5, 9.0])
    buffer = StreamBuffer(ROUTE, 2, 10**6, open_batch, lambda: next(clock))
    assert buffer.take() is None and opened == [], "no item, no batch"
    assert buffer.add(b"{}") is None
    first = buffer.add(b"{}")  # full: handed back for the writer to send
    assert opened == [40], "one id per batch, not per item"
    assert buffer.add(b'{"a":1}') is None
    second = buffer.take()
    assert (first.batch_id, first.number, first.opened_at, first.body()) == (40, 1, 7.5, b"[{},{}]")
    assert (second.batch_id, second.number, second.opened_at, second.body()) == (41, 2, 9.0, b'[{"a":1}]')


@pytest.mark.parametrize(
    "waited, interval, overdue",
    [(0.0, 60.0, False), (59.9, 60.0, False), (60.0, 60.0, True), (300.0, 60.0, True)],
)
def test_a_partial_batch_is_overdue_once_its_first_item_waited_the_interval(waited, interval, overdue):
    buffer = StreamBuffer(ROUTE, 10, 10**6, clock=lambda: 1000.0)
    assert buffer.overdue(1000.0 + waited, interval) is False, "an empty buffer is never overdue"
    buffer.add(b"{}")
    assert buffer.overdue(1000.0 + waited, interval) is overdue


def test_buffers_are_per_instance():
    a, b = StreamBuffer(ROUTE, 10, 10**6), StreamBuffer(ROUTE, 10, 10**6)
    a.add(b'{"a":1}')
    assert b.take() is None
    assert a.take().items() == [{"a": 1}]


@pytest.mark.parametrize("n", [2, 3, 7, 10])
def test_split_halves_keep_every_item_in_order_with_exact_sizes(n):
    items = [orjson.loads(p) for p in parts(n, 13)]
    batch = Batch.of_items(5, ROUTE, items, opened_at=1.5, number=3)
    first, second = batch.split()
    assert first.items() + second.items() == items
    assert abs(len(first) - len(second)) <= 1 and len(first) >= 1 and len(second) >= 1
    for half in (first, second):
        assert (half.batch_id, half.number, half.route, half.opened_at) == (5, 3, ROUTE, 1.5)
        assert half.body_bytes == len(half.body())
        assert len(half) == len(half.items())
