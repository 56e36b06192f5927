"""Parsing stdin on several cores: the connector's side of the parse worker processes.

The reading thread cuts stdin into chunks of whole lines and hands them, in turn, to
`parse_workers` worker processes (parse_worker.py), which parse, check and encode the common record.
Their answers are applied strictly in input order: encoded items go straight into the stream's batch
body (PlanhatWriter.take_encoded), every other line goes through destination.parse_lines exactly as
it would without workers. Everything else (batches, states, accounting, sending) stays in this
process, unchanged. A worker that dies or fails fails the sync with a system error that names it; no
record is skipped because of it (the records not yet applied were not read, and no state after them
is emitted).

Bounded memory: at most WORKER_DEPTH chunks per worker are on their way at once; the reading thread
waits for the oldest answer before it sends more.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import select
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from destination_planhat.parse_worker import _HEADER, FAST, ODD, frame, widen_pipe

logger = logging.getLogger("airbyte")

# Chunks sent to a worker are at least this large (a pipe gives 64 KiB at a time: fewer, larger
# chunks cost less per record), unless the input has been quiet for CHUNK_MAX_WAIT_SECONDS.
CHUNK_MIN_BYTES = 256 * 1024
CHUNK_MAX_WAIT_SECONDS = 0.2
# Chunks on their way to each worker at once: one being parsed, one waiting.
WORKER_DEPTH = 2
# The default number of workers: one per available CPU, at most this many; none with a single CPU
# (the workers would only take turns with the reading thread).
MAX_DEFAULT_WORKERS = 4
STOP_WAIT_SECONDS = 5.0
# The most read from a worker's pipe at once.
READ_BYTES = 1 << 20


class ParseWorkerFailed(Exception):
    """A worker process died, or reported an error, or its answer could not be read."""


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs allowed by the cgroup (v2 cpu.max, or v1 cfs quota), or None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def default_worker_count(cpus: Optional[int] = None) -> int:
    cpus = available_cpus() if cpus is None else cpus
    return 0 if cpus < 2 else min(cpus, MAX_DEFAULT_WORKERS)


class _Worker:
    """One worker process and what is on its way to and from it."""

    def __init__(self, number: int, process: "subprocess.Popen[bytes]") -> None:
        self.number = number
        self.process = process
        self.to_fd = process.stdin.fileno()  # type: ignore[union-attr]
        self.from_fd = process.stdout.fileno()  # type: ignore[union-attr]
        self.outgoing = bytearray()  # frames not yet taken by the pipe
        self.incoming = bytearray()  # bytes of answers not yet cut into frames
        self.answers: deque[bytes] = deque()
        self.ended = False  # its stdout reached EOF


class ParseWorkers:
    """`count` worker processes, each with the same plan; started by `start`, always stopped by `close`.

    The pipes are used without blocking: whenever this process waits for an answer, it also keeps
    feeding every worker, and it takes every answer that is ready. So a worker blocked writing an
    answer can never hold up a chunk this process is writing to it, or the other way round.
    """

    def __init__(self, count: int, plan: dict[str, Any]) -> None:
        self.count = count
        self._plan = json.dumps(plan).encode()  # plain json: the worker reads it without the CDK's helpers
        self._workers: list[_Worker] = []

    def start(self) -> "ParseWorkers":
        package_parent = str(Path(__file__).resolve().parent.parent)
        # The worker imports this very package (the same code as this process), whatever the cwd.
        bootstrap = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from destination_planhat.parse_worker import main; main()"
        )
        try:
            for number in range(self.count):
                process = subprocess.Popen(
                    [sys.executable, "-c", bootstrap, package_parent],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                )
                worker = _Worker(number, process)
                self._workers.append(worker)
                for fd in (worker.to_fd, worker.from_fd):
                    widen_pipe(fd)
                    os.set_blocking(fd, False)
                worker.outgoing += frame(self._plan)
        except BaseException:
            self.close()
            raise
        self._pump(block=False)
        return self

    def send(self, number: int, chunk: bytes) -> None:
        """Queue a chunk for a worker; it goes out as the pipe takes it."""
        self._workers[number].outgoing += frame(chunk)
        self._pump(block=False)

    def ready(self, number: int) -> bool:
        """True when the worker's next answer (or its end) is there, without waiting."""
        self._pump(block=False)
        worker = self._workers[number]
        return bool(worker.answers) or worker.ended

    def receive(self, number: int) -> list[tuple[Any, ...]]:
        """The worker's answer to its oldest chunk (waits for it, feeding every worker meanwhile)."""
        worker = self._workers[number]
        while not worker.answers:
            if worker.ended:
                raise self._failed(worker, "it ended without answering")
            self._pump(block=True)
        try:
            status, value = pickle.loads(worker.answers.popleft())
        except Exception as exc:
            raise self._failed(worker, f"its answer could not be read ({exc})") from exc
        if status != "ok":
            raise self._failed(worker, f"it failed:\n{value}")
        return value

    def _pump(self, block: bool) -> None:
        """Move bytes: out to every worker that can take some, in from every worker that has some.
        With `block`, waits until at least one pipe is ready."""
        readers = [w.from_fd for w in self._workers if not w.ended]
        writers = [w.to_fd for w in self._workers if w.outgoing and not w.ended]
        if not readers and not writers:
            return
        readable, writable, _ = select.select(readers, writers, [], None if block else 0)
        for worker in self._workers:
            if worker.to_fd in writable:
                try:
                    written = os.write(worker.to_fd, worker.outgoing)
                except BlockingIOError:
                    written = 0
                except OSError as exc:  # BrokenPipeError: it died; its EOF tells the rest
                    raise self._failed(worker, f"it stopped taking input ({exc})") from exc
                del worker.outgoing[:written]
            if worker.from_fd in readable:
                self._read_from(worker)

    def _read_from(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.from_fd, READ_BYTES)
        except BlockingIOError:
            return
        if not data:
            worker.ended = True
            return
        incoming = worker.incoming
        incoming += data
        while len(incoming) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(incoming)
            if len(incoming) < _HEADER.size + length:
                break
            worker.answers.append(bytes(incoming[_HEADER.size : _HEADER.size + length]))
            del incoming[: _HEADER.size + length]

    def _failed(self, worker: _Worker, what: str) -> ParseWorkerFailed:
        try:
            code = worker.process.wait(timeout=1.0)
            exit_note = f" (exit code {code})"
        except subprocess.TimeoutExpired:
            exit_note = ""
        return ParseWorkerFailed(f"parse worker process {worker.number + 1} of {self.count}{exit_note}: {what}")

    def close(self) -> None:
        """End every worker: close both its pipes (it exits at once, even in the middle of writing an
        answer nobody will read), and kill it if it does not."""
        for worker in self._workers:
            for pipe in (worker.process.stdin, worker.process.stdout):
                try:
                    pipe.close()  # type: ignore[union-attr]
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self._workers = []


class Pipeline:
    """Chunks of whole lines out to the workers in turn; their answers applied in input order."""

    def __init__(
        self,
        workers: ParseWorkers,
        take_encoded: Callable[[int, bytes, Any], None],
        parse_lines: Callable[[list[bytes], int], None],
        flush_overdue: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._workers = workers
        self._take_encoded = take_encoded
        self._parse_lines = parse_lines
        self._flush_overdue = flush_overdue
        self._clock = clock
        self._held: list[bytes] = []  # input not sent yet: whole lines, and maybe the start of one
        self._held_bytes = 0
        self._held_has_line = False  # whether `_held` holds a newline (else there is nothing to send)
        self._held_since = 0.0
        self._pending: deque[tuple[int, int]] = deque()  # (worker, number of lines before its chunk)
        self._next_worker = 0
        self.lines_sent = 0

    def add(self, chunk: bytes) -> None:
        """A piece of stdin (any size, cut anywhere)."""
        if not self._held:
            self._held_since = self._clock()
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        self._held_has_line = self._held_has_line or b"\n" in chunk
        if self._held_bytes >= CHUNK_MIN_BYTES or self._clock() - self._held_since >= CHUNK_MAX_WAIT_SECONDS:
            self._dispatch()
        self._apply_ready()
        self._flush_overdue()

    def on_idle(self) -> None:
        """Input is quiet: send what is held, apply what has come back, send overdue batches."""
        self._dispatch()
        self._apply_ready()
        self._flush_overdue()

    def finish(self) -> bytes:
        """End of input: every chunk sent and applied. Returns the last, unterminated line (maybe empty)."""
        self._dispatch()
        while self._pending:
            self._apply_oldest()
        rest = b"".join(self._held)
        self._held, self._held_bytes = [], 0
        return rest

    def _dispatch(self) -> None:
        if not self._held_has_line:  # (joining the pieces of one long line again and again would be quadratic)
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        cut = data.rfind(b"\n")
        lines = data[:cut]
        rest = data[cut + 1 :]
        self._held = [rest] if rest else []
        self._held_bytes = len(rest)
        self._held_has_line = False
        self._held_since = self._clock()
        while len(self._pending) >= WORKER_DEPTH * self._workers.count:
            self._apply_oldest()
        worker = self._next_worker
        self._next_worker = (worker + 1) % self._workers.count
        self._workers.send(worker, lines)
        self._pending.append((worker, self.lines_sent))
        self.lines_sent += lines.count(b"\n") + 1

    def _apply_ready(self) -> None:
        while self._pending and self._workers.ready(self._pending[0][0]):
            self._apply_oldest()

    def _apply_oldest(self) -> None:
        worker, before = self._pending.popleft()
        for segment in self._workers.receive(worker):
            if segment[0] == FAST:
                _, index, encoded, ends = segment
                self._take_encoded(index, encoded, ends)
            elif segment[0] == ODD:
                _, first, lines = segment
                self._parse_lines(lines, before + first)
            else:
                raise ParseWorkerFailed(f"parse worker process {worker + 1}: an answer of unknown kind {segment[0]!r}")

