"""The thread that writes the progress line while the sync runs, even while the input is silent.

Why a thread: a sync whose source goes quiet (or whose Planhat requests are slow) would otherwise
write nothing for minutes, and a user watching the log cannot tell a slow sync from a stuck one. It
only logs: overdue batches are sent by the reading thread (PlanhatWriter.flush_overdue), because the
buffers are that thread's alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from destination_planhat.sync.reporting import SyncReport

logger = logging.getLogger("airbyte")


class ProgressTicker:
    def __init__(self, report: SyncReport, clock: Callable[[], float], tick_seconds: float) -> None:
        """`tick_seconds`: how often it asks the report whether a progress line is due."""
        self._report = report
        self._clock = clock
        self._tick_seconds = tick_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="planhat-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Safe to call twice, and before `start`."""
        self._stopping.set()

    def _loop(self) -> None:
        while not self._stopping.wait(self._tick_seconds):
            line = self._report.progress_line(self._clock())
            if line is not None:
                logger.info(line)
