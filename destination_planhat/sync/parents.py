"""Parents first: a batch of end users (deals, line items, ...) waits for the parents read before it.

Planhat refuses a reference to a record it does not know, so an end user synced in the same run as
its new company must reach Planhat after the company, and a line item after its deal, which comes
after its company. When the writer cuts a batch of an object with references (planhat.Reference:
companies, deals, products), it first hands over the open batch of each stream writing a parent
object, that batch in turn handing over its own parents' open batches first (through as many levels
as the references go: company -> deal -> line item, product -> line item), then notes which of the
parent's batches are not yet acknowledged (`pending`); the batch's sender waits for exactly those
(`wait`). A parent batch waits for its own parents the same way, so a line item waits for its
company through its deal. Later parent batches never hold it back. A failure of the sync ends every wait.

Why the waiting batch may hold a back-pressure slot (sync/sender.py) without a deadlock: a parent batch
takes its slot before it is handed over, so every batch in `pending` is already in its object's lane
with its slot, and its lane never waits for an object that waits for it (references go from child
to parent only, never back, at any depth). integration_tests/test_objects_pacing_and_parents.py
queues end users and line items batches into every slot (1, 2 and 8 in flight) before their parents
are answered.
"""

from __future__ import annotations

import threading

from destination_planhat.planhat.api import Endpoint


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
