"""A stand-in for PlanhatClient that records every call and answers as each test scripts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import orjson

from destination_planhat.planhat.answers import PostResult
from destination_planhat.planhat.api import Endpoint

# behaviour(call_index, endpoint, items) -> PostResult, or raises; it may block to delay the answer.
Behaviour = Callable[[int, Endpoint, list[Any]], Optional[PostResult]]


class FakeClient:
    def __init__(self, behaviour: Optional[Behaviour] = None) -> None:
        self._behaviour = behaviour
        self._lock = threading.Lock()
        self.calls: list[tuple[Endpoint, list[Any]]] = []
        self.acknowledged: list[Any] = []  # items of posts that returned successfully, in return order
        self.threads: set[str] = set()
        self.closed = False
        self.aborted = False
        self.lists: dict[Endpoint, list[dict[str, Any]]] = {}  # what list reads answer, per object
        self.reads: list[tuple[Endpoint, str]] = []

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "", items: Optional[int] = None) -> PostResult:
        """`items`: how many items the sender says the body holds (checked against the body)."""
        sent = orjson.loads(body)
        assert items is None or items == len(sent), (items, len(sent))
        with self._lock:
            index = len(self.calls)
            self.calls.append((endpoint, sent))
            self.threads.add(threading.current_thread().name)
        result = self._behaviour(index, endpoint, sent) if self._behaviour else None
        with self._lock:
            self.acknowledged.extend(sent)
        return result or PostResult(processed=len(sent))

    def read(self, endpoint: Endpoint, query: str) -> bytes:
        """A list read (`GET /{object}?{query}`): a page of the records in `lists[endpoint]`, as the
        query's offset and limit say; every read is recorded in `reads`."""
        params = dict(part.split("=", 1) for part in query.split("&"))
        offset, limit = int(params["offset"]), int(params["limit"])
        with self._lock:
            self.reads.append((endpoint, query))
            records = list(self.lists.get(endpoint, ()))
        return orjson.dumps(records[offset : offset + limit])

    def acknowledged_snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.acknowledged)

    def url_for_logs(self, endpoint: Endpoint) -> str:
        return f"https://planhat.invalid/{endpoint.value}/***"

    def where(self, endpoint: Endpoint) -> str:
        return f"Planhat {endpoint.label} ({self.url_for_logs(endpoint)})"

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        """The writer calls this when the sync fails (or ends), to cut retries short."""
        self.aborted = True


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll for a condition another thread will make true; fails the test (not by timing) if it never does:
    the bound is one only a hung thread reaches, never an expectation."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)
