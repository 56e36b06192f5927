"""The main API's pacer (planhat/pacing.py): the sliding window with its margin, pauses, and the rate after a 429.

Every test drives the pacer (and pyrate-limiter's bucket inside it) with one fake clock; a wait
moves that clock forward, so nothing here sleeps.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pytest

from destination_planhat.planhat.pacing import (
    DECREASE_FACTOR,
    MAX_CUT,
    MAX_RECOVERY_SECONDS,
    MIN_SHARE,
    NO_CALLS_LEFT_PAUSE_SECONDS,
    RECOVERY_SECONDS,
    WINDOW_MARGIN_SECONDS,
    WINDOW_SECONDS,
    CallPacer,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def pacer_at(budget: int, **kwargs: Any) -> tuple[CallPacer, Clock]:
    clock = Clock()
    return CallPacer(budget, clock=lambda: clock.now, wait=clock.wait, **kwargs), clock


def accept(pacer: CallPacer, clock: Clock, calls: int, every: float) -> None:
    """`calls` calls, `every` seconds apart, each answered 200."""
    for _ in range(calls):
        assert pacer.wait()
        pacer.observe(200, {}, None, pacer.now())
        clock.now += every


def test_the_window_holds_the_budget_for_a_minute_and_its_margin() -> None:
    pacer, clock = pacer_at(3)
    assert [pacer.wait() for _ in range(3)] == [True] * 3 and clock.waits == []
    assert pacer.wait()  # the fourth call waited for the first to leave the window
    assert clock.now == pytest.approx(WINDOW_SECONDS + WINDOW_MARGIN_SECONDS, abs=0.02)


def storm(pacer: CallPacer, clock: Clock, count: int, retry_after: float = 2.0) -> list[Optional[float]]:
    """`count` calls in a row answered 429 with `retry_after`: what each answer lowered the rate to."""
    lowered = []
    for _ in range(count):
        assert pacer.wait()
        sent = pacer.now()
        clock.now += 0.05
        lowered.append(pacer.observe(429, {}, retry_after, sent))
    return lowered


def test_a_429_before_any_call_was_accepted_only_pauses() -> None:
    """A 429 on the first call says nothing about the quota (another integration used it up)."""
    pacer, clock = pacer_at(200)
    assert storm(pacer, clock, 1) == [None]
    assert pacer.allowed_per_minute() == 200
    assert pacer.wait() and clock.now == pytest.approx(2.05)  # the pause, then at once


def test_a_run_of_429s_with_no_call_accepted_between_them_lowers_the_rate_once() -> None:
    """Six 429s in a row used to drive the rate from 200 to 10 a minute (issue 19): they are one event."""
    pacer, clock = pacer_at(200)
    accept(pacer, clock, 10, 0.1)
    lowered = storm(pacer, clock, 6)
    # The calls Planhat accepted in its window (10), but never more than half cut in one step.
    assert lowered == [pytest.approx(200 * MAX_CUT * DECREASE_FACTOR)] + [None] * 5
    assert pacer.decreases == 1


def test_after_the_first_lowering_calls_still_go_as_fast_as_the_lowered_window_allows() -> None:
    """A sync shorter than a window is not slowed: the lowered rate counts calls per window, it does
    not space them."""
    pacer, clock = pacer_at(200)
    accept(pacer, clock, 10, 0.1)
    [lowered] = storm(pacer, clock, 1, retry_after=5.0)
    assert lowered == pytest.approx(200 * MAX_CUT * DECREASE_FACTOR)
    paused_until = clock.now + 5.0
    for _ in range(30):
        assert pacer.wait()
    assert clock.now == pytest.approx(paused_until)  # the pause, then thirty calls at once


def test_the_lowered_window_holds_90_percent_of_what_planhat_accepted_in_its_window() -> None:
    pacer, clock = pacer_at(200)
    accept(pacer, clock, 100, 0.5)  # 100 accepted over the last 50 s, then refused
    [lowered] = storm(pacer, clock, 1, retry_after=5.0)
    assert lowered == pytest.approx(100 * DECREASE_FACTOR)
    assert pacer.wait()
    # The window held 101 calls: the next waits until about 90 are left in it (11 or 12 gone, as the
    # rate recovers meanwhile), long after the 5 s pause.
    window = WINDOW_SECONDS + WINDOW_MARGIN_SECONDS
    assert 0.5 * 10 + window <= clock.now <= 0.5 * 11 + window


def test_a_429_while_the_rate_is_lowered_spaces_the_calls_evenly() -> None:
    """Refused again under the lowered window: Planhat's window is shorter than ours. Calls are then
    spaced evenly, at 90% of the rate Planhat accepted (per minute)."""
    pacer, clock = pacer_at(200)
    accept(pacer, clock, 60, 1.0)  # 60 a minute
    [first] = storm(pacer, clock, 1, retry_after=1.0)
    assert first == pytest.approx(200 * MAX_CUT * DECREASE_FACTOR)  # at least half the allowed rate
    clock.now += 1.0
    accept(pacer, clock, 5, 1.0)
    [lowered] = storm(pacer, clock, 1, retry_after=1.0)
    # 65 accepted since the first call, per minute.
    assert lowered == pytest.approx(65 * 60 / clock.now * DECREASE_FACTOR, rel=0.01)
    sent = []
    for _ in range(3):
        assert pacer.wait()
        sent.append(clock.now)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert all(60 / lowered * 0.99 < gap <= 60 / lowered + 1e-9 for gap in gaps), gaps


def test_the_rate_comes_back_to_the_budget_within_the_recovery_time_after_the_pause() -> None:
    pacer, clock = pacer_at(200)
    accept(pacer, clock, 100, 0.5)
    [lowered] = storm(pacer, clock, 1, retry_after=10.0)
    assert lowered is not None
    pause_ends = clock.now + 10.0
    clock.now = pause_ends + RECOVERY_SECONDS / 2
    # Convex: an eighth of the way back at half the time (near what Planhat accepted for longer).
    assert pacer.allowed_per_minute() == pytest.approx(lowered + (200 - lowered) / 8)
    clock.now = pause_ends + RECOVERY_SECONDS
    assert pacer.allowed_per_minute() == 200


def test_when_429s_keep_coming_back_each_recovery_takes_twice_as_long() -> None:
    pacer, clock = pacer_at(200)
    recoveries = []
    for _ in range(6):
        accept(pacer, clock, 20, 0.5)
        storm(pacer, clock, 1, retry_after=1.0)
        recoveries.append(pacer.recovery_seconds)
    assert recoveries == [RECOVERY_SECONDS * 2**i for i in range(4)] + [MAX_RECOVERY_SECONDS] * 2
    # Quiet for long enough: the next 429 is a new burst, back to the short recovery.
    clock.now += 2 * MAX_RECOVERY_SECONDS + 1
    accept(pacer, clock, 20, 0.5)
    storm(pacer, clock, 1, retry_after=1.0)
    assert pacer.recovery_seconds == RECOVERY_SECONDS


def test_never_below_the_floor() -> None:
    pacer, clock = pacer_at(200)
    for _ in range(40):
        accept(pacer, clock, 1, 0.1)
        storm(pacer, clock, 1, retry_after=1.0)
    assert pacer.allowed_per_minute() == pytest.approx(200 * MIN_SHARE, rel=0.01)


@pytest.mark.parametrize(
    "status, headers, retry_after, adaptive",
    [
        (429, {}, 0.0, True),  # asks for the call again at once: it refused that call, the quota is not spent
        (200, {"X-Rate-Limit-Remaining": "0"}, None, True),  # no calls left: a pause
        (500, {}, None, True),
        (429, {}, 1.0, False),  # not adaptive: a pause only
    ],
)
def test_what_does_not_lower_the_rate(
    status: int, headers: dict[str, str], retry_after: Optional[float], adaptive: bool
) -> None:
    pacer, clock = pacer_at(200, adaptive=adaptive)
    accept(pacer, clock, 100, 0.5)
    assert pacer.wait()
    assert pacer.observe(status, headers, retry_after, pacer.now()) is None
    assert pacer.allowed_per_minute() == 200


def test_six_429s_then_quiet_cost_the_waits_asked_for_and_little_more() -> None:
    """Issue 19's storm, on the pacer's clock (one lane, 50 ms an answer, 40 calls; the client waits
    each Retry-After before its next call): the sync takes the waits Planhat asked for plus no more
    than twice the time of the calls themselves."""
    for accepted_before in (0, 10):
        pacer, clock = pacer_at(200)
        accept(pacer, clock, accepted_before, 0.05)
        for _ in range(6):
            assert pacer.wait()
            sent = pacer.now()
            clock.now += 0.05
            pacer.observe(429, {}, 2.0, sent)
            clock.now += 2.0  # the client's wait
        accept(pacer, clock, 40 - accepted_before, 0.05)
        assert clock.now <= 6 * 2.0 + 2 * (46 * 0.05), (accepted_before, clock.now)
        assert pacer.decreases == (1 if accepted_before else 0)


def test_no_calls_left_holds_the_next_call() -> None:
    pacer, clock = pacer_at(200)
    assert pacer.wait()
    pacer.observe(200, {"X-Rate-Limit-Remaining": "0"}, None, pacer.now())
    assert pacer.wait() and clock.now == pytest.approx(NO_CALLS_LEFT_PAUSE_SECONDS)


def simulate(budget: int, limit: int, window_s: float, calls: int, adaptive: bool) -> tuple[int, int]:
    """One lane (50 ms per answer) against a fixed-window limit of `limit` calls per `window_s`,
    answering 429 with Retry-After (the window's rest) above it: (429s, calls the pacer let through)."""
    pacer, clock = pacer_at(budget, adaptive=adaptive)
    window_started: Optional[float] = None
    used = done = too_many = 0
    while done < calls:
        assert pacer.wait()
        sent = pacer.now()
        if window_started is None or sent - window_started >= window_s:
            window_started, used = sent, 0
        clock.now += 0.05
        if used >= limit:
            too_many += 1
            pacer.observe(429, {}, float(max(1, math.ceil(window_started + window_s - sent))), sent)
        else:
            used, done = used + 1, done + 1
            pacer.observe(200, {}, None, sent)
    return too_many, pacer.calls


# budget, Planhat's limit per window, the window, calls to make -> 429s at most, adaptive / not.
SIMULATIONS = [
    (200, 200, 60.0, 1000, 0, 0),  # the budget is the quota: never a 429
    (120, 200, 60.0, 500, 0, 0),
    (200, 100, 60.0, 3000, 9, 29),  # another integration takes half the quota: a 429 every few windows
    (200, 150, 60.0, 4500, 7, 29),
    (200, 60, 120.0, 1800, 21, 29),  # a longer window than the connector's
    (2400, 4, 1.0, 60, 3, 14),  # what integration_tests/test_objects_pacing_and_parents.py plays through the CLI
]


@pytest.mark.parametrize("budget, limit, window_s, calls, adaptive_at_most, plain", SIMULATIONS)
def test_a_quota_below_the_budget_costs_fewer_429s_when_the_rate_adapts(
    budget: int, limit: int, window_s: float, calls: int, adaptive_at_most: int, plain: int
) -> None:
    adaptive_429s, adaptive_calls = simulate(budget, limit, window_s, calls, adaptive=True)
    plain_429s, plain_calls = simulate(budget, limit, window_s, calls, adaptive=False)
    assert plain_429s == plain and plain_calls == calls + plain_429s
    assert adaptive_429s <= adaptive_at_most and adaptive_calls == calls + adaptive_429s
    if plain:
        assert adaptive_429s < plain_429s
