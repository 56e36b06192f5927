"""How fast requests go to Planhat's main API: one budget of calls per minute for every object stream.

Planhat's main API has a soft quota of about 200 calls per minute per tenant (429 above it), and
advises sending bulk requests one after another. Every attempt to the main API (retries included)
takes a call from one sliding window shared by all object streams, so that the connector's own
pacing never causes a 429. The window itself is pyrate-limiter's (a dependency of the Airbyte CDK):
at most `calls_per_minute` calls in any WINDOW_SECONDS. That window is a little longer than a
minute (WINDOW_MARGIN_SECONDS): Planhat counts a call when it arrives, and arrivals drift from the
moments the calls were sent (a new connection, a slower upload, a busy server), so that a call
sent exactly a minute after the first of a full window could arrive in it. Any fixed window of
Planhat's, whatever its phase, then holds at most the budget too.

On top of it, the answers slow the pace:
- a 429 (with or without Retry-After) or an answer saying `X-Rate-Limit-Remaining: 0` holds every
  later call until the hint has passed (a pause);
- a 429 also lowers the allowed rate (`allowed_per_minute`): the quota is lower than the budget
  (another integration shares it, or the tenant's is smaller), and a pause alone would send the
  same burst into the next window, and the next 429. The new rate is DECREASE_FACTOR times the
  lower of the allowed rate and the rate Planhat accepted over the last window (calls answered
  without 429 in the last WINDOW_SECONDS, or, early in a sync, since the first call, per minute):
  close under the quota Planhat showed, rather than a blind halving that would take several more
  429s to get there. One step never cuts more than MAX_CUT, though: a 429 early in a sync, when
  few calls have been answered, says little about the quota. Calls are then spaced evenly at the
  lowered rate. Only a call sent after the last decrease lowers it again (the calls already on
  their way were sent at the old rate), and the rate never goes below MIN_SHARE of the budget. It
  recovers slowly, RECOVERY_PER_MINUTE of the budget per minute from the end of the pause, back to
  the plain budget. A 429 with `Retry-After: 0` asks for the call again at once: it refused that
  call, it does not say the quota is spent, so it lowers nothing.
  X-Rate-Limit-Limit is not used: the window it counts is not documented (60 to 120 s in older docs).
Waits are cut short by `abort()` (the sync failed).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from typing import Optional

from pyrate_limiter import AbstractClock, InMemoryBucket, Limiter, Rate, RateItem

from destination_planhat.planhat.api import Host
from destination_planhat.planhat.statuses import Meaning, meaning, no_calls_left

WINDOW_SECONDS = 60.0
WINDOW_MARGIN_SECONDS = 1.0
# When an answer says no calls are left but gives no time, wait this long before the next call.
NO_CALLS_LEFT_PAUSE_SECONDS = 5.0
# After a 429 without Retry-After.
TOO_MANY_REQUESTS_PAUSE_SECONDS = 10.0
# The longest pause an answer can impose (a garbled Retry-After must not stall a sync for hours).
MAX_PAUSE_SECONDS = 300.0
# After a 429: the allowed rate times this; never below MIN_SHARE of the budget; back up by
# RECOVERY_PER_MINUTE of the budget each minute.
DECREASE_FACTOR = 0.9
MAX_CUT = 0.5
MIN_SHARE = 0.05
RECOVERY_PER_MINUTE = 0.02
_NAME = "planhat-main-api"


class _Milliseconds(AbstractClock):
    """pyrate-limiter's clock, read from the pacer's (so that tests can drive both with one clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> int:
        return int(self._clock() * 1000)


class CallPacer:
    """Thread-safe. `wait()` before each call; `observe()` each answer's status and headers."""

    def __init__(
        self,
        calls_per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Optional[Callable[[float], bool]] = None,
        adaptive: bool = True,
    ) -> None:
        """`wait(seconds)`: how to wait; returns True when the wait was cut short (aborted).
        `adaptive`: whether a 429 lowers the rate (see the module's docstring); False only to compare."""
        self.calls_per_minute = calls_per_minute
        self._bucket = InMemoryBucket([Rate(calls_per_minute, int((WINDOW_SECONDS + WINDOW_MARGIN_SECONDS) * 1000))])
        self._millis = _Milliseconds(clock)
        self._limiter = Limiter(self._bucket, clock=self._millis, raise_when_fail=False)
        self._clock = clock
        self._aborted = threading.Event()
        self._wait = wait or self._aborted.wait
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._adaptive = adaptive
        self._lowered_to: Optional[float] = None  # the rate right after the last decrease; None: not lowered
        self._lowered_at = float("-inf")  # when it was lowered
        self._last_call = float("-inf")
        self._first_call: Optional[float] = None
        self._accepted: collections.deque[float] = collections.deque()  # when the calls answered without 429 were sent
        self.calls = 0
        self.pauses = 0  # pauses imposed by Planhat's answers (429, no calls left)
        self.decreases = 0  # times a 429 lowered the rate

    def now(self) -> float:
        """The pacer's clock: the moment to pass as `sent_at` to `observe`."""
        return self._clock()

    def abort(self) -> None:
        self._aborted.set()

    def allowed_per_minute(self) -> float:
        """The rate calls may go at now: the budget, or less after a 429 (recovering)."""
        with self._lock:
            return self._allowed(self._clock())

    def _allowed(self, now: float) -> float:
        if self._lowered_to is None:
            return float(self.calls_per_minute)
        since = max(0.0, now - max(self._lowered_at, self._paused_until))
        allowed = self._lowered_to + self.calls_per_minute * RECOVERY_PER_MINUTE * since / 60.0
        if allowed >= self.calls_per_minute:
            self._lowered_to = None  # recovered: the plain sliding window again
            return float(self.calls_per_minute)
        return allowed

    def wait(self) -> bool:
        """Block until a call may be made; False when the wait was aborted (then make no call)."""
        while not self._aborted.is_set():
            with self._lock:
                now = self._clock()
                pause = self._paused_until - now
                if pause <= 0:
                    allowed = self._allowed(now)
                    if allowed < self.calls_per_minute:  # lowered: calls evenly spaced
                        pause = self._last_call + 60.0 / allowed - now
                if pause <= 0 and self._limiter.try_acquire(_NAME):
                    self.calls += 1
                    self._last_call = now
                    if self._first_call is None:
                        self._first_call = now
                    return True
                if pause <= 0:
                    milliseconds = self._bucket.waiting(RateItem(_NAME, self._millis.now()))
                    pause = max(int(milliseconds) / 1000.0, 0.01) if isinstance(milliseconds, int) else 0.05
            if self._wait(min(pause, MAX_PAUSE_SECONDS)):
                return False
        return False

    def observe(
        self,
        status: Optional[int],
        headers: Mapping[str, str],
        retry_after: Optional[float],
        sent_at: Optional[float] = None,
    ) -> Optional[float]:
        """One answer, to the call made at `sent_at` (the pacer's clock; None: now): a 429, or no calls
        left, holds every later call; a 429 also lowers the rate (see the module's docstring).
        Returns the new rate (calls per minute) when this answer lowered it, else None."""
        pause = 0.0
        too_many = status is not None and meaning(Host.MAIN, status) is Meaning.RATE_LIMITED
        if too_many:
            pause = retry_after if retry_after is not None else TOO_MANY_REQUESTS_PAUSE_SECONDS
        elif no_calls_left(headers):
            pause = retry_after if retry_after is not None else NO_CALLS_LEFT_PAUSE_SECONDS
        with self._lock:
            now = self._clock()
            if not too_many:
                self._accepted.append(sent_at if sent_at is not None else now)
            while self._accepted and self._accepted[0] < now - WINDOW_SECONDS:
                self._accepted.popleft()
            if pause > 0:
                self.pauses += 1
                self._paused_until = max(self._paused_until, now + min(pause, MAX_PAUSE_SECONDS))
            lowers = too_many and self._adaptive and retry_after != 0
            if lowers and (sent_at if sent_at is not None else now) >= self._lowered_at:
                floor = max(1.0, self.calls_per_minute * MIN_SHARE)
                span = min(WINDOW_SECONDS, max(1.0, now - (self._first_call if self._first_call is not None else now)))
                accepted = len(self._accepted) * 60.0 / span
                allowed = self._allowed(now)
                base = min(allowed, max(accepted, allowed * MAX_CUT))
                self._lowered_to = max(floor, base * DECREASE_FACTOR)
                self._lowered_at = now
                self.decreases += 1
                return self._lowered_to
        return None
