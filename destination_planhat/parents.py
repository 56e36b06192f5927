"""Parents first: a batch of end users (licenses, ...) referencing companies waits for the companies
read before it.

Planhat refuses a reference to a company it does not know, so an end user synced in the same run as
its new company must reach Planhat after the company. When the writer cuts a batch of an object
with company references, it first hands over the companies stream's open batch, then notes which
company batches are not yet acknowledged (`pending`); the batch's sender waits for exactly those
(`wait`). Later company batches never hold it back. A failure of the sync ends every wait.
"""

from __future__ import annotations

import threading

from destination_planhat.planhat import Endpoint


class ParentBarrier:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pending: dict[Endpoint, set[int]] = {}
        self._aborted = False

    def handed_over(self, endpoint: Endpoint, batch_id: int) -> None:
        with self._changed:
            self._pending.setdefault(endpoint, set()).add(batch_id)

    def acknowledged(self, endpoint: Endpoint, batch_id: int) -> None:
        with self._changed:
            self._pending.get(endpoint, set()).discard(batch_id)
            self._changed.notify_all()

    def pending(self, endpoint: Endpoint) -> frozenset[int]:
        with self._changed:
            return frozenset(self._pending.get(endpoint, ()))

    def wait(self, endpoint: Endpoint, batch_ids: frozenset[int]) -> bool:
        """Until none of `batch_ids` of `endpoint` is unacknowledged; False when the sync failed meanwhile."""
        with self._changed:
            while not self._aborted and batch_ids & self._pending.get(endpoint, set()):
                self._changed.wait()
            return not self._aborted

    def abort(self) -> None:
        with self._changed:
            self._aborted = True
            self._changed.notify_all()
