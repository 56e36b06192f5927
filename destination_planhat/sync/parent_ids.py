"""Parents Planhat takes only by its own id (a line item's deal and product), found by their keys.

Planhat documents `extid-<externalId>` / `srcid-<sourceId>` for a reference to a company, but for a
line item's dealId and productId only the parent's Planhat id (planhat.Reference.by_planhat_id). A
record names its deal by the deal's externalId or sourceId (dealExternalId, ...), and that deal may
be written in the same sync. So the mapper leaves such a reference in the prefixed form, and the
lane that sends the line items replaces it just before sending, once the deals read before them are
acknowledged (sync/parents.py): by then Planhat has every one of them.

How an id is found: the parent's keys are read from Planhat (`GET /deals?select=_id,externalId,sourceId`,
page after page until one comes back empty, paced with every other call: sync/planhat_keys.py's
ListRead, the one list read) and kept. A batch whose
keys are all known costs no call; a batch with a key not known reads the list again (the parent was
written since, or it does not exist). A key that matches exactly one record becomes that record's
id. A key that matches none, or several (an externalId is unique per company only), is sent as it
is: Planhat judges it (and refuses it, if it takes no such form), and the item is counted as Planhat
answers. Nothing is dropped here.

The replacement can make an item longer (a short key becomes a 24-character id): planhat.id_growth
is the most it can add, which the batch buffer reserves when it measures an item
(sync/object_batching.py), so that a batch never outgrows its request size limit.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from destination_planhat.planhat.api import (
    EXTID_PREFIX,
    SRCID_PREFIX,
    Endpoint,
    by_id_references,
    reference_keys,
)
from destination_planhat.sync.object_batching import ObjectBatch
from destination_planhat.sync.planhat_keys import ListRead, Read, key_text

logger = logging.getLogger("airbyte")

_PREFIXES = (EXTID_PREFIX, SRCID_PREFIX)
_SHOWN = 3  # unresolved keys named in the log line


class ParentIds:
    """Planhat ids by parent keys, read from Planhat when a batch needs one it does not know.
    Thread-safe: lanes of different objects may ask at once (their reads go one after another)."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._known: dict[Endpoint, dict[str, tuple[str, ...]]] = {}  # parent -> prefixed key -> ids
        self.reads = 0  # list reads, each of one or more calls
        self.calls = 0

    def resolve(self, batch: ObjectBatch, label: str) -> ObjectBatch:
        """The batch with each reference that is a parent's key replaced by the parent's Planhat id
        (the same batch when there is nothing to replace)."""
        references = by_id_references(batch.endpoint.target)
        if not references:
            return batch
        items = batch.items()
        wanted: dict[Endpoint, set[str]] = {}
        for reference in references:
            for item in items:
                if type(item) is dict:
                    wanted.setdefault(reference.parent, set()).update(
                        reference_keys(reference, item.get(reference.field))
                    )
        if not any(wanted.values()):
            return batch
        with self._lock:
            for parent, keys in wanted.items():
                known = self._known.get(parent)
                if keys and (known is None or not keys <= known.keys()):
                    self._known[parent] = self._read_keys(parent, label)
            known_by_parent = {parent: self._known.get(parent, {}) for parent in wanted}
        unresolved: Counter[tuple[str, str, int]] = Counter()
        for reference in references:
            known = known_by_parent[reference.parent]
            for item in items:
                if type(item) is dict and reference.field in item:
                    item[reference.field] = _with_ids(item[reference.field], known, reference.field, unresolved)
        if unresolved:
            self._warn(label, batch.endpoint, unresolved)
        resolved = ObjectBatch.of_object_items(
            batch.batch_id, batch.route, items, batch.records, batch.opened_at, batch.number
        )
        resolved.waits_for = batch.waits_for
        return resolved

    def _read_keys(self, parent: Endpoint, label: str) -> dict[str, tuple[str, ...]]:
        """Every record of `parent` by its keys, read page after page until a page comes back empty."""
        target = parent.target
        key_fields = [
            (EXTID_PREFIX, target.keyables.get("externalId")),
            (SRCID_PREFIX, target.keyables.get("sourceId")),
        ]
        fields = ("_id", *(field for _, field in key_fields if field))
        found: dict[str, list[str]] = {}
        read = ListRead(self._read, parent, fields, "to send their Planhat ids")
        for record in read:
            for prefix, field in key_fields:
                value = key_text(record.get(field)) if field else ""
                ids = found.setdefault(prefix + value, []) if value else None
                if ids is not None and record["_id"] not in ids:  # a record a shifting offset brought twice
                    ids.append(record["_id"])
        seen, calls = read.records, read.calls
        self.reads += 1
        self.calls += calls
        logger.info(
            f"{label}: read the keys of the {target.label.lower()} in Planhat ({seen:,} record(s), "
            f"{calls} call(s)) to send their Planhat ids"
        )
        return {key: tuple(ids) for key, ids in found.items()}

    @staticmethod
    def _warn(label: str, endpoint: Endpoint, unresolved: Counter[tuple[str, str, int]]) -> None:
        items = sum(unresolved.values())
        shown = "; ".join(
            f"{field} {key!r}: " + ("no such record" if matches == 0 else f"{matches} records have it")
            for field, key, matches in list(unresolved)[:_SHOWN]
        )
        more = f" (and {len(unresolved) - _SHOWN} more)" if len(unresolved) > _SHOWN else ""
        logger.warning(
            f"{label}: {items} {endpoint.label.lower()} name a parent the connector could not find once in "
            f"Planhat ({shown}{more}); they are sent with the key as it is, and Planhat decides"
        )


def _with_ids(
    value: Any, known: Mapping[str, tuple[str, ...]], field: str, unresolved: Counter[tuple[str, str, int]]
) -> Any:
    """A reference's value with each key found once replaced by its Planhat id; `unresolved` counts the others."""
    if type(value) is list:
        return [_with_ids(one, known, field, unresolved) for one in value]
    if type(value) is not str or not value.startswith(_PREFIXES):
        return value
    ids = known.get(value, ())
    if len(ids) == 1:
        return ids[0]
    unresolved[(field, value, len(ids))] += 1
    return value
