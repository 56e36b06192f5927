"""How fast requests go to Planhat's main API: one budget of calls per minute for every object stream.

Planhat's main API has a soft quota of about 200 calls per minute per tenant (429 above it), and
advises sending bulk requests one after another. Every attempt to the main API (retries included)
takes a call from one sliding window shared by all object streams, so that the connector's own
pacing never causes a 429. The window itself is pyrate-limiter's (a dependency of the Airbyte CDK):
at most `calls_per_minute` calls in any 60 seconds, which also keeps Planhat's fixed windows under
the limit whatever their phase.

On top of it, the answers slow the pace further: a 429 (with or without Retry-After) or an answer
saying `X-Rate-Limit-Remaining: 0` holds every later call until the hint has passed. Waits are cut
short by `abort()` (the sync failed).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional

from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate, RateItem

# When an answer says no calls are left but gives no time, wait this long before the next call.
NO_CALLS_LEFT_PAUSE_SECONDS = 5.0
# After a 429 without Retry-After.
TOO_MANY_REQUESTS_PAUSE_SECONDS = 10.0
# The longest pause an answer can impose (a garbled Retry-After must not stall a sync for hours).
MAX_PAUSE_SECONDS = 300.0
_NAME = "planhat-main-api"


class CallPacer:
    """Thread-safe. `wait()` before each call; `observe()` each answer's status and headers."""

    def __init__(
        self,
        calls_per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Optional[Callable[[float], bool]] = None,
    ) -> None:
        """`wait(seconds)`: how to wait; returns True when the wait was cut short (aborted)."""
        self.calls_per_minute = calls_per_minute
        self._bucket = InMemoryBucket([Rate(calls_per_minute, Duration.MINUTE)])
        self._limiter = Limiter(self._bucket, raise_when_fail=False)
        self._clock = clock
        self._aborted = threading.Event()
        self._wait = wait or self._aborted.wait
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self.calls = 0
        self.pauses = 0  # pauses imposed by Planhat's answers (429, no calls left)

    def abort(self) -> None:
        self._aborted.set()

    def wait(self) -> bool:
        """Block until a call may be made; False when the wait was aborted (then make no call)."""
        while not self._aborted.is_set():
            with self._lock:
                pause = self._paused_until - self._clock()
                if pause <= 0 and self._limiter.try_acquire(_NAME):
                    self.calls += 1
                    return True
                if pause <= 0:
                    milliseconds = self._bucket.waiting(RateItem(_NAME, int(time.time() * 1000)))
                    pause = max(int(milliseconds) / 1000.0, 0.01) if isinstance(milliseconds, int) else 0.05
            if self._wait(min(pause, MAX_PAUSE_SECONDS)):
                return False
        return False

    def observe(self, status: Optional[int], headers: Mapping[str, str], retry_after: Optional[float]) -> None:
        """One answer: a 429, or no calls left, holds every later call (see the module's docstring)."""
        pause = 0.0
        if status == 429:
            pause = retry_after if retry_after is not None else TOO_MANY_REQUESTS_PAUSE_SECONDS
        else:
            remaining = headers.get("X-Rate-Limit-Remaining")
            if remaining is not None and remaining.strip() == "0":
                pause = retry_after if retry_after is not None else NO_CALLS_LEFT_PAUSE_SECONDS
        if pause <= 0:
            return
        with self._lock:
            self.pauses += 1
            self._paused_until = max(self._paused_until, self._clock() + min(pause, MAX_PAUSE_SECONDS))
