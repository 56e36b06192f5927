"""Dry run (`dry_run: true`): the whole write path with a sender that sends nothing.

Records are routed, mapped, validated and cut into batches exactly as in a real sync; batches are
counted instead of sent (no client exists, so nothing can reach Planhat). No STATE is emitted: a
state tells Airbyte that the records before it are in the destination, and they are not, so the
next real sync must send them.
"""

from __future__ import annotations

import logging
from typing import Optional

import orjson

from destination_planhat.planhat.api import Endpoint
from destination_planhat.sync.batching import Batch
from destination_planhat.sync.ledger import Ledger
from destination_planhat.sync.state_barrier import StateBarrier

logger = logging.getLogger("airbyte")

SAMPLE_PAYLOADS = 3
SAMPLE_CHARS = 300


class DryRun:
    """What a dry run is given instead of a client: nothing to send with."""


class DryRunSender:
    """Counts each batch the moment it is cut and keeps a few sample items per stream."""

    def __init__(self, ledger: Ledger, barrier: StateBarrier) -> None:
        self._ledger = ledger
        self._barrier = barrier
        self._samples: dict[str, list[bytes]] = {}
        self._batches: dict[str, int] = {}
        self._states_withheld = 0
        self.failure: Optional[BaseException] = None

    def start(self) -> None:
        logger.info("dry run: records are mapped and checked but nothing is sent to Planhat and no state is saved")

    def where(self, endpoint: Endpoint) -> str:
        return f"Planhat {endpoint.label} (dry run)"

    def acquire(self) -> None:
        return None  # nothing is in flight, ever

    def send(self, batch: Batch) -> None:
        stream = batch.route.name
        self._ledger.stats(stream).sent += len(batch)
        self._batches[stream] = self._batches.get(stream, 0) + 1
        samples = self._samples.setdefault(stream, [])
        if len(samples) < SAMPLE_PAYLOADS:
            samples.extend(orjson.dumps(item) for item in batch.items()[: SAMPLE_PAYLOADS - len(samples)])
        self._barrier.acknowledge(batch.batch_id)  # keeps the barrier small; its states are withheld anyway

    def pending_parents(self, endpoint: Endpoint) -> frozenset[int]:
        return frozenset()  # every batch is acknowledged the moment it is cut

    def withhold_state(self) -> None:
        """A STATE message, not emitted: counted for the summary."""
        self._states_withheld += 1

    def wait_idle(self) -> None:
        return None

    def record_failure(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc

    def close(self) -> None:
        return None

    def summary_lines(self) -> list[str]:
        """What a dry run reports instead of the summary table: per stream what would have been sent."""
        lines = []
        for stats in self._ledger.all():
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
            lines.append(line)
            for number, sample in enumerate(self._samples.get(stats.stream, ()), start=1):
                lines.append(
                    f"dry run: stream '{stats.stream}' sample payload {number}: {sample.decode()[:SAMPLE_CHARS]}"
                )
        lines.append(
            f"dry run: {self._states_withheld} state message(s) received and not emitted, so the next real sync "
            "sends these records"
        )
        return lines
