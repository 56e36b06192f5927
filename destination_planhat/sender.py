"""Batches on their way to Planhat: sender threads, back-pressure, splits, answers, the first failure.

At most `max_in_flight_requests` batches are out at once: `acquire` waits for a free slot before a
batch is handed over, so reading stops while Planhat is slow. Each answer is counted (ledger, and
the counts on states) before its batch is acknowledged to the state barrier. The first failure
stops everything: retries are cut short and whoever waits for a slot wakes up to see it.

A dry run uses the same interface with a sender that sends nothing (dry_run.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Optional, Protocol

import orjson

from destination_planhat.accounting import Ledger
from destination_planhat.answers import PostResult
from destination_planhat.batching import Batch
from destination_planhat.errors import PlanhatError, PlanhatPayloadTooLarge
from destination_planhat.planhat import Endpoint
from destination_planhat.state import StateBarrier
from destination_planhat.state_counts import StateCounts, match_rejected

logger = logging.getLogger("airbyte")

SAMPLE_ERRORS = 3
SAMPLE_CHARS = 300
PAYLOAD_TOO_LARGE_REASON = "too large for Planhat (HTTP 413)"


class Client(Protocol):
    """What a sender needs of PlanhatClient (tests pass fakes)."""

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "") -> PostResult: ...
    def abort(self) -> None: ...
    def where(self, endpoint: Endpoint) -> str: ...


class ThreadedSender:
    def __init__(
        self, client: Client, ledger: Ledger, barrier: StateBarrier, counts: StateCounts, max_in_flight: int
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._barrier = barrier
        self._counts = counts
        self._max_in_flight = max_in_flight
        self._slots = threading.Semaphore(max_in_flight)
        self._queue: queue.SimpleQueue[Optional[Batch]] = queue.SimpleQueue()
        self._failure_lock = threading.Lock()
        self.failure: Optional[BaseException] = None
        self._threads = [
            threading.Thread(target=self._loop, name=f"planhat-sender-{i}", daemon=True) for i in range(max_in_flight)
        ]
        self._started = False

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._started = True

    def where(self, endpoint: Endpoint) -> str:
        return self._client.where(endpoint)

    def acquire(self) -> None:
        """Wait for a free slot (back-pressure). A failure wakes the wait (see `record_failure`)."""
        self._slots.acquire()

    def send(self, batch: Batch) -> None:
        """Hand over a batch, after `acquire`."""
        self._ledger.stats(batch.route.name).sent += len(batch)
        self._ledger.request_started(batch.endpoint)
        self._queue.put(batch)

    def wait_idle(self) -> None:
        """Every slot free means every batch handed over has been answered (or the sync failed)."""
        for _ in range(self._max_in_flight):
            self._slots.acquire()
        for _ in range(self._max_in_flight):
            self._slots.release()

    def record_failure(self, exc: BaseException) -> None:
        """The first failure ends the sync: retries stop, and the reader, wherever it waits, wakes up
        to raise it. Later failures (e.g. requests aborted because of this one) are ignored."""
        with self._failure_lock:
            if self.failure is not None:
                return
            self.failure = exc
        self._client.abort()
        # Extra permits wake a reader blocked in `acquire` or `wait_idle`; nothing waits for sender
        # threads after this (they are daemons), so an answer that never comes cannot hold the
        # failed sync open.
        for _ in range(self._max_in_flight):
            self._slots.release()

    def close(self) -> None:
        """Stop the threads; safe to call twice."""
        self._client.abort()
        if self._started:
            for _ in self._threads:
                self._queue.put(None)
            self._started = False

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                if self.failure is None:
                    self._deliver(batch, f"stream '{batch.route.name}' batch {batch.number}")
                    self._barrier.acknowledge(batch.batch_id)
            except BaseException as exc:
                self.record_failure(exc)
            finally:
                self._ledger.request_finished(batch.endpoint)
                batch = None  # its body must not stay alive while this thread waits for the next one
                self._slots.release()

    def _deliver(self, batch: Batch, label: str) -> None:
        """Send one batch; when the target asks for it (413), split it and send the halves, down to single items."""
        try:
            result = self._client.post(batch.endpoint, batch.body(), context=f"{label}: ")
        except PlanhatPayloadTooLarge as exc:
            if exc.ambiguous_failures:
                self._ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * exc.ambiguous_failures)
            if len(batch) == 1:
                self._ledger.record_answer(batch.route.name, 1, 0, [PAYLOAD_TOO_LARGE_REASON], 0)
                ordinal, several = batch.ordinal_at(0)
                self._counts.reject(batch.route.name, ordinal, several_items=several)
                logger.warning(f"{label}: Planhat refused one item as too large (HTTP 413): {exc.body}")
                return
            first, second = batch.split()
            logger.warning(f"{label}: Planhat answered 413 for {len(batch)} items; sending them in two halves")
            self._deliver(first, label + "a")
            self._deliver(second, label + "b")
            return
        except PlanhatError as exc:
            # The batch failed for good; copies Planhat may have kept from earlier attempts still count.
            if exc.ambiguous_failures:
                self._ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * exc.ambiguous_failures)
            raise
        self._account(batch, label, result)

    def _account(self, batch: Batch, label: str, result: PostResult) -> None:
        stream = batch.route.name
        resent = len(batch) * result.ambiguous_failures
        rejected = self._ledger.record_answer(
            stream, len(batch), result.processed, [e.reason for e in result.errors], resent, attempts=result.attempts
        )
        if rejected:
            self._count_rejected_records(batch, result, rejected)
        line = f"{label} -> {batch.endpoint.label}: sent {len(batch)}"
        if result.processed is None:
            logger.warning(f"{line}; Planhat acknowledged the request without counts ({result.note})")
        else:
            line += f", processed {result.processed}, errors {len(result.errors)}"
            if result.attempts > 1:
                line += f" (after {result.attempts} attempts)"
            for error in result.errors[:SAMPLE_ERRORS]:
                sample = orjson.dumps(error.item).decode()[:SAMPLE_CHARS]
                line += f"; e.g. {sample} -> {error.reason}"
            logger.info(line)
            if result.processed + len(result.errors) != len(batch):
                logger.warning(
                    f"{label}: Planhat counted {result.processed} processed and {len(result.errors)} errors "
                    f"for {len(batch)} items sent"
                )
        if resent:
            logger.warning(
                f"{label}: re-sent {len(batch)} items after {result.ambiguous_failures} failure(s) where Planhat may "
                "already have received them: these items may be counted twice in Planhat"
            )

    def _count_rejected_records(self, batch: Batch, result: PostResult, rejected: int) -> None:
        """Which records Planhat's rejections belong to, for the counts on states. Positions matter only
        when the batch holds records of more than one state's window, or records with several items;
        otherwise all `rejected` are single records of one window."""
        stream = batch.route.name
        first, _ = batch.ordinal_at(0)
        last, _ = batch.ordinal_at(len(batch) - 1)
        if batch.one_item_per_record and self._counts.same_windows(stream, first, last):
            self._counts.reject_run(stream, first, rejected)
            return
        positions = match_rejected(batch.items(), [error.item for error in result.errors[:rejected]])
        self._counts.reject_all(stream, (batch.ordinal_at(position) for position in positions))
