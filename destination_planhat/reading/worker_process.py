"""A parse worker process: chunks of JSON lines in, their segments out (decoder.Decoder).

Why processes: decoding a record (parse the line, check and convert each field, encode the item) is
pure Python and holds the GIL, so one process cannot use a second core for it. The connector's own
process (reading/worker_pool.py) frames stdin into chunks of whole lines and hands each to a worker; the worker
decodes it with the same Decoder the connector uses in its own process, and answers with the
segments. So a worker never decides anything the user could see.

This module imports no Airbyte CDK, pydantic or requests (see reading/decoder.py, mapping/value_checks.py): a
worker starts in a fraction of a second and stays small. Framing on stdin/stdout: a 4-byte
big-endian length (FRAME_HEADER), then the payload. The first frame from the connector is the plan
(JSON); every later one a chunk of lines (without a final newline); end of input closes stdin. Each
answer is a pickle of ("ok", segments) or ("error", traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import sys
import traceback
from typing import Optional

from destination_planhat.reading.decoder import Decoder

if sys.platform == "linux":  # for widen_pipe: F_SETPIPE_SZ is Linux's (Python >= 3.10), and fcntl is POSIX's
    import fcntl

# Before every frame's payload: its length.
FRAME_HEADER = struct.Struct(">I")
# Pipes to and from a worker are widened to this (Linux; as far as the system allows): a chunk or an
# answer then moves in one or two system calls instead of one per 64 KiB.
PIPE_BYTES = 1 << 20


def widen_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    """Best effort: an unprivileged process may get less (/proc/sys/fs/pipe-max-size), other systems nothing."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


# ----- framing (the connector's side is in reading/worker_pool.py) ------------------------------------------


def write_frame(fd: int, payload: bytes) -> None:
    """Blocking: the whole frame, however many writes the pipe needs."""
    _write_all(fd, memoryview(FRAME_HEADER.pack(len(payload))))
    _write_all(fd, memoryview(payload))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frame(fd: int) -> Optional[bytes]:
    """The next frame's payload, or None at end of input (EOF before a header)."""
    header = _read_exactly(fd, FRAME_HEADER.size)
    if header is None:
        return None
    (length,) = FRAME_HEADER.unpack(header)
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


def serve(read_fd: int, write_fd: int) -> int:
    """One chunk at a time: read it, answer it. A single thread, so parsing never waits for the GIL;
    the connector reads and writes the pipes without blocking (reading/worker_pool.py), so neither side can
    wait for the other forever."""
    plan_frame = read_frame(read_fd)
    if plan_frame is None:
        return 0
    decoder = Decoder(json.loads(plan_frame))
    while True:
        chunk = read_frame(read_fd)
        if chunk is None:
            return 0
        try:
            answer = pickle.dumps(("ok", decoder.decode(chunk)), protocol=pickle.HIGHEST_PROTOCOL)
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
