"""The two steps every input line goes through, wherever they run: framing and decoding.

- `LineFramer` cuts the input (pieces of any size, cut anywhere) into chunks of whole lines.
- `Decoder` turns one chunk into segments, in input order, of two kinds:
  - FAST: items of one stream, mapped, checked and encoded, each followed by "," (so they can be
    appended to the stream's open request body as they are), with where each item ends;
  - ODD: the lines it did not handle, for the connector's general path (pipeline.parse_lines):
    STATEs and every other message, lines that are not strict JSON, records of streams without a
    plan (unpivot, dot paths) or not in the catalog, records that fail a check, records the source
    changed (`meta.changes`, counted by the connector), items too large for a request.

The same two steps run in parse worker processes (reading/worker_process.py) and, with `parse_workers: 0`,
in the connector's own process (pipeline.InProcess): what is sent, rejected, counted and logged
does not depend on where they ran. A Decoder decides nothing the user could see: a FAST item is
exactly what the general path would have made of its record, with the same mapper (mapping/analytics.py) or
msgspec's typed equivalent (reading/typed_records.py); anything else is handed back. At every ODD line the
FAST segments before it are closed first, so a STATE always comes after every record read before it.

This module imports no Airbyte CDK, pydantic or requests: a worker starts fast and stays small.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Union

import msgspec
import orjson

from destination_planhat.mapping.analytics import item_mapper
from destination_planhat.planhat.api import Endpoint, FieldKind
from destination_planhat.reading.typed_records import TypedItems, decode_record_line, record_line_decoder, typed_items
from destination_planhat.sync.batching import largest_item_bytes

FAST = 0
ODD = 1

# A chunk is handed on once it holds this many bytes (fewer, larger chunks cost less per record)...
CHUNK_MIN_BYTES = 256 * 1024
# ...or once its first bytes have waited this long (a slow source), or the input is quiet for a tick.
CHUNK_MAX_WAIT_SECONDS = 0.2
# At most this large (one longer line aside): a worker holds a few times its chunk in memory.
CHUNK_MAX_BYTES = 512 * 1024

Segment = tuple[Any, ...]
Chunk = Union[bytes, bytearray, memoryview]


class LineFramer:
    """Pieces of input in, chunks of whole lines out (each without its final newline), in order.
    What follows the last newline waits for the next piece; `rest()` gives it at the end of input
    (the last line, if it has no newline). Lines are not counted here: a chunk's segments account
    for each of its lines once (`segment_lines`), so the reader numbers lines as it applies them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: list[bytes] = []  # input not framed yet: whole lines, and maybe the start of one
        self._held_bytes = 0
        self._held_has_line = False  # whether `_held` holds a newline (else there is nothing to frame)
        self._held_since = 0.0

    def add(self, piece: bytes) -> list[memoryview]:
        """A piece of input; returns the chunks ready now (enough bytes, or waited long enough)."""
        if not self._held:
            self._held_since = self._clock()
        self._held.append(piece)
        self._held_bytes += len(piece)
        self._held_has_line = self._held_has_line or b"\n" in piece
        if self._held_bytes >= CHUNK_MIN_BYTES or self._clock() - self._held_since >= CHUNK_MAX_WAIT_SECONDS:
            return self.flush()
        return []

    def flush(self) -> list[memoryview]:
        """Every whole line held, in chunks of at most CHUNK_MAX_BYTES (or one longer line)."""
        if not self._held_has_line:  # (joining the pieces of one long line again and again would be quadratic)
            return []
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        end = data.rfind(b"\n")
        rest = data[end + 1 :]
        self._held = [rest] if rest else []
        self._held_bytes = len(rest)
        self._held_has_line = False
        self._held_since = self._clock()
        view = memoryview(data)
        chunks = []
        start = 0
        while start <= end:
            cut = end
            if end - start > CHUNK_MAX_BYTES:
                cut = data.rfind(b"\n", start, start + CHUNK_MAX_BYTES)
                if cut < 0:  # one line longer than a chunk: it goes alone
                    cut = data.find(b"\n", start + CHUNK_MAX_BYTES)
            chunks.append(view[start:cut])
            start = cut + 1
        return chunks

    def rest(self) -> bytes:
        """End of input: what came after the last newline (maybe empty). Call `flush` first."""
        rest = b"".join(self._held)
        self._held, self._held_bytes, self._held_has_line = [], 0, False
        return rest


def segment_lines(segment: Segment) -> int:
    """How many input lines a segment stands for: one per item of a FAST one, one per line of an ODD one."""
    return len(segment[3]) if segment[0] == FAST else len(segment[2])


class Taker(NamedTuple):
    """One stream a Decoder maps."""

    position: int  # the stream's index in the plan
    namespace: Optional[str]
    mapper: Callable[[Any], Any]  # mapping.item_mapper: the general mapper
    typed: Optional[TypedItems]  # typed_records.typed_items: the typed path, if the stream has one


# A stream needs this many records in a chunk that its typed path did not take, and at least a third
# of its records, to lose that path for the rest of the sync (see Decoder._review).
TYPED_MISSES_TO_DROP = 64


class Decoder:
    """One chunk of lines -> its segments (see the module's docstring), for the streams of a plan
    (PlanhatWriter.parallel_plan: each stream's fields, their sources and kinds, its constants).

    Each line is decoded once by msgspec (typed_records.record_line_decoder) as a RECORD of a
    stream of the plan, its data straight into the stream's struct: every field of its Planhat
    type, checked in C; the few checks left (dimensionId characters, dates, the end user's
    identity) and the encoding of the item follow (the common record: one C call in, one out).
    A line that does not decode so (any other message, a stream not in the plan, data with a value
    to convert) is decoded again with its data raw and tried by orjson and the stream's general
    mapper (mapping.item_mapper), which converts values where the rules allow (an id given as a
    number, a number given as text, a date-time to UTC); it is ODD when that makes no valid item
    either: the general path then rejects it and says why.

    A stream most of whose records need the second try (say its ids are numbers) loses the first
    for the rest of the sync: its data is then left raw by the one decode, and mapped at once.
    `typed=False` leaves the typed path out from the start, for comparison (bench/profile_hot_path.py)."""

    def __init__(self, plan: dict[str, Any], typed: bool = True) -> None:
        self.by_name: dict[str, Taker] = {}  # streams without a namespace, by name
        self.by_key: dict[tuple[str, str], Taker] = {}  # by (namespace, name)
        takers: dict[str, list[Taker]] = {}
        for index, namespace, name, endpoint, fields, constants in plan["streams"]:
            fast_fields = [(field, key, FieldKind(kind)) for field, key, kind in fields]
            mapper = item_mapper(Endpoint(endpoint), fast_fields, constants)
            typed_path = typed_items(Endpoint(endpoint), fast_fields, constants) if typed else None
            taker = Taker(index, namespace or None, mapper, typed_path)
            takers.setdefault(name, []).append(taker)
            if namespace:
                self.by_key[(namespace, name)] = taker
            else:
                self.by_name[name] = taker
        # The typed path, by stream name, where the name is of one stream only (the record's
        # `stream` tells the struct; a name in several namespaces is decoded raw, then looked up).
        self._typed: dict[str, tuple[Taker, TypedItems]] = {
            name: (found[0], found[0].typed) for name, found in takers.items() if len(found) == 1 and found[0].typed
        }
        self._names = list(takers)
        self._misses: dict[str, int] = {}  # per stream name, records of this chunk the typed path missed
        self._read_line: Callable[[bytes], Any] = decode_record_line
        self._fast: dict[type, tuple[int, Optional[str], Callable[[Any, bytearray], bool]]] = {}
        self._stream_of: dict[type, str] = {}
        self._compile()
        self.largest_item = largest_item_bytes(int(plan["max_part_bytes"]))

    @property
    def typed_streams(self) -> set[str]:
        """The names of the streams whose records are decoded typed first (for tests and logs)."""
        return {self._stream_of[record_type] for record_type in self._fast}

    def _compile(self) -> None:
        """The one-call line decoder for the streams of the plan, typed where they have a typed path."""
        streams: dict[str, Optional[type]] = {name: None for name in self._names}
        for name, (_, typed_path) in self._typed.items():
            streams[name] = typed_path.decoded_type
        self._read_line, self._stream_of = record_line_decoder(streams)
        self._fast = {}
        for record_type, name in self._stream_of.items():
            if name in self._typed:
                taker, typed_path = self._typed[name]
                self._fast[record_type] = (taker.position, taker.namespace, typed_path.append_decoded)

    def decode(self, chunk: Chunk) -> list[Segment]:
        if not self.by_name and not self.by_key:  # no stream to take (unpivot or dot paths only): all ODD
            return [(ODD, 0, bytes(chunk).split(b"\n"))]
        segments: list[Segment] = []
        bodies: dict[int, bytearray] = {}
        ends: dict[int, array] = {}
        odd_from = -1
        odd: list[bytes] = []
        read_line, fast_types = self._read_line, self._fast
        largest_appended = self.largest_item + 1  # an item and its ","
        lines = bytes(chunk).split(b"\n")
        for number, line in enumerate(lines):
            appended = position = 0
            try:
                record = read_line(line).record
            except Exception:  # not a RECORD of a stream in the plan, or data not of its types
                record = None
            if record is not None:
                fast = fast_types.get(type(record))
                meta = record.meta  # a record the source changed is counted by the general path
                if fast is not None and record.namespace == fast[1] and (meta is None or not meta.changes):
                    position = fast[0]
                    body = bodies.get(position)
                    if body is None:
                        body = _open_body(bodies, ends, position)
                    before = len(body)
                    try:
                        if fast[2](record.data, body):
                            appended = len(body) - before
                    except Exception:  # a value msgspec cannot encode: the second try says
                        del body[before:]
            if not appended:
                appended, position = self._second_try(line, record, bodies, ends)
            if appended:
                body = bodies[position]
                if appended <= largest_appended:
                    if odd:
                        segments.append((ODD, odd_from, odd))
                        odd = []
                    ends[position].append(len(body))
                    continue
                del body[len(body) - appended :]  # too large for a request: the general path says so
            if bodies:  # every item before this line goes first
                segments.extend((FAST, index, body, ends[index]) for index, body in bodies.items() if body)
                bodies, ends = {}, {}
            if not odd:
                odd_from = number
            odd.append(line)
        segments.extend((FAST, index, body, ends[index]) for index, body in bodies.items() if body)
        if odd:
            segments.append((ODD, odd_from, odd))
        if self._misses:
            self._review(len(lines))
        return segments

    def _review(self, lines: int) -> None:
        """After a chunk: a stream whose records missed the typed path for a third of the chunk's
        lines (and at least TYPED_MISSES_TO_DROP) loses it, as trying it first would then cost more
        than it saves."""
        dropped = [
            name for name, misses in self._misses.items() if misses >= TYPED_MISSES_TO_DROP and 3 * misses > lines
        ]
        self._misses = {}
        if dropped:
            for name in dropped:
                del self._typed[name]
            self._compile()

    def _second_try(
        self, line: bytes, record: Any, bodies: dict[int, bytearray], ends: dict[int, array]
    ) -> tuple[int, int]:
        """orjson and the general mapper on a record the typed path did not take: (bytes appended
        to its stream's body, the stream's position), or (0, 0) when it is not a valid item of a
        stream of the plan (ODD)."""
        try:
            if record is None or type(record.data) is not msgspec.Raw:
                record = decode_record_line(line).record  # its data raw
                name = record.stream
                if name in self._typed:
                    self._misses[name] = self._misses.get(name, 0) + 1
            else:
                name = self._stream_of[type(record)]
            namespace = record.namespace
            taker = self.by_key.get((namespace, name)) if namespace else self.by_name.get(name)
            meta = record.meta
            if taker is None or (meta is not None and meta.changes):
                return 0, 0
            data = orjson.loads(memoryview(record.data))
            if type(data) is not dict:
                return 0, 0
            item = taker.mapper(data)[0]  # one item, or Invalid
            if type(item) is not dict:
                return 0, 0
            part = orjson.dumps(item)
        except Exception:  # not a well-formed RECORD, or anything unusual: the general path's
            return 0, 0
        body = bodies.get(taker.position)
        if body is None:
            body = _open_body(bodies, ends, taker.position)
        body += part
        body += b","
        return len(part) + 1, taker.position


def _open_body(bodies: dict[int, bytearray], ends: dict[int, array], position: int) -> bytearray:
    """A stream's first item in a run of FAST lines: its body and the array of where its items end."""
    body = bodies[position] = bytearray()
    ends[position] = array("I")
    return body
