"""A parse worker process: JSON lines in, encoded Planhat items out, for the common record only.

Why processes: the reading thread's work per record (parse the line, check and convert each field,
encode the item) is pure Python and holds the GIL, so one process cannot use a second core for it.
The connector's own process (parallel.py) cuts stdin into chunks of whole lines and hands each to a
worker; the worker returns, in input order, segments of two kinds:

- FAST: items of one stream, encoded, each followed by "," (so they can be appended to a batch body
  as they are), and where each item ends;
- ODD: the raw lines it did not handle, to be handled by the connector's own process exactly as
  without workers (destination.parse_lines): STATEs, every other message, lines that are not JSON,
  records of streams that are not in the plan, records that fail a check or need a general mapper
  (unpivot, dot paths), items too large for a request.

So a worker never decides anything the user could see: it only does, for records that pass every
check, what the connector's own process would have done, with the same functions (checks.py). Items
of one stream keep their order; at every ODD line the worker first closes the FAST segments before
it, so a STATE always comes after every record read before it.

This module imports no Airbyte CDK, pydantic or requests (see checks.py): a worker starts in a
fraction of a second and stays small. Framing on stdin/stdout: a 4-byte big-endian length, then the
payload. The first frame from the connector is the plan (JSON); every later one a chunk of lines
(without a final newline); end of input closes stdin. Each answer is a pickle of ("ok", segments)
or ("error", traceback).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import traceback
from array import array
from typing import Any, Callable, Optional

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

import orjson

from destination_planhat.checks import fast_item_mapper
from destination_planhat.planhat import Endpoint, FieldKind

FAST = 0
ODD = 1
_HEADER = struct.Struct(">I")
_ODD_RECORD: Any = object()  # what a fast mapper returns for a record it does not map itself
# Pipes to and from a worker are widened to this (Linux; as far as the system allows): a chunk or an
# answer then moves in one or two system calls instead of one per 64 KiB.
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031) if fcntl is not None else None


def widen_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    """Best effort: an unprivileged process may get less (/proc/sys/fs/pipe-max-size), other systems nothing."""
    if _F_SETPIPE_SZ is None or not sys.platform.startswith("linux"):
        return
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass


# ----- framing (the connector's side is in parallel.py) ------------------------------------------


def write_frame(fd: int, payload: bytes) -> None:
    """Blocking: the whole frame, however many writes the pipe needs."""
    _write_all(fd, memoryview(_HEADER.pack(len(payload))))
    _write_all(fd, memoryview(payload))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frame(fd: int) -> Optional[bytes]:
    """The next frame's payload, or None at end of input (EOF before a header)."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    payload = _read_exactly(fd, length)
    if payload is None:
        raise EOFError(f"the pipe closed in the middle of a {length}-byte frame")
    return payload


def _read_exactly(fd: int, size: int) -> Optional[bytes]:
    if size == 0:
        return b""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        piece = os.readv(fd, [view[got:]])
        if piece == 0:
            if got == 0:
                return None
            raise EOFError(f"the pipe closed after {got} of {size} bytes")
        got += piece
    return bytes(buffer)


# ----- the work ---------------------------------------------------------------------------------

Taker = tuple[int, Callable[[Any], Any]]  # (stream index in the plan, its fast mapper)


def build_takers(plan: dict[str, Any]) -> tuple[dict[str, Taker], dict[tuple[str, str], Taker]]:
    """The plan's streams as (by name, for records without a namespace; by (namespace, name))."""
    by_name: dict[str, Taker] = {}
    by_key: dict[tuple[str, str], Taker] = {}
    for index, namespace, name, endpoint, fields, constants in plan["streams"]:
        mapper = fast_item_mapper(
            Endpoint(endpoint),
            [(field, key, FieldKind(kind)) for field, key, kind in fields],
            constants,
            lambda data: _ODD_RECORD,
        )
        if namespace:
            by_key[(namespace, name)] = (index, mapper)
        else:
            by_name[name] = (index, mapper)
    return by_name, by_key


def decode(
    chunk: bytes, by_name: dict[str, Taker], by_key: dict[tuple[str, str], Taker], max_part_bytes: int
) -> list[tuple[Any, ...]]:
    """One chunk of lines -> its segments, in input order (see the module's docstring)."""
    segments: list[tuple[Any, ...]] = []
    bodies: dict[int, bytearray] = {}
    ends: dict[int, array] = {}
    odd_from = -1
    odd: list[bytes] = []
    loads, dumps = orjson.loads, orjson.dumps
    for number, line in enumerate(chunk.split(b"\n")):
        part = None
        try:
            message = loads(line)
            if message["type"] == "RECORD":
                record = message["record"]
                namespace = record.get("namespace")
                taker = by_key.get((namespace, record["stream"])) if namespace else by_name.get(record["stream"])
                data = record["data"]
                meta = record.get("meta")  # a record the source changed is counted by the connector's process
                if taker is not None and type(data) is dict and not (meta and meta.get("changes")):
                    result = taker[1](data)
                    if result is not _ODD_RECORD:
                        part = dumps(result[0])
        except Exception:  # anything unusual is the connector's own process's to handle, as it would
            part = None
        if part is not None and len(part) + 2 <= max_part_bytes:
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
            segments.extend((FAST, index, bytes(body), ends[index]) for index, body in bodies.items())
            bodies, ends = {}, {}
        if not odd:
            odd_from = number
        odd.append(line)
    segments.extend((FAST, index, bytes(body), ends[index]) for index, body in bodies.items())
    if odd:
        segments.append((ODD, odd_from, odd))
    return segments


def serve(read_fd: int, write_fd: int) -> int:
    """One chunk at a time: read it, answer it. A single thread, so parsing never waits for the GIL;
    the connector reads and writes the pipes without blocking (parallel.py), so neither side can
    wait for the other forever."""
    plan_frame = read_frame(read_fd)
    if plan_frame is None:
        return 0
    plan = json.loads(plan_frame)
    by_name, by_key = build_takers(plan)
    max_part_bytes = int(plan["max_part_bytes"])
    while True:
        chunk = read_frame(read_fd)
        if chunk is None:
            return 0
        try:
            answer = pickle.dumps(("ok", decode(chunk, by_name, by_key, max_part_bytes)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            write_frame(write_fd, pickle.dumps(("error", traceback.format_exc()), protocol=pickle.HIGHEST_PROTOCOL))
            return 1
        write_frame(write_fd, answer)


def main() -> None:
    read_fd, write_fd = sys.stdin.fileno(), sys.stdout.fileno()
    widen_pipe(read_fd)
    widen_pipe(write_fd)
    sys.stdout = sys.stderr  # stdout carries frames only: a stray print must not corrupt them
    try:
        code = serve(read_fd, write_fd)
    except (BrokenPipeError, EOFError):  # the connector is gone
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
