"""Batches are cut by record count and by encoded body size, per stream, per buffer instance."""

from __future__ import annotations

import orjson
import pytest

from destination_planhat.batching import Batch, ItemTooLarge, StreamBuffer, encode_item
from unit_tests.builders import METRIC_SCHEMA, route

ROUTE = route("s", METRIC_SCHEMA)


def fill(buffer: StreamBuffer, parts: list[bytes]) -> list[list[bytes]]:
    """Feed parts the way the writer does; return the batches cut, in order (the last one included)."""
    batches: list[list[bytes]] = []
    next_id = iter(range(10**6))
    for part in parts:
        buffer.fits_alone(part)
        if buffer.would_overflow(part):
            batches.append(buffer.take().parts)
        if buffer.add(part, next(next_id)):
            batches.append(buffer.take().parts)
    last = buffer.take()
    if last is not None:
        batches.append(last.parts)
    return batches


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
    next_id = iter(range(10**6))
    for part in items:
        if buffer.would_overflow(part):
            batch = buffer.take()
            assert len(batch.body()) == batch.body_bytes <= cap
            seen.extend(orjson.loads(batch.body()))
        buffer.add(part, next(next_id))
    batch = buffer.take()
    assert len(batch.body()) == batch.body_bytes <= cap
    seen.extend(orjson.loads(batch.body()))
    assert seen == [orjson.loads(p) for p in items]


def test_an_item_larger_than_the_cap_alone_is_refused():
    buffer = StreamBuffer(ROUTE, 10, 12)
    buffer.fits_alone(b"x" * 10)  # 10 + "[]" = 12: fits exactly
    with pytest.raises(ItemTooLarge) as raised:
        buffer.fits_alone(b"x" * 11)
    assert raised.value.size == 13
    assert "13" in str(raised.value) and "12" in str(raised.value)


def test_a_batch_keeps_the_id_of_its_first_record_and_numbers_per_stream():
    buffer = StreamBuffer(ROUTE, 2, 10**6)
    assert buffer.add(b"1", 40) is False
    assert buffer.add(b"2", 99) is True  # the id offered for a batch already open is ignored
    first = buffer.take()
    buffer.add(b"3", 41)
    second = buffer.take()
    assert (first.batch_id, first.number, first.parts) == (40, 1, [b"1", b"2"])
    assert (second.batch_id, second.number, second.parts) == (41, 2, [b"3"])
    assert buffer.take() is None


def test_buffers_are_per_instance():
    a, b = StreamBuffer(ROUTE, 10, 10**6), StreamBuffer(ROUTE, 10, 10**6)
    a.add(b"1", 0)
    assert b.open is None and b.take() is None
    assert a.take().parts == [b"1"]


@pytest.mark.parametrize("n", [2, 3, 7, 10])
def test_split_halves_keep_every_item_in_order_with_exact_sizes(n):
    batch = Batch(5, ROUTE, number=3)
    for part in parts(n, 13):
        batch.parts.append(part)
    first, second = batch.split()
    assert first.parts + second.parts == batch.parts
    assert abs(len(first) - len(second)) <= 1 and len(first) >= 1 and len(second) >= 1
    for half in (first, second):
        assert (half.batch_id, half.number, half.route) == (5, 3, ROUTE)
        assert half.body_bytes == len(half.body())
        assert orjson.loads(half.body()) == [orjson.loads(p) for p in half.parts]
