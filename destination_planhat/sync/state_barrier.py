"""STATE messages wait here until every record that came before them is acknowledged by Planhat.

Why batch ids rather than record counts: streams interleave, and a state must wait for records of
every stream. Each batch gets an increasing id when its first record arrives; a state that arrives
when the next id is `b` depends exactly on the batches with ids below `b` (they hold every record
read so far). It is released once none of those is still unacknowledged. A batch that also holds
records read after the state only delays the state, never releases it early.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airbyte_cdk.models import AirbyteMessageSerializer, AirbyteStateMessage

from destination_planhat.sync.state_stats import StateCut


class InvalidState(ValueError):
    """A STATE message the protocol's model cannot read."""


def read_state(message: Any) -> AirbyteStateMessage:
    """The CDK's model of a STATE message (for its type and stream; the message itself is what is echoed)."""
    if type(message) is not dict or type(message.get("state")) is not dict:
        raise InvalidState("a STATE message without a state object")
    try:
        parsed = AirbyteMessageSerializer.load(message)
    except Exception as exc:  # serpyco raises its own validation errors
        raise InvalidState(f"a STATE message that is not valid ({exc})") from exc
    if parsed.state is None:
        raise InvalidState("a STATE message without a state object")
    return parsed.state


@dataclass
class PendingState:
    """A STATE message as it came in, waiting for the records before it.

    Why the raw message and not the CDK's model: the platform adds keys no model knows (its `id`,
    which it requires back on every state it handed out; `sourceStats`; whatever a later protocol
    adds) and the models drop them. So the message goes out exactly as it came in, every key at every
    level, with only `state.destinationStats` set (see sync/state_stats.py for its counts)."""

    message: dict[str, Any]
    cut: StateCut

    def with_counts(self, written: int, rejected: int) -> dict[str, Any]:
        state = self.message["state"]
        stats = state.get("destinationStats")
        stats = dict(stats) if type(stats) is dict else {}
        # Numbers with a decimal point, as the protocol's `number` and the platform's Doubles have them.
        stats["recordCount"] = float(written)
        stats["rejectedRecordCount"] = float(rejected)
        state["destinationStats"] = stats
        return self.message


class StateBarrier:
    def __init__(self, emit: Callable[[PendingState], None]) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._next_batch_id = 0
        self._unacknowledged: set[int] = set()
        self._waiting: deque[tuple[int, PendingState]] = deque()
        self._closed = False
        self.emitted = 0

    def close(self) -> None:
        """Emit nothing more, even if batches are acknowledged later (the sync is over or failed)."""
        with self._lock:
            self._closed = True

    def open_batch(self) -> int:
        with self._lock:
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            self._unacknowledged.add(batch_id)
            return batch_id

    def acknowledge(self, batch_id: int) -> None:
        with self._lock:
            self._unacknowledged.discard(batch_id)
            self._release()

    def add_state(self, message: PendingState) -> None:
        with self._lock:
            self._waiting.append((self._next_batch_id, message))
            self._release()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _release(self) -> None:
        # Emitting under the lock keeps states in their input order across sender threads.
        if self._closed:
            return
        oldest_unacknowledged = min(self._unacknowledged, default=None)
        while self._waiting and (oldest_unacknowledged is None or self._waiting[0][0] <= oldest_unacknowledged):
            _, message = self._waiting.popleft()
            try:
                self._emit(message)
            except BaseException:
                # A state that could not go out (its rejected records could not be stored): no later
                # state may go out either, or it would vouch for the records of this one.
                self._closed = True
                raise
            self.emitted += 1
