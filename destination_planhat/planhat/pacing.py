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

On top of it, the answers slow the pace (issue 19: a rate limit is a wait, and a short burst of
429s must not cost minutes):
- a 429 (with or without Retry-After) or an answer saying `X-Rate-Limit-Remaining: 0` holds every
  later call until the hint has passed (a pause);
- a 429 also lowers the allowed rate (`allowed_per_minute`) when it is evidence that the quota is
  lower than the budget (another integration shares it, or the tenant's is smaller): Planhat
  accepted calls sent since the rate last changed, and then refused one. A run of 429s with no call
  accepted between them is one event, not one per 429: Planhat refuses everything until the time
  it gave, which says nothing more about the quota (six 429s in a row used to drive the rate from
  200 to 10 a minute). A 429 before any call was accepted lowers nothing either, and neither does
  one with `Retry-After: 0` (it asks for the call again at once: it refused that call, it does not
  say the quota is spent).
- The first lowering counts Planhat's window: at most DECREASE_FACTOR times the calls Planhat
  accepted in the last WINDOW_SECONDS go in any window (never less than MAX_CUT of the allowed rate
  in one step: a 429 early in a sync, when few calls have been answered, says little about the
  quota). Calls still go as fast as the window allows, so a sync shorter than a window is not
  slowed. If 429s come back while the rate is lowered, Planhat's window must be shorter than the
  connector's (or the quota lower still): calls are then spaced evenly, at DECREASE_FACTOR times the
  rate Planhat accepted (calls answered without 429 in the last ACCEPTED_LOOKBACK_SECONDS, or since
  the first call early in a sync, per minute: Planhat's window is 60 to 120 s in older docs).
- The rate never goes below MIN_SHARE of the budget, and comes back: linearly from the end of the
  pause, to the full budget within RECOVERY_SECONDS (then the plain window again). When 429s keep
  coming back (a lowering within twice the recovery time of the previous one), each recovery takes
  twice as long, at most MAX_RECOVERY_SECONDS: a quota that stays below the budget then costs a
  429 every few minutes, not one a minute.
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
# After a 429 that lowers the rate: the accepted rate times this, never less than MAX_CUT of the
# allowed rate in one step, never below MIN_SHARE of the budget.
DECREASE_FACTOR = 0.9
MAX_CUT = 0.5
MIN_SHARE = 0.05
# Back to the budget this long after the pause that followed the lowering; when 429s come back
# soon, twice as long each time, at most MAX_RECOVERY_SECONDS.
RECOVERY_SECONDS = 60.0
MAX_RECOVERY_SECONDS = 480.0
# The rate Planhat accepted is measured over this long: its window is 60 to 120 s (older docs).
ACCEPTED_LOOKBACK_SECONDS = 120.0
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
        self._window = WINDOW_SECONDS + WINDOW_MARGIN_SECONDS
        self._bucket = InMemoryBucket([Rate(calls_per_minute, int(self._window * 1000))])
        self._millis = _Milliseconds(clock)
        self._limiter = Limiter(self._bucket, clock=self._millis, raise_when_fail=False)
        self._clock = clock
        self._aborted = threading.Event()
        self._wait = wait or self._aborted.wait
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._adaptive = adaptive
        self._lowered_to: Optional[float] = None  # the rate right after the last decrease; None: not lowered
        self._lowered_at = float("-inf")  # when it was last lowered
        self._spaced = False  # lowered, and calls spaced evenly (429s came back while it was lowered)
        self._recovery_seconds = RECOVERY_SECONDS
        # Planhat accepted a call sent since the rate last changed: a 429 now says something about the quota.
        self._evidence = False
        self._last_call = float("-inf")
        self._first_call: Optional[float] = None
        self._sent: collections.deque[float] = collections.deque()  # when the calls of the last window were sent
        self._accepted: collections.deque[float] = collections.deque()  # when the calls answered without 429 were sent
        self.calls = 0
        self.pauses = 0  # pauses imposed by Planhat's answers (429, no calls left)
        self.decreases = 0  # times a 429 lowered the rate

    def now(self) -> float:
        """The pacer's clock: the moment to pass as `sent_at` to `observe`."""
        return self._clock()

    def abort(self) -> None:
        self._aborted.set()

    @property
    def recovery_seconds(self) -> float:
        """How long the rate takes to come back to the budget after its last decrease (for the log)."""
        return self._recovery_seconds

    def allowed_per_minute(self) -> float:
        """The rate calls may go at now: the budget, or less after a 429 (recovering)."""
        with self._lock:
            return self._allowed(self._clock())

    def _allowed(self, now: float) -> float:
        if self._lowered_to is None:
            return float(self.calls_per_minute)
        since = max(0.0, now - max(self._lowered_at, self._paused_until))
        # Convex: near the lowered rate (just under what Planhat accepted) for most of the recovery,
        # then back to the budget, so that a quota that stays low is met again late, not at once.
        share = (since / self._recovery_seconds) ** 3
        allowed = self._lowered_to + (self.calls_per_minute - self._lowered_to) * share
        if allowed >= self.calls_per_minute:
            self._lowered_to = None  # recovered: the plain sliding window again
            self._spaced = False
            return float(self.calls_per_minute)
        return allowed

    def wait(self) -> bool:
        """Block until a call may be made; False when the wait was aborted (then make no call)."""
        while not self._aborted.is_set():
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self._window:
                    self._sent.popleft()
                pause = self._paused_until - now
                if pause <= 0:
                    allowed = self._allowed(now)
                    if self._spaced:  # calls evenly spaced at the lowered rate
                        pause = self._last_call + 60.0 / allowed - now
                    elif allowed < self.calls_per_minute and len(self._sent) >= allowed:  # the lowered window is full
                        pause = self._sent[0] + self._window - now
                if pause <= 0 and self._limiter.try_acquire(_NAME):
                    self.calls += 1
                    self._last_call = now
                    self._sent.append(now)
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
        left, holds every later call; a 429 may also lower the rate (see the module's docstring).
        Returns the new rate (calls per minute) when this answer lowered it, else None."""
        pause = 0.0
        too_many = status is not None and meaning(Host.MAIN, status) is Meaning.RATE_LIMITED
        if too_many:
            pause = retry_after if retry_after is not None else TOO_MANY_REQUESTS_PAUSE_SECONDS
        elif no_calls_left(headers):
            pause = retry_after if retry_after is not None else NO_CALLS_LEFT_PAUSE_SECONDS
        with self._lock:
            now = self._clock()
            sent = sent_at if sent_at is not None else now
            if not too_many:
                self._accepted.append(sent)
                if sent >= self._lowered_at:
                    self._evidence = True
            while self._accepted and self._accepted[0] < now - ACCEPTED_LOOKBACK_SECONDS:
                self._accepted.popleft()
            lowers = too_many and self._adaptive and retry_after != 0 and self._evidence and sent >= self._lowered_at
            lowered = self._lower(now) if lowers else None  # before this answer's pause: it starts a new recovery
            if pause > 0:
                self.pauses += 1
                self._paused_until = max(self._paused_until, now + min(pause, MAX_PAUSE_SECONDS))
        return lowered

    def _lower(self, now: float) -> float:
        """A 429 that is evidence of a quota below the allowed rate (see the module's docstring)."""
        allowed = self._allowed(now)
        # 429s came back before the last recovery ended, or within one recovery time after it.
        recurred = self.decreases > 0 and now < max(self._lowered_at, self._paused_until) + 2 * self._recovery_seconds
        if recurred:
            self._recovery_seconds = min(2 * self._recovery_seconds, MAX_RECOVERY_SECONDS)
        else:
            self._recovery_seconds = RECOVERY_SECONDS
        if self._lowered_to is not None:
            # Still lowered and refused again: Planhat's window is shorter than ours, or the quota lower
            # still. The rate it accepted, per minute, spread evenly.
            self._spaced = True
            first = self._first_call if self._first_call is not None else now
            span = min(ACCEPTED_LOOKBACK_SECONDS, max(1.0, now - first))
            accepted = len(self._accepted) * 60.0 / span
        else:  # the calls Planhat accepted in the last window
            accepted = float(sum(1 for sent in self._accepted if sent >= now - WINDOW_SECONDS))
        base = min(allowed, max(accepted, allowed * MAX_CUT))
        self._lowered_to = max(max(1.0, self.calls_per_minute * MIN_SHARE), base * DECREASE_FACTOR)
        self._lowered_at = now
        self._evidence = False
        self.decreases += 1
        return self._lowered_to
