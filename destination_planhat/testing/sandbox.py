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

Here: `PlanhatSandbox` (Planhat's answers on the main API), request routing, a data request's answer
with its fault, the control endpoints. Its parts: `sandbox_analytics` (the analytics host's checks,
records and reports), `sandbox_main_api` (the main API's settings, records and reports),
`sandbox_faults` (the faults and each API's plan), `sandbox_server` (life cycle, the handler's I/O).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import enum
import hmac
import math
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from http import HTTPStatus
from ipaddress import ip_address
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from destination_planhat.testing.sandbox_analytics import _DIMENSION_ID_PATTERN as _DIMENSION_ID_PATTERN  # unit_tests
from destination_planhat.testing.sandbox_analytics import (
    ENDPOINTS,
    METRICS,
    USER_ACTIVITIES,
    AnalyticsHost,
    RequestRecord,
    utf8,
    validate_metric,
    validate_user_activity,
)
from destination_planhat.testing.sandbox_faults import (
    ANALYTICS_API,
    APIS,
    DEFAULT_MAX_BODY_BYTES,
    FAULT_KINDS,
    MAIN_API,
    NO_FAULT,
    NOT_ACKNOWLEDGING_FAULTS,
    Fault,
    FaultPlans,
    short_count,
)
from destination_planhat.testing.sandbox_faults import Outcome as _Outcome
from destination_planhat.testing.sandbox_main_api import MainApiHost
from destination_planhat.testing.sandbox_objects import (
    MAX_BULK_ITEMS,
    OBJECTS,
    empty_answer,
    normalize_custom_fields,
)
from destination_planhat.testing.sandbox_server import HandlerIO, SandboxHTTPServer, SandboxServer

# What other modules import from here (the sandbox's public names; the parts live in sandbox_*.py).
__all__ = [
    "ANALYTICS_API",
    "APIS",
    "ENDPOINTS",
    "FAULT_KINDS",
    "MAIN_API",
    "METRICS",
    "NOT_ACKNOWLEDGING_FAULTS",
    "USER_ACTIVITIES",
    "Fault",
    "PlanhatSandbox",
    "RequestRecord",
    "main",
    "validate_metric",
    "validate_user_activity",
]

CUSTOM_FIELDS_PATH = "customfields"
# `GET /{object}` paging; Planhat documents neither the default nor the maximum (unconfirmed).
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 5000
DEFAULT_RATE_WINDOW_S = 60.0

DEFAULT_TENANT = "demo-tenant-0001"
DEFAULT_API_TOKEN = "demo-api-token"

# Path prefix of each data endpoint; the tenant token is the rest of the path.
_DATA_ROUTES = (("/dimensiondata/", METRICS), ("/analytics/bulk/", USER_ACTIVITIES))
_CONTROL_PREFIX = "/_sandbox/"


class _Keep(enum.Enum):
    """`configure_main_api`'s default: an argument left out keeps its value. A member of its own type,
    so that `is _KEEP` tells mypy which type the argument has otherwise."""

    KEEP = enum.auto()


_KEEP: Final = _Keep.KEEP


# --------------------------------------------------------------------------------------------
# HTTP: the server, a data request's answer (faults included), the control endpoints, routing
# --------------------------------------------------------------------------------------------


class _Server(SandboxHTTPServer):
    """The server of one PlanhatSandbox: its handlers reach Planhat through `sandbox`."""

    def __init__(self, address: tuple[str, int], sandbox: PlanhatSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler, sandbox._stopping)


def _phrase(status: int) -> str:
    """The standard reason phrase, or a generic one for codes http.HTTPStatus does not know."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class _DataRequestHandler(HandlerIO):
    """How a routed data request of either API is answered: counted as in flight, then the body limit,
    the injected fault and Planhat's logic (`process`), logged before the answer goes out."""

    server: _Server

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
            status: int | None, fault: Fault = NO_FAULT, outcome: _Outcome | None = None, body_bytes: int = 0
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
        limit = sandbox._fault_plans.max_body_bytes(api)
        if length > limit:
            self._drain(length)  # so the client reads a clean 413 rather than a reset
            log(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, body_bytes=length)
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"message": f"request body of {length} bytes exceeds the limit of {limit} bytes"},
            )
            return

        fault = sandbox._fault_plans.draw(api)
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
            sandbox._sleep(sandbox._fault_plans.latency_s(api))
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

        if fault.kind in NOT_ACKNOWLEDGING_FAULTS and not fault.process:
            outcome = _Outcome(HTTPStatus.OK, {})  # a broken proxy answered; Planhat never saw it
        elif fault.kind == "short_count":
            outcome, left_out = short_count(body, fault.items, lambda done: process(done, authorization, number))
            sandbox._record_left_out(api, endpoint, number, left_out)
        else:
            outcome = process(body, authorization, number)
        # processed, but the client gave up waiting
        if fault.kind == "delay" and fault.process and self._wait_unless_client_leaves(fault.seconds):
            log(None, fault, outcome, length)
            self.close_connection = True
            return
        sandbox._sleep(sandbox._fault_plans.latency_s(api))

        if fault.kind == "reset_after":
            log(None, fault, outcome, length)
            self._abort()
        elif fault.kind in ("bad_body", "bad_json"):
            log(HTTPStatus.OK, fault, outcome, length)
            content_type = "text/html" if fault.kind == "bad_body" else "application/json"
            self._send(HTTPStatus.OK, (fault.body or "").encode(), content_type)
        elif fault.kind == "no_counts":
            log(fault.status, fault, outcome, length)
            content_type = "application/json" if (fault.body or "").lstrip()[:1] in ("{", "[") else "text/html"
            self._send(fault.status, (fault.body or "").encode(), content_type)
        else:
            log(outcome.status, fault, outcome, length)
            self._send(outcome.status, orjson.dumps(outcome.payload), "application/json", outcome.headers)


# The control endpoints (``/_sandbox/...``), for a sandbox run as a process (the demo, the benchmarks):
# what each answers, as (status, JSON payload); the handler sends it.

_NOT_FOUND = (HTTPStatus.NOT_FOUND, {"message": "Not Found"})


def _answer_control_get(sandbox: PlanhatSandbox, name: str, query: Mapping[str, list[str]]) -> tuple[int, Any]:
    """The answer to ``GET /_sandbox/{name}``: a report of what the sandbox holds."""
    if name == "summary":
        return HTTPStatus.OK, sandbox.summary()
    if name == "requests":
        api = query.get("api", [ANALYTICS_API])[0]
        if api not in APIS:
            return HTTPStatus.BAD_REQUEST, {"message": f"api must be one of {APIS}, got {api!r}"}
        return HTTPStatus.OK, sandbox.requests if api == ANALYTICS_API else sandbox.main_api_requests
    if name == "objects":
        object_name = query.get("object", [None])[0]
        try:
            return HTTPStatus.OK, sandbox.all_objects() if object_name is None else sandbox.objects(object_name)
        except ValueError as error:  # unknown object name
            return HTTPStatus.BAD_REQUEST, {"message": str(error)}
    if name == "main_api":
        return HTTPStatus.OK, sandbox.main_api_summary()
    if name == "received":
        endpoint = query.get("endpoint", [None])[0]
        try:
            return HTTPStatus.OK, sandbox.received_records(endpoint)
        except ValueError as error:  # unknown endpoint name
            return HTTPStatus.BAD_REQUEST, {"message": str(error)}
        except RuntimeError as error:  # keep_items=False
            return HTTPStatus.CONFLICT, {"message": str(error)}
    if name == "health":
        return HTTPStatus.OK, {"ok": True, "url": sandbox.url, "tenant": sandbox.tenant}
    return _NOT_FOUND


def _answer_control_post(sandbox: PlanhatSandbox, name: str, body: bytes) -> tuple[int, Any]:
    """The answer to ``POST /_sandbox/{name}``: reset, or new faults or main API settings from `body`."""
    if name == "reset":
        sandbox.reset()
        return HTTPStatus.OK, {"ok": True}
    if name not in ("faults", "main_api"):
        return _NOT_FOUND
    try:
        config = orjson.loads(body or b"{}")
        if not isinstance(config, dict):
            raise ValueError(f"the {name} config must be a JSON object")
        if name == "faults":
            sandbox.set_faults(**config)
        else:
            sandbox.configure_main_api(**config)
    except (orjson.JSONDecodeError, TypeError, ValueError) as error:
        return HTTPStatus.BAD_REQUEST, {"message": str(error)}
    return HTTPStatus.OK, {"ok": True}


def _main_api_name(path: str) -> str | None:
    """``/companies`` or ``/companies/`` -> ``companies``; None for anything with more segments."""
    name = path.strip("/")
    return name if name and "/" not in name else None


class _Handler(_DataRequestHandler):
    """Routes each request: data endpoints of either API, or the control endpoints. How a data request
    is answered is `_DataRequestHandler`'s; the I/O is `HandlerIO`'s; Planhat is `PlanhatSandbox`."""

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

    def _control_get(self, name: str, query: dict[str, list[str]]) -> None:
        self._send_json(*_answer_control_get(self.server.sandbox, name, query))

    def _control_post(self, name: str) -> None:
        length = self._content_length() or 0
        self._send_json(*_answer_control_post(self.server.sandbox, name, self.rfile.read(length)))


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class PlanhatSandbox(AnalyticsHost, MainApiHost, SandboxServer):
    """Planhat's analytics host and main API on 127.0.0.1, recording what they receive and failing on demand.

    The parts: `AnalyticsHost` (what the analytics host records and reports), `MainApiHost` (the main
    API's settings, objects and reports), `SandboxServer` (the life cycle: start, stop, wait_idle) and
    `FaultPlans` (the faults to come); here, Planhat's answers on the main API.

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
        AnalyticsHost.__init__(self, tenant, api_token, record_file, keep_items, validate)
        MainApiHost.__init__(
            self,
            permitted_objects,
            rate_limit_per_minute,
            rate_limit_window_s,
            custom_fields,
            main_api_latency_s,
            rate_limit_headers,
            update_only_objects,
        )
        SandboxServer.__init__(self, str(address), port, ssl_context)
        self.max_body_bytes = max_body_bytes
        self.latency_s = latency_s
        self._expected_basic = utf8(f"{api_token}:")
        self._fault_plans = FaultPlans(latency_s, main_api_latency_s, max_body_bytes)

    def _bind(self, address: tuple[str, int]) -> SandboxHTTPServer:
        return _Server(address, self)

    def summary_text(self) -> str:
        """`summary()` and `main_api_summary()` for humans, as printed by ``make demo`` and the CLI on exit."""
        return "\n".join(self._analytics_summary_lines() + self._main_summary_lines())

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
        self._fault_plans.replace(api, script, random, seed, latency_s, max_body_bytes)

    def reset(self) -> None:
        """Forget received items, records of every object, both request logs, statistics and faults;
        the main API's settings return to the constructor's (the record file is kept)."""
        self._fault_plans.reset()
        self._reset_analytics()
        self._reset_main_api()

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

    def _new_request_number(self, api: str = ANALYTICS_API) -> int:
        return self._new_main_request_number() if api == MAIN_API else self._new_analytics_request_number()

    def _log_request(self, api: str, record: RequestRecord) -> None:
        if api == MAIN_API:
            self._log_main_request(record)
        else:
            self._log_analytics_request(record)

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
