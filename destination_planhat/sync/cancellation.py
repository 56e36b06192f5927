"""A sync cancelled by the platform (SIGTERM or SIGINT): what the writer does, and what it says.

Why a cancel is not a kill: Airbyte stops a connector with SIGTERM and kills it after a grace period.
Batches already on their way may be processed by Planhat; if the connector died at once, the states
behind them would never come out and the next attempt would send those records again (Planhat's
metrics cannot undo a duplicate). So a cancel stops the sync the way a failed batch does (nothing
more is read or sent, retries stop), but first lets the requests on their way be answered, for up
to `shutdown_grace_seconds`, so that every state they make safe is emitted. Nothing is emitted that
is not safe: states still wait for their batches, and batches never sent are never acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.planhat.errors import transient_error
from destination_planhat.sync.ledger import Ledger

# How often the in-flight count is looked at while the requests on their way finish.
POLL_SECONDS = 0.05


class SyncCancelled(Exception):
    """The first failure of a cancelled sync: the signal that cancelled it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"the sync was cancelled ({signal_name})")
        self.signal_name = signal_name


def wait_for_answers(
    ledger: Ledger,
    grace_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[float], object] = time.sleep,
) -> int:
    """Wait until no request is on its way (every sender thread has answered or dropped its batch),
    at most `grace_seconds`; the number of requests still unanswered then."""
    deadline = clock() + grace_seconds
    while True:
        unanswered = sum(ledger.in_flight().values())
        if unanswered <= 0 or clock() >= deadline:
            return max(unanswered, 0)
        wait(min(POLL_SECONDS, max(deadline - clock(), 0.0)))


def cancelled_error(cancel: SyncCancelled, grace_seconds: float, unanswered: int) -> AirbyteTracedException:
    """What the platform is told: cancelled, what became of the requests on their way, what a resume does."""
    if unanswered:
        waited = (
            f"{unanswered} request(s) on their way were still unanswered after the grace of {grace_seconds:g} s "
            "(shutdown_grace_seconds) and were given up"
        )
    else:
        waited = "every request on its way was answered before the connector stopped"
    return transient_error(
        f"The sync was cancelled ({cancel.signal_name}): the connector stopped reading at once, {waited}, and "
        "emitted the state of every record Planhat acknowledged. The next attempt sends the records after the "
        "last emitted state again.",
        f"cancelled by {cancel.signal_name}; {unanswered} request(s) unanswered after {grace_seconds:g} s",
    )
