"""An embedded, Planhat-compatible server for tests, demos and benchmarks: the analytics endpoints
(metrics, user activities) and the main API's objects (bulk upsert of companies, end users, ...).

Why this exists: Planhat offers no sandbox for its analytics host, answers 200 even when it rejects
items, and documents little about how it fails. The connector's reliability code (retries, batch
splitting on 413, per-item errors, state only after acknowledgement) can only be exercised against
a server that behaves like Planhat *and* misbehaves on demand. This is that server: stdlib
``http.server`` plus orjson, loopback only, fast enough to absorb a million items in seconds.

In-process (pytest)::

    with PlanhatSandbox() as sandbox:
        requests.post(f"{sandbox.url}/dimensiondata/{sandbox.tenant}", json=[...],
                      headers={"Authorization": f"Bearer {sandbox.api_token}"})
        assert sandbox.summary()["metrics"]["processed"] == 1

The main API (``PUT /{object}``, ``GET /{object}``, ``GET /customfields``) follows Planhat's
object rules as written up in the team notes planhat-objects.md; the rules themselves live in
`destination_planhat.testing.sandbox_objects`::

    requests.put(f"{sandbox.url}/companies", json=[{"name": "Acme", "externalId": "acme"}],
                 headers={"Authorization": f"Bearer {sandbox.api_token}"})
    assert sandbox.objects("companies")[0]["name"] == "Acme"

As a process (demo, benchmark); control it through ``/_sandbox/*``::

    python -m destination_planhat.testing.sandbox --port 0
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import enum
import hmac
import math
import os
import re
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from random import Random
from types import TracebackType
from typing import IO, Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from destination_planhat.testing.sandbox_objects import (
    MAX_BULK_ITEMS,
    OBJECTS,
    ObjectStore,
    empty_answer,
    normalize_custom_fields,
)

METRICS = "metrics"
USER_ACTIVITIES = "user_activities"
ENDPOINTS = (METRICS, USER_ACTIVITIES)

# The two APIs the sandbox serves; each has its own fault plan and request log, as the two hosts
# (analytics.planhat.com and api.planhat.com) fail independently.
ANALYTICS_API = "analytics"
MAIN_API = "main"
APIS = (ANALYTICS_API, MAIN_API)
CUSTOM_FIELDS_PATH = "customfields"
# `GET /{object}` paging; Planhat documents neither the default nor the maximum (unconfirmed).
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 5000
DEFAULT_RATE_WINDOW_S = 60.0

DEFAULT_TENANT = "demo-tenant-0001"
DEFAULT_API_TOKEN = "demo-api-token"
# Planhat's documented hard limit per request body.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

# Path prefix of each data endpoint; the tenant token is the rest of the path.
_DATA_ROUTES = (("/dimensiondata/", METRICS), ("/analytics/bulk/", USER_ACTIVITIES))
_CONTROL_PREFIX = "/_sandbox/"
_DRAIN_CHUNK_BYTES = 1024 * 1024
_TOP_REASONS = 10
_CLIENT_POLL_S = 0.05  # how often a delayed answer checks whether its client is still there


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


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

FAULT_KINDS = ("ok", "status", "reset_before", "reset_after", "delay", "bad_body", "bad_json")
_FAULT_FIELDS = frozenset({"kind", "status", "retry_after", "body", "seconds", "process", "headers"})
_RANDOM_KINDS = ("reset_before", "reset_after", "bad_body", "bad_json")
_DEFAULT_FAULT_BODIES = {
    "bad_body": "<html><body><h1>502 Bad Gateway</h1></body></html>",
    "bad_json": '{"ok": true}',
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One way to (mis)answer one data request; see `PlanhatSandbox.set_faults`."""

    kind: str = "ok"
    status: int = 200
    retry_after: str | None = None
    body: str | None = None
    seconds: float = 0.0
    process: bool = True
    headers: tuple[tuple[str, str], ...] = ()  # extra answer headers of a status fault, e.g. a Location

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Fault:
        """Build a fault from its dict form, rejecting typos early rather than silently ignoring them."""
        unknown = set(spec) - _FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)} in {dict(spec)!r}")
        kind = spec.get("kind", "ok")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        if kind == "status" and "status" not in spec:
            raise ValueError("a status fault needs a 'status'")
        status = int(spec.get("status", 200))
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status (100-599), got {status}")
        seconds = float(spec.get("seconds", 0.0))
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        retry_after = spec.get("retry_after")
        return cls(
            kind=kind,
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
            body=spec.get("body", _DEFAULT_FAULT_BODIES.get(kind)),
            seconds=seconds,
            process=bool(spec.get("process", True)),
            headers=tuple((str(name), str(value)) for name, value in dict(spec.get("headers") or {}).items()),
        )

    @classmethod
    def from_random_key(cls, key: str) -> Fault:
        """A fault named by a key of the ``random`` table: an HTTP status ("503") or a kind."""
        if key.isdigit():
            status = int(key)
            return cls(kind="status", status=status, retry_after="0" if status == 429 else None)
        if key in _RANDOM_KINDS:
            return cls.from_spec({"kind": key})
        raise ValueError(f"a random fault key is an HTTP status or one of {_RANDOM_KINDS}, not {key!r}")

    @property
    def label(self) -> str | None:
        """How the request log names this fault; None for a normal answer."""
        return None if self.kind == "ok" else self.kind


_NO_FAULT = Fault()


class _FaultPlan:
    """The faults still to come. Not thread-safe by itself: the sandbox calls `draw` under its lock."""

    def __init__(
        self,
        script: Sequence[Mapping[str, Any]] = (),
        random: Mapping[str, float] | None = None,
        seed: int = 0,
        latency_s: float = 0.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.script = deque(Fault.from_spec(spec) for spec in script)
        self.table: list[tuple[float, Fault]] = []
        cumulative = 0.0
        for key, probability in (random or {}).items():
            if not 0.0 <= float(probability) <= 1.0:
                raise ValueError(f"probability of {key!r} must be within [0, 1], got {probability!r}")
            cumulative += float(probability)
            self.table.append((cumulative, Fault.from_random_key(str(key))))
        if cumulative > 1.0 + 1e-9:
            raise ValueError(f"random fault probabilities add up to {cumulative:.3f} > 1")
        self.rng = Random(seed)
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self.latency_s = float(latency_s)
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be > 0")
        self.max_body_bytes = int(max_body_bytes)

    def draw(self) -> Fault:
        """The fault for the next data request: the script first, then one random draw per request."""
        if self.script:
            return self.script.popleft()
        if not self.table:
            return _NO_FAULT
        roll = self.rng.random()
        for threshold, fault in self.table:
            if roll < threshold:
                return fault
        return _NO_FAULT


# --------------------------------------------------------------------------------------------
# Records and statistics
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Result of handing a body to Planhat's logic: the answer, and what was recorded."""

    status: int
    payload: Any
    items: int = 0
    processed: int = 0
    errors: int = 0
    headers: tuple[tuple[str, str], ...] = ()  # e.g. the main API's X-Rate-Limit-* and Retry-After


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


class _Keep(enum.Enum):
    """`configure_main_api`'s default: an argument left out keeps its value. A member of its own type,
    so that `is _KEEP` tells mypy which type the argument has otherwise."""

    KEEP = enum.auto()


_KEEP: Final = _Keep.KEEP


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    """Bytes for hmac.compare_digest, which refuses non-ASCII str (headers may carry anything)."""
    return text.encode("utf-8", "surrogateescape")


def _phrase(status: int) -> str:
    """The standard reason phrase, or a generic one for codes http.HTTPStatus does not know."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _main_api_name(path: str) -> str | None:
    """``/companies`` or ``/companies/`` -> ``companies``; None for anything with more segments."""
    name = path.strip("/")
    return name if name and "/" not in name else None


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client has hung up (e.g. after its own timeout), without consuming any bytes."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, ValueError):  # ValueError: a TLS socket cannot peek
        return False
    except OSError:
        return True


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its sandbox and can cut its open keep-alive connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: PlanhatSandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections, so stop() leaves none behind."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients going away is part of the job (timeouts, fault tests); only report real bugs."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)) or self.sandbox._stopping.is_set():
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only; Planhat's behaviour and all state live in `PlanhatSandbox`."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real host behind its load balancer
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 300  # drop a keep-alive connection idle this long
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the stdlib's one stderr line per request: it would swamp test and benchmark output."""

    # ---- dispatch -------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith(_CONTROL_PREFIX):
            self._control_get(url.path[len(_CONTROL_PREFIX) :], parse_qs(url.query))
            return
        name = _main_api_name(url.path)
        if name is not None and (name in OBJECTS or name == CUSTOM_FIELDS_PATH):
            self._serve_main("GET", name, parse_qs(url.query))
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    def do_PUT(self) -> None:
        url = urlsplit(self.path)
        name = _main_api_name(url.path)
        if name is not None and name in OBJECTS:
            self._serve_main("PUT", name, parse_qs(url.query))
            return
        length = self._content_length()
        if length is not None:
            self._drain(length)
        self._send_json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    def do_DELETE(self) -> None:
        """`DELETE /{object}/{id}`: one record deleted (the main API's only delete)."""
        url = urlsplit(self.path)
        name, _, record_id = url.path.strip("/").partition("/")
        if name in OBJECTS and record_id and "/" not in record_id:
            self._serve_main("DELETE", name, parse_qs(url.query), record_id)
            return
        self._send_json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(_CONTROL_PREFIX):
            self._control_post(path[len(_CONTROL_PREFIX) :])
            return
        for prefix, endpoint in _DATA_ROUTES:
            if path.startswith(prefix):
                tenant = unquote(path[len(prefix) :].rstrip("/"))
                if tenant and "/" not in tenant:
                    self._serve_data(endpoint, tenant)
                    return
        length = self._content_length()
        if length is not None:
            self._drain(length)
        self._send_json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    # ---- data endpoints -------------------------------------------------------------------

    def _serve_data(self, endpoint: str, tenant: str) -> None:
        sandbox = self.server.sandbox

        def ingest(body: bytes, authorization: str | None, number: int) -> _Outcome:
            return sandbox._ingest(endpoint, tenant, authorization, body, number)

        self._serve_api(ANALYTICS_API, "POST", endpoint, tenant, ingest, body_required=True)

    def _serve_main(self, method: str, name: str, query: dict[str, list[str]], record_id: str = "") -> None:
        sandbox = self.server.sandbox

        def answer(body: bytes, authorization: str | None, number: int) -> _Outcome:
            return sandbox._main_api(method, name, query, authorization, body, record_id)

        self._serve_api(MAIN_API, method, name, "", answer, body_required=method not in ("GET", "DELETE"))

    def _serve_api(
        self,
        api: str,
        method: str,
        endpoint: str,
        tenant: str,
        process: Callable[[bytes, str | None, int], _Outcome],
        body_required: bool,
    ) -> None:
        sandbox = self.server.sandbox
        sandbox._request_started()
        try:
            self._serve_data_request(sandbox, api, method, endpoint, tenant, process, body_required)
        finally:
            sandbox._request_finished()

    def _serve_data_request(
        self,
        sandbox: PlanhatSandbox,
        api: str,
        method: str,
        endpoint: str,
        tenant: str,
        process: Callable[[bytes, str | None, int], _Outcome],
        body_required: bool,
    ) -> None:
        """One data request of either API: size limit, then the injected fault, then Planhat's logic."""
        started = time.monotonic()
        number = sandbox._new_request_number(api)
        authorization = self.headers.get("Authorization")
        if api == MAIN_API:
            auth_matched = sandbox._main_authorized(authorization)
        else:
            auth_matched = authorization is not None and sandbox._bearer_matches(authorization)

        def log(
            status: int | None, fault: Fault = _NO_FAULT, outcome: _Outcome | None = None, body_bytes: int = 0
        ) -> None:
            # Logged before answering, so a client that just got its answer always finds the record.
            outcome = outcome or _Outcome(status or 0, {})
            sandbox._log_request(
                api,
                RequestRecord(
                    endpoint=endpoint,
                    tenant=tenant,
                    authorization_present=authorization is not None,
                    authorization_matched=auth_matched,
                    items=outcome.items,
                    body_bytes=body_bytes,
                    status=None if status is None else int(status),
                    fault=fault.label,
                    processed=outcome.processed,
                    errors=outcome.errors,
                    at=started,
                    duration_s=time.monotonic() - started,
                    path=self.path,
                    number=number,
                    method=method,
                ),
            )

        length = self._content_length()
        if length is None and not body_required and "Transfer-Encoding" not in self.headers:
            length = 0  # a GET without a body
        if length is None:
            log(HTTPStatus.LENGTH_REQUIRED)
            self.close_connection = True
            self._send_json(HTTPStatus.LENGTH_REQUIRED, {"message": "Content-Length required"})
            return
        # Like a front proxy's body limit: checked before any fault, and it consumes none.
        limit = sandbox._max_body_bytes(api)
        if length > limit:
            self._drain(length)  # so the client reads a clean 413 rather than a reset
            log(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, body_bytes=length)
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"message": f"request body of {length} bytes exceeds the limit of {limit} bytes"},
            )
            return

        fault = sandbox._next_fault(api)
        if fault.kind == "reset_before":
            log(None, fault, body_bytes=length)
            self._abort()
            return
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up mid-body
            log(None, fault, body_bytes=len(body))
            self.close_connection = True
            return
        if fault.kind == "status":
            sandbox._sleep(sandbox._latency_s(api))
            log(fault.status, fault, body_bytes=length)
            if fault.body is None:
                body_out, content_type = orjson.dumps({"message": _phrase(fault.status)}), "application/json"
            else:
                body_out = fault.body.encode()
                content_type = "application/json" if fault.body.lstrip()[:1] in ("{", "[") else "text/plain"
            headers = [("Retry-After", fault.retry_after)] if fault.retry_after is not None else []
            headers.extend(fault.headers)
            self._send(fault.status, body_out, content_type, headers)
            return
        # the client gave up: nothing is processed
        if fault.kind == "delay" and not fault.process and self._wait_unless_client_leaves(fault.seconds):
            log(None, fault, body_bytes=length)
            self.close_connection = True
            return

        if fault.kind in ("bad_body", "bad_json") and not fault.process:
            outcome = _Outcome(HTTPStatus.OK, {})  # a broken proxy answered; Planhat never saw it
        else:
            outcome = process(body, authorization, number)
        # processed, but the client gave up waiting
        if fault.kind == "delay" and fault.process and self._wait_unless_client_leaves(fault.seconds):
            log(None, fault, outcome, length)
            self.close_connection = True
            return
        sandbox._sleep(sandbox._latency_s(api))

        if fault.kind == "reset_after":
            log(None, fault, outcome, length)
            self._abort()
        elif fault.kind in ("bad_body", "bad_json"):
            log(HTTPStatus.OK, fault, outcome, length)
            content_type = "text/html" if fault.kind == "bad_body" else "application/json"
            self._send(HTTPStatus.OK, (fault.body or "").encode(), content_type)
        else:
            log(outcome.status, fault, outcome, length)
            self._send(outcome.status, orjson.dumps(outcome.payload), "application/json", outcome.headers)

    def _wait_unless_client_leaves(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if the client hangs up (its read timeout); True when it did."""
        sandbox = self.server.sandbox
        deadline = time.monotonic() + seconds
        while True:
            if _peer_closed(self.connection):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or sandbox._stopping.is_set():
                return _peer_closed(self.connection)
            sandbox._sleep(min(remaining, _CLIENT_POLL_S))

    # ---- control endpoints ----------------------------------------------------------------

    def _control_get(self, name: str, query: dict[str, list[str]]) -> None:
        sandbox = self.server.sandbox
        if name == "summary":
            self._send_json(HTTPStatus.OK, sandbox.summary())
        elif name == "requests":
            api = query.get("api", [ANALYTICS_API])[0]
            if api not in APIS:
                self._send_json(HTTPStatus.BAD_REQUEST, {"message": f"api must be one of {APIS}, got {api!r}"})
            else:
                self._send_json(HTTPStatus.OK, sandbox.requests if api == ANALYTICS_API else sandbox.main_api_requests)
        elif name == "objects":
            object_name = query.get("object", [None])[0]
            try:
                payload: Any = sandbox.all_objects() if object_name is None else sandbox.objects(object_name)
            except ValueError as error:  # unknown object name
                self._send_json(HTTPStatus.BAD_REQUEST, {"message": str(error)})
                return
            self._send_json(HTTPStatus.OK, payload)
        elif name == "main_api":
            self._send_json(HTTPStatus.OK, sandbox.main_api_summary())
        elif name == "received":
            endpoint = query.get("endpoint", [None])[0]
            try:
                self._send_json(HTTPStatus.OK, sandbox.received_records(endpoint))
            except ValueError as error:  # unknown endpoint name
                self._send_json(HTTPStatus.BAD_REQUEST, {"message": str(error)})
            except RuntimeError as error:  # keep_items=False
                self._send_json(HTTPStatus.CONFLICT, {"message": str(error)})
        elif name == "health":
            self._send_json(HTTPStatus.OK, {"ok": True, "url": sandbox.url, "tenant": sandbox.tenant})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    def _control_post(self, name: str) -> None:
        sandbox = self.server.sandbox
        length = self._content_length() or 0
        body = self.rfile.read(length)
        if name == "reset":
            sandbox.reset()
            self._send_json(HTTPStatus.OK, {"ok": True})
        elif name in ("faults", "main_api"):
            try:
                config = orjson.loads(body or b"{}")
                if not isinstance(config, dict):
                    raise ValueError(f"the {name} config must be a JSON object")
                if name == "faults":
                    sandbox.set_faults(**config)
                else:
                    sandbox.configure_main_api(**config)
            except (orjson.JSONDecodeError, TypeError, ValueError) as error:
                self._send_json(HTTPStatus.BAD_REQUEST, {"message": str(error)})
                return
            self._send_json(HTTPStatus.OK, {"ok": True})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    # ---- I/O helpers ----------------------------------------------------------------------

    def _content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        try:
            length = int(value) if value is not None else None
        except ValueError:
            length = None
        return length if length is not None and length >= 0 else None

    def _drain(self, length: int) -> None:
        """Read and discard a body, keeping the keep-alive connection usable."""
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _DRAIN_CHUNK_BYTES))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)

    def _abort(self) -> None:
        """Close with a TCP RST and no answer: SO_LINGER 0 turns close() into an abortive close."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # detach() + os.close() closes the descriptor now; a plain close() would wait for the
            # handler's file objects, and socketserver's shutdown(SHUT_WR) would send a FIN first.
            os.close(sock.detach())
        except OSError:
            pass

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, orjson.dumps(payload), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client is gone (timed out, reset): nobody to answer
            self.close_connection = True


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class PlanhatSandbox:
    """Planhat's analytics host and main API on 127.0.0.1, recording what they receive and failing on demand.

    Every public method is thread-safe: the server answers each request on its own thread while
    tests read `received()`, `requests`, `summary()`, `objects()` and `main_api_requests` from theirs.
    """

    def __init__(
        self,
        tenant: str = DEFAULT_TENANT,
        api_token: str = DEFAULT_API_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        record_file: str | None = None,
        keep_items: bool = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        latency_s: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
        validate: bool = True,
        *,
        permitted_objects: Collection[str] | None = None,
        rate_limit_per_minute: int | None = None,
        rate_limit_window_s: float = DEFAULT_RATE_WINDOW_S,
        custom_fields: Sequence[Mapping[str, Any]] = (),
        main_api_latency_s: float = 0.0,
        rate_limit_headers: bool = True,
        update_only_objects: Collection[str] = (),
    ) -> None:
        """`max_body_bytes` and `latency_s` are the baseline that `reset()` and `set_faults()` return to.

        Main API (the same `api_token`, as Bearer or as basic auth ``token:``):
        `permitted_objects`: the objects the token may read and write (None: all of `OBJECTS`); others
        answer 403 with permissionErrors. `rate_limit_per_minute`: calls allowed per window of
        `rate_limit_window_s` seconds before 429 (None: no limit, the default). `custom_fields`: what
        ``GET /customfields`` lists (name, type, parent, ...). `main_api_latency_s`: seconds added to
        each main API answer. `rate_limit_headers=False`: answers carry no X-Rate-Limit-* headers (a
        429 only its Retry-After), as Planhat's current docs promise none. `update_only_objects`: objects
        the token may update but not create: an item that would create a record is refused in
        permissionErrors, the others are done, and the answer is 403 (Planhat: "you don't have the right
        permissions to execute one or all the operations"). All are the baseline that `reset()` returns to.

        `ssl_context`: a server-side TLS context; the sandbox then serves https (to test that the
        connector verifies certificates).

        `validate=False` accepts every item of a well-formed body without checking it: items are still
        parsed and counted per endpoint, but none is rejected and the summary counts them under
        "(not checked)". For benchmarks, where the sandbox's CPU competes with the connector's.
        """
        address = ip_address("127.0.0.1" if host == "localhost" else host)
        if address.version != 4 or not address.is_loopback:
            raise ValueError(f"the sandbox binds to an IPv4 loopback address only, not {host!r}")
        self.tenant = tenant
        self.api_token = api_token
        self.host = str(address)
        self.port = port
        self.record_file = record_file
        self.keep_items = keep_items
        self.max_body_bytes = max_body_bytes
        self.latency_s = latency_s
        self.ssl_context = ssl_context
        self.validate = validate
        self._expected_authorization = _utf8(f"Bearer {api_token}")
        self._expected_basic = _utf8(f"{api_token}:")
        self._lock = threading.Lock()
        self._faults = _FaultPlan(latency_s=latency_s, max_body_bytes=max_body_bytes)
        self.main_api_latency_s = main_api_latency_s
        self.permitted_objects = None if permitted_objects is None else frozenset(permitted_objects)
        self.rate_limit_per_minute = rate_limit_per_minute
        self.rate_limit_window_s = rate_limit_window_s
        self.rate_limit_headers = rate_limit_headers
        self.update_only_objects = frozenset(update_only_objects)
        self.custom_fields = normalize_custom_fields(custom_fields)
        self._check_main_api_settings(self.permitted_objects, rate_limit_per_minute, rate_limit_window_s)
        self._check_main_api_settings(self.update_only_objects, None, 1)
        self._main_faults = _FaultPlan(latency_s=main_api_latency_s, max_body_bytes=max_body_bytes)
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
        self._received: list[tuple[str, Any, bool]] = []
        self._received_in: list[int] = []  # per received item, the number of its request
        self._request_count = 0
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._requests: list[RequestRecord] = []
        self._stats = {endpoint: _EndpointStats() for endpoint in ENDPOINTS}
        self._record_lock = threading.Lock()
        self._record_fh: IO[bytes] | None = None
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> PlanhatSandbox:
        """Bind (port 0 picks a free port) and serve on a background thread; returns self for chaining."""
        if self._server is not None:
            return self
        self._stopping.clear()
        if self.record_file is not None:
            self._record_fh = open(self.record_file, "ab")  # noqa: SIM115 - closed in stop()
        try:
            server = _Server((self.host, self.port), self)
            if self.ssl_context is not None:
                server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        except OSError:
            with self._record_lock:
                if self._record_fh is not None:
                    self._record_fh.close()
                    self._record_fh = None
            raise
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval makes stop() (which waits for the loop to notice) take ~10 ms.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"planhat-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, wake sleeping faults and join the server thread. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._record_lock:
            if self._record_fh is not None:
                self._record_fh.close()
                self._record_fh = None

    def __enter__(self) -> PlanhatSandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to configure the connector with, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

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

    def object_counts(self) -> dict[str, int]:
        """How many records each main API object holds now: a cheap checkpoint (e.g. when the
        connector prints a state) to compare later with what the records before it needed."""
        with self._main_lock:
            return self._store.counts()

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

    def summary_text(self) -> str:
        """`summary()` for humans, as printed by ``make demo`` and the CLI on exit."""
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
        return "\n".join(lines)

    # ---- main API: inspection and settings --------------------------------------------------

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

    def configure_main_api(
        self,
        *,
        permitted_objects: Collection[str] | None | _Keep = _KEEP,
        rate_limit_per_minute: int | None | _Keep = _KEEP,
        rate_limit_window_s: float | _Keep = _KEEP,
        custom_fields: Sequence[Mapping[str, Any]] | _Keep = _KEEP,
        rate_limit_headers: bool | _Keep = _KEEP,
        update_only_objects: Collection[str] | _Keep = _KEEP,
    ) -> None:
        """Change the main API's settings; an argument left out keeps its value (see `__init__`).

        A new rate limit or window starts a new window. Raises ValueError before changing anything.
        """
        with self._main_lock:
            permitted = (
                self._permitted
                if permitted_objects is _KEEP
                else (None if permitted_objects is None else frozenset(permitted_objects))
            )
            limit = self._rate_limit if rate_limit_per_minute is _KEEP else rate_limit_per_minute
            window = self._rate_window_s if rate_limit_window_s is _KEEP else rate_limit_window_s
            fields = self._custom_fields if custom_fields is _KEEP else normalize_custom_fields(custom_fields)
            update_only = self._update_only if update_only_objects is _KEEP else frozenset(update_only_objects)
            self._check_main_api_settings(permitted, limit, window)
            self._check_main_api_settings(update_only, None, 1)
            self._permitted = permitted
            self._update_only = update_only
            with self._rate_lock:
                if rate_limit_per_minute is not _KEEP or rate_limit_window_s is not _KEEP:
                    self._rate_window_started, self._rate_calls = None, 0
                self._rate_limit = limit
                self._rate_window_s = float(window)
                if rate_limit_headers is not _KEEP:
                    self._rate_headers = bool(rate_limit_headers)
            self._custom_fields = fields

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

    # ---- faults -----------------------------------------------------------------------------

    def set_faults(
        self,
        *,
        script: Sequence[Mapping[str, Any]] = (),
        random: Mapping[str, float] | None = None,
        seed: int = 0,
        latency_s: float | None = None,
        max_body_bytes: int | None = None,
        api: str = ANALYTICS_API,
    ) -> None:
        """Replace the fault configuration of one API (it is not merged with the previous one).

        `script`: faults for the next data requests, one each, in order (see `Fault`, `FAULT_KINDS`).
        `random`: then, per request, e.g. ``{"503": 0.1, "429": 0.05, "reset_before": 0.02}``, drawn
        from ``Random(seed)`` so a run is reproducible; a random 429 carries ``Retry-After: 0``.
        `latency_s` / `max_body_bytes`: None keeps the constructor's values.
        `api`: ``"analytics"`` (the metrics and activities endpoints, the default) or ``"main"``
        (every main API request, GETs included); each API keeps its own plan.
        Raises ValueError on an unknown kind, field or api, before changing anything.
        """
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {api!r}")
        baseline_latency = self.latency_s if api == ANALYTICS_API else self.main_api_latency_s
        plan = _FaultPlan(
            script=script,
            random=random,
            seed=seed,
            latency_s=baseline_latency if latency_s is None else latency_s,
            max_body_bytes=self.max_body_bytes if max_body_bytes is None else max_body_bytes,
        )
        if api == ANALYTICS_API:
            with self._lock:
                self._faults = plan
        else:
            with self._main_lock:
                self._main_faults = plan

    def reset(self) -> None:
        """Forget received items, records of every object, both request logs, statistics and faults;
        the main API's settings return to the constructor's (the record file is kept)."""
        with self._lock:
            self._faults = _FaultPlan(latency_s=self.latency_s, max_body_bytes=self.max_body_bytes)
            self._received.clear()
            self._received_in.clear()
            self._requests.clear()
            self._stats = {endpoint: _EndpointStats() for endpoint in ENDPOINTS}
        with self._main_lock:
            self._main_faults = _FaultPlan(latency_s=self.main_api_latency_s, max_body_bytes=self.max_body_bytes)
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

    # ---- used by the request handler ------------------------------------------------------

    def _next_fault(self, api: str = ANALYTICS_API) -> Fault:
        if api == MAIN_API:
            with self._main_lock:
                return self._main_faults.draw()
        with self._lock:
            return self._faults.draw()

    def _latency_s(self, api: str = ANALYTICS_API) -> float:
        return (self._main_faults if api == MAIN_API else self._faults).latency_s

    def _max_body_bytes(self, api: str = ANALYTICS_API) -> int:
        return (self._main_faults if api == MAIN_API else self._faults).max_body_bytes

    def _sleep(self, seconds: float) -> None:
        """Sleep on the request's own thread; stop() cuts it short."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _bearer_matches(self, authorization: str) -> bool:
        return hmac.compare_digest(_utf8(authorization), self._expected_authorization)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no data request is being handled (a client that timed out leaves its request
        running here for a moment); True when idle. Call before reading `requests` after a sync."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _new_request_number(self, api: str = ANALYTICS_API) -> int:
        if api == MAIN_API:
            with self._main_lock:
                self._main_request_count += 1
                return self._main_request_count
        with self._lock:
            self._request_count += 1
            return self._request_count

    def _main_authorized(self, authorization: str | None) -> bool:
        """Planhat takes the token as ``Bearer <token>`` or as basic auth with user ``<token>:``."""
        if authorization is None:
            return False
        if self._bearer_matches(authorization):
            return True
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded, self._expected_basic)

    def _take_rate_limit(self) -> tuple[_Outcome | None, tuple[tuple[str, str], ...]]:
        """Count one call in the current window: (a 429 answer when over the limit, or None; headers)."""
        with self._rate_lock:
            limit = self._rate_limit
            if limit is None:
                return None, ()
            now = time.monotonic()
            if self._rate_window_started is None or now - self._rate_window_started >= self._rate_window_s:
                self._rate_window_started, self._rate_calls = now, 0
            if self._rate_calls >= limit:
                retry_after = max(1, math.ceil(self._rate_window_started + self._rate_window_s - now))
                headers: tuple[tuple[str, str], ...] = (("Retry-After", str(retry_after)),)
                if self._rate_headers:
                    headers += (("X-Rate-Limit-Limit", str(limit)), ("X-Rate-Limit-Remaining", "0"))
                return _Outcome(
                    HTTPStatus.TOO_MANY_REQUESTS, {"message": "Too Many Requests"}, headers=headers
                ), headers
            self._rate_calls += 1
            if not self._rate_headers:
                return None, ()
            return None, (("X-Rate-Limit-Limit", str(limit)), ("X-Rate-Limit-Remaining", str(limit - self._rate_calls)))

    def _main_api(
        self,
        method: str,
        name: str,
        query: Mapping[str, list[str]],
        authorization: str | None,
        body: bytes,
        record_id: str = "",
    ) -> _Outcome:
        """Planhat's side of a main API request: token, rate limit, permission, then the object's rules."""
        if not self._main_authorized(authorization):
            return _Outcome(HTTPStatus.UNAUTHORIZED, {"message": "Unauthorized"})
        limited, headers = self._take_rate_limit()
        if limited is not None:
            return limited
        if name == CUSTOM_FIELDS_PATH:  # query parameters (e.g. parent) are ignored: filter client-side
            with self._main_lock:
                return _Outcome(HTTPStatus.OK, copy.deepcopy(self._custom_fields), headers=headers)
        with self._main_lock:
            permitted = self._permitted is None or name in self._permitted
        if not permitted:
            denial = {"object": name, "message": f"this token has no permission on {name}"}
            payload = {"message": denial["message"], "permissionErrors": [denial]}
            if method == "PUT":
                payload = {**empty_answer(), "permissionErrors": [denial]}
            return _Outcome(HTTPStatus.FORBIDDEN, payload, headers=headers)
        if method == "GET":
            return self._list_records(name, query, headers)
        if method == "DELETE":
            with self._main_lock:
                deleted = self._store.delete(name, record_id)
            if not deleted:
                return _Outcome(
                    HTTPStatus.NOT_FOUND, {"message": f"no {name} record with id {record_id}"}, headers=headers
                )
            return _Outcome(HTTPStatus.OK, {"_id": record_id}, 1, 1, headers=headers)
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return _Outcome(
                HTTPStatus.BAD_REQUEST, {"message": f"request body is not valid JSON: {error}"}, headers=headers
            )
        if not isinstance(items, list):
            return _Outcome(
                HTTPStatus.BAD_REQUEST, {"message": "a bulk upsert body must be a JSON array"}, headers=headers
            )
        if len(items) > MAX_BULK_ITEMS:
            message = f"bulk upsert takes at most {MAX_BULK_ITEMS} items per request, got {len(items)}"
            return _Outcome(HTTPStatus.BAD_REQUEST, {"message": message}, len(items), headers=headers)
        with self._main_lock:
            result = self._store.bulk_upsert(name, items, may_create=name not in self._update_only)
        return _Outcome(result.status, result.body, result.items, result.processed, result.errors, headers)

    def _list_records(
        self, name: str, query: Mapping[str, list[str]], headers: tuple[tuple[str, str], ...]
    ) -> _Outcome:
        try:
            limit = int(query.get("limit", [str(DEFAULT_LIST_LIMIT)])[0])
            offset = int(query.get("offset", ["0"])[0])
        except ValueError:
            return _Outcome(HTTPStatus.BAD_REQUEST, {"message": "limit and offset must be integers"}, headers=headers)
        if not 0 < limit <= MAX_LIST_LIMIT or offset < 0:
            message = f"limit must be within 1..{MAX_LIST_LIMIT} and offset >= 0"
            return _Outcome(HTTPStatus.BAD_REQUEST, {"message": message}, headers=headers)
        select = [field for value in query.get("select", []) for field in value.split(",") if field]
        with self._main_lock:
            return _Outcome(HTTPStatus.OK, self._store.page(name, limit, offset, select), headers=headers)

    def _ingest(self, endpoint: str, tenant: str, authorization: str | None, body: bytes, number: int = 0) -> _Outcome:
        """Planhat's side of a data request: tenant and token, then parse, validate and record."""
        unauthorized = _Outcome(HTTPStatus.UNAUTHORIZED, {"message": "Unauthorized"})
        if not hmac.compare_digest(_utf8(tenant), _utf8(self.tenant)):
            return unauthorized
        if endpoint == METRICS and (authorization is None or not self._bearer_matches(authorization)):
            return unauthorized
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return _Outcome(HTTPStatus.BAD_REQUEST, {"message": f"request body is not valid JSON: {error}"})
        if isinstance(payload, dict):
            items: list[Any] = [payload]
        elif isinstance(payload, list):
            items = payload
        else:
            return _Outcome(HTTPStatus.BAD_REQUEST, {"message": "request body must be a JSON array of items"})

        if not self.validate:  # counted, not checked (see __init__)
            verdicts: list[str | None] = [None] * len(items)
            self._record_items(endpoint, items, verdicts, [_NOT_CHECKED] * len(items), [], number)
            return _Outcome(HTTPStatus.OK, {"processed": len(items), "errors": []}, len(items), len(items), 0)
        validate = _VALIDATORS[endpoint]
        verdicts = [validate(item) for item in items]
        errors = [{"item": item, "error": reason} for item, reason in zip(items, verdicts) if reason is not None]
        accepted_keys = [_summary_key(endpoint, item) for item, reason in zip(items, verdicts) if reason is None]
        self._record_items(endpoint, items, verdicts, accepted_keys, errors, number)
        processed = len(accepted_keys)
        return _Outcome(HTTPStatus.OK, {"processed": processed, "errors": errors}, len(items), processed, len(errors))

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

    def _log_request(self, api: str, record: RequestRecord) -> None:
        if api == MAIN_API:
            with self._main_lock:
                self._main_requests.append(record)
            return
        with self._lock:
            self._requests.append(record)
            stats = self._stats[record.endpoint]
            stats.requests += 1
            stats.statuses["no response" if record.status is None else str(int(record.status))] += 1
            if record.fault is not None:
                stats.faults[record.fault] += 1
            if record.authorization_present:
                stats.authorization_sent += 1


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; print the listening line first and the summary last."""
    parser = argparse.ArgumentParser(
        prog="python -m destination_planhat.testing.sandbox",
        description="A local, Planhat-compatible server, analytics and main API (127.0.0.1 only). Control: /_sandbox/*",
    )
    parser.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one (default 8080)")
    parser.add_argument("--tenant", default=DEFAULT_TENANT, help="tenant token expected in the paths")
    parser.add_argument("--api-token", default=DEFAULT_API_TOKEN, help="API token expected by Metrics and the main API")
    parser.add_argument("--record-file", default=None, help="append every received item to this JSON-lines file")
    parser.add_argument(
        "--no-keep-items", dest="keep_items", action="store_false", help="count items without keeping them"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each data answer")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="413 above this body size")
    parser.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="accept every item without checking it (still parsed and counted): for benchmarks",
    )
    parser.add_argument(
        "--permitted-objects",
        default=None,
        help="comma-separated main API objects the token may use (default: all); others answer 403",
    )
    parser.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=None,
        help="main API calls per minute before 429 (default: no limit)",
    )
    parser.add_argument(
        "--main-api-latency", type=float, default=0.0, help="seconds to wait before each main API answer"
    )
    args = parser.parse_args(argv)
    permitted = None if args.permitted_objects is None else [n for n in args.permitted_objects.split(",") if n]

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    sandbox = PlanhatSandbox(
        tenant=args.tenant,
        api_token=args.api_token,
        port=args.port,
        record_file=args.record_file,
        keep_items=args.keep_items,
        max_body_bytes=args.max_body_bytes,
        latency_s=args.latency,
        validate=args.validate,
        permitted_objects=permitted,
        rate_limit_per_minute=args.rate_limit_per_minute,
        main_api_latency_s=args.main_api_latency,
    )
    with sandbox:
        print(f"planhat-sandbox listening on {sandbox.url}", flush=True)
        while not stop_requested.wait(0.2):  # a timed wait keeps signal delivery prompt
            pass
    print(sandbox.summary_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
