"""Dry run (`dry_run: true`): the whole write path except the POSTs, so a user can try a mapping.

Records are routed, mapped, validated and cut into batches exactly as in a real sync; batches are
counted instead of sent. No client exists, so nothing can reach Planhat. No STATE is emitted: a
state tells Airbyte that the records before it are in the destination, and they are not, so the
next real sync must send them.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

import orjson

from destination_planhat.batching import Batch
from destination_planhat.config import PlanhatConfig
from destination_planhat.routing import StreamKey, StreamRoute
from destination_planhat.state import read_state
from destination_planhat.writer import SAMPLE_CHARS, PlanhatWriter

logger = logging.getLogger("airbyte")

SAMPLE_PAYLOADS = 3


class DryRunWriter(PlanhatWriter):
    def __init__(
        self,
        config: PlanhatConfig,
        routes: Mapping[StreamKey, StreamRoute],
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__(config, routes, None, emit)  # type: ignore[arg-type]  # no client: nothing can be sent
        self._samples: dict[str, list[bytes]] = {}
        self._batches: dict[str, int] = {}
        self._states_withheld = 0

    def start(self) -> "DryRunWriter":
        logger.info("dry run: records are mapped and checked but nothing is sent to Planhat and no state is saved")
        for sink in self._sinks.values():
            route = sink.route
            logger.info(f"dry run: stream '{route.name}' -> Planhat {route.endpoint.label} ({route.why})")
        return self  # no sender or ticker threads: a batch is counted the moment it is cut

    def state(self, message: dict[str, Any]) -> None:
        read_state(message)  # a malformed one is reported as in a real sync
        self._states_withheld += 1

    def _submit(self, batch: Optional[Batch]) -> None:
        if batch is None or not batch.count:
            return
        stream = batch.route.name
        stats = self.ledger.stats(stream)
        stats.sent += len(batch)
        self._batches[stream] = self._batches.get(stream, 0) + 1
        samples = self._samples.setdefault(stream, [])
        if len(samples) < SAMPLE_PAYLOADS:
            samples.extend(orjson.dumps(item) for item in batch.items()[: SAMPLE_PAYLOADS - len(samples)])
        self._barrier.acknowledge(batch.batch_id)  # keeps the barrier small; it has no state to release
        self._check_error_share(final=False, only=stats)

    def finish(self) -> None:
        for sink in self._sinks.values():
            self._submit(sink.buffer.take())
        self._log_dry_run_summary()
        self._check_error_share(final=True)

    def _log_dry_run_summary(self) -> None:
        self._summary_logged = True
        for stats in self.ledger.all():
            reasons = "; ".join(f"{reason!r} x{count}" for reason, count in stats.local_reasons.most_common())
            line = (
                f"dry run: stream '{stats.stream}'" + (f" -> {stats.endpoint}" if stats.endpoint else "") + ": "
                f"read {stats.read} records, would send {stats.sent} items in {self._batches.get(stats.stream, 0)} "
                f"request(s), rejected by the connector's checks {stats.rejected_locally}"
                + (f" ({reasons})" if reasons else "")
                + f", skipped {stats.skipped}"
            )
            if stats.extra_items or stats.empty_records:
                line += f"; unpivot: +{stats.extra_items} items beyond one per record, {stats.empty_records} records without items"
            if stats.sent_invalid:
                line += f"; would send {stats.sent_invalid} items that fail the checks (invalid_records: send)"
            logger.info(line)
            for number, sample in enumerate(self._samples.get(stats.stream, ()), start=1):
                logger.info(f"dry run: stream '{stats.stream}' sample payload {number}: {sample.decode()[:SAMPLE_CHARS]}")
        logger.info(
            f"dry run: {self._states_withheld} state message(s) received and not emitted, so the next real sync "
            "sends these records"
        )
