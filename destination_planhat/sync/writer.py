"""The write loop's coordinator: records in, batches out, states released only behind acknowledged batches.

The jobs live elsewhere, one module each: a stream's records become batches in its sink (sync/sink.py),
batches go to Planhat through the sender (sync/sender.py; in a dry run, sync/dry_run.py), states wait in the
barrier (sync/state_barrier.py) and get their counts from sync/state_stats.py, and the log is sync/reporting.py's. This
class wires them for one sync and owns its life cycle: start, the input-facing calls, the first
failure, the end.

Reading runs on the caller's thread, which owns the sinks (no lock per record). Whoever feeds the
writer calls `flush_overdue()` between chunks of input and while input is idle, so that a partial
batch is sent once its first record has waited `flush_interval_seconds`, even when the source goes quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Optional, Union

from airbyte_cdk.models import AirbyteStateType

from destination_planhat.config import InvalidRecords, PlanhatConfig
from destination_planhat.mapping.analytics import MappingPlan, build_mapper, fast_plan
from destination_planhat.mapping.objects import ObjectPlan, build_object_mapper
from destination_planhat.mapping.routing import StreamKey, StreamRoute, stream_label
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import PlanhatError, as_traced, config_error
from destination_planhat.rejected.records import RejectedRecords, StoreFailed
from destination_planhat.sync.batching import Batch, StreamBuffer
from destination_planhat.sync.dry_run import DryRun, DryRunSender
from destination_planhat.sync.ledger import Ledger, StreamStats
from destination_planhat.sync.object_batching import ObjectBatch, ObjectBuffer
from destination_planhat.sync.object_sink import ObjectSink
from destination_planhat.sync.reporting import ProgressReporter, SyncReport, unconfirmed_error
from destination_planhat.sync.sender import Client, ThreadedSender
from destination_planhat.sync.sink import StreamSink
from destination_planhat.sync.state_barrier import PendingState, StateBarrier, read_state
from destination_planhat.sync.state_stats import StateCounts

logger = logging.getLogger("airbyte")

# How often an idle input loop calls flush_overdue(): the bound on a partial batch's wait is
# flush_interval_seconds plus this.
TICK_SECONDS = 1.0
# max_error_percent is judged during the sync only once a stream has this many judged items (so a
# few bad rows at the start do not fail it), and always at the end of the sync.
EARLY_CHECK_MIN_ITEMS = 10_000
# Message types of the Airbyte protocol that a destination may receive and has nothing to do with.
KNOWN_MESSAGE_TYPES = frozenset(
    {"RECORD", "STATE", "LOG", "TRACE", "CONTROL", "SPEC", "CONNECTION_STATUS", "CATALOG", "DESTINATION_CATALOG"}
)


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
        self._dry_run = isinstance(client, DryRun)
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
        self._max_body_bytes = max_body_bytes or config.max_request_body_bytes
        self._sinks: dict[StreamKey, Union[StreamSink, ObjectSink]] = {}
        send_invalid = config.invalid_records is InvalidRecords.SEND
        for key, route in routes.items():
            stats = self.ledger.stats(route.name, route.endpoint.value)
            if isinstance(route.plan, ObjectPlan):  # the plan routing compiled, once per sync
                objects = ObjectBuffer(
                    route, config.batch_size, self._max_body_bytes, self._barrier.open_batch, clock, stats
                )
                self._sinks[key] = ObjectSink(
                    route,
                    build_object_mapper(route.plan),
                    objects,
                    stats,
                    ledger=self.ledger,
                    counts=self._counts,
                    send_invalid=send_invalid,
                    submit=self._submit,
                    judge_errors=self._judge_errors_during_sync,
                    rejected=rejected,
                )
                continue
            buffer = StreamBuffer(
                route, config.batch_size, self._max_body_bytes, self._barrier.open_batch, clock, stats
            )
            self._sinks[key] = StreamSink(
                route,
                build_mapper(route.plan),
                buffer,
                stats,
                ledger=self.ledger,
                counts=self._counts,
                send_invalid=send_invalid,
                submit=self._submit,
                judge_errors=self._judge_errors_during_sync,
                rejected=rejected,
            )
        # Streams without a namespace by name alone: the common case costs no tuple per record.
        self._sinks_by_name = {key[1]: sink for key, sink in self._sinks.items() if key[0] is None}
        # The streams parse workers may map (see parallel_plan), by their index in the plan.
        self._sinks_by_index = list(self._sinks.values())
        # Parents first (sync/parents.py): per parent object (any Reference's, today companies), the streams
        # that write it, whose open batch goes before a batch that may reference them.
        self._parent_sinks: dict[Endpoint, list[Union[StreamSink, ObjectSink]]] = {}
        for sink in self._sinks.values():
            if any(ref.parent is sink.route.endpoint for r in routes.values() for ref in r.endpoint.target.references):
                self._parent_sinks.setdefault(sink.route.endpoint, []).append(sink)
        endpoints = [endpoint for endpoint in Endpoint if any(r.endpoint is endpoint for r in routes.values())]
        progress = ProgressReporter(self.ledger, config.progress_interval_seconds, clock())
        self._report = SyncReport(
            self.ledger,
            progress,
            endpoints,
            config.max_in_flight_requests,
            lambda: (self._barrier.emitted, self._barrier.waiting),
        )
        self._unknown_streams: dict[StreamKey, int] = {}
        self._ignored_types: set[str] = set()  # message types already warned about
        self._states_withheld = 0  # a dry run's
        self._handing_over: Optional[Batch] = None  # a batch between its cut and the sender, should the sync fail then
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="planhat-ticker", daemon=True)
        self._started = False

    @property
    def config(self) -> PlanhatConfig:
        return self._config

    # ----- life cycle -------------------------------------------------------------------------

    def start(self) -> PlanhatWriter:
        self._sender.start()
        for route in (sink.route for sink in self._sinks.values()):
            prefix = "dry run: " if self._dry_run else ""
            logger.info(f"{prefix}stream '{route.name}' -> Planhat {route.endpoint.label} ({route.why})")
        if not self._dry_run:
            self._ticker.start()
        self._started = True
        return self

    def finish(self) -> None:
        """End of input: send what is buffered, wait for every answer, release the last states."""
        for sink in self._sinks.values():
            self._submit(sink.take())
        self._sender.wait_idle()
        self._raise_if_failed()
        try:
            self._check_error_share(final=True)
            self._store_rejected()  # those after the last state
            unconfirmed = unconfirmed_error(self.ledger.all())
            if unconfirmed is not None:
                raise unconfirmed
        except BaseException as exc:
            self._sender.record_failure(exc)  # so that the summary says the sync failed
            self._log_summary()
            raise
        self._log_summary()
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
        self._raise_if_failed()
        raise error  # not reached: a failure is recorded by now

    def close(self) -> None:
        """Stop the threads whatever happened; safe to call twice.

        No state is emitted after this: when the sync failed, the error is reported next, and a
        state printed by a sender thread while the process exits would race with it.
        """
        self._barrier.close()
        self._stopping.set()
        self._sender.close()
        self._started = False
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
        """One RECORD message (the hot path: see sync/sink.py)."""
        try:
            sink = self._sinks[(namespace, stream)] if namespace else self._sinks_by_name[stream]
        except (KeyError, TypeError):  # not in the catalog (TypeError: a name that is not even a string)
            self._skip_unknown(namespace, stream, data)
            return
        sink.record(data)

    def parallel_plan(self) -> dict[str, Any]:
        """What parse worker processes need to map the common record of each stream (reading/worker_process.py):
        no settings beyond the fields' sources, kinds and constants, and no secrets."""
        streams = []
        for index, sink in enumerate(self._sinks_by_index):
            if not isinstance(sink.route.plan, MappingPlan):
                continue  # objects are mapped here (mapping/objects.py): they come in small numbers
            fast = fast_plan(sink.route.plan)
            if fast is not None:
                endpoint, fields, constants = fast
                key = sink.route.key
                streams.append(
                    (index, key[0], key[1], endpoint.value, [(f, k, kind.value) for f, k, kind in fields], constants)
                )
        return {"streams": streams, "max_part_bytes": self._max_body_bytes}

    def take_encoded(self, index: int, encoded: bytes, ends: Sequence[int]) -> None:
        """Items of one stream that a parse worker mapped, checked and encoded (see StreamBuffer.add_run)."""
        self._sinks_by_index[index].add_encoded(encoded, ends)

    def state(self, message: dict[str, Any]) -> None:
        """One STATE message, as parsed from its JSON line. Held until every record before it is
        acknowledged, then emitted exactly as it came in, with the counts of the records it covers
        (sync/state_barrier.py, sync/state_stats.py). Raises InvalidState, changing nothing, for a malformed one.

        It does not cut the partial batches: they go when full or overdue (`flush_overdue`), and the
        state follows as soon as they are acknowledged."""
        state = read_state(message)
        if self._dry_run:
            self._states_withheld += 1
            return
        if state.type == AirbyteStateType.STREAM and state.stream is not None:
            descriptor = state.stream.stream_descriptor
            label = stream_label((descriptor.namespace or None, descriptor.name))
            cut = self._counts.cut({label: self.ledger.read_of(label)}, global_scope=False)
        else:  # GLOBAL or LEGACY: every stream, those not in the catalog included
            cut = self._counts.cut({stats.stream: stats.read for stats in self.ledger.all()}, global_scope=True)
        pending = PendingState(message, cut)
        self._raise_if_failed()
        self._barrier.add_state(pending)

    def stream_status(self, namespace: Any, stream: Any, status: Any) -> None:
        """A TRACE STREAM_STATUS message. After the source ends, the platform sends COMPLETE for each
        stream: nothing more of it will come, so its partial batch goes now rather than when overdue."""
        if status != "COMPLETE":
            return
        sink = self._sink_of(namespace, stream)
        if sink is not None:
            self._submit(sink.take())

    def source_changes(self, namespace: Any, stream: Any, changes: Any) -> None:
        """A record's `meta.changes`: fields the source nulled or truncated (counted, shown in the summary)."""
        sink = self._sink_of(namespace, stream)
        if sink is None or type(changes) is not list:
            return
        self.ledger.source_changes(sink.stats.stream, changes)

    def flush_overdue(self) -> None:
        """Send every partial batch whose first record has waited `flush_interval_seconds`.

        Called by the input loop between chunks and, while input is idle, every TICK_SECONDS: this is
        what bounds how long a record (and so a state) can wait when a source goes quiet. It is also
        where a failed batch ends the sync while the source is quiet, rather than at its next message."""
        self._raise_if_failed()
        now = self._clock()
        interval = self._config.flush_interval_seconds
        for sink in self._sinks.values():
            if sink.buffer.overdue(now, interval):
                self._submit(sink.take())

    def unparseable_line(
        self, line_number: int, line: bytes, why: str, stream_guess: tuple[Optional[str], Optional[str]] = (None, None)
    ) -> None:
        """A line that cannot be read. When it names a stream of the catalog, it counts as a skipped
        record of that stream (and towards that stream's next state), so per-stream counts still add up."""
        preview = line[:120].decode("utf-8", "replace").rstrip()
        namespace, name = stream_guess
        sink = self._sinks.get((namespace or None, name)) if name is not None else None
        if sink is None:
            self.ledger.unparseable_lines += 1
            hint = f" (it seems to belong to stream '{name}', which is not in the catalog)" if name else ""
            logger.warning(f"input line {line_number} skipped: {why}{hint} (starts with: {preview!r})")
            return
        sink.skip_unreadable(line_number, why, preview, line)

    def other_message(self, kind: Any) -> None:
        """Messages a destination may receive but has nothing to do with (LOG, CONTROL, other TRACEs...):
        counted, and one warning per message type, not per message."""
        self.ledger.ignored_messages += 1
        known = kind in KNOWN_MESSAGE_TYPES
        if not known:
            self.ledger.unknown_messages += 1
        key = repr(kind)
        if key in self._ignored_types:
            return
        self._ignored_types.add(key)
        if known:
            logger.warning(
                f"ignoring input messages of type {kind!r}: the connector does not use them (counted in the summary)"
            )
        else:
            logger.warning(
                f"ignoring input messages of type {kind!r}, which is not an Airbyte message type (counted in the summary)"
            )

    # ----- batches and states -----------------------------------------------------------------

    def _submit(self, batch: Optional[Batch]) -> None:
        """Hand a batch to the sender; waits while `max_in_flight_requests` are already out.

        A failure wakes the wait; the batch then counts as not sent.
        """
        if batch is None or not batch.count:
            return
        if isinstance(batch, ObjectBatch) and self._parent_sinks:
            parents = {ref.parent for ref in batch.endpoint.target.references} - {batch.endpoint}
            waits_for: dict[Endpoint, frozenset[int]] = {}
            for parent in parents & self._parent_sinks.keys():
                # Every parent record read so far goes first (its batch waiting for its own parents,
                # if it has any), and this batch waits for their acknowledgement.
                for sink in self._parent_sinks[parent]:
                    self._submit(sink.take())
                if isinstance(self._sender, ThreadedSender):
                    waits_for[parent] = self._sender.pending_parents(parent)
            batch.waits_for = waits_for
        # Until it is handed over, the batch counts as buffered (not sent) should the sync fail meanwhile.
        self._handing_over = batch
        self._raise_if_failed()
        self._check_error_share(final=False, only=self.ledger.stats(batch.route.name))
        self._sender.acquire()
        self._raise_if_failed()
        self._handing_over = None
        self._sender.send(batch)

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

    def _sink_of(self, namespace: Any, stream: Any) -> Optional[Union[StreamSink, ObjectSink]]:
        try:
            return self._sinks[(namespace, stream)] if namespace else self._sinks_by_name[stream]
        except (KeyError, TypeError):
            return None

    def _skip_unknown(self, namespace: Any, stream: Any, data: Any = None) -> None:
        if isinstance(stream, str) and (namespace is None or isinstance(namespace, str)):
            key: StreamKey = (namespace or None, stream)
            label = stream_label(key)
        else:
            label = repr(stream) if namespace is None else f"{namespace!r}.{stream!r}"
            key = (None, label)
        count = self._unknown_streams.get(key, 0) + 1
        self._unknown_streams[key] = count
        stats = self.ledger.stats(label)
        self.ledger.skip(label, "the stream is not in the configured catalog")
        self._counts.reject(label, stats.read - 1)
        if self._rejected is not None:
            self._rejected.add_by_connector(
                key, None, stats.read, "the stream is not in the configured catalog", record=data
            )
        if count == 1:
            logger.warning(f"records of stream '{label}' are skipped: the stream is not in the configured catalog")

    # ----- failures ---------------------------------------------------------------------------

    def _judge_errors_during_sync(self, stats: StreamStats) -> None:
        self._check_error_share(final=False, only=stats)

    def _check_error_share(self, *, final: bool, only: Optional[StreamStats] = None) -> None:
        """Fail the sync (config error) when a stream's rejected share passes max_error_percent.

        Why config_error: the records do not fit the mapping or the data does not meet Planhat's
        rules; only the user can fix that (mapping, source data, or the threshold itself). A retry
        of the same sync would fail the same way, so it is not transient, and nothing is broken
        in the connector or Planhat, so it is not a system error.
        """
        limit = self._config.max_error_percent
        if limit >= 100:
            return
        failing = []
        for stats in [only] if only is not None else self.ledger.all():
            share, judged = stats.error_share(judged_without_answers=self._dry_run)
            if judged == 0 or (not final and judged < EARLY_CHECK_MIN_ITEMS):
                continue
            if share > limit:
                failing.append(
                    f"stream '{stats.stream}': {share:.1f}% of {judged} items were rejected "
                    f"({stats.rejected_locally} by the connector's checks, {stats.rejected_by_planhat} by Planhat); "
                    f"top reasons: {stats.top_reasons()}"
                )
        if failing:
            when = "" if final else f" (checked during the sync, after at least {EARLY_CHECK_MIN_ITEMS} items)"
            error = config_error(
                f"More than max_error_percent ({limit:g}%) of the items were rejected{when}: "
                + "; ".join(failing)
                + ". Fix the stream's field_mappings or the source data, or raise max_error_percent.",
            )
            if not final:
                self._sender.record_failure(error)
                self._log_summary()
            raise error

    def _raise_if_failed(self) -> None:
        failure = self._sender.failure
        if failure is None:
            return
        self._log_summary()
        if isinstance(failure, PlanhatError):
            raise as_traced(failure, self._sender.where(failure.endpoint)) from failure
        raise failure

    # ----- reporting --------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        """Logs a progress line every `progress_interval_seconds`. (Overdue batches are sent by the
        reading thread, in `flush_overdue`: the buffers are its alone.)"""
        while not self._stopping.wait(TICK_SECONDS):
            line = self._report.progress_line(self._clock())
            if line is not None:
                logger.info(line)

    def _log_summary(self) -> None:
        # Items still buffered (or being handed over) were never sent: after a failure they count as not sent.
        buffered = {sink.stats.stream: sink.buffer.count for sink in self._sinks.values() if sink.buffer.count}
        handing_over = self._handing_over
        if handing_over is not None:
            stream = handing_over.route.name
            buffered[stream] = buffered.get(stream, 0) + len(handing_over)
        if isinstance(self._sender, DryRunSender):
            if not self._report.summary_logged:
                self._report.summary_logged = True
                for line in self._sender.summary_lines(self._states_withheld):
                    logger.info(line)
            return
        self._report.log_summary(self._sender.failure is not None, buffered)
