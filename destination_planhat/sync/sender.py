"""Batches on their way to Planhat: sender threads, back-pressure, splits, answers, the first failure.

At most `max_in_flight_requests` batches are out at once: `acquire` waits for a free slot before a
batch is handed over, so reading stops while Planhat is slow. Each answer is counted (ledger, and
the counts on states) before its batch is acknowledged to the state barrier. The first failure
stops everything: retries are cut short and whoever waits for a slot wakes up to see it.

A dry run uses the same interface with a sender that sends nothing (sync/dry_run.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Optional, Protocol

import orjson

from destination_planhat.planhat.answers import PostResult
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import PlanhatError, PlanhatPayloadTooLarge, RequestAborted
from destination_planhat.planhat.statuses import Meaning, meaning
from destination_planhat.rejected.records import MISSING, REJECTED_BY_PLANHAT, RejectedRecords
from destination_planhat.sync.batching import Batch
from destination_planhat.sync.ledger import Ledger
from destination_planhat.sync.object_batching import ObjectBatch
from destination_planhat.sync.parents import ParentBarrier
from destination_planhat.sync.state_barrier import StateBarrier
from destination_planhat.sync.state_stats import StateCounts, frozen_json, pair_rejected

logger = logging.getLogger("airbyte")

SAMPLE_ERRORS = 3
SAMPLE_CHARS = 300
PAYLOAD_TOO_LARGE_REASON = "too large for Planhat (HTTP 413)"


class Client(Protocol):
    """What a sender needs of PlanhatClient (tests pass fakes)."""

    def post(
        self, endpoint: Endpoint, body: bytes, *, context: str = "", items: Optional[int] = None
    ) -> PostResult: ...
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
        self._rejected = rejected
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
        self._parents = parents or ParentBarrier()
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
            if exc.ambiguous_failures:
                self._ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * exc.ambiguous_failures)
            if len(batch) == 1:
                self._ledger.record_answer(batch.route.name, 1, 0, [PAYLOAD_TOO_LARGE_REASON], 0)
                ordinal, several = batch.ordinal_at(0)
                self._counts.reject(batch.route.name, ordinal, several_items=several)
                if self._rejected is not None:
                    self._store(batch, ordinal, batch.items()[0], PAYLOAD_TOO_LARGE_REASON)
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
        errors = result.errors[:rejected]
        one_run = batch.one_item_per_record and self._counts.same_windows(stream, first, last)
        if one_run:  # the counts need no pairing: every rejected item is one record of one window
            self._counts.reject_run(stream, first, rejected)
            if self._rejected is None:
                return
        items = batch.items()
        pairs = pair_rejected(items, [error.item for error in errors])
        if not one_run:
            self._counts.reject_all(stream, (batch.ordinal_at(position) for position, _, _ in pairs))
        if self._rejected is not None:
            for position, index, matched in pairs:
                error = errors[index]
                self._store(
                    batch, batch.ordinal_at(position)[0], items[position], error.reason, None if matched else error.item
                )

    def _store(self, batch: Batch, ordinal: int, item: object, reason: str, echoed: object = None) -> None:
        """One record Planhat rejected, with the item as sent; with what Planhat's answer repeated when it
        differs (the answer's item was not found in the batch, so which record it was is a guess)."""
        assert self._rejected is not None
        namespace, name = batch.route.key
        differs = echoed is not None and _frozen_or_none(echoed) != _frozen_or_none(item)
        self._rejected.add(
            namespace,
            name,
            record_number=ordinal + 1,
            rejected_by=REJECTED_BY_PLANHAT,
            reason=reason,
            target=batch.endpoint.value,
            item=item,
            planhat_item=echoed if differs else MISSING,
        )

    # ----- objects ----------------------------------------------------------------------------

    def _deliver_objects(self, batch: ObjectBatch, label: str) -> None:
        """Send one object batch. A 400 or 413 splits it in halves until the items Planhat refuses are
        alone; a 400 whose errors cover every item, or one item's, counts those items as refused."""
        try:
            result = self._client.post(batch.endpoint, batch.body(), context=f"{label}: ", items=len(batch))
        except PlanhatPayloadTooLarge as exc:  # a 413, or a 400 without per-item errors
            if exc.ambiguous_failures:
                self._ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * exc.ambiguous_failures)
            if len(batch) == 1:
                reason = (
                    PAYLOAD_TOO_LARGE_REASON
                    if exc.meaning is Meaning.TOO_LARGE
                    else f"refused by Planhat (HTTP {exc.status}): {exc.body}"
                )
                self._account_objects(batch, label, PostResult(processed=0, errors=[], created=0, updated=0), [reason])
                return
            logger.warning(f"{label}: Planhat answered {exc.status} for {len(batch)} items; sending them in two halves")
            self._deliver_halves(batch, label)
            return
        except PlanhatError as exc:
            if exc.ambiguous_failures:
                self._ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * exc.ambiguous_failures)
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
        self._account_objects(batch, label, result)

    def _deliver_halves(self, batch: ObjectBatch, label: str) -> None:
        first, second = batch.split()
        self._deliver_objects(first, label + "a")
        self._deliver_objects(second, label + "b")

    def _account_objects(
        self, batch: ObjectBatch, label: str, result: PostResult, reasons: Optional[list[str]] = None
    ) -> None:
        stream = batch.route.name
        resent = len(batch) * result.ambiguous_failures
        reasons = reasons if reasons is not None else [error.reason for error in result.errors]
        rejected = self._ledger.record_answer(
            stream,
            len(batch),
            result.processed,
            reasons,
            resent,
            attempts=result.attempts,
            created=result.created,
            updated=result.updated,
            unchanged=result.unchanged,
        )
        if rejected:
            errors = result.errors[:rejected]
            items = batch.items() if len(batch) > 1 or self._rejected is not None else []
            pairs = [(0, 0, True)] if len(batch) == 1 else pair_rejected(items, [error.item for error in errors])
            # A merged item's answer is the answer for every record merged into it.
            self._counts.reject_all(stream, ((o, False) for p, _, _ in pairs for o in batch.records[p]))
            if self._rejected is not None:
                for position, index, matched in pairs:
                    echoed = errors[index].item if index < len(errors) and not matched else None
                    reason = reasons[index] if index < len(reasons) else "rejected by Planhat"
                    for ordinal in batch.records[position]:
                        self._store(batch, ordinal, items[position], reason, echoed)
        line = f"{label} -> {batch.endpoint.label}: sent {len(batch)}"
        if result.processed is None:
            logger.warning(f"{line}; Planhat acknowledged the request without counts ({result.note})")
        else:
            line += (
                f", created {result.created or 0}, updated {result.updated or 0} (unchanged {result.unchanged or 0}), "
                f"refused {len(reasons)}"
            )
            if result.attempts > 1:
                line += f" (after {result.attempts} attempts)"
            for error in result.errors[:SAMPLE_ERRORS]:
                sample = orjson.dumps(error.item).decode()[:SAMPLE_CHARS]
                line += f"; e.g. {sample} -> {error.reason}"
            if reasons and not result.errors:
                line += f"; {reasons[0]}"
            logger.info(line)
        if resent:
            logger.warning(
                f"{label}: re-sent {len(batch)} items after {result.ambiguous_failures} failure(s) where Planhat may "
                "already have received them (an upsert on a key applies them again; with match_on: none they may "
                "be created twice)"
            )


def _frozen_or_none(value: object) -> object:
    try:
        return frozen_json(value)
    except TypeError:
        return None
