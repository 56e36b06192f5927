"""SIGTERM and SIGINT during `write`: the first cancels the sync, a second exits at once.

Airbyte stops a connector with SIGTERM and kills it after a grace period of its own; a user stops a
`docker run` with Ctrl-C (SIGINT). The first signal hands the cancel to the writer
(sync/cancellation.py) on a thread of its own: a signal handler runs on the main thread between two
of its bytecodes, possibly while that thread holds one of the writer's locks, so the handler itself
takes none. A second signal means "now": the process exits without waiting for anything.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, NoReturn, Optional

# The signals that cancel a write.
CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class CancelOnSignal:
    """A context manager: while it is entered (on the main thread), SIGTERM and SIGINT cancel the sync.

    `cancel(signal_name)` is called once, on a new thread; `exit_now(signal_number, signal_name)` on
    the second signal (it must not return). Off the main thread (Python allows handlers only there)
    it does nothing."""

    def __init__(self, cancel: Callable[[str], None], exit_now: Callable[[int, str], NoReturn]) -> None:
        self._cancel = cancel
        self._exit_now = exit_now
        self._previous: dict[int, Any] = {}
        self.received: Optional[str] = None  # the name of the first signal, once one came

    def __enter__(self) -> CancelOnSignal:
        if threading.current_thread() is threading.main_thread():
            for number in CANCEL_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self, kind: Optional[type[BaseException]], error: Optional[BaseException], trace: Optional[TracebackType]
    ) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _handle(self, number: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(number).name
        if self.received is not None:
            self._exit_now(number, name)
        self.received = name
        threading.Thread(target=self._cancel, args=(name,), name="planhat-cancel", daemon=True).start()
