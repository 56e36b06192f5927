"""Planhat's answers to a request, read into what was accepted and what was rejected, per answer format.

A target names its reader (planhat.TARGETS); a reader never raises: an answer it cannot read still
means "received", with its items counted as unconfirmed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

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


def read_analytics_answer(body: bytes) -> PostResult:
    """Planhat's `{"processed": N, "errors": [...]}`; a 200 without it still means "received"."""
    try:
        answer = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return PostResult(processed=None, note=f"the answer was not JSON: {quote(body)}")
    if not isinstance(answer, Mapping) or not isinstance(answer.get(RESPONSE_PROCESSED), int):
        return PostResult(processed=None, note=f"the answer had no '{RESPONSE_PROCESSED}' count: {quote(body)}")
    errors = []
    raw_errors = answer.get(RESPONSE_ERRORS) or []
    if isinstance(raw_errors, list):
        for entry in raw_errors:
            if isinstance(entry, Mapping):
                errors.append(RejectedItem(entry.get(RESPONSE_ERROR_ITEM), str(entry.get(RESPONSE_ERROR_REASON, "unknown error"))))
            else:
                errors.append(RejectedItem(None, str(entry)))
    return PostResult(processed=answer[RESPONSE_PROCESSED], errors=errors)


def quote(body: bytes | str) -> str:
    """A server's text for a log or an error: on one line, at most BODY_QUOTE_CHARS characters."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text[:BODY_QUOTE_CHARS] + ("..." if len(text) > BODY_QUOTE_CHARS else "")
