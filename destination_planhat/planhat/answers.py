"""Planhat's answers to a request, read into what was accepted and what was rejected, per answer format.

A target names its reader (planhat.TARGETS); a reader never raises: an answer it cannot read has no
counts (`processed` None), and is not an acknowledgement (`PostResult.shortfall`, planhat/client.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import orjson

BODY_QUOTE_CHARS = 500

# The analytics host's answer, for both of its endpoints: {"processed": N, "errors": [{"item": ..., "error": ...}]}
RESPONSE_PROCESSED = "processed"
RESPONSE_ERRORS = "errors"
RESPONSE_ERROR_ITEM = "item"
RESPONSE_ERROR_REASON = "error"


@dataclass(frozen=True)
class RejectedItem:
    item: Any
    reason: str


@dataclass
class PostResult:
    """Planhat's answer to one accepted request, and what it took to get it."""

    processed: Optional[int]  # None when the 2xx answer carried no counts
    errors: list[RejectedItem] = field(default_factory=list)
    attempts: int = 1
    ambiguous_failures: int = 0  # failed attempts after which Planhat may have kept the items
    note: str = ""  # why the counts are missing, when they are
    # Objects (the main API's upsert answer): of `processed`, how many were created and updated, and
    # of the updated, how many changed nothing (`nonupdates`). None for the analytics answers.
    created: Optional[int] = None
    updated: Optional[int] = None
    unchanged: Optional[int] = None
    status: int = 200  # the HTTP status the answer came with (a 400 can carry per-item errors)

    def shortfall(self, items: Optional[int], every_item: bool) -> str:
        """Why this answer to a request of `items` items is not an acknowledgement; "" when it is.

        An acknowledgement says what was done: it carries Planhat's counts. With `every_item` (the
        target's answers account for each item: the main API), the items it counts as done or refused
        must also be all that were sent. Without the counts, or short of items, Planhat may have done
        all, some or none of them: the request failed ambiguously, like a connection reset after
        sending (`items` None: the count is not checked)."""
        if self.processed is None:
            return self.note or "the answer had no counts"
        accounted = self.processed + len(self.errors)
        if every_item and items is not None and accounted < items:
            return (
                f"its counts cover {accounted} of the {items} items sent ({self.processed} done, "
                f"{len(self.errors)} refused) and name no error for the others"
            )
        return ""


def read_analytics_answer(body: bytes) -> PostResult:
    """Planhat's `{"processed": N, "errors": [...]}`; an answer without it has no counts."""
    if not body.strip():
        return PostResult(processed=None, note="the answer was empty")
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return PostResult(processed=None, note=f"the answer was not JSON: {quote(body)}")
    if not isinstance(answer, Mapping) or not isinstance(answer.get(RESPONSE_PROCESSED), int):
        return PostResult(processed=None, note=f"the answer had no '{RESPONSE_PROCESSED}' count: {quote(body)}")
    errors = []
    raw_errors = answer.get(RESPONSE_ERRORS) or []
    if isinstance(raw_errors, list):
        for entry in raw_errors:
            if isinstance(entry, Mapping):
                errors.append(
                    RejectedItem(entry.get(RESPONSE_ERROR_ITEM), str(entry.get(RESPONSE_ERROR_REASON, "unknown error")))
                )
            else:
                errors.append(RejectedItem(None, str(entry)))
    return PostResult(processed=answer[RESPONSE_PROCESSED], errors=errors)


def quote(body: bytes | str) -> str:
    """A server's text for a log or an error: on one line, at most BODY_QUOTE_CHARS characters."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text[:BODY_QUOTE_CHARS] + ("..." if len(text) > BODY_QUOTE_CHARS else "")


# The main API's bulk upsert answer (PUT /{object}): counts, and per item errors in three lists.
UPSERT_ERROR_LISTS = ("createdErrors", "updatedErrors", "permissionErrors")


def _count(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list):  # some answers list ids instead of counting them
        return len(value)
    return None


def _error_entry(entry: Any) -> RejectedItem:
    """One error entry; its shape is not documented, so it is read defensively: the item when the
    entry carries one, and its text (message, reason or error, else the whole entry) as the reason."""
    if isinstance(entry, Mapping):
        texts = [entry.get(key) for key in ("message", "reason", "error")]
        reason = next((str(text) for text in texts if text not in (None, "")), None)
        item = entry.get("item")
        return RejectedItem(item, quote(reason if reason is not None else orjson.dumps(entry).decode()))
    if isinstance(entry, str):
        return RejectedItem(None, quote(entry))
    return RejectedItem(None, quote(orjson.dumps(entry).decode() if entry is not None else "unknown error"))


def read_upsert_answer(body: bytes) -> PostResult:
    """`{"created": N, "updated": N, "nonupdates": N, "createdErrors": [...], "updatedErrors": [...],
    "permissionErrors": [...], ...}`; an answer without them has no counts."""
    if not body.strip():
        return PostResult(processed=None, note="the answer was empty")
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return PostResult(processed=None, note=f"the answer was not JSON: {quote(body)}")
    if not isinstance(answer, Mapping):
        return PostResult(processed=None, note=f"the answer had no counts: {quote(body)}")
    errors: list[RejectedItem] = []
    for name in UPSERT_ERROR_LISTS:
        entries = answer.get(name)
        if isinstance(entries, list):
            errors.extend(_error_entry(entry) for entry in entries)
    created, updated = _count(answer.get("created")), _count(answer.get("updated"))
    if created is None and updated is None:
        return PostResult(
            processed=None, errors=errors, note=f"the answer had no created/updated counts: {quote(body)}"
        )
    unchanged = _count(answer.get("nonupdates"))
    return PostResult(
        processed=(created or 0) + (updated or 0),
        errors=errors,
        created=created or 0,
        updated=updated or 0,
        unchanged=unchanged or 0,
    )
