"""The analytics host's side of the sandbox (``POST /dimensiondata/{tenant}``,
``POST /analytics/bulk/{tenant}``): what Planhat checks in each item, what the sandbox records of
what it received (items, the request log, running counts, a record file) and its reports on it.

`AnalyticsHost` is a base of `sandbox.PlanhatSandbox`: its public methods (received, acknowledged,
requests, summary, left_out, ...) are the sandbox's. Thread-safe: the request threads record while
tests read.
"""

from __future__ import annotations

import hmac
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from http import HTTPStatus
from typing import IO, Any

import orjson

from destination_planhat.testing.sandbox_faults import ANALYTICS_API, Outcome

METRICS = "metrics"
USER_ACTIVITIES = "user_activities"
ENDPOINTS = (METRICS, USER_ACTIVITIES)
_TOP_REASONS = 10


# --------------------------------------------------------------------------------------------
# Item validation: mirrors what Planhat reports in the "errors" list of its 200 answer.
# Written as flat, type()-based checks because it runs once per item (a million per benchmark).
# --------------------------------------------------------------------------------------------

_DIMENSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
_METRIC_MODELS = ("Company", "EndUser", "Asset", "Project")
_METRIC_FIELDS = frozenset({"dimensionId", "value", "externalId", "model", "date"})
_NOT_AN_OBJECT = "item must be a JSON object"
_isfinite = math.isfinite


def _is_number(value: object) -> bool:
    """True for finite JSON numbers; bool is excluded on purpose (Python's bool is an int)."""
    return type(value) is int or (type(value) is float and _isfinite(value))


def _is_string(value: object) -> bool:
    return type(value) is str


def _is_object(value: object) -> bool:
    return type(value) is dict


# The two string checks below are memoised: a batch repeats a handful of dimensionIds and dates
# thousands of times, and a cache hit costs a third of a regex match or a date parse.


@lru_cache(maxsize=65536)
def _dimension_id_ok(text: str) -> bool:
    return _DIMENSION_ID_PATTERN.fullmatch(text) is not None


@lru_cache(maxsize=65536)
def _iso_text_ok(text: str) -> bool:
    """ISO 8601 date or datetime, with a trailing Z accepted on every Python version."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        if not text.endswith(("Z", "z")):
            return False
        try:
            datetime.fromisoformat(text[:-1] + "+00:00")
        except ValueError:
            return False
    return True


def _is_iso_date(value: object) -> bool:
    return type(value) is str and _iso_text_ok(value)


def validate_metric(item: object) -> str | None:
    """Planhat's rejection reason for one Metrics item, or None when it would be accepted.

    Optional fields must be valid when present: an explicit null ``model`` or ``date`` is an error,
    so that a connector sending nulls is caught here rather than in a customer's Failed Metrics.
    """
    if type(item) is not dict:
        return _NOT_AN_OBJECT
    dimension_id = item.get("dimensionId")
    if type(dimension_id) is not str or not dimension_id:
        return "dimensionId must be specified"
    if not _dimension_id_ok(dimension_id):
        return "dimensionId contains invalid characters"
    value = item.get("value")
    if not (type(value) is int or (type(value) is float and _isfinite(value))):  # inlined _is_number: hot path
        return "value must be a number"
    external_id = item.get("externalId")
    if type(external_id) is not str or not external_id:
        return "externalId must be specified"
    if len(item) == 3:  # required fields only
        return None
    model = item.get("model", "Company")
    if type(model) is not str or model not in _METRIC_MODELS:
        return "model must be one of Company, EndUser, Asset, Project"
    if "date" in item:
        date = item["date"]
        if type(date) is not str or not _iso_text_ok(date):
            return "date must be a valid ISO date"
    if not item.keys() <= _METRIC_FIELDS:
        return f"unknown field {next(key for key in item if key not in _METRIC_FIELDS)}"
    return None


# field -> (check, reason when the check fails), in Planhat's documented order.
_ACTIVITY_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "email": (_is_string, "email must be a string"),
    "euExtId": (_is_string, "euExtId must be a string"),
    "action": (_is_string, "action must be a string"),
    "count": (_is_number, "count must be a number"),
    "companyExternalId": (_is_string, "companyExternalId must be a string"),
    "weight": (_is_number, "weight must be a number"),
    "date": (_is_iso_date, "date must be a valid ISO date"),
    "info": (_is_object, "info must be an object"),
    "name": (_is_string, "name must be a string"),
}


def validate_user_activity(item: object) -> str | None:
    """Planhat's rejection reason for one User Activity item, or None when it would be accepted."""
    if type(item) is not dict:
        return _NOT_AN_OBJECT
    email = item.get("email")
    eu_ext_id = item.get("euExtId")
    if not ((type(email) is str and email) or (type(eu_ext_id) is str and eu_ext_id)):
        return "email or euExtId must be specified"
    for key, value in item.items():
        check = _ACTIVITY_CHECKS.get(key)
        if check is None:
            return f"unknown field {key}"
        if not check[0](value):
            return check[1]
    return None


_VALIDATORS: dict[str, Callable[[object], str | None]] = {
    METRICS: validate_metric,
    USER_ACTIVITIES: validate_user_activity,
}


_NOT_CHECKED = "(not checked)"


def _summary_key(endpoint: str, item: dict[str, Any]) -> str:
    """What the summary counts accepted items by: the metric's name, or the activity's action."""
    if endpoint == METRICS:
        return item["dimensionId"]
    return item.get("action") or "(no action)"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the sandbox saw and did for one data request (control requests are not logged).

    Main API requests are logged apart (`PlanhatSandbox.main_api_requests`), with `endpoint` the
    object's path (``companies``, ``customfields``), `tenant` empty, `items` the items of a bulk
    upsert, `processed` those created or updated and `errors` those in createdErrors/updatedErrors/permissionErrors.
    """

    endpoint: str
    tenant: str
    authorization_present: bool
    # The header equals "Bearer <api_token>": on User Activities this means the token leaked.
    authorization_matched: bool
    items: int  # items in the body; 0 when it was not parsed (refused, reset, bad JSON)
    body_bytes: int
    status: int | None  # None when no answer was sent (connection reset, client gone)
    fault: str | None  # the injected fault's kind, None for a normal answer
    processed: int  # items accepted (recorded as valid)
    errors: int  # items rejected with a reason
    at: float  # time.monotonic() when the request headers were read
    duration_s: float
    path: str = ""  # the request target as sent (path and query), to check what URLs carry
    number: int = 0  # 1-based arrival number; `acknowledged()` uses it to tell answered items apart
    method: str = "POST"


class _EndpointStats:
    """Running counts for one endpoint, so that the summary stays cheap with keep_items=False."""

    def __init__(self) -> None:
        self.requests = 0
        self.items = 0
        self.processed = 0
        self.errors = 0
        self.max_items_per_request = 0
        self.authorization_sent = 0
        self.error_reasons: Counter[str] = Counter()
        self.accepted_by_key: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    def as_dict(self, key_name: str, top: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "items": self.items,
            "processed": self.processed,
            "errors": self.errors,
            "max_items_per_request": self.max_items_per_request,
            "authorization_sent": self.authorization_sent,
            "error_reasons": dict(self.error_reasons.most_common(_TOP_REASONS)),
            key_name: dict(self.accepted_by_key.most_common(top)),
            "statuses": dict(sorted(self.statuses.items())),
            "faults": dict(sorted(self.faults.items())),
        }


_SUMMARY_KEY_NAMES = {METRICS: "by_dimension_id", USER_ACTIVITIES: "by_action"}


def utf8(text: str) -> bytes:
    """Bytes for hmac.compare_digest, which refuses non-ASCII str (headers may carry anything)."""
    return text.encode("utf-8", "surrogateescape")


class AnalyticsHost:
    """Planhat's analytics host: checks and records the items of data requests, logs the requests,
    and reports what it received. Every public method is thread-safe."""

    def __init__(self, tenant: str, api_token: str, record_file: str | None, keep_items: bool, validate: bool) -> None:
        self.tenant = tenant
        self.api_token = api_token
        self.record_file = record_file
        self.keep_items = keep_items
        self.validate = validate
        self._expected_authorization = utf8(f"Bearer {api_token}")
        self._lock = threading.Lock()
        self._received: list[tuple[str, Any, bool]] = []
        self._received_in: list[int] = []  # per received item, the number of its request
        self._left_out: list[tuple[int, str, Any]] = []  # items a short count left undone (left_out())
        self._request_count = 0
        self._requests: list[RequestRecord] = []
        self._stats = {endpoint: _EndpointStats() for endpoint in ENDPOINTS}
        self._record_lock = threading.Lock()
        self._record_fh: IO[bytes] | None = None

    # ---- the record file: open while the sandbox serves ---------------------------------------
    # SandboxServer's start() and stop() call these hooks; PlanhatSandbox lists AnalyticsHost first
    # among its bases, so these are the ones they reach.

    def _serving_starts(self) -> None:
        if self.record_file is not None:
            self._record_fh = open(self.record_file, "ab")  # noqa: SIM115 - closed in _serving_stopped()

    def _serving_stopped(self) -> None:
        with self._record_lock:
            if self._record_fh is not None:
                self._record_fh.close()
                self._record_fh = None

    # ---- inspection -----------------------------------------------------------------------

    def received(self, endpoint: str | None = None, *, accepted_only: bool = False) -> list[Any]:
        """Items as sent, in arrival order, rejected ones included unless `accepted_only`.

        Only items of processed requests appear: a request answered with a fault status, or reset
        before it was read, left no trace in Planhat either.
        """
        return [item for _, item, _ in self._select(endpoint, accepted_only)]

    def received_records(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Like `received`, as ``{"endpoint", "item", "accepted"}`` dicts (the record-file shape)."""
        return [{"endpoint": e, "item": item, "accepted": ok} for e, item, ok in self._select(endpoint, False)]

    def _select(self, endpoint: str | None, accepted_only: bool) -> list[tuple[str, Any, bool]]:
        if not self.keep_items:
            raise RuntimeError("this sandbox was started with keep_items=False: it only counts items")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
        with self._lock:
            entries = list(self._received)
        return [e for e in entries if (endpoint is None or e[0] == endpoint) and (e[2] or not accepted_only)]

    def acknowledged(self, endpoint: str | None = None) -> list[Any]:
        """Items of requests answered with a 2xx, rejected ones included: what a client can know arrived.

        Unlike `received`, this leaves out items processed by a request whose answer never reached
        the client (reset after processing, client timed out): a client may not build on those.
        """
        if not self.keep_items:
            raise RuntimeError("this sandbox was started with keep_items=False: it only counts items")
        with self._lock:
            answered = {r.number for r in self._requests if r.status is not None and 200 <= r.status < 300}
            entries = list(zip(self._received, self._received_in))
        return [item for (e, item, _), n in entries if n in answered and (endpoint is None or e == endpoint)]

    def received_with_request_numbers(self) -> list[tuple[int, str, Any]]:
        """(request number, endpoint, item) for every received item, in arrival order."""
        if not self.keep_items:
            raise RuntimeError("this sandbox was started with keep_items=False: it only counts items")
        with self._lock:
            return [(n, e, item) for (e, item, _), n in zip(self._received, self._received_in)]

    def left_out(self) -> list[tuple[int, str, Any]]:
        """(request number, endpoint, item) of the items a `short_count` fault left undone, in arrival
        order: sent, answered 2xx, and neither done nor named in the answer. Analytics requests only."""
        with self._lock:
            return list(self._left_out)

    def requests_logged(self) -> int:
        """How many data requests are in the log now: a cheap checkpoint, e.g. when a client reports
        progress, to compare later with what had been answered by then (`requests[:n]`)."""
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log, oldest first (data endpoints only)."""
        with self._lock:
            return list(self._requests)

    def summary(self, top: int = 50) -> dict[str, Any]:
        """Per-endpoint counts; the `top` most frequent dimensionIds / actions of accepted items."""
        with self._lock:
            return {name: stats.as_dict(_SUMMARY_KEY_NAMES[name], top) for name, stats in self._stats.items()}

    def _analytics_summary_lines(self) -> list[str]:
        """`summary()` for humans: the title and the analytics host's part of `summary_text()`."""
        summary = self.summary(top=10)
        lines = [f"Planhat sandbox summary (tenant {self.tenant})"]
        for endpoint, stats in summary.items():
            path = "/dimensiondata/" if endpoint == METRICS else "/analytics/bulk/"
            lines.append(f"  {endpoint} (POST {path}{{tenant}})")
            lines.append(
                f"    requests {stats['requests']:,}  items {stats['items']:,}  processed {stats['processed']:,}"
                f"  rejected {stats['errors']:,}  max items/request {stats['max_items_per_request']:,}"
            )
            if stats["statuses"]:
                lines.append("    answers   " + ", ".join(f"{code} x{n:,}" for code, n in stats["statuses"].items()))
            if stats["faults"]:
                lines.append("    faults    " + ", ".join(f"{kind} x{n:,}" for kind, n in stats["faults"].items()))
            if stats["authorization_sent"]:
                lines.append(f"    requests carrying an Authorization header: {stats['authorization_sent']:,}")
            counted_by = "dimensionId" if endpoint == METRICS else "action"
            sections = (
                ("top rejection reasons", stats["error_reasons"]),
                (f"accepted items by {counted_by}", stats[_SUMMARY_KEY_NAMES[endpoint]]),
            )
            for title, counts in sections:
                if counts:
                    lines.append(f"    {title}:")
                    lines.extend(f"      {n:>12,}  {key}" for key, n in counts.items())
        return lines

    def _reset_analytics(self) -> None:
        """Forget received items, the request log and the statistics (the record file is kept)."""
        with self._lock:
            self._received.clear()
            self._received_in.clear()
            self._left_out.clear()
            self._requests.clear()
            self._stats = {endpoint: _EndpointStats() for endpoint in ENDPOINTS}

    # ---- used by the request handler ------------------------------------------------------

    def _bearer_matches(self, authorization: str) -> bool:
        return hmac.compare_digest(utf8(authorization), self._expected_authorization)

    def _new_analytics_request_number(self) -> int:
        with self._lock:
            self._request_count += 1
            return self._request_count

    def _record_left_out(self, api: str, endpoint: str, number: int, items: list[Any]) -> None:
        if api == ANALYTICS_API and items:
            with self._lock:
                self._left_out.extend((number, endpoint, item) for item in items)

    def _ingest(self, endpoint: str, tenant: str, authorization: str | None, body: bytes, number: int = 0) -> Outcome:
        """Planhat's side of a data request: tenant and token, then parse, validate and record."""
        unauthorized = Outcome(HTTPStatus.UNAUTHORIZED, {"message": "Unauthorized"})
        if not hmac.compare_digest(utf8(tenant), utf8(self.tenant)):
            return unauthorized
        if endpoint == METRICS and (authorization is None or not self._bearer_matches(authorization)):
            return unauthorized
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return Outcome(HTTPStatus.BAD_REQUEST, {"message": f"request body is not valid JSON: {error}"})
        if isinstance(payload, dict):
            items: list[Any] = [payload]
        elif isinstance(payload, list):
            items = payload
        else:
            return Outcome(HTTPStatus.BAD_REQUEST, {"message": "request body must be a JSON array of items"})

        if not self.validate:  # counted, not checked (see PlanhatSandbox.__init__)
            verdicts: list[str | None] = [None] * len(items)
            self._record_items(endpoint, items, verdicts, [_NOT_CHECKED] * len(items), [], number)
            return Outcome(HTTPStatus.OK, {"processed": len(items), "errors": []}, len(items), len(items), 0)
        validate = _VALIDATORS[endpoint]
        verdicts = [validate(item) for item in items]
        errors = [{"item": item, "error": reason} for item, reason in zip(items, verdicts) if reason is not None]
        accepted_keys = [_summary_key(endpoint, item) for item, reason in zip(items, verdicts) if reason is None]
        self._record_items(endpoint, items, verdicts, accepted_keys, errors, number)
        processed = len(accepted_keys)
        return Outcome(HTTPStatus.OK, {"processed": processed, "errors": errors}, len(items), processed, len(errors))

    def _record_items(
        self,
        endpoint: str,
        items: list[Any],
        verdicts: list[str | None],
        accepted_keys: list[str],
        errors: list[dict[str, Any]],
        number: int = 0,
    ) -> None:
        if self._record_fh is not None:
            lines = b"".join(
                orjson.dumps({"endpoint": endpoint, "item": item, "accepted": reason is None}) + b"\n"
                for item, reason in zip(items, verdicts)
            )
            with self._record_lock:
                if self._record_fh is not None:
                    self._record_fh.write(lines)
                    self._record_fh.flush()
        with self._lock:
            if self.keep_items:
                self._received.extend((endpoint, item, reason is None) for item, reason in zip(items, verdicts))
                self._received_in.extend([number] * len(items))
            stats = self._stats[endpoint]
            stats.items += len(items)
            stats.processed += len(accepted_keys)
            stats.errors += len(errors)
            stats.max_items_per_request = max(stats.max_items_per_request, len(items))
            stats.accepted_by_key.update(accepted_keys)
            stats.error_reasons.update(error["error"] for error in errors)

    def _log_analytics_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)
            stats = self._stats[record.endpoint]
            stats.requests += 1
            stats.statuses["no response" if record.status is None else str(int(record.status))] += 1
            if record.fault is not None:
                stats.faults[record.fault] += 1
            if record.authorization_present:
                stats.authorization_sent += 1
