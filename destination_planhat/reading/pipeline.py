"""Reading the input: one pipeline from stdin (or the CDK's messages) to the writer.

    pieces of input -> LineFramer -> chunks of whole lines -> Decoder -> segments -> applied in order

The framer and the decoder (reading/decoder.py) are the same code wherever the decoding runs: in
parse worker processes (reading/worker_pool.py) or, with `parse_workers: 0` or a single CPU, in this process
(`InProcess`). Segments are applied strictly in input order, here, on the reading thread: FAST runs
of encoded items go straight into their stream's open batch (PlanhatWriter.take_encoded); ODD lines
take the general path (`parse_lines`), which handles every kind of line and every mistake. So a
STATE still follows every record before it, and what is sent, rejected, counted and logged never
depends on where the decoding ran.

Between chunks, and every TICK_SECONDS while the source is quiet (`with_idle_ticks`), the writer
sends the batches that waited too long (`flush_overdue`).
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, NoReturn, Optional, Protocol, TypeVar

import orjson
from airbyte_cdk.models import AirbyteMessage, AirbyteMessageSerializer

from destination_planhat.mapping.unclean_json import guess_stream, is_clean_text, parse_leniently
from destination_planhat.planhat.errors import system_error
from destination_planhat.reading.decoder import FAST, ODD, Chunk, Decoder, LineFramer, Segment, segment_lines
from destination_planhat.reading.worker_pool import (
    ParseWorkerFailed,
    ParseWorkers,
    available_cpus,
    default_worker_count,
    workers_supported,
)
from destination_planhat.sync.state_barrier import InvalidState
from destination_planhat.sync.writer import TICK_SECONDS, PlanhatWriter

logger = logging.getLogger("airbyte")

# stdin is read in pieces of up to this many bytes (a pipe gives what it holds, often 64 KiB).
READ_CHUNK_BYTES = 1 << 20
# Pieces read ahead of the pipeline at most: bounds the memory of a fast source in front of a slow sync.
READ_AHEAD_CHUNKS = 4
# UTF-8's byte order mark: read as nothing at the start of the input (`without_byte_order_mark`).
BYTE_ORDER_MARK = b"\xef\xbb\xbf"

T = TypeVar("T")


class InputStream(Protocol):
    """What input is read from: stdin's binary buffer, a file, a pipe. Where it has `read1`, that is
    used: it gives what is there without waiting to fill the size asked for (read_chunks)."""

    def read(self, size: int = ..., /) -> bytes: ...


class MessageTarget(Protocol):
    """What the pipeline hands the input to, line by line, in input order: PlanhatWriter (tests pass a
    recorder). Each method is the writer's method of the same name."""

    def record(self, stream: Any, namespace: Any, data: Any) -> None: ...

    def take_encoded(self, index: int, encoded: bytes, ends: Sequence[int]) -> None: ...

    def state(self, message: dict[str, Any]) -> None: ...

    def stream_status(self, namespace: Any, stream: Any, status: Any) -> None: ...

    def source_changes(self, namespace: Any, stream: Any, changes: Any) -> None: ...

    def unparseable_line(
        self, line_number: int, line: bytes, why: str, stream_guess: tuple[Optional[str], Optional[str]] = ...
    ) -> None: ...

    def other_message(self, kind: Any) -> None: ...

    def flush_overdue(self) -> None: ...

    def parallel_plan(self) -> dict[str, Any]: ...

    def fail(self, error: BaseException) -> NoReturn: ...


class Decoding(Protocol):
    """Where chunks are decoded: parse worker processes (worker_pool.ParseWorkers) or this process (InProcess).
    Chunks are sent to a number in turn; the answers to one number come back in the order sent."""

    count: int
    depth: int  # chunks on their way at once, at most

    def send(self, number: int, chunk: Chunk) -> None: ...

    def ready(self, number: int) -> bool: ...

    def receive(self, number: int) -> list[Segment]: ...


class InProcess:
    """Decoding on the reading thread itself: a chunk is decoded when its answer is asked for."""

    depth = 1

    def __init__(self, plan: dict[str, Any]) -> None:
        self.count = 1
        self._decoder = Decoder(plan)
        self._chunks: deque[Chunk] = deque()

    def send(self, number: int, chunk: Chunk) -> None:
        self._chunks.append(chunk)

    def ready(self, number: int) -> bool:
        return bool(self._chunks)

    def receive(self, number: int) -> list[Segment]:
        return self._decoder.decode(self._chunks.popleft())


class Pipeline:
    """Input pieces in; chunks out to the decoding in turn; answers applied in input order."""

    def __init__(self, decoding: Decoding, writer: MessageTarget) -> None:
        self._decoding = decoding
        self._writer = writer
        self._framer = LineFramer()
        self._pending: deque[int] = deque()  # the number each chunk went to, oldest first
        self._next = 0
        self._lines = 0  # input lines applied so far

    def add(self, piece: bytes) -> None:
        """A piece of input (any size, cut anywhere)."""
        for chunk in self._framer.add(piece):
            self._send(chunk)
        self._apply_ready()
        self._writer.flush_overdue()

    def on_idle(self) -> None:
        """Input is quiet: send what is held, apply what has come back, send overdue batches."""
        for chunk in self._framer.flush():
            self._send(chunk)
        self._apply_ready()
        self._writer.flush_overdue()

    def finish(self) -> None:
        """End of input: every chunk sent and applied, then the last line if it had no newline."""
        for chunk in self._framer.flush():
            self._send(chunk)
        while self._pending:
            self._apply_oldest()
        last = self._framer.rest()
        if last.strip():
            parse_lines([last], self._lines, self._writer, not_json="the input ended in the middle of a line")

    def _send(self, chunk: Chunk) -> None:
        while len(self._pending) >= self._decoding.depth:
            self._apply_oldest()
        number = self._next
        self._next = (number + 1) % self._decoding.count
        self._decoding.send(number, chunk)
        self._pending.append(number)

    def _apply_ready(self) -> None:
        while self._pending and self._decoding.ready(self._pending[0]):
            self._apply_oldest()

    def _apply_oldest(self) -> None:
        number = self._pending.popleft()
        writer = self._writer
        before = self._lines  # lines before this chunk; its ODD segments say where in it they start
        for segment in self._decoding.receive(number):
            if segment[0] == FAST:
                writer.take_encoded(segment[1], segment[2], segment[3])
            elif segment[0] == ODD:
                parse_lines(segment[2], before + segment[1], writer)
            else:
                raise ParseWorkerFailed(f"parse worker process {number + 1}: an answer of unknown kind {segment[0]!r}")
            self._lines += segment_lines(segment)


# ----- the sources: stdin, or the CDK's messages --------------------------------------------------


def read_input(stream: InputStream, writer: MessageTarget, workers: Optional[ParseWorkers] = None) -> None:
    """Every line of `stream` to the writer, through the pipeline. Bad lines are counted, never fatal.
    With `workers`, chunks are decoded by those processes; else in this process."""
    for _ in run_pipeline(read_chunks(stream), writer, workers):
        pass


def message_lines(messages: Iterable[AirbyteMessage]) -> Iterator[bytes]:
    """The CDK's AirbyteMessage models (DestinationPlanhat.write) as JSON lines again, so that they go
    through the same pipeline as stdin's lines and are read, checked, counted and reported exactly as
    the CLI would."""
    for message in messages:
        yield _json_line(AirbyteMessageSerializer.dump(message))


def _json_line(message: Any) -> bytes:
    try:
        return orjson.dumps(message) + b"\n"
    except (TypeError, orjson.JSONEncodeError):  # integers past 64 bits: the standard library writes them
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape") + b"\n"


def run_pipeline(
    pieces: Iterable[bytes], writer: MessageTarget, workers: Optional[ParseWorkers] = None
) -> Iterator[None]:
    """The pipeline over `pieces` of input (any size, cut anywhere), with idle ticks; yields after
    each piece, so that a caller can hand out the states released so far."""
    decoding: Decoding = workers if workers is not None else InProcess(writer.parallel_plan())
    pipeline = Pipeline(decoding, writer)
    try:
        for piece in with_idle_ticks(without_byte_order_mark(pieces), pipeline.on_idle):
            pipeline.add(piece)
            yield
        pipeline.finish()
    except ParseWorkerFailed as exc:
        writer.fail(
            system_error(
                f"{exc}. The sync stopped; records after the last emitted state will be sent again by the next "
                "attempt. To parse in the connector's own process instead, set parse_workers to 0.",
                str(exc),
            )
        )


def with_idle_ticks(
    source: Iterable[T], on_idle: Callable[[], None], tick: float = TICK_SECONDS
) -> Generator[T, None, None]:
    """`source`'s items, read ahead on a thread of their own, with `on_idle()` called every `tick`
    seconds while none arrives. Why: a source can go quiet for hours while a partial batch (and the
    states behind it) waits; the writer must still get the chance to send it."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=READ_AHEAD_CHUNKS)
    stopped = threading.Event()

    def hand_over(kind: str, value: Any) -> bool:
        while not stopped.is_set():
            try:
                handoff.put((kind, value), timeout=tick)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in source:
                if not hand_over("item", item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            hand_over("error", exc)
        else:
            hand_over("end", None)

    threading.Thread(target=pump, name="planhat-input", daemon=True).start()
    try:
        while True:
            try:
                kind, value = handoff.get(timeout=tick)
            except queue.Empty:
                on_idle()
                continue
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stopped.set()  # the consumer stopped early (a failed sync): let the pump thread end


def without_byte_order_mark(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """`pieces`, without a UTF-8 byte order mark at the very start of the input: it is read as
    nothing. Why: a file saved by an editor that writes one (or a tool that prepends it) would
    otherwise make the first line unreadable, and that line (a valid record) would be skipped while
    the state after it still goes out. The mark may arrive cut over the first pieces."""
    start = b""
    iterator = iter(pieces)
    for piece in iterator:
        start += piece
        if len(start) >= len(BYTE_ORDER_MARK) or not BYTE_ORDER_MARK.startswith(start):
            break
    if start.startswith(BYTE_ORDER_MARK):
        start = start[len(BYTE_ORDER_MARK) :]
    if start:
        yield start
    yield from iterator


def read_chunks(stream: InputStream, size: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    """What the stream has, up to `size` bytes at a time, without waiting to fill a chunk."""
    read = getattr(stream, "read1", None) or stream.read
    while True:
        chunk = read(size)
        if not chunk:
            return
        yield chunk


def start_parse_workers(writer: PlanhatWriter) -> Optional[ParseWorkers]:
    """The parse worker processes for the writer's sync (see reading/worker_pool.py), or None to decode in this
    process. Decoding in this process is always correct, so anything that keeps workers from starting
    falls back to it, with a warning."""
    plan = writer.parallel_plan()
    count = writer.config.parse_workers
    if count is None:
        cpus = available_cpus()
        count, why = default_worker_count(cpus), f"{cpus} CPU(s) available"
    else:
        why = "parse_workers"
    if count and not plan["streams"]:
        count, why = 0, "no stream is mapped without unpivot_columns or dot paths"
    if count and not workers_supported():
        logger.warning(
            f"input parsing: parse worker processes need a POSIX system (this is {sys.platform}); parsing in this process"
        )
        count = 0
    if not count:
        logger.info(f"input parsing: in the connector's own process ({why})")
        return None
    try:
        workers = ParseWorkers(count, plan).start()
    except OSError as exc:
        logger.warning(f"input parsing: could not start parse worker processes ({exc}); parsing in this process")
        return None
    logger.info(f"input parsing: {count} worker process(es) alongside the connector ({why})")
    return workers


# ----- the general path: every line a Decoder hands back ---------------------------------------


def parse_lines(
    lines: Sequence[bytes],
    before: int,
    writer: MessageTarget,
    not_json: str = "it is not valid JSON",
) -> None:
    """One JSON line per message; `before` is the number of lines already read. Every kind of line
    and every mistake is handled here (a Decoder only takes the common record off its hands)."""
    loads, JSONDecodeError = orjson.loads, orjson.JSONDecodeError
    for line_number, line in enumerate(lines, before + 1):
        try:
            message = loads(line)
        except JSONDecodeError as exc:
            if not line.strip():
                continue
            if b'"STATE"' in line and _is_state_line(line):  # NaN or the like: the standard parser reads it
                _state_line(writer, line_number, line)
                continue
            message = _salvage_record(line)
            if message is None:
                writer.unparseable_line(line_number, line, f"{not_json} ({exc})", guess_stream(line))
                continue
        try:
            if message["type"] == "RECORD":
                body = message["record"]
                stream, namespace, data = body["stream"], body.get("namespace"), body["data"]
                meta = body.get("meta")
            else:
                body = None
        except (KeyError, TypeError, AttributeError):  # not an object, or a RECORD missing a part
            body = None
        if body is None:
            _other_line(writer, line_number, line, message)
        else:
            if meta and type(meta) is dict and meta.get("changes"):
                writer.source_changes(namespace, stream, meta["changes"])
            writer.record(stream, namespace, data)


def _other_line(writer: MessageTarget, line_number: int, line: bytes, message: Any) -> None:
    """Every line that is valid JSON but not a well-formed RECORD: states, other messages, mistakes."""
    kind = message.get("type") if type(message) is dict else None
    if kind == "RECORD":
        body = message.get("record")
        if type(body) is dict:  # without a stream or data: the writer counts it as skipped or rejected
            writer.record(body.get("stream"), body.get("namespace"), body.get("data"))
        else:
            writer.unparseable_line(line_number, line, "a RECORD message without a record object")
    elif kind == "STATE":
        _state_line(writer, line_number, line)
    elif kind == "TRACE" and _stream_status(writer, message):
        return
    elif kind is None:
        writer.unparseable_line(line_number, line, "not an Airbyte message (no 'type')")
    else:
        writer.other_message(kind)


def _state_line(writer: MessageTarget, line_number: int, line: bytes) -> None:
    """A STATE line, read again by the standard library's parser: it keeps every value exactly
    (orjson turns integers past 64 bits into floats), so the state can go out as it came in."""
    try:
        writer.state(json.loads(line))
    except (ValueError, InvalidState) as exc:
        writer.unparseable_line(
            line_number,
            line,
            str(exc) if isinstance(exc, InvalidState) else f"a STATE message that is not valid ({exc})",
        )


def _is_state_line(line: bytes) -> bool:
    try:
        message = json.loads(line)
    except ValueError:
        return False
    return type(message) is dict and message.get("type") == "STATE"


def _stream_status(writer: MessageTarget, message: dict[str, Any]) -> bool:
    """A TRACE STREAM_STATUS message (the platform sends COMPLETE per stream after the source ends):
    handed to the writer. False for any other TRACE, which is ignored like other messages."""
    trace = message.get("trace")
    if type(trace) is not dict or trace.get("type") != "STREAM_STATUS":
        return False
    status = trace.get("stream_status")
    if type(status) is not dict:
        return False
    descriptor = status.get("stream_descriptor")
    if type(descriptor) is not dict:
        return False
    writer.stream_status(descriptor.get("namespace"), descriptor.get("name"), status.get("status"))
    return True


def _salvage_record(line: bytes) -> Optional[dict[str, Any]]:
    """A RECORD line orjson refused (NaN, invalid UTF-8, lone surrogates), read leniently.

    Its bad values stay marked, so the writer rejects the record naming the field if that field is
    sent. Only RECORDs are salvaged: a STATE or anything else must be exact, or it is skipped.
    """
    message = parse_leniently(line)
    if type(message) is not dict or message.get("type") != "RECORD":
        return None
    body = message.get("record")
    if type(body) is not dict or not is_clean_text(body.get("stream")):
        return None
    namespace = body.get("namespace")
    if namespace is not None and not is_clean_text(namespace):
        return None
    return message
