"""The main API's side of the sandbox (``PUT /{object}``, ``GET /{object}``, ``GET /customfields``):
its settings (permissions, rate limit, custom fields), its state (the object store, the request
log) and the reports on them. Planhat's answers to a request are `sandbox.PlanhatSandbox._main_api`;
the objects' rules are `sandbox_objects`.

`MainApiHost` is a base of `sandbox.PlanhatSandbox`: its public methods (objects, seed,
main_api_requests, main_api_summary, ...) are the sandbox's. Thread-safe: everything here is read
and written under `_main_lock`.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from destination_planhat.testing.sandbox_analytics import RequestRecord
from destination_planhat.testing.sandbox_objects import OBJECTS, ObjectStore, normalize_custom_fields


class MainApiHost:
    """Planhat's main API: settings, the object store and the request log, and the reports on them."""

    def __init__(
        self,
        permitted_objects: Collection[str] | None,
        rate_limit_per_minute: int | None,
        rate_limit_window_s: float,
        custom_fields: Sequence[Mapping[str, Any]],
        main_api_latency_s: float,
        rate_limit_headers: bool,
        update_only_objects: Collection[str],
    ) -> None:
        """The arguments are `PlanhatSandbox`'s (its __init__ says what each means): the baseline
        that `_reset_main_api()` returns to."""
        self.main_api_latency_s = main_api_latency_s
        self.permitted_objects = None if permitted_objects is None else frozenset(permitted_objects)
        self.rate_limit_per_minute = rate_limit_per_minute
        self.rate_limit_window_s = rate_limit_window_s
        self.rate_limit_headers = rate_limit_headers
        self.update_only_objects = frozenset(update_only_objects)
        self.custom_fields = normalize_custom_fields(custom_fields)
        self._check_main_api_settings(self.permitted_objects, rate_limit_per_minute, rate_limit_window_s)
        self._check_main_api_settings(self.update_only_objects, None, 1)
        self._main_lock = threading.Lock()  # the object store and main API settings; never held with _lock
        self._store = ObjectStore()
        self._permitted = self.permitted_objects
        self._rate_limit = rate_limit_per_minute
        self._rate_window_s = rate_limit_window_s
        self._rate_window_started: float | None = None
        self._rate_calls = 0
        self._rate_headers = rate_limit_headers
        self._update_only = self.update_only_objects
        # The rate limit's own lock: a call is counted when it arrives, not once the store (held by
        # another request's upsert) is free. Taken inside _main_lock, never the other way round.
        self._rate_lock = threading.Lock()
        self._custom_fields = copy.deepcopy(self.custom_fields)
        self._main_requests: list[RequestRecord] = []
        self._main_request_count = 0

    def object_counts(self) -> dict[str, int]:
        """How many records each main API object holds now: a cheap checkpoint (e.g. when the
        connector prints a state) to compare later with what the records before it needed."""
        with self._main_lock:
            return self._store.counts()

    def objects(self, name: str) -> list[dict[str, Any]]:
        """The records the main API holds for one object (``companies``, ``endusers``, ...), oldest
        first, as deep copies; company references are stored as Planhat ids. ValueError for an
        unknown object name (see `OBJECTS`)."""
        with self._main_lock:
            return self._store.records(name)

    def all_objects(self) -> dict[str, list[dict[str, Any]]]:
        """`objects()` of every object, empty ones included."""
        with self._main_lock:
            return {name: self._store.records(name) for name in OBJECTS}

    def seed(self, name: str, items: Sequence[Any]) -> dict[str, Any]:
        """Bulk upsert `items` into `name` without HTTP (no auth, permission, rate limit, fault or log):
        to give a test or the demo existing records. Returns Planhat's answer body."""
        if name not in OBJECTS:
            raise ValueError(f"unknown Planhat object {name!r}; known: {', '.join(OBJECTS)}")
        with self._main_lock:
            return self._store.bulk_upsert(name, list(items)).body

    @property
    def main_api_requests(self) -> list[RequestRecord]:
        """A snapshot of the main API's request log, oldest first (kept apart from `requests`)."""
        with self._main_lock:
            return list(self._main_requests)

    def main_api_summary(self) -> dict[str, Any]:
        """Requests, answers and faults of the main API; per object with records or activity, counts."""
        with self._main_lock:
            statuses = Counter("no response" if r.status is None else str(r.status) for r in self._main_requests)
            faults = Counter(r.fault for r in self._main_requests if r.fault is not None)
            counts = self._store.counts()
            objects = {
                name: {
                    "records": counts[name],
                    "created": stats.created,
                    "updated": stats.updated,
                    "errors": stats.errors,
                }
                for name, stats in self._store.stats.items()
                if counts[name] or stats.created or stats.updated or stats.errors
            }
            return {
                "requests": len(self._main_requests),
                "statuses": dict(sorted(statuses.items())),
                "faults": dict(sorted(faults.items())),
                "objects": objects,
                "permitted_objects": None if self._permitted is None else sorted(self._permitted),
                "rate_limit_per_minute": self._rate_limit,
                "custom_fields": len(self._custom_fields),
            }

    @staticmethod
    def _check_main_api_settings(permitted: frozenset[str] | None, limit: object, window: object) -> None:
        """Raises ValueError for a setting the sandbox cannot serve. Any value is checked, whatever its
        type: the control endpoint (POST /_sandbox/main_api) hands over the JSON it was sent."""
        if permitted is not None and not permitted <= OBJECTS.keys():
            raise ValueError(f"unknown object(s) {sorted(permitted - OBJECTS.keys())}; known: {', '.join(OBJECTS)}")
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"rate_limit_per_minute must be a positive integer or None, got {limit!r}")
        if not (type(window) is int or type(window) is float) or window <= 0:
            raise ValueError(f"rate_limit_window_s must be > 0, got {window!r}")

    def _main_summary_lines(self) -> list[str]:
        """The main API's part of `summary_text()`; none when it saw no request and holds no record."""
        lines: list[str] = []
        main = self.main_api_summary()
        if main["requests"] or main["objects"]:
            lines.append("  main API (PUT /{object}, GET /{object}, GET /customfields)")
            lines.append(f"    requests {main['requests']:,}")
            if main["statuses"]:
                lines.append("    answers   " + ", ".join(f"{code} x{n:,}" for code, n in main["statuses"].items()))
            if main["faults"]:
                lines.append("    faults    " + ", ".join(f"{kind} x{n:,}" for kind, n in main["faults"].items()))
            for name, counts in main["objects"].items():
                lines.append(
                    f"    {name:<14} records {counts['records']:,}  created {counts['created']:,}"
                    f"  updated {counts['updated']:,}  item errors {counts['errors']:,}"
                )
        return lines

    def _reset_main_api(self) -> None:
        """Forget the records of every object and the request log; the settings return to the baseline."""
        with self._main_lock:
            self._store = ObjectStore()
            self._main_requests.clear()
            self._permitted = self.permitted_objects
            self._update_only = self.update_only_objects
            with self._rate_lock:
                self._rate_limit = self.rate_limit_per_minute
                self._rate_window_s = self.rate_limit_window_s
                self._rate_window_started, self._rate_calls = None, 0
                self._rate_headers = self.rate_limit_headers
            self._custom_fields = copy.deepcopy(self.custom_fields)

    def _new_main_request_number(self) -> int:
        with self._main_lock:
            self._main_request_count += 1
            return self._main_request_count

    def _log_main_request(self, record: RequestRecord) -> None:
        with self._main_lock:
            self._main_requests.append(record)
