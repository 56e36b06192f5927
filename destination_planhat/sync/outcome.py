"""How a sync ends: its first failure raised, max_error_percent judged, and the summary logged once.

Why one object: whichever thread fails first (a sender thread, the reading thread, a parse worker,
too many rejected records), the sync must end the same way: every thread stopped (the sender's
`record_failure`), the summary logged before the error is raised (so the log says what was done
before it), and the first failure raised, not a later one it caused. Items still buffered, and the
batch being handed over to the sender, count in the summary as never sent.
"""

from __future__ import annotations

import logging
from typing import Optional, Union

from destination_planhat.planhat.errors import PlanhatError, as_traced, config_error
from destination_planhat.sync.batching import Batch
from destination_planhat.sync.cancellation import SyncCancelled
from destination_planhat.sync.dry_run import DryRunSender
from destination_planhat.sync.ledger import Ledger, StreamStats
from destination_planhat.sync.reporting import SyncReport
from destination_planhat.sync.sender import ThreadedSender
from destination_planhat.sync.sink_registry import Sinks

logger = logging.getLogger("airbyte")

# max_error_percent is judged during the sync only once a stream has this many judged items (so a
# few bad rows at the start do not fail it), and always at the end of the sync.
EARLY_CHECK_MIN_ITEMS = 10_000


class SyncOutcome:
    def __init__(
        self,
        sender: Union[ThreadedSender, DryRunSender],
        report: SyncReport,
        sinks: Sinks,
        ledger: Ledger,
        max_error_percent: float,
    ) -> None:
        self._sender = sender
        self._report = report
        self._sinks = sinks
        self._ledger = ledger
        self._max_error_percent = max_error_percent
        # Batches between their cut and the sender: one, or a child batch and the parent batches handed
        # over before it (sync/parents.py).
        self.handing_over: list[Batch] = []

    def raise_if_failed(self) -> None:
        """Raise the sync's first failure, if there is one, after logging the summary."""
        failure = self._sender.failure
        if failure is None:
            return
        if isinstance(failure, SyncCancelled):
            raise failure  # its summary comes once the requests on their way are answered (end_cancelled)
        self.log_summary()
        if isinstance(failure, PlanhatError):
            raise as_traced(failure, self._sender.where(failure.endpoint)) from failure
        raise failure

    def failed(self, error: BaseException) -> None:
        """`error` ends the sync (unless a failure came first): every thread stops, the summary says it failed.
        The caller raises it."""
        self._sender.record_failure(error)
        self.log_summary()

    def check_error_share(self, *, final: bool, only: Optional[StreamStats] = None) -> None:
        """Fail the sync (config error) when a stream's rejected share passes max_error_percent.

        Why config_error: the records do not fit the mapping or the data does not meet Planhat's
        rules; only the user can fix that (mapping, source data, or the threshold itself). A retry
        of the same sync would fail the same way, so it is not transient, and nothing is broken
        in the connector or Planhat, so it is not a system error.
        """
        limit = self._max_error_percent
        if limit >= 100:
            return
        failing = []
        dry_run = isinstance(self._sender, DryRunSender)
        for stats in [only] if only is not None else self._ledger.all():
            share, judged = stats.error_share(judged_without_answers=dry_run)
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
                self.failed(error)
            raise error

    def log_summary(self) -> None:
        """The summary, once per sync (a dry run's says what would have been sent)."""
        # Items still buffered (or being handed over) were never sent: after a failure they count as not sent.
        buffered = self._sinks.buffered()
        for handing_over in self.handing_over:
            stream = handing_over.route.name
            buffered[stream] = buffered.get(stream, 0) + len(handing_over)
        if isinstance(self._sender, DryRunSender):
            if not self._report.summary_logged:
                self._report.summary_logged = True
                for line in self._sender.summary_lines():
                    logger.info(line)
            return
        failure = self._sender.failure
        self._report.log_summary(failure is not None, buffered, cancelled=isinstance(failure, SyncCancelled))
