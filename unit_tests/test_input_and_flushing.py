"""Input is read in chunks with idle ticks; partial batches leave once overdue, not because of a state.

The writer's buffers belong to the reading thread: the input loop calls `flush_overdue()` between
chunks and while the source is quiet. These tests drive that with a fake clock and a fake client.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any, Optional

import orjson
import pytest

from destination_planhat.mapping.routing import route_streams
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import PlanhatUnavailable
from destination_planhat.reading.pipeline import (
    read_input,
    start_parse_workers,
    with_idle_ticks,
    without_byte_order_mark,
)
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import (
    ACTIVITY_SCHEMA,
    METRIC_SCHEMA,
    catalog,
    config,
    configured_stream,
    state_cursor,
)
from destination_planhat.testing.fake_client import FakeClient, wait_until
from destination_planhat.testing.harness import stream_state
from destination_planhat.testing.recording_target import RecordingTarget

CATALOG = catalog(configured_stream("m", METRIC_SCHEMA), configured_stream("u", ACTIVITY_SCHEMA))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def writer(client: FakeClient, clock: Clock, emitted: list, **overrides: Any) -> PlanhatWriter:
    parsed = config(**{"batch_size": 100, "flush_interval_seconds": 60, **overrides})
    return PlanhatWriter(parsed, route_streams(parsed, CATALOG), client, emitted.append, clock=clock).start()


def metric(i: int) -> dict[str, Any]:
    return {"dimensionId": "logins", "value": i, "externalId": f"c{i}"}


# ----- flush_overdue ----------------------------------------------------------------------------


def test_a_partial_batch_leaves_once_its_first_record_waited_the_flush_interval_and_its_state_follows():
    client, clock = FakeClient(), Clock()
    emitted: list[dict[str, Any]] = []
    w = writer(client, clock, emitted)
    try:
        w.record("m", None, metric(1))
        clock.now += 30
        w.record("m", None, metric(2))
        w.state(stream_state("m", "after-2"))
        assert client.calls == [] and emitted == [], "a state does not push the partial batch out"

        clock.now += 29.9  # the first record has waited 59.9 s
        w.flush_overdue()
        assert client.calls == [] and emitted == []

        clock.now += 0.1  # 60 s: overdue
        w.flush_overdue()
        wait_until(lambda: len(emitted) == 1, "the state after the overdue batch was acknowledged")
        assert [items for _, items in client.calls] == [[metric(1), metric(2)]]
        assert state_cursor(emitted[0]) == "after-2" and emitted[0]["state"]["destinationStats"]["recordCount"] == 2
        w.finish()
    finally:
        w.close()
    assert len(client.calls) == 1, "nothing left to send at the end"


def test_only_the_overdue_stream_is_flushed():
    client, clock = FakeClient(), Clock()
    emitted: list[dict[str, Any]] = []
    w = writer(client, clock, emitted)
    try:
        w.record("m", None, metric(1))
        clock.now += 50
        w.record("u", None, {"email": "a@example.com", "action": "login"})
        clock.now += 10
        w.flush_overdue()
        wait_until(lambda: len(client.calls) == 1, "the Metrics batch")
        assert client.calls[0][1] == [metric(1)]
        w.finish()
    finally:
        w.close()
    assert [items for _, items in client.calls][1] == [{"email": "a@example.com", "action": "login"}]


# ----- with_idle_ticks ----------------------------------------------------------------------------


def test_idle_ticks_come_while_the_source_is_quiet_and_every_item_arrives_in_order():
    ticks = []
    resume = threading.Event()

    def quiet_source() -> Iterator[int]:
        yield 1
        resume.wait()  # quiet until the consumer has been told twice that nothing is coming
        yield 2

    def on_idle() -> None:
        ticks.append(1)
        if len(ticks) >= 2:
            resume.set()

    assert list(with_idle_ticks(quiet_source(), on_idle, tick=0.01)) == [1, 2]
    assert len(ticks) >= 2


def test_an_error_of_the_source_reaches_the_consumer():
    def broken() -> Iterator[int]:
        yield 1
        raise OSError("stdin went away")

    items = []
    with pytest.raises(OSError, match="stdin went away"):
        for item in with_idle_ticks(broken(), lambda: None, tick=0.01):
            items.append(item)
    assert items == [1]


def test_a_consumer_that_stops_early_lets_the_reading_thread_end():
    produced = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            n += 1
            produced.append(n)
            yield n

    iterator = with_idle_ticks(endless(), lambda: None, tick=0.01)
    assert next(iterator) == 1
    iterator.close()
    wait_until(
        lambda: not any(t.name == "planhat-input" and t.is_alive() for t in threading.enumerate()),
        "the input thread to end",
    )


# ----- read_input ---------------------------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A stream that hands out at most `size` bytes per read, like a pipe written in small pieces."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size = data, size

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        chunk, self._data = self._data[: self._size], self._data[self._size :]
        return chunk


class Recorder(RecordingTarget):
    """Stands in for the writer: records what read_input hands over (a state by its cursor, a bad line
    by the first part of its reason)."""

    def state(self, message: dict[str, Any]) -> None:
        self.calls.append(("state", state_cursor(message)))

    def unparseable_line(
        self, line_number: int, line: bytes, why: str, stream_guess: tuple[Optional[str], Optional[str]] = (None, None)
    ) -> None:
        self.calls.append(("bad", line_number, line, why.split(" (")[0]))


LINES = [
    b'{"type":"RECORD","record":{"stream":"m","data":{"value":1},"emitted_at":1}}',
    b"",
    b'{"type":"RECORD","record":{"stream":"u","namespace":"ns","data":{"email":"a@b.c"},"emitted_at":1}}\r',
    b"not json",
    b'{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"m"},"stream_state":{"cursor":7}}}}',
    b'{"type":"LOG","log":{"level":"INFO","message":"hi"}}',
    b'{"type":"RECORD","record":{"stream":"m"}}',
    b'{"type":"RECORD","record":"oops"}',
    b"[1, 2]",
]
EXPECTED = [
    ("record", "m", None, {"value": 1}),
    ("record", "u", "ns", {"email": "a@b.c"}),
    ("bad", 4, b"not json", "it is not valid JSON"),
    ("state", 7),
    ("other", "LOG"),
    ("record", "m", None, None),
    ("bad", 8, b'{"type":"RECORD","record":"oops"}', "a RECORD message without a record object"),
    ("bad", 9, b"[1, 2]", "not an Airbyte message"),
]


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10**6])
def test_lines_split_across_chunks_are_read_as_whole_lines(chunk_size):
    recorder = Recorder()
    read_input(Trickle(b"\n".join(LINES) + b"\n", chunk_size), recorder)
    assert recorder.calls == EXPECTED


@pytest.mark.parametrize("chunk_size", [3, 10**6])
def test_the_last_line_needs_no_newline_but_a_cut_one_is_reported(chunk_size):
    complete = Recorder()
    read_input(Trickle(LINES[0], chunk_size), complete)
    assert complete.calls == [EXPECTED[0]]

    cut = Recorder()
    read_input(Trickle(LINES[0] + b"\n" + LINES[0][:30], chunk_size), cut)
    assert cut.calls == [EXPECTED[0], ("bad", 2, LINES[0][:30], "the input ended in the middle of a line")]


def test_a_very_long_line_arriving_in_many_pieces_is_one_record():
    data = {"dimensionId": "d", "value": 1, "externalId": "x" * 300_000}
    line = orjson.dumps({"type": "RECORD", "record": {"stream": "m", "data": data, "emitted_at": 1}})
    recorder = Recorder()
    read_input(Trickle(line + b"\n", 4096), recorder)
    assert recorder.calls == [("record", "m", None, data)]


class QuietAfter(io.RawIOBase):
    """Hands out `data`, then blocks, as a source that has gone quiet with its pipe still open."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.release = threading.Event()

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        if self._data:
            data, self._data = self._data, b""
            return data
        self.release.wait()
        return b""


@pytest.mark.parametrize("parse_workers", [0, 2])
def test_a_failed_batch_ends_the_sync_while_the_source_is_quiet(parse_workers):
    def unavailable(index: int, endpoint: Any, items: list) -> None:
        raise PlanhatUnavailable("HTTP 503 after 8 attempt(s)", endpoint=Endpoint.METRICS)

    client, clock = FakeClient(unavailable), Clock()
    emitted: list[dict[str, Any]] = []
    w = writer(client, clock, emitted, batch_size=2, parse_workers=parse_workers)
    workers = start_parse_workers(w)
    source = QuietAfter(
        b"".join(
            orjson.dumps({"type": "RECORD", "record": {"stream": "m", "data": metric(i), "emitted_at": 1}}) + b"\n"
            for i in range(4)
        )
    )
    outcome: list[BaseException] = []

    def sync() -> None:
        try:
            read_input(source, w, workers)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=sync, daemon=True)
    reader.start()
    try:
        wait_until(lambda: bool(outcome), "the failure to end the sync while the source says nothing")
        assert "503" in str(outcome[0]) and emitted == []
    finally:
        source.release.set()
        reader.join(10)
        if workers is not None:
            workers.close()
        w.close()


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    "pieces, expected",
    [
        ([BOM + b'{"type": "LOG"}\n'], b'{"type": "LOG"}\n'),
        ([b"\xef", b"\xbb", b"\xbf{}\n"], b"{}\n"),  # cut over the first pieces
        ([BOM], b""),
        ([b"{}\n", BOM + b"{}\n"], b"{}\n" + BOM + b"{}\n"),  # only at the start of the input
        ([b"\xef\xbb{}\n"], b"\xef\xbb{}\n"),  # not a whole mark: left as it is (the line is unreadable)
        ([b"\xef", b"x"], b"\xefx"),
        ([], b""),
    ],
)
def test_a_byte_order_mark_at_the_start_of_the_input_is_read_as_nothing(pieces, expected):
    assert b"".join(without_byte_order_mark(pieces)) == expected
