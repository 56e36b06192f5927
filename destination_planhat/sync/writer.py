"""The write loop's coordinator: records in, batches out, states released only behind acknowledged batches.

The jobs live elsewhere, one module each: the sinks of the sync are built and found by stream in
sync/sink_registry.py, a stream's records become batches in its sink (sync/analytics_sink.py,
sync/object_sink.py), batches go to Planhat through the sender (sync/sender.py; in a dry run,
sync/dry_run.py), states wait in the barrier (sync/state_barrier.py) and get their counts from
sync/state_stats.py, input it cannot use is counted in sync/skipped_input.py, the progress line is
sync/progress_ticker.py's, and how the sync ends (first failure, max_error_percent, summary) is
sync/outcome.py's. This class wires them for one sync and owns its life cycle: start, the
input-facing calls, the hand-over of each batch to the sender, the end.

Reading runs on the caller's thread, which owns the sinks (no lock per record). Whoever feeds the
writer calls `flush_overdue()` between chunks of input and while input is idle, so that a partial
batch is sent once its first record has waited `flush_interval_seconds`, even when the source goes quiet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Optional, Union

from airbyte_cdk.models import AirbyteStateType

from destination_planhat.config import InvalidRecords, PlanhatConfig
from destination_planhat.mapping.routing import StreamKey, StreamRoute, stream_label
from destination_planhat.planhat.api import Endpoint
from destination_planhat.rejected.records import RejectedRecords, StoreFailed
from destination_planhat.sync.batching import Batch
from destination_planhat.sync.cancellation import SyncCancelled, cancelled_error, wait_for_answers
from destination_planhat.sync.deletes import DeleteClient, Deletes
from destination_planhat.sync.dry_run import DryRun, DryRunSender
from destination_planhat.sync.ledger import Ledger, StreamStats
from destination_planhat.sync.object_batching import ObjectBatch
from destination_planhat.sync.object_sink import ObjectSink
from destination_planhat.sync.outcome import SyncOutcome
from destination_planhat.sync.planhat_keys import PlanhatKeys
from destination_planhat.sync.progress_ticker import ProgressTicker
from destination_planhat.sync.reporting import ProgressReporter, SyncReport, unconfirmed_error
from destination_planhat.sync.sender import Client, ThreadedSender
from destination_planhat.sync.sink_registry import Sinks
from destination_planhat.sync.skipped_input import SkippedInput
from destination_planhat.sync.state_barrier import PendingState, StateBarrier, read_state
from destination_planhat.sync.state_stats import StateCounts

logger = logging.getLogger("airbyte")

# How often an idle input loop calls flush_overdue(): the bound on a partial batch's wait is
# flush_interval_seconds plus this.
TICK_SECONDS = 1.0


class PlanhatWriter:
    def __init__(
        self,
        config: PlanhatConfig,
        routes: Mapping[StreamKey, StreamRoute],
        client: Union[Client, DryRun],
        emit: Callable[[dict[str, Any]], None],
        *,
        max_body_bytes: Optional[int] = None,
        clock: Callable[[], float] = time.monotonic,
        rejected: Optional[RejectedRecords] = None,
    ) -> None:
        """`client`: where batches go; `DryRun()` for a dry run, which sends nothing and emits no state.
        `max_body_bytes`: the request body limit, if not the config's (tests). `rejected`: where rejected
        records are stored (object_storage_config), flushed before each state that follows new ones."""
        self._config = config
        self._rejected = rejected
        self._clock = clock
        self.ledger = Ledger()
        self._emit = emit
        self._barrier = StateBarrier(self._release_state)
        self._counts = StateCounts(route.name for route in routes.values())
        self._sender: Union[ThreadedSender, DryRunSender] = (
            DryRunSender(self.ledger, self._barrier)
            if isinstance(client, DryRun)
            else ThreadedSender(
                client, self.ledger, self._barrier, self._counts, config.max_in_flight_requests, rejected=rejected
            )
        )
        self._sinks = Sinks(
            routes,
            batch_size=config.batch_size,
            max_body_bytes=max_body_bytes or config.max_request_body_bytes,
            open_batch=self._barrier.open_batch,
            clock=clock,
            ledger=self.ledger,
            counts=self._counts,
            send_invalid=config.invalid_records is InvalidRecords.SEND,
            submit=self._submit,
            judge_errors=self._judge_errors_during_sync,
            rejected=rejected,
            planhat_keys=None if isinstance(client, DryRun) else PlanhatKeys(client.read),
        )
        deletes = (
            Deletes(client, self.ledger, config.max_deletes, self._settle)
            if isinstance(client, DeleteClient) and not isinstance(client, DryRun)
            else None
        )
        for sink in self._sinks:
            if isinstance(sink, ObjectSink):
                sink.deletes, sink.fail = deletes, self.fail
        self._skipped = SkippedInput(self._sinks, self.ledger, self._counts, rejected)
        endpoints = [endpoint for endpoint in Endpoint if any(r.endpoint is endpoint for r in routes.values())]
        report = SyncReport(
            self.ledger,
            ProgressReporter(self.ledger, config.progress_interval_seconds, clock()),
            endpoints,
            config.max_in_flight_requests,
            lambda: (self._barrier.emitted, self._barrier.waiting),
        )
        self._outcome = SyncOutcome(self._sender, report, self._sinks, self.ledger, config.max_error_percent)
        # No progress line in a dry run: nothing is sent, so there is no progress towards Planhat to report.
        self._ticker = None if isinstance(client, DryRun) else ProgressTicker(report, clock, TICK_SECONDS)

    @property
    def config(self) -> PlanhatConfig:
        return self._config

    # ----- life cycle -------------------------------------------------------------------------

    def start(self) -> PlanhatWriter:
        self._sender.start()
        prefix = "dry run: " if isinstance(self._sender, DryRunSender) else ""
        for route in (sink.route for sink in self._sinks):
            logger.info(f"{prefix}stream '{route.name}' -> Planhat {route.endpoint.label} ({route.why})")
        if self._ticker is not None:
            self._ticker.start()
        return self

    def finish(self) -> None:
        """End of input: send what is buffered, wait for every answer, release the last states."""
        for sink in self._sinks:
            self._submit(sink.take())
        self._sender.wait_idle()
        self._outcome.raise_if_failed()
        try:
            self._outcome.check_error_share(final=True)
            self._store_rejected()  # those after the last state
            unconfirmed = unconfirmed_error(self.ledger.all())
            if unconfirmed is not None:
                raise unconfirmed
        except BaseException as exc:
            self._outcome.failed(exc)  # so that the summary says the sync failed
            raise
        self._outcome.log_summary()
        if self._rejected is not None:
            stored = sum(self._rejected.stored.values())
            logger.info(
                f"rejected records: {stored} stored under {self._rejected.where} in {self._rejected.files} file(s)"
                + (f" ({', '.join(f'{s}: {n}' for s, n in sorted(self._rejected.stored.items()))})" if stored else "")
            )

    def fail(self, error: BaseException) -> NoReturn:
        """A failure outside the writer (a parse worker): it ends the sync as a failed batch would,
        with the summary logged, and is raised (or the failure recorded before it, if there was one)."""
        self._sender.record_failure(error)
        self._outcome.raise_if_failed()
        raise error  # not reached: a failure is recorded by now

    def cancel(self, signal_name: str) -> None:
        """The platform cancels the sync (SIGTERM, SIGINT): from any thread. Nothing more is read or sent
        and retries stop, as after a failed batch; the reading thread raises the cancel at its next
        check (`flush_overdue`, at least every TICK_SECONDS) and ends it with `end_cancelled`."""
        self._sender.record_failure(SyncCancelled(signal_name))

    @property
    def cancelled(self) -> bool:
        """True when a cancel was the sync's first failure."""
        return isinstance(self._sender.failure, SyncCancelled)

    def end_cancelled(self, grace_seconds: float) -> BaseException:
        """After a cancel: the requests on their way get up to `grace_seconds` to be answered (each answer
        releases the states it makes safe), then the summary; the error to raise is returned."""
        cancel = self._sender.failure
        assert isinstance(cancel, SyncCancelled), "end_cancelled is for a cancelled sync"
        unanswered = wait_for_answers(self.ledger, grace_seconds)
        self._outcome.log_summary()
        return cancelled_error(cancel, grace_seconds, unanswered)

    def close(self) -> None:
        """Stop the threads whatever happened; safe to call twice.

        No state is emitted after this: when the sync failed, the error is reported next, and a
        state printed by a sender thread while the process exits would race with it.
        """
        self._barrier.close()
        if self._ticker is not None:
            self._ticker.stop()
        self._sender.close()
        self._skipped.close()
        rejected, self._rejected = self._rejected, None
        if rejected is not None:
            try:
                # After a failure: what was rejected since the last stored state is stored too (the next
                # attempt of the sync may reject and store the same records again).
                rejected.flush()
            except StoreFailed as exc:
                logger.warning(f"rejected records not stored after the sync failed: {exc}")
            finally:
                rejected.close()

    # ----- input ------------------------------------------------------------------------------

    def record(self, stream: Any, namespace: Any, data: Any) -> None:
        """One RECORD message (the hot path: see sync/analytics_sink.py)."""
        sinks = self._sinks
        try:
            sink = sinks.by_key[(namespace, stream)] if namespace else sinks.by_name[stream]
        except (KeyError, TypeError):  # not in the catalog (TypeError: a name that is not even a string)
            self._skipped.unknown_stream(namespace, stream, data)
            return
        sink.record(data)

    def parallel_plan(self) -> dict[str, Any]:
        """What parse worker processes need to map the common record of each stream (Sinks.worker_plan)."""
        return self._sinks.worker_plan()

    def take_encoded(self, index: int, encoded: bytes, ends: Sequence[int]) -> None:
        """Items of one stream that a parse worker mapped, checked and encoded (see StreamBuffer.add_run)."""
        self._sinks.at(index).add_encoded(encoded, ends)

    def state(self, message: dict[str, Any]) -> None:
        """One STATE message, as parsed from its JSON line. Held until every record before it is
        acknowledged, then emitted exactly as it came in, with the counts of the records it covers
        (sync/state_barrier.py, sync/state_stats.py). Raises InvalidState, changing nothing, for a malformed one.

        It does not cut the partial batches: they go when full or overdue (`flush_overdue`), and the
        state follows as soon as they are acknowledged."""
        state = read_state(message)
        if isinstance(self._sender, DryRunSender):
            self._sender.withhold_state()
            return
        if state.type == AirbyteStateType.STREAM and state.stream is not None:
            descriptor = state.stream.stream_descriptor
            label = stream_label((descriptor.namespace or None, descriptor.name))
            cut = self._counts.cut({label: self.ledger.read_of(label)}, global_scope=False)
        else:  # GLOBAL or LEGACY: every stream, those not in the catalog included
            cut = self._counts.cut({stats.stream: stats.read for stats in self.ledger.all()}, global_scope=True)
        pending = PendingState(message, cut)
        self._outcome.raise_if_failed()
        self._barrier.add_state(pending)

    def stream_status(self, namespace: Any, stream: Any, status: Any) -> None:
        """A TRACE STREAM_STATUS message. After the source ends, the platform sends COMPLETE for each
        stream: nothing more of it will come, so its partial batch goes now rather than when overdue."""
        if status != "COMPLETE":
            return
        sink = self._sinks.find(namespace, stream)
        if sink is not None:
            self._submit(sink.take())

    def source_changes(self, namespace: Any, stream: Any, changes: Any) -> None:
        """A record's `meta.changes`: fields the source nulled or truncated (counted, shown in the summary)."""
        sink = self._sinks.find(namespace, stream)
        if sink is None or type(changes) is not list:
            return
        self.ledger.source_changes(sink.stats.stream, changes)

    def flush_overdue(self) -> None:
        """Send every partial batch whose first record has waited `flush_interval_seconds`.

        Called by the input loop between chunks and, while input is idle, every TICK_SECONDS: this is
        what bounds how long a record (and so a state) can wait when a source goes quiet. It is also
        where a failed batch ends the sync while the source is quiet, rather than at its next message."""
        self._outcome.raise_if_failed()
        now = self._clock()
        interval = self._config.flush_interval_seconds
        for sink in self._sinks:
            if sink.buffer.overdue(now, interval):
                self._submit(sink.take())

    def unparseable_line(
        self, line_number: int, line: bytes, why: str, stream_guess: tuple[Optional[str], Optional[str]] = (None, None)
    ) -> None:
        """A line that cannot be read (see SkippedInput.unparseable_line)."""
        self._skipped.unparseable_line(line_number, line, why, stream_guess)

    def other_message(self, kind: Any) -> None:
        """Messages a destination may receive but has nothing to do with (LOG, CONTROL, other TRACEs...)."""
        self._skipped.other_message(kind)

    # ----- batches and states -----------------------------------------------------------------

    def _submit(self, batch: Optional[Batch]) -> None:
        """Hand a batch to the sender; waits while `max_in_flight_requests` are already out.

        A failure wakes the wait; the batch then counts as not sent.
        """
        if batch is None or not batch.count:
            return
        # Until it is handed over, the batch counts as buffered (not sent) should the sync fail meanwhile.
        self._outcome.handing_over.append(batch)
        if isinstance(batch, ObjectBatch):
            waits_for: dict[Endpoint, frozenset[int]] = {}
            for parent, sinks in self._sinks.parents_of(batch).items():
                # Every parent record read so far goes first (its batch waiting for its own parents,
                # if it has any), and this batch waits for their acknowledgement.
                for sink in sinks:
                    self._submit(sink.take())
                waits_for[parent] = self._sender.pending_parents(parent)
            batch.waits_for = waits_for
        self._outcome.raise_if_failed()
        self._outcome.check_error_share(final=False, only=self.ledger.stats(batch.route.name))
        self._sender.acquire()
        self._outcome.raise_if_failed()
        self._outcome.handing_over.remove(batch)
        self._sender.send(batch)

    def _settle(self, endpoint: Endpoint) -> None:
        """Before a delete of `endpoint`: what every stream read for it so far is sent and answered, so
        that a key's upserts and deletes reach Planhat in the order read (sync/deletes.py)."""
        for sink in self._sinks:
            if sink.route.endpoint is endpoint:
                self._submit(sink.take())
        self._sender.wait_idle()
        self._outcome.raise_if_failed()

    def _release_state(self, pending: PendingState) -> None:
        """Called by the barrier, in input order, once every record before the state is acknowledged.
        The rejected records the state covers were added to the store by then (by the reading thread,
        and by the senders before they acknowledged their batches): they are stored first."""
        self._store_rejected()
        written, rejected = self._counts.counts(pending.cut)
        self._emit(pending.with_counts(written, rejected))

    def _store_rejected(self) -> None:
        """Make the rejected records added so far durable (when there are new ones). A failure ends the
        sync: raised here, and recorded so that every thread stops; the barrier emits no later state."""
        store = self._rejected
        if store is None or not store.pending:
            return
        try:
            store.flush()
        except StoreFailed as exc:
            self._sender.record_failure(exc.traced)
            raise exc.traced from exc

    def _judge_errors_during_sync(self, stats: StreamStats) -> None:
        self._outcome.check_error_share(final=False, only=stats)
