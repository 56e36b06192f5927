"""Decoding on several cores: the parse worker processes, seen from the connector.

The reading thread (pipeline.Pipeline) frames stdin into chunks of whole lines and hands them, in
turn, to `parse_workers` worker processes (reading/worker_process.py), which decode them as the connector
would in its own process (decoder.Decoder). Their answers are applied strictly in input
order by the same code as without workers. A worker that dies or fails fails the sync with a system
error that names it; no record is skipped because of it (the records not yet applied were not read,
and no state after them is emitted).

Bounded memory: at most WORKER_DEPTH chunks per worker are on their way at once (`depth`); the
reading thread waits for the oldest answer before it sends more.
"""

from __future__ import annotations

import contextlib
import itertools
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
from types import ModuleType
from typing import IO, Any, Optional

import msgspec
import orjson

import destination_planhat
from destination_planhat.reading.worker_process import FRAME_HEADER, widen_pipe

logger = logging.getLogger("airbyte")

# Chunks on their way to each worker at once: one being parsed, one waiting.
WORKER_DEPTH = 2
# The default number of workers: one per available CPU, at most this many; none with a single CPU
# (the workers would only take turns with the reading thread).
MAX_DEFAULT_WORKERS = 4
STOP_WAIT_SECONDS = 5.0
# A chunk takes a worker milliseconds; one that has not answered after this long is stuck (a bug, or
# a process stopped from outside), and the sync fails rather than hang.
ANSWER_TIMEOUT_SECONDS = 300.0
# Pieces handed to one writev call at most.
WRITEV_PIECES = 64


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


def _cgroup_cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> Optional[float]:
    """CPUs allowed by this process's cgroup (v2 cpu.max, or v1 cfs quota), or None when unlimited
    or unknown. Looked up in the process's own cgroup (from /proc/self/cgroup, for containers that
    see the host's hierarchy) and at the root (for containers with a cgroup namespace of their own)."""
    v2_dirs, v1_dirs = [root], [root / "cpu"]
    try:
        for line in membership.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            relative = path.strip().lstrip("/")
            if not relative:
                continue
            if controllers == "":
                v2_dirs.insert(0, root / relative)
            elif "cpu" in controllers.split(","):
                v1_dirs.insert(0, root / controllers / relative)
    except (OSError, ValueError):
        pass
    for directory in v2_dirs:
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        except (OSError, ValueError):
            continue
    for directory in v1_dirs:
        try:
            quota_us = int((directory / "cpu.cfs_quota_us").read_text())
            period_us = int((directory / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
        except (OSError, ValueError):
            continue
    return None


def workers_supported() -> bool:
    """Non-blocking pipes with select() and writev(): POSIX systems (the connector's image is Linux)."""
    return os.name == "posix" and hasattr(os, "writev") and hasattr(os, "readv")


def default_worker_count(cpus: Optional[int] = None) -> int:
    cpus = available_cpus() if cpus is None else cpus
    return 0 if cpus < 2 or not workers_supported() else min(cpus, MAX_DEFAULT_WORKERS)


def _import_root(package: ModuleType) -> Path:
    """The directory that holds a package as imported here: it goes on the worker's sys.path."""
    if package.__file__ is None:  # a namespace package (none of the three is one)
        raise ParseWorkerFailed(
            f"cannot tell where {package.__name__} was imported from, so a parse worker could not import it"
        )
    return Path(package.__file__).resolve().parent.parent


class _Worker:
    """One worker process and what is on its way to and from it."""

    def __init__(self, number: int, process: subprocess.Popen[bytes]) -> None:
        if process.stdin is None or process.stdout is None:
            process.kill()
            process.wait()
            raise ParseWorkerFailed(
                f"parse worker process {number + 1} was started without pipes to its stdin and stdout "
                "(subprocess.Popen needs stdin=PIPE and stdout=PIPE)"
            )
        self.number = number
        self.process = process
        self.to_worker: IO[bytes] = process.stdin
        self.from_worker: IO[bytes] = process.stdout
        self.to_fd = self.to_worker.fileno()
        self.from_fd = self.from_worker.fileno()
        self.outgoing: deque[memoryview] = deque()  # frames' pieces not yet taken by the pipe
        self.header = bytearray()  # the part of the next answer's length read so far
        self.answer: Optional[bytearray] = None  # the answer being read, and how much of it is in
        self.answer_in = 0
        self.answers: deque[bytearray] = deque()
        self.ended = False  # its stdout reached EOF

    def queue(self, payload: bytes) -> None:
        self.outgoing.append(memoryview(FRAME_HEADER.pack(len(payload))))
        self.outgoing.append(memoryview(payload))

    def write_some(self) -> None:
        """As much of the queued frames as the pipe takes now (no copy of the payloads)."""
        try:
            written = os.writev(self.to_fd, list(itertools.islice(self.outgoing, WRITEV_PIECES)))
        except BlockingIOError:
            return
        while written:
            head = self.outgoing[0]
            if written < len(head):
                self.outgoing[0] = head[written:]
                return
            written -= len(head)
            self.outgoing.popleft()

    def read_some(self) -> None:
        """What the pipe holds now, straight into the answer it belongs to (no copy per answer)."""
        while True:
            if self.answer is None:
                try:
                    data = os.read(self.from_fd, FRAME_HEADER.size - len(self.header))
                except BlockingIOError:
                    return
                if not data:
                    self.ended = True
                    return
                self.header += data
                if len(self.header) < FRAME_HEADER.size:
                    continue
                (length,) = FRAME_HEADER.unpack(self.header)
                self.header = bytearray()
                self.answer, self.answer_in = bytearray(length), 0
            answer = self.answer
            if self.answer_in < len(answer):
                try:
                    got = os.readv(self.from_fd, [memoryview(answer)[self.answer_in :]])
                except BlockingIOError:
                    return
                if not got:
                    self.ended = True
                    return
                self.answer_in += got
            if self.answer_in == len(answer):
                self.answers.append(answer)
                self.answer = None


class ParseWorkers:
    """`count` worker processes, each with the same plan; started by `start`, always stopped by `close`.

    The pipes are used without blocking: whenever this process waits for an answer, it also keeps
    feeding every worker, and it takes every answer that is ready. So a worker blocked writing an
    answer can never hold up a chunk this process is writing to it, or the other way round.
    """

    def __init__(self, count: int, plan: dict[str, Any]) -> None:
        self.count = count
        self.depth = WORKER_DEPTH * count  # chunks on their way at once, at most
        self._plan = json.dumps(plan).encode()  # plain json: the worker reads it without the CDK's helpers
        self._workers: list[_Worker] = []

    def start(self) -> ParseWorkers:
        # The worker imports this very package (the same code as this process), orjson and msgspec, from where
        # this process found them, and nothing else: no site-packages scan (-S), which saves memory.
        paths = list(dict.fromkeys(str(_import_root(module)) for module in (destination_planhat, orjson, msgspec)))
        bootstrap = "import sys; sys.path[:0] = sys.argv[1:]; from destination_planhat.reading.worker_process import main; main()"
        try:
            for number in range(self.count):
                process = subprocess.Popen(
                    [sys.executable, "-S", "-c", bootstrap, *paths],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                )
                worker = _Worker(number, process)
                self._workers.append(worker)
                for fd in (worker.to_fd, worker.from_fd):
                    widen_pipe(fd)
                    os.set_blocking(fd, False)
                worker.queue(self._plan)
        except BaseException:
            self.close()
            raise
        self._pump()
        return self

    def send(self, number: int, chunk: Any) -> None:
        """Queue a chunk for a worker; it goes out as the pipe takes it."""
        self._workers[number].queue(chunk)
        self._pump()

    def ready(self, number: int) -> bool:
        """True when the worker's next answer (or its end) is there, without waiting."""
        self._pump()
        worker = self._workers[number]
        return bool(worker.answers) or worker.ended

    def receive(self, number: int) -> list[tuple[Any, ...]]:
        """The worker's answer to its oldest chunk (waits for it, feeding every worker meanwhile)."""
        worker = self._workers[number]
        deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
        while not worker.answers:
            if worker.ended:
                raise self._failed(worker, "it ended without answering")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failed(worker, f"it did not answer within {ANSWER_TIMEOUT_SECONDS:g} s")
            self._pump(timeout=left)
        try:
            status, value = pickle.loads(worker.answers.popleft())
        except Exception as exc:
            raise self._failed(worker, f"its answer could not be read ({exc})") from exc
        if status != "ok":
            raise self._failed(worker, f"it failed:\n{value}")
        return value

    def _pump(self, timeout: float = 0.0) -> None:
        """Move bytes: out to every worker that can take some, in from every worker that has some.
        Waits up to `timeout` seconds for at least one pipe to be ready."""
        readers = [w.from_fd for w in self._workers if not w.ended]
        writers = [w.to_fd for w in self._workers if w.outgoing and not w.ended]
        if not readers and not writers:
            return
        readable, writable, _ = select.select(readers, writers, [], timeout)
        for worker in self._workers:
            if worker.to_fd in writable:
                try:
                    worker.write_some()
                except OSError as exc:  # BrokenPipeError: it died; its EOF tells the rest
                    raise self._failed(worker, f"it stopped taking input ({exc})") from exc
            if worker.from_fd in readable:
                worker.read_some()

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
            for pipe in (worker.to_worker, worker.from_worker):
                with contextlib.suppress(OSError):
                    pipe.close()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self._workers = []
