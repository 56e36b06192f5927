"""Deletes and archives: one call per record, by the record's key, under a guard of `max_deletes` per sync.

Planhat has no bulk delete: `DELETE /{object}/{id}` deletes one record, by its Planhat id
(planhat.Target.operations[Operation.DELETE]). The record's key (externalId, sourceId) is turned into
that id by the keys Planhat has (sync/planhat_keys.py, read with the ids once per stream); a key
Planhat does not have is "already absent", not an error. An archive (`archive: true`, objects with
the `archived` flag) is the bulk upsert of `{_id, archived: true}`, one record per call too.

Each call is made by the reading thread, in the order the records were read: before it, the open
batches of every stream writing the same object are sent and every batch in flight is answered
(`settle`), so that a key's upserts and deletes reach Planhat in the order they were read (a record
deleted and created again in one sync ends up present). A state that follows a delete is therefore
never emitted before the delete was answered.

The guard: at most `max_deletes` deletes and archives per sync (0: none). The one that would pass it
is not sent, and the sync fails with a config error that says how to raise the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import orjson

from destination_planhat.planhat.answers import PostResult
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import config_error
from destination_planhat.sync.ledger import Ledger

logger = logging.getLogger("airbyte")

ALREADY_ABSENT = "already absent from Planhat (delete): no record with this key"
EXAMPLES = 3  # deletes and archives logged per stream


@runtime_checkable
class DeleteClient(Protocol):
    def delete(self, endpoint: Endpoint, planhat_id: str) -> bool: ...
    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "") -> PostResult: ...


class Deletes:
    """The deletes and archives of one sync: the guard, the calls, and their books."""

    def __init__(
        self, client: DeleteClient, ledger: Ledger, max_deletes: int, settle: Callable[[Endpoint], None]
    ) -> None:
        """`settle(endpoint)`: send what is buffered for the object and wait for every answer (see above)."""
        self._client = client
        self._ledger = ledger
        self.max_deletes = max_deletes
        self._settle = settle
        self.asked = 0  # deletes and archives asked for (sent, or refused by the guard)

    def _guard(self, stream: str, endpoint: Endpoint, archive: bool) -> None:
        self.asked += 1
        if self.asked <= self.max_deletes:
            return
        what = "archive" if archive else "delete"
        if self.max_deletes == 0:
            raise config_error(
                f"stream '{stream}' asks to {what} {endpoint.label.lower()} in Planhat, but `max_deletes` is 0, which "
                "turns deletes off: nothing was deleted. Set `max_deletes` (Max deletes per sync) to the number of "
                "records this sync may delete"
            )
        raise config_error(
            f"stream '{stream}' asks for more than `max_deletes` ({self.max_deletes:,}) deletes and archives in one "
            f"sync: {self.asked - 1:,} were sent and delete number {self.asked:,} was not. If that many are meant, raise "
            "`max_deletes` (Max deletes per sync) above the number of records to delete and run the sync again (the "
            "records already deleted count as already absent then)"
        )

    def settle(self, endpoint: Endpoint) -> None:
        """What was read for `endpoint` so far is sent and answered (before its keys are looked at)."""
        self._settle(endpoint)

    def delete(self, stream: str, endpoint: Endpoint, planhat_id: str, key: str, *, archive: bool) -> bool:
        """Delete (or archive) the record `planhat_id`; False when Planhat no longer has it."""
        self._guard(stream, endpoint, archive)
        self._settle(endpoint)
        if archive:
            body = orjson.dumps([{"_id": planhat_id, "archived": True}])
            result = self._client.post(endpoint, body, context=f"stream '{stream}': archive: ")
            done = not result.errors  # an _id Planhat no longer has comes back as an error
        else:
            done = self._client.delete(endpoint, planhat_id)
        stats = self._ledger.stats(stream)
        if not done:
            stats.already_absent += 1
            self._ledger.settled(stream, ALREADY_ABSENT)
            return False
        self._ledger.count(stream, sent=1, acknowledged=1, processed=1, requests=1)
        if archive:
            stats.archived += 1
        else:
            stats.deleted += 1
        if stats.deleted + stats.archived <= EXAMPLES:
            logger.info(
                f"stream '{stream}': {'archived' if archive else 'deleted'} the {endpoint.target.model} {key!r} "
                f"(Planhat id {planhat_id})"
            )
        return True
