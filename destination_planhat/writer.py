"""The write loop: records in, batches out, states released only behind acknowledged batches.

Reading runs on the caller's thread; batches are posted by a small pool of sender threads, so
reading goes on while Planhat answers. Back-pressure: at most `max_in_flight_requests` batches are
on their way at once; the reader waits for a free slot before it hands over another.

The buffers belong to the reading thread alone: no lock per record. Whoever feeds the writer calls
`flush_overdue()` between chunks of input and while input is idle, so that a partial batch is sent
once its first record has waited `flush_interval_seconds`, even when the source goes quiet.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NoReturn, Optional, Sequence

import orjson
from airbyte_cdk.models import AirbyteStateType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.accounting import Ledger, StreamStats
from destination_planhat.bad_input import why_not_encodable
from destination_planhat.batching import Batch, ItemTooLarge, StreamBuffer, body_fits
from destination_planhat.client import (
    PlanhatAuthError,
    PlanhatClient,
    PlanhatError,
    PlanhatPayloadTooLarge,
    PlanhatRejectedRequest,
    PlanhatTLSError,
    PlanhatUnavailable,
    PostResult,
)
from destination_planhat.config import InvalidRecords, PlanhatConfig
from destination_planhat.errors import config_error, system_error, transient_error
from destination_planhat.mapping import Invalid, MapResult, Mapper, RecordRejected, build_mapper, fast_plan
from destination_planhat.planhat import SAFE_BODY_BYTES, WHERE_API_TOKEN, WHERE_TENANT_TOKEN, Endpoint
from destination_planhat.reporting import ProgressReporter, summary_notes, summary_table
from destination_planhat.routing import StreamKey, StreamRoute, stream_label
from destination_planhat.state import PendingState, StateBarrier, read_state
from destination_planhat.state_counts import StateCounts, match_rejected

logger = logging.getLogger("airbyte")

SAMPLE_ERRORS = 3
PAYLOAD_TOO_LARGE_REASON = "too large for Planhat (HTTP 413)"
SAMPLE_CHARS = 300
# How often an idle input loop calls flush_overdue(): the bound on a partial batch's wait is
# flush_interval_seconds plus this.
TICK_SECONDS = 1.0
# Local rejections: the first few of each reason per stream are logged with the offending value.
EXAMPLES_PER_REASON = 3
# max_error_percent is judged during the sync only once a stream has this many judged items (so a
# few bad rows at the start do not fail it), and always at the end of the sync.
EARLY_CHECK_MIN_ITEMS = 10_000
EARLY_CHECK_EVERY = 1_000
# The end-of-sync summary as one JSON object, for machines (tests, log scrapers); the lines before it
# say the same for people.
SUMMARY_JSON_PREFIX = "sync summary (JSON): "
# Message types of the Airbyte protocol that a destination may receive and has nothing to do with.
KNOWN_MESSAGE_TYPES = frozenset(
    {"RECORD", "STATE", "LOG", "TRACE", "CONTROL", "SPEC", "CONNECTION_STATUS", "CATALOG", "DESTINATION_CATALOG"}
)


@dataclass
class _Sink:
    """Everything the hot path needs for one stream, looked up once per record."""

    route: StreamRoute
    mapper: Mapper
    buffer: StreamBuffer
    stats: StreamStats


class PlanhatWriter:
    def __init__(
        self,
        config: PlanhatConfig,
        routes: Mapping[StreamKey, StreamRoute],
        client: PlanhatClient,
        emit: Callable[[dict[str, Any]], None],
        *,
        max_body_bytes: Optional[int] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._client = client
        self._send_invalid = config.invalid_records is InvalidRecords.SEND
        self._clock = clock
        self.ledger = Ledger()
        self._emit = emit
        self._barrier = StateBarrier(self._release_state)
        self._counts = StateCounts(route.name for route in routes.values())
        self._sinks: dict[StreamKey, _Sink] = {}
        # The request body limit: the config's (a proxy may need less than Planhat's), unless a test overrides it.
        max_body_bytes = max_body_bytes or getattr(config, "max_request_body_bytes", SAFE_BODY_BYTES)
        for key, route in routes.items():
            stats = self.ledger.stats(route.name, route.endpoint.value)
            buffer = StreamBuffer(route, config.batch_size, max_body_bytes, self._barrier.open_batch, clock, stats)
            self._sinks[key] = _Sink(route, build_mapper(route), buffer, stats)
        # Streams without a namespace by name alone: the common case costs no tuple per record.
        self._sinks_by_name = {key[1]: sink for key, sink in self._sinks.items() if key[0] is None}
        # The streams parse workers may map (see parallel_plan), by their index in the plan.
        self._sinks_by_index = list(self._sinks.values())
        self._max_body_bytes = max_body_bytes
        self._endpoints = [endpoint for endpoint in Endpoint if any(r.endpoint is endpoint for r in routes.values())]
        self._progress = ProgressReporter(self.ledger, config.progress_interval_seconds, clock())
        self._unknown_streams: dict[StreamKey, int] = {}
        self._ignored_types: set[str] = set()  # message types already warned about
        self._slots = threading.Semaphore(config.max_in_flight_requests)
        self._queue: queue.SimpleQueue[Optional[Batch]] = queue.SimpleQueue()
        self._failure: Optional[BaseException] = None
        self._failure_lock = threading.Lock()
        self._stopping = threading.Event()
        self._senders = [
            threading.Thread(target=self._sender_loop, name=f"planhat-sender-{i}", daemon=True)
            for i in range(config.max_in_flight_requests)
        ]
        self._ticker = threading.Thread(target=self._tick_loop, name="planhat-ticker", daemon=True)
        self._handing_over: Optional[Batch] = None
        self._started = False

    # ----- life cycle -------------------------------------------------------------------------

    def start(self) -> "PlanhatWriter":
        for route in (sink.route for sink in self._sinks.values()):
            logger.info(f"stream '{route.name}' -> Planhat {route.endpoint.label} ({route.why})")
        for thread in (*self._senders, self._ticker):
            thread.start()
        self._started = True
        return self

    def finish(self) -> None:
        """End of input: send what is buffered, wait for every answer, release the last states."""
        for sink in self._sinks.values():
            self._submit(sink.buffer.take())
        self._wait_for_senders()
        self._raise_if_failed()
        try:
            self._check_error_share(final=True)
        except BaseException as exc:
            self._record_failure(exc)  # so that the summary says the sync failed
            self._log_summary()
            raise
        self._log_summary()

    @property
    def config(self) -> PlanhatConfig:
        return self._config

    def fail(self, error: BaseException) -> NoReturn:
        """A failure outside the writer (a parse worker): it ends the sync as a failed batch would,
        with the summary logged, and is raised (or the failure recorded before it, if there was one)."""
        self._record_failure(error)
        self._raise_if_failed()
        raise error  # not reached: a failure is recorded by now

    def close(self) -> None:
        """Stop the threads whatever happened; safe to call twice.

        No state is emitted after this: when the sync failed, the error is reported next, and a
        state printed by a sender thread while the process exits would race with it.
        """
        self._barrier.close()
        self._stopping.set()
        if self._client is not None:  # a dry run has none
            self._client.abort()
        if self._started:
            for _ in self._senders:
                self._queue.put(None)
            self._started = False

    # ----- input ------------------------------------------------------------------------------

    def record(self, stream: Any, namespace: Any, data: Any) -> None:
        """One RECORD message. The hot path: every line here runs once per record (see bench/)."""
        try:
            sink = self._sinks[(namespace, stream)] if namespace else self._sinks_by_name[stream]
        except (KeyError, TypeError):  # not in the catalog (TypeError: a name that is not even a string)
            self._skip_unknown(namespace, stream)
            return
        stats = sink.stats
        # Only this thread writes read/sent/rejected_locally/skipped, so no lock is needed for them.
        # `read` is the only counter per record: a state's record count is the difference (see state()).
        stats.read += 1
        if type(data) is not dict:
            self._reject(sink, "the record's data is not a JSON object", repr(data)[:SAMPLE_CHARS])
            return
        try:
            items = sink.mapper(data)
        except RecordRejected as rejected:
            self._reject(sink, rejected.reason, repr(data)[:SAMPLE_CHARS])
            return
        if len(items) != 1:  # unpivot: a record makes one item per non-null column, maybe none
            self._add_items(sink, items)
            return
        item = items[0]
        if type(item) is not dict:
            self._invalid(sink, item)
            return
        try:
            part = orjson.dumps(item)
        except orjson.JSONEncodeError as exc:
            self._unencodable(sink, item, exc)
            return
        # StreamBuffer.add's common case (an open batch with room), inlined: it runs once per item.
        buffer = sink.buffer
        body = buffer.body
        count = buffer.count
        if count and body_fits(len(body), len(part), buffer.max_body_bytes):
            body += part
            body += b","
            buffer.count = count = count + 1
            if count >= buffer.batch_size:
                self._submit(buffer.take())
        else:
            self._add_part(sink, item, part)

    def parallel_plan(self) -> dict[str, Any]:
        """What parse worker processes need to map the common record of each stream (parse_worker.py):
        no settings beyond the fields' sources, kinds and constants, and no secrets."""
        streams = []
        for index, sink in enumerate(self._sinks_by_index):
            plan = fast_plan(sink.route)
            if plan is not None:
                endpoint, fields, constants = plan
                key = sink.route.key
                streams.append((index, key[0], key[1], endpoint.value, [(f, k, kind.value) for f, k, kind in fields], constants))
        return {"streams": streams, "max_part_bytes": self._max_body_bytes}

    def take_encoded(self, index: int, encoded: bytes, ends: Sequence[int]) -> None:
        """Items of one stream that a parse worker mapped, checked and encoded: one record each, in
        input order, each followed by "," in `encoded`, ending at the offsets `ends`. What `record`
        does for each of them, a run of items at a time; each run is counted as read once placed."""
        self._sinks_by_index[index].buffer.add_run(encoded, ends, self._submit)

    def _add_items(self, sink: _Sink, items: MapResult) -> None:
        """A record that made no item or several (unpivot): each item through the general path."""
        stats = sink.stats
        if not items:
            stats.empty_records += 1
            sink.buffer.skip_record()
            return
        stats.extra_items += len(items) - 1
        sink.buffer.begin_record(stats.read - 1)
        for item in items:
            if type(item) is dict:
                self._add_item(sink, item)
            else:
                self._invalid(sink, item)
        sink.buffer.end_record()

    def state(self, message: dict[str, Any]) -> None:
        """One STATE message, as parsed from its JSON line. Held until every record before it is
        acknowledged, then emitted exactly as it came in, with the counts of the records it covers
        (state.py, state_counts.py). Raises InvalidState, changing nothing, for a malformed one.

        It does not cut the partial batches: they go when full or overdue (`flush_overdue`), and the
        state follows as soon as they are acknowledged."""
        state = read_state(message)
        if state.type == AirbyteStateType.STREAM and state.stream is not None:
            descriptor = state.stream.stream_descriptor
            label = stream_label((descriptor.namespace or None, descriptor.name))
            cut = self._counts.cut({label: self.ledger.read_of(label)}, global_scope=False)
        else:  # GLOBAL or LEGACY: every stream, those not in the catalog included
            cut = self._counts.cut({stats.stream: stats.read for stats in self.ledger.all()}, global_scope=True)
        pending = PendingState(message, cut)
        self._raise_if_failed()
        self._barrier.add_state(pending)

    def _release_state(self, pending: PendingState) -> None:
        """Called by the barrier, in input order, once every record before the state is acknowledged."""
        written, rejected = self._counts.counts(pending.cut)
        self._emit(pending.with_counts(written, rejected))

    def stream_status(self, namespace: Any, stream: Any, status: Any) -> None:
        """A TRACE STREAM_STATUS message. After the source ends, the platform sends COMPLETE for each
        stream: nothing more of it will come, so its partial batch goes now rather than when overdue."""
        if status != "COMPLETE":
            return
        sink = self._sink_of(namespace, stream)
        if sink is not None:
            self._submit(sink.buffer.take())

    def source_changes(self, namespace: Any, stream: Any, changes: Any) -> None:
        """A record's `meta.changes`: fields the source nulled or truncated (counted, shown in the summary)."""
        sink = self._sink_of(namespace, stream)
        if sink is None or type(changes) is not list:
            return
        self.ledger.source_changes(sink.stats.stream, changes)

    def _sink_of(self, namespace: Any, stream: Any) -> Optional[_Sink]:
        try:
            return self._sinks[(namespace, stream)] if namespace else self._sinks_by_name[stream]
        except (KeyError, TypeError):
            return None

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
                self._submit(sink.buffer.take())

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
        self.ledger.skip(sink.stats.stream, "unreadable input line")  # counted as read: states count it too
        self._counts.reject(sink.stats.stream, sink.stats.read - 1)
        sink.buffer.skip_record()
        logger.warning(
            f"stream '{sink.stats.stream}': input line {line_number} skipped: {why} (starts with: {preview!r})"
        )

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
            logger.warning(f"ignoring input messages of type {kind!r}: the connector does not use them (counted in the summary)")
        else:
            logger.warning(f"ignoring input messages of type {kind!r}, which is not an Airbyte message type (counted in the summary)")

    # ----- local validation -------------------------------------------------------------------

    def _invalid(self, sink: _Sink, invalid: Invalid) -> None:
        """An item that failed the local checks: rejected, or sent as it is (invalid_records: send)."""
        if not self._send_invalid:
            self._reject(sink, invalid.reason, invalid.example)
            return
        seen = self.ledger.sent_invalid(sink.stats.stream, invalid.reason)
        if seen <= EXAMPLES_PER_REASON:
            logger.warning(
                f"stream '{sink.stats.stream}': sending an item that fails the local checks "
                f"(invalid_records: send): {invalid.reason} ({invalid.example})"
            )
        self._add_item(sink, invalid.item)

    def _reject(self, sink: _Sink, reason: str, example: str) -> None:
        stats = sink.stats
        several = sink.buffer.record_of_items
        if several is None:  # the whole record
            self._counts.reject(stats.stream, stats.read - 1)
            sink.buffer.skip_record()
        else:  # one item of a record that made several (unpivot)
            self._counts.reject(stats.stream, several, several_items=True)
        seen = self.ledger.reject_locally(stats.stream, reason)
        if seen <= EXAMPLES_PER_REASON:
            logger.warning(f"stream '{stats.stream}': an item was not sent: {reason} ({example})")
        if stats.rejected_locally % EARLY_CHECK_EVERY == 0:
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
            share, judged = stats.error_share(judged_without_answers=self._config.dry_run)
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
                f"More than max_error_percent ({limit:g}%) of the items were rejected{when}: " + "; ".join(failing)
                + ". Fix the stream's field_mappings or the source data, or raise max_error_percent.",
            )
            if not final:
                self._record_failure(error)
                self._log_summary()
            raise error

    # ----- batching ---------------------------------------------------------------------------

    def _add_item(self, sink: _Sink, item: dict[str, Any]) -> None:
        """One item into its stream's buffer (`record` does the same inline for the common case)."""
        try:
            part = orjson.dumps(item)
        except orjson.JSONEncodeError as exc:
            self._unencodable(sink, item, exc)
            return
        self._add_part(sink, item, part)

    def _add_part(self, sink: _Sink, item: dict[str, Any], part: bytes) -> None:
        try:
            ready = sink.buffer.add(part)
        except ItemTooLarge as exc:
            self._reject(sink, "larger than the request size limit (`max_request_body_bytes`)", f"{exc}{_largest_field(item)}")
            return
        if ready is not None:
            self._submit(ready)

    def _unencodable(self, sink: _Sink, item: dict[str, Any], exc: orjson.JSONEncodeError) -> None:
        self._reject(sink, why_not_encodable(item, exc), repr(item)[:SAMPLE_CHARS])

    def _submit(self, batch: Optional[Batch]) -> None:
        """Hand a batch to the senders; waits while `max_in_flight_requests` are already out.

        A failure wakes the wait (see `_record_failure`); the batch then counts as not sent.
        """
        if batch is None or not batch.count:
            return
        stats = self.ledger.stats(batch.route.name)
        # Until it is queued, the batch counts as buffered (not sent) should the sync fail meanwhile.
        self._handing_over = batch
        self._raise_if_failed()
        self._check_error_share(final=False, only=stats)
        self._slots.acquire()
        self._raise_if_failed()
        self._handing_over = None
        stats.sent += len(batch)
        self.ledger.request_started(batch.endpoint)
        self._queue.put(batch)

    def _tick_loop(self) -> None:
        """Logs a progress line every `progress_interval_seconds`. (Overdue batches are sent by the
        reading thread, in `flush_overdue`: the buffers are its alone.)"""
        while not self._stopping.wait(TICK_SECONDS):
            now = self._clock()
            if self._progress.due(now) and not getattr(self, "_summary_logged", False):
                logger.info(self.progress_line(now))

    def progress_line(self, now: float) -> str:
        in_flight = self.ledger.in_flight()
        per_endpoint = {endpoint: in_flight.get(endpoint, 0) for endpoint in self._endpoints}
        line = self._progress.line(now, per_endpoint, self._config.max_in_flight_requests)
        return f"{line}; states emitted {self._barrier.emitted}, waiting {self._barrier.waiting}"

    # ----- sending ----------------------------------------------------------------------------

    def _sender_loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                if self._failure is None:
                    self._deliver(batch, f"stream '{batch.route.name}' batch {batch.number}")
                    self._barrier.acknowledge(batch.batch_id)
            except BaseException as exc:
                self._record_failure(exc)
            finally:
                self.ledger.request_finished(batch.endpoint)
                batch = None  # its body must not stay alive while this thread waits for the next one
                self._slots.release()

    def _deliver(self, batch: Batch, label: str) -> None:
        """POST one batch; on 413 split it and post the halves, down to single items."""
        try:
            result = self._client.post(batch.endpoint, batch.body(), context=f"{label}: ")
        except PlanhatPayloadTooLarge as exc:
            if exc.ambiguous_failures:
                self.ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * exc.ambiguous_failures)
            if len(batch) == 1:
                self.ledger.record_answer(batch.route.name, 1, 0, [PAYLOAD_TOO_LARGE_REASON], 0)
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
                self.ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * exc.ambiguous_failures)
            raise
        self._account(batch, label, result)

    def _account(self, batch: Batch, label: str, result: PostResult) -> None:
        stream = batch.route.name
        resent = len(batch) * result.ambiguous_failures
        rejected = self.ledger.record_answer(
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

    def _wait_for_senders(self) -> None:
        # Every slot free means every batch handed over has been answered (or the sync failed).
        limit = self._config.max_in_flight_requests
        for _ in range(limit):
            self._slots.acquire()
        for _ in range(limit):
            self._slots.release()

    def _record_failure(self, exc: BaseException) -> None:
        """The first failure ends the sync: retries stop, and the reader, wherever it waits, wakes up
        to raise it. Later failures (e.g. requests aborted because of this one) are ignored."""
        with self._failure_lock:
            if self._failure is not None:
                return
            self._failure = exc
        self._stopping.set()
        if self._client is not None:
            self._client.abort()
        # Extra permits wake a reader blocked in `_submit` or `_wait_for_senders`; nothing waits
        # for sender threads after this (they are daemons), so an answer that never comes cannot
        # hold the failed sync open.
        for _ in range(self._config.max_in_flight_requests):
            self._slots.release()

    def _raise_if_failed(self) -> None:
        failure = self._failure
        if failure is None:
            return
        self._log_summary()
        if isinstance(failure, PlanhatError):
            raise _traced(failure, self._client) from failure
        raise failure

    # ----- reporting --------------------------------------------------------------------------

    def _skip_unknown(self, namespace: Any, stream: Any) -> None:
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
        if count == 1:
            logger.warning(
                f"records of stream '{label}' are skipped: the stream is not in the configured catalog"
            )

    def _log_summary(self) -> None:
        if getattr(self, "_summary_logged", False):
            return
        self._summary_logged = True
        failed = self._failure is not None
        # Items still buffered (or being handed over) were never sent: after a failure they count as not sent.
        buffered = {sink.stats.stream: sink.buffer.count for sink in self._sinks.values() if sink.buffer.count}
        handing_over = self._handing_over
        if handing_over is not None:
            stream = handing_over.route.name
            buffered[stream] = buffered.get(stream, 0) + len(handing_over)
        self.ledger.close_books(failed, buffered)
        streams = self.ledger.all()
        for line in summary_table(streams):
            logger.info("summary: " + line)
        for line in summary_notes(streams):
            logger.info("summary: " + line)
        if self.ledger.unparseable_lines:
            logger.warning(
                f"summary: {self.ledger.unparseable_lines} input line(s) could not be read and named no stream "
                "of the catalog; they were skipped"
            )
        emitted, waiting = self._barrier.emitted, self._barrier.waiting
        logger.info(f"summary: {emitted} state message(s) emitted, {waiting} held back")
        summary = {
            "status": "failed" if failed else "succeeded",
            "streams": self.ledger.snapshot(),
            "unreadable_lines_without_stream": self.ledger.unparseable_lines,
            "ignored_messages": self.ledger.ignored_messages,
            "unknown_message_types": self.ledger.unknown_messages,
            "states_emitted": emitted,
            "states_held_back": waiting,
        }
        logger.info(SUMMARY_JSON_PREFIX + orjson.dumps(summary).decode())


def _largest_field(item: Mapping[str, Any]) -> str:
    """Which field makes an item too large, for the warning."""
    sizes = []
    for name, value in item.items():
        try:
            sizes.append((len(orjson.dumps(value)), name))
        except orjson.JSONEncodeError:
            continue
    if not sizes:
        return ""
    size, name = max(sizes)
    return f" (its largest field is '{name}', {size:,} bytes)"


def _traced(failure: PlanhatError, client: PlanhatClient) -> AirbyteTracedException:
    endpoint = failure.endpoint
    where = f"Planhat {endpoint.label} ({client.url_for_logs(endpoint)})"
    if isinstance(failure, PlanhatAuthError):
        if endpoint is Endpoint.METRICS:
            fix = f"check `api_token`: it must be {WHERE_API_TOKEN}, allowed to write metrics"
        else:
            fix = f"check `tenant_uuid`: it must be {WHERE_TENANT_TOKEN}"
        return config_error(f"{where} refused the credentials (HTTP {failure.status}): {fix}.", str(failure))
    if isinstance(failure, PlanhatUnavailable):
        return transient_error(
            f"{where} could not take a batch: {failure}. Records after the last emitted state will be sent "
            "again by the next attempt of the sync.",
            str(failure),
        )
    if isinstance(failure, PlanhatTLSError):
        return config_error(
            f"{where}: {failure}. Check `analytics_base_url`: it must be Planhat's analytics host or a proxy "
            "with a certificate your system trusts.",
            str(failure),
        )
    if isinstance(failure, PlanhatRejectedRequest):
        return system_error(f"{where} rejected a request: {failure}", str(failure))
    return system_error(f"{where} failed: {failure}", str(failure))
