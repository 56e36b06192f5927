"""The pieces of a cancelled sync: the signal handler's two steps and the bounded wait for answers."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from destination_planhat.cancel_signals import CancelOnSignal
from destination_planhat.sync.cancellation import SyncCancelled, cancelled_error, wait_for_answers
from destination_planhat.sync.ledger import Ledger


class ExitNow(Exception):
    pass


def test_the_first_signal_cancels_on_a_thread_and_the_second_exits_at_once():
    cancelled: list[str] = []
    done = threading.Event()

    def cancel(name: str) -> None:
        cancelled.append(name)
        done.set()

    def exit_now(number: int, name: str):
        raise ExitNow(name)

    before = signal.getsignal(signal.SIGTERM)
    with CancelOnSignal(cancel, exit_now) as handler:
        os.kill(os.getpid(), signal.SIGTERM)
        assert done.wait(10), "the cancel was handed to a thread"
        assert cancelled == ["SIGTERM"] and handler.received == "SIGTERM"
        with pytest.raises(ExitNow, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler is back"


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


def test_the_wait_ends_when_the_last_request_is_answered():
    ledger, time = Ledger(), FakeTime()
    ledger.request_started("metrics")
    ledger.request_started("metrics")

    def wait(seconds: float) -> None:
        time.wait(seconds)
        if time.now >= 0.5 and ledger.in_flight()["metrics"]:
            ledger.request_finished("metrics")

    assert wait_for_answers(ledger, 20, time.clock, wait) == 0
    assert time.now < 20


def test_the_wait_gives_up_after_the_grace_and_says_how_many_are_unanswered():
    ledger, time = Ledger(), FakeTime()
    ledger.request_started("companies")
    assert wait_for_answers(ledger, 2.0, time.clock, time.wait) == 1
    assert time.now == pytest.approx(2.0)


def test_the_error_names_the_signal_the_grace_and_what_a_resume_does():
    error = cancelled_error(SyncCancelled("SIGTERM"), 20, 3)
    assert "cancelled (SIGTERM)" in error.message
    assert "3 request(s) on their way were still unanswered after the grace of 20 s" in error.message
    assert "next attempt sends the records after the last emitted state" in error.message
    assert "every request on its way was answered" in cancelled_error(SyncCancelled("SIGINT"), 20, 0).message
