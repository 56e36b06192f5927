"""Batches on their way to Planhat: sender threads, back-pressure, splits, the first failure.

At most `max_in_flight_requests` batches are out at once: `acquire` waits for a free slot before a
batch is handed over, so reading stops while Planhat is slow. Each answer is counted (ledger, and
the counts on states: sync/answer_accounting.py) before its batch is acknowledged to the state
barrier. The first failure
stops everything: retries are cut short and whoever waits for a slot wakes up to see it.

A dry run uses the same interface with a sender that sends nothing (sync/dry_run.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Optional, Protocol

from destination_planhat.planhat.answers import PostResult
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import PlanhatError, PlanhatPayloadTooLarge, RequestAborted
from destination_planhat.planhat.statuses import Meaning, meaning
from destination_planhat.rejected.records import RejectedRecords
from destination_planhat.sync.answer_accounting import AnswerAccounting
from destination_planhat.sync.batching import Batch
from destination_planhat.sync.ledger import Ledger
from destination_planhat.sync.object_batching import ObjectBatch
from destination_planhat.sync.parent_ids import ParentIds
from destination_planhat.sync.parents import ParentBarrier
from destination_planhat.sync.state_barrier import StateBarrier
from destination_planhat.sync.state_stats import StateCounts

logger = logging.getLogger("airbyte")


class Client(Protocol):
    """What a sender needs of PlanhatClient (tests pass fakes)."""

    def post(
        self, endpoint: Endpoint, body: bytes, *, context: str = "", items: Optional[int] = None
    ) -> PostResult: ...
    def read(self, endpoint: Endpoint, query: str) -> bytes: ...
    def abort(self) -> None: ...
    def where(self, endpoint: Endpoint) -> str: ...


class ThreadedSender:
    """Analytics batches go to a pool of `max_in_flight` threads. Object batches go to one thread per
    object (a lane): Planhat advises sending bulk upserts one after another, and two requests in
    flight that share a key fail as duplicated. All lanes are paced together by the client (planhat/pacing.py)."""

    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        barrier: StateBarrier,
        counts: StateCounts,
        max_in_flight: int,
        parents: Optional[ParentBarrier] = None,
        rejected: Optional[RejectedRecords] = None,
    ) -> None:
        """`rejected`: where the records Planhat rejects are stored (object_storage_config), if anywhere;
        they are added before their batch is acknowledged, so before any state that covers them."""
        self._client = client
        self._accounting = AnswerAccounting(ledger, counts, rejected)
        self._ledger = ledger
        self._barrier = barrier
        self._max_in_flight = max_in_flight
        self._slots = threading.Semaphore(max_in_flight)
        self._queue: queue.SimpleQueue[Optional[Batch]] = queue.SimpleQueue()
        self._failure_lock = threading.Lock()
        self.failure: Optional[BaseException] = None
        self._threads = [
            threading.Thread(target=self._loop, name=f"planhat-sender-{i}", daemon=True) for i in range(max_in_flight)
        ]
        self._started = False
        self._parents = parents or ParentBarrier()
        self._parent_ids = ParentIds(client.read)  # deals and products named by their keys (sync/parent_ids.py)
        self._lanes: dict[Endpoint, queue.SimpleQueue[Optional[Batch]]] = {}
        self._lane_lock = threading.Lock()

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
        if batch.endpoint.is_object:
            self._parents.handed_over(batch.endpoint, batch.batch_id)
            self._lane(batch.endpoint).put(batch)
            return
        self._queue.put(batch)

    def pending_parents(self, endpoint: Endpoint) -> frozenset[int]:
        """Batches of `endpoint` handed over and not yet acknowledged (parents first: sync/parents.py)."""
        return self._parents.pending(endpoint)

    def _lane(self, endpoint: Endpoint) -> queue.SimpleQueue[Optional[Batch]]:
        with self._lane_lock:
            lane = self._lanes.get(endpoint)
            if lane is None:
                lane = self._lanes[endpoint] = queue.SimpleQueue()
                thread = threading.Thread(
                    target=self._loop, args=(lane,), name=f"planhat-{endpoint.value}", daemon=True
                )
                thread.start()
            return lane

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
        self._parents.abort()
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
        self._parents.abort()
        with self._lane_lock:
            for lane in self._lanes.values():
                lane.put(None)
            self._lanes.clear()

    def _loop(self, lane: Optional[queue.SimpleQueue[Optional[Batch]]] = None) -> None:
        source = lane if lane is not None else self._queue
        while True:
            batch = source.get()
            if batch is None:
                return
            try:
                if self.failure is None:
                    label = f"stream '{batch.route.name}' batch {batch.number}"
                    if isinstance(batch, ObjectBatch):
                        for parent, batch_ids in batch.waits_for.items():
                            if not self._parents.wait(parent, batch_ids):
                                raise RequestAborted("not sent: the sync was stopped", endpoint=batch.endpoint)
                        batch = self._parent_ids.resolve(batch, label)
                        self._deliver_objects(batch, label)
                        self._parents.acknowledged(batch.endpoint, batch.batch_id)
                    else:
                        self._deliver(batch, label)
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
            result = self._client.post(batch.endpoint, batch.body(), context=f"{label}: ", items=len(batch))
        except PlanhatPayloadTooLarge as exc:
            self._accounting.resent(batch, exc.ambiguous_failures)
            if len(batch) == 1:
                self._accounting.too_large(batch, label, exc.body)
                return
            first, second = batch.split()
            logger.warning(f"{label}: Planhat answered 413 for {len(batch)} items; sending them in two halves")
            self._deliver(first, label + "a")
            self._deliver(second, label + "b")
            return
        except PlanhatError as exc:
            # The batch failed for good; copies Planhat may have kept from earlier attempts still count.
            self._accounting.resent(batch, exc.ambiguous_failures)
            raise
        self._accounting.answer(batch, label, result)

    # ----- objects ----------------------------------------------------------------------------

    def _deliver_objects(self, batch: ObjectBatch, label: str) -> None:
        """Send one object batch. A 400 or 413 splits it in halves until the items Planhat refuses are
        alone; a 400 whose errors cover every item, or one item's, counts those items as refused."""
        try:
            result = self._client.post(batch.endpoint, batch.body(), context=f"{label}: ", items=len(batch))
        except PlanhatPayloadTooLarge as exc:  # a 413, or a 400 without per-item errors
            self._accounting.resent(batch, exc.ambiguous_failures)
            if len(batch) == 1:
                self._accounting.refused_object(
                    batch, label, exc.status, exc.body, too_large=exc.meaning is Meaning.TOO_LARGE
                )
                return
            logger.warning(f"{label}: Planhat answered {exc.status} for {len(batch)} items; sending them in two halves")
            self._deliver_halves(batch, label)
            return
        except PlanhatError as exc:
            self._accounting.resent(batch, exc.ambiguous_failures)
            raise
        refused = meaning(batch.endpoint.target.host, result.status) is Meaning.PAYLOAD_REFUSED
        if refused and len(batch) > 1 and len(result.errors) < len(batch):
            # Some items are refused (e.g. a duplicated key) and Planhat wrote nothing: isolate them.
            logger.warning(
                f"{label}: Planhat answered 400 with {len(result.errors)} error(s) for {len(batch)} items; "
                "sending them in two halves"
            )
            self._deliver_halves(batch, label)
            return
        self._accounting.object_answer(batch, label, result)

    def _deliver_halves(self, batch: ObjectBatch, label: str) -> None:
        first, second = batch.split()
        self._deliver_objects(first, label + "a")
        self._deliver_objects(second, label + "b")
