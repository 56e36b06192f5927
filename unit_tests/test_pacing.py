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
    MIN_SHARE,
    NO_CALLS_LEFT_PAUSE_SECONDS,
    RECOVERY_PER_MINUTE,
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


# (what happens, in order) -> the allowed rate after it; budget 200, 100 calls accepted over the
# first 50 s before the first event: ACCEPTED a minute.
ACCEPTED = 120
DECREASES = [
    (
        "a 429 lowers the rate to 90% of what Planhat accepted over the last window",
        [("429", 0.0)],
        ACCEPTED * DECREASE_FACTOR,
    ),
    (
        "a 429 for a call sent before that decrease does not lower it again",
        [("429", 0.0), ("429 sent before", 0.0)],
        ACCEPTED * DECREASE_FACTOR,
    ),
    (
        "a 429 for a call sent after it lowers it again, from the lowered rate",
        [("429", 0.0), ("429", 1.0)],
        ACCEPTED * DECREASE_FACTOR * DECREASE_FACTOR,
    ),
    ("never below the floor (5% of the budget)", [("429", 0.0)] + [("429", 1.0)] * 40, 200 * MIN_SHARE),
    (
        "it recovers by 2% of the budget per minute from the end of the pause (10 s here)",
        [("429, retry after 10 s", 0.0), ("", 70.0 - 1.0)],
        ACCEPTED * DECREASE_FACTOR + 200 * RECOVERY_PER_MINUTE,
    ),
    ("and is back to the budget in the end", [("429", 0.0), ("", 3600.0)], 200),
    ("no calls left pauses, but does not lower the rate", [("remaining 0", 0.0)], 200),
    ("a 500 changes nothing", [("500", 0.0)], 200),
    ("a 429 is only a pause without adaptation", [("429 (not adaptive)", 0.0)], 200),
    ("a 429 asking for the call again at once (Retry-After: 0) lowers nothing", [("429, retry at once", 0.0)], 200),
]


@pytest.mark.parametrize("events, expected", [case[1:] for case in DECREASES], ids=[case[0] for case in DECREASES])
def test_what_lowers_the_rate_and_how_it_recovers(events: list[tuple[str, float]], expected: float) -> None:
    pacer, clock = pacer_at(200, adaptive=not any("not adaptive" in event for event, _ in events))
    accept(pacer, clock, 100, 0.5)
    sent_before = clock.now - 0.5
    for event, after in events:
        clock.now += after
        if event.startswith("429") and event != "429 sent before":
            assert pacer.wait()
            retry_after = 10.0 if "10 s" in event else 0.0 if "at once" in event else 1.0
            pacer.observe(429, {}, retry_after, pacer.now())
        elif event == "429 sent before":
            pacer.observe(429, {}, 1.0, sent_before)
        elif event == "remaining 0":
            pacer.observe(200, {"X-Rate-Limit-Remaining": "0"}, None, pacer.now())
        elif event == "500":
            pacer.observe(500, {}, None, pacer.now())
    # (rel: the rate recovers a little during the second or so these events take)
    assert pacer.allowed_per_minute() == pytest.approx(expected, rel=0.01)


def test_early_in_a_sync_the_accepted_rate_is_taken_per_minute_since_the_first_call() -> None:
    """A 429 after 10 quick calls must not drop the rate to 10 a minute."""
    pacer, clock = pacer_at(200)
    accept(pacer, clock, 10, 0.1)
    pacer.observe(429, {}, 1.0, pacer.now())
    assert pacer.allowed_per_minute() == pytest.approx(200 * DECREASE_FACTOR)


def test_one_429_never_cuts_the_rate_by_more_than_half() -> None:
    """A 429 on the first call: nothing was accepted yet, which says nothing about the quota."""
    pacer, clock = pacer_at(200)
    assert pacer.wait()
    pacer.observe(429, {}, 1.0, pacer.now())
    assert pacer.allowed_per_minute() == pytest.approx(200 * MAX_CUT * DECREASE_FACTOR)


def test_a_lowered_rate_spaces_the_calls_evenly_and_a_pause_holds_them() -> None:
    pacer, clock = pacer_at(200)
    accept(pacer, clock, 150, 0.4)  # 150 a minute accepted
    pacer.observe(429, {}, 5.0, pacer.now())
    rate = pacer.allowed_per_minute()
    assert rate == pytest.approx(150 * DECREASE_FACTOR, rel=0.01)
    started = clock.now
    sent = []
    for _ in range(3):
        assert pacer.wait()
        sent.append(clock.now)
    assert sent[0] == pytest.approx(started + 5.0)  # the pause first
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    # Evenly spaced at the lowered rate (recovering a little meanwhile, so a hair shorter).
    assert all(60 / rate * 0.99 < gap <= 60 / rate + 1e-9 for gap in gaps)


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
    (200, 100, 60.0, 3000, 8, 29),  # another integration takes half the quota: a 429 a window, or a few
    (200, 150, 60.0, 4500, 8, 29),
    (200, 60, 120.0, 1800, 22, 29),  # a longer window than the connector's
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
