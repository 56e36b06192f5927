"""The two steps every input line goes through, wherever they run: framing and decoding.

- `LineFramer` cuts the input (pieces of any size, cut anywhere) into chunks of whole lines.
- `Decoder` turns one chunk into segments, in input order, of two kinds:
  - FAST: items of one stream, mapped, checked and encoded, each followed by "," (so they can be
    appended to the stream's open request body as they are), with where each item ends;
  - ODD: the lines it did not handle, for the connector's general path (reading.parse_lines):
    STATEs and every other message, lines that are not strict JSON, records of streams without a
    plan (unpivot, dot paths) or not in the catalog, records that fail a check, records the source
    changed (`meta.changes`, counted by the connector), items too large for a request.

The same two steps run in parse worker processes (parse_worker.py) and, with `parse_workers: 0`,
in the connector's own process (reading.InProcess): what is sent, rejected, counted and logged
does not depend on where they ran. A Decoder decides nothing the user could see: a FAST item is
exactly what the general path would have made of its record, with the same mapper (mapping.py) or
msgspec's typed equivalent (typed_records.py); anything else is handed back. At every ODD line the FAST segments before it are closed first, so a
STATE always comes after every record read before it.

This module imports no Airbyte CDK, pydantic or requests: a worker starts fast and stays small.
"""

from __future__ import annotations

import time
from array import array
from typing import Any, Callable, Optional, Union

import orjson

from destination_planhat.batching import largest_item_bytes
from destination_planhat.mapping import item_mapper
from destination_planhat.planhat import Endpoint, FieldKind
from destination_planhat.typed_records import decode_record_line, typed_item_encoder

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
    """Pieces of input in, chunks of whole lines out (each without its final newline), in order,
    with the number of lines before each chunk. What follows the last newline waits for the next
    piece; `rest()` gives it at the end of input (the last line, if it has no newline)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: list[bytes] = []  # input not framed yet: whole lines, and maybe the start of one
        self._held_bytes = 0
        self._held_has_line = False  # whether `_held` holds a newline (else there is nothing to frame)
        self._held_since = 0.0
        self.lines = 0  # lines framed so far

    def add(self, piece: bytes) -> list[tuple[memoryview, int]]:
        """A piece of input; returns the chunks ready now (enough bytes, or waited long enough)."""
        if not self._held:
            self._held_since = self._clock()
        self._held.append(piece)
        self._held_bytes += len(piece)
        self._held_has_line = self._held_has_line or b"\n" in piece
        if self._held_bytes >= CHUNK_MIN_BYTES or self._clock() - self._held_since >= CHUNK_MAX_WAIT_SECONDS:
            return self.flush()
        return []

    def flush(self) -> list[tuple[memoryview, int]]:
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
            count = data.count(b"\n", start, cut) + 1
            chunks.append((view[start:cut], self.lines))
            self.lines += count
            start = cut + 1
        return chunks

    def rest(self) -> bytes:
        """End of input: what came after the last newline (maybe empty). Call `flush` first."""
        rest = b"".join(self._held)
        self._held, self._held_bytes, self._held_has_line = [], 0, False
        return rest


# One stream a Decoder maps: (its index in the plan, its mapper, its typed encoder or None).
Taker = tuple[int, Callable[[Any], Any], Optional[Callable[[Any], Optional[bytes]]]]


class Decoder:
    """One chunk of lines -> its segments (see the module's docstring), for the streams of a plan
    (PlanhatWriter.parallel_plan: each stream's fields, their sources and kinds, its constants).

    Each line is parsed once, by msgspec, as a RECORD whose data is left raw (typed_records.py);
    any other line is ODD at once. A record of a stream in the plan is then tried, in turn, by:
    1. the stream's typed encoder: msgspec decodes the data straight into the item's fields, type
       checked in C, and encodes them (the common record: every value of its field's type);
    2. orjson on the data and the stream's mapper (mapping.item_mapper, the connector's general one),
       which converts values where the rules allow (an id given as a number, a number given as
       text, a date-time to UTC);
    and is ODD when neither makes a valid item: the general path then rejects it and says why. `typed=False` leaves out the first, for comparison
    (bench/profile_hot_path.py)."""

    def __init__(self, plan: dict[str, Any], typed: bool = True) -> None:
        self.by_name: dict[str, Taker] = {}  # streams without a namespace, by name
        self.by_key: dict[tuple[str, str], Taker] = {}  # by (namespace, name)
        for index, namespace, name, endpoint, fields, constants in plan["streams"]:
            fast_fields = [(field, key, FieldKind(kind)) for field, key, kind in fields]
            mapper = item_mapper(Endpoint(endpoint), fast_fields, constants)
            encoder = typed_item_encoder(Endpoint(endpoint), fast_fields, constants) if typed else None
            taker = (index, mapper, encoder)
            if namespace:
                self.by_key[(namespace, name)] = taker
            else:
                self.by_name[name] = taker
        self.largest_item = largest_item_bytes(int(plan["max_part_bytes"]))

    def decode(self, chunk: Chunk) -> list[Segment]:
        if not self.by_name and not self.by_key:  # no stream to take (unpivot or dot paths only): all ODD
            return [(ODD, 0, bytes(chunk).split(b"\n"))]
        segments: list[Segment] = []
        bodies: dict[int, bytearray] = {}
        ends: dict[int, array] = {}
        odd_from = -1
        odd: list[bytes] = []
        by_name, by_key, largest = self.by_name, self.by_key, self.largest_item
        read_line, loads, dumps = decode_record_line, orjson.loads, orjson.dumps
        for number, line in enumerate(bytes(chunk).split(b"\n")):
            part = taker = None
            try:
                record = read_line(line).record
                namespace = record.namespace
                taker = by_key.get((namespace, record.stream)) if namespace else by_name.get(record.stream)
                meta = record.meta  # a record the source changed is counted by the general path
                if taker is not None and (meta is None or not meta.changes):
                    encoder = taker[2]
                    if encoder is not None:
                        try:
                            part = encoder(record.data)
                        except Exception:  # MsgspecError mostly: a value not of its field's type
                            part = None
                    if part is None:
                        data = loads(memoryview(record.data))
                        if type(data) is dict:
                            item = taker[1](data)[0]  # one item, or Invalid
                            if type(item) is dict:
                                part = dumps(item)
            except Exception:  # not a well-formed RECORD, or anything unusual: the general path's
                part = None
            if part is not None and len(part) <= largest:
                if odd:
                    segments.append((ODD, odd_from, odd))
                    odd = []
                index = taker[0]  # type: ignore[index]
                body = bodies.get(index)
                if body is None:
                    body = bodies[index] = bytearray()
                    ends[index] = array("I")
                body += part
                body += b","
                ends[index].append(len(body))
                continue
            if bodies:  # every item before this line goes first
                segments.extend((FAST, index, body, ends[index]) for index, body in bodies.items())
                bodies, ends = {}, {}
            if not odd:
                odd_from = number
            odd.append(line)
        segments.extend((FAST, index, body, ends[index]) for index, body in bodies.items())
        if odd:
            segments.append((ODD, odd_from, odd))
        return segments
