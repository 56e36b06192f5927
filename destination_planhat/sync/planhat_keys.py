"""What Planhat already has, by key: the one place that reads an object's list (`GET /{object}?select=...`).

Two callers: a line item's parents (sync/parent_ids.py: a deal's Planhat id by its externalId or
sourceId), and the streams whose operation depends on what Planhat has (update: only keys Planhat
has; insert: only keys it lacks; delete: a key's Planhat id). Each reads page after page
(planhat.list_query: `limit`, `offset`, `select`) until a page comes back empty or brings nothing
new, through the client's `read`: paced with every other call, and retried like them.

Kept compactly: per object and key field, the set of key values (strings), and only where deletes
need them, each key's Planhat id. The writing stream keeps them current: a key inserted is added, a
key deleted removed, so that a record read twice in one sync is inserted (or deleted) once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Optional

import orjson

from destination_planhat.planhat.answers import quote
from destination_planhat.planhat.api import Endpoint, list_query
from destination_planhat.planhat.errors import PlanhatError

logger = logging.getLogger("airbyte")

# read(object, query) -> the body of `GET /{object}?{query}` (PlanhatClient.read)
Read = Callable[[Endpoint, str], bytes]


class ListRead:
    """One list read of an object: its records page after page, and the calls it took."""

    def __init__(self, read: Read, endpoint: Endpoint, fields: tuple[str, ...], why: str) -> None:
        self._read = read
        self.endpoint = endpoint
        self.fields = fields
        self._why = why  # what the keys are read for, in an error message
        self.calls = 0
        self.records = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record with an `_id`, read until a page is empty or brings nothing the page before did not
        (an offset Planhat does not honour would otherwise read the first page forever). Only the last
        page's ids are kept: a set of every id read would double what 500,000 keys cost. A record that
        a shifting offset brings twice is yielded twice (a set of keys takes it once)."""
        offset = 0
        previous: set[str] = set()
        while True:
            body = self._read(self.endpoint, list_query(self.fields, offset))
            self.calls += 1
            page = self._page(body)
            offset += len(page)
            ids: set[str] = set()
            for record in page:
                planhat_id = record.get("_id")
                if type(planhat_id) is not str or not planhat_id or planhat_id in ids:
                    continue
                ids.add(planhat_id)
                if planhat_id in previous:
                    continue
                self.records += 1
                yield record
            if not ids or ids <= previous:
                return
            previous = ids

    def _page(self, body: bytes) -> list[dict[str, Any]]:
        """A page: a JSON array of records (objects). Anything else ends the sync: what Planhat has is
        not known, and writing without knowing it could create or delete the wrong records."""
        try:
            page = orjson.loads(body)
        except orjson.JSONDecodeError:
            page = None
        if type(page) is not list:
            raise PlanhatError(
                f"reading the keys of {self.endpoint.label.lower()} (GET {self.endpoint.target.path}) {self._why}: "
                f"the answer is not a JSON list of records: {quote(body)}",
                endpoint=self.endpoint,
            )
        return [record for record in page if type(record) is dict]


def key_text(value: Any) -> str:
    """A key value as it is compared: Planhat's and the record's, both as text ("" for none)."""
    if value is None or type(value) in (dict, list, bool):
        return ""
    return str(value)


class KnownKeys:
    """The values of one key field that Planhat has for one object: a set of strings, or, where deletes
    need them, a dict of each value to its Planhat id (then the dict alone: no set beside it)."""

    def __init__(self, keys: set[str], ids: Optional[dict[str, str]] = None) -> None:
        self._keys = keys
        self._ids = ids
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids) if self._ids is not None else len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in (self._ids if self._ids is not None else self._keys)

    def planhat_id(self, key: str) -> str:
        """The Planhat id of the record with this key ("" when Planhat has none, or the ids were not read)."""
        return self._ids.get(key, "") if self._ids is not None else ""

    def added(self, key: str) -> None:
        """A record with this key was created by this sync (its id is not known: a delete reads again)."""
        with self._lock:
            if self._ids is None:
                self._keys.add(key)

    def removed(self, key: str) -> None:
        """The record with this key was deleted by this sync."""
        with self._lock:
            self._keys.discard(key)
            if self._ids is not None:
                self._ids.pop(key, None)


def fingerprint(values: Any) -> int:
    """A short stand-in for a record's values (in this process): equal values, equal fingerprints."""
    try:
        return hash(orjson.dumps(values))
    except orjson.JSONEncodeError:
        return 0  # never the fingerprint of what Planhat has: the item is sent


class PlanhatKeys:
    """The keys Planhat has, read once per object and key field, on first need."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._known: dict[tuple[Endpoint, str, bool], KnownKeys] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def of(
        self, endpoint: Endpoint, field: str, label: str, *, with_ids: bool = False, fresh: bool = False
    ) -> KnownKeys:
        """The values of `field` Planhat has for `endpoint` (read now, the first time they are asked for,
        or again with `fresh`: a stream that upserts and deletes needs the ids of what it created)."""
        with self._lock:
            known = self._known.get((endpoint, field, with_ids))
            if known is not None and not fresh:
                return known
            fields = ("_id",) if field == "_id" else ("_id", field)
            read = ListRead(self._read, endpoint, fields, f"that stream '{label}' needs")
            keys: set[str] = set()
            ids: Optional[dict[str, str]] = {} if with_ids else None
            for record in read:
                value = key_text(record.get(field))
                if not value:
                    continue
                if ids is not None:
                    ids[value] = str(record["_id"])
                else:
                    keys.add(value)
            self.calls += read.calls
            logger.info(
                f"stream '{label}': read the {field} keys of the {endpoint.label.lower()} in Planhat "
                f"({read.records:,} record(s), {len(ids if ids is not None else keys):,} with {field}, {read.calls} call(s))"
            )
            known = self._known[(endpoint, field, with_ids)] = KnownKeys(keys, ids)
            return known

    def values_of(self, endpoint: Endpoint, field: str, fields: tuple[str, ...], label: str) -> dict[str, int]:
        """Per key value, a fingerprint of the record's `fields` as Planhat has them (skip_unchanged):
        read once per stream, with the keys (`select=_id,<key>,<fields>`)."""
        read = ListRead(self._read, endpoint, ("_id", field, *fields), f"that stream '{label}' compares with")
        found: dict[str, int] = {}
        for record in read:
            value = key_text(record.get(field))
            if value:
                found[value] = fingerprint([record.get(name) for name in fields])
        with self._lock:
            self.calls += read.calls
        logger.info(
            f"stream '{label}': read the {field} keys and {len(fields)} field(s) of the {endpoint.label.lower()} in "
            f"Planhat ({read.records:,} record(s), {read.calls} call(s)) to send only what changed (skip_unchanged)"
        )
        return found
