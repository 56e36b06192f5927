"""The only module that speaks HTTP: one session, timeouts, one retry policy, errors by meaning.

Why a retry loop of our own rather than urllib3's `Retry`: each retry must be logged with the
stream and batch, retries after an ambiguous failure (the server may have processed the body)
must be counted as possible duplicates, a 413 must reach the caller (which splits the batch), and
the total wait per batch is bounded. urllib3's `Retry` does none of these for POST; its Retry-After
parser is reused below.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import orjson
import requests
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from destination_planhat.planhat import (
    ENDPOINT_NEEDS_API_TOKEN,
    ENDPOINT_PATHS,
    RESPONSE_ERROR_ITEM,
    RESPONSE_ERROR_REASON,
    RESPONSE_ERRORS,
    RESPONSE_PROCESSED,
    Endpoint,
    endpoint_path,
)

logger = logging.getLogger("airbyte")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A 429 or 503 says "not now": the request was refused. Other failures may have happened after
# Planhat processed the body, so a retry can duplicate its items.
CLEAN_REFUSAL_STATUSES = frozenset({429, 503})
BODY_QUOTE_CHARS = 500
USER_AGENT = "airbyte-destination-planhat"


class PlanhatError(Exception):
    """A request that did not succeed; carries what the server said, never the request's secrets."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint,
        status: Optional[int] = None,
        body: str = "",
        ambiguous_failures: int = 0,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.body = body
        # Failed attempts before this one after which Planhat may have kept the items anyway.
        self.ambiguous_failures = ambiguous_failures


class PlanhatAuthError(PlanhatError):
    """401/403: the API token (Metrics) or the tenant token is wrong."""


class PlanhatPayloadTooLarge(PlanhatError):
    """413: the caller should split the batch."""


class PlanhatRejectedRequest(PlanhatError):
    """Another 4xx: retrying the same request will not help."""


class PlanhatUnavailable(PlanhatError):
    """Retries exhausted on 429/5xx/timeouts/connection errors."""


class PlanhatTLSError(PlanhatError):
    """The server's TLS certificate could not be verified: retrying cannot help, and the token stays home."""


class RequestAborted(PlanhatError):
    """The sync failed elsewhere and `abort()` was called: this request is not tried (again)."""


@dataclass(frozen=True)
class RejectedItem:
    item: Any
    reason: str


@dataclass
class PostResult:
    """Planhat's answer to one accepted request, and what it took to get it."""

    processed: Optional[int]  # None when the 200 answer carried no counts
    errors: list[RejectedItem] = field(default_factory=list)
    attempts: int = 1
    ambiguous_failures: int = 0  # failed attempts after which Planhat may have kept the items
    note: str = ""  # why the counts are missing, when they are


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, a cap per wait, a cap on attempts and on total waiting."""

    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_total_wait: float = 900.0
    max_retry_after: float = 300.0

    def jitter(self, ceiling: float) -> float:
        """The only random part, so tests can replace it."""
        return random.uniform(ceiling / 2, ceiling)

    def delay(self, attempt: int, retry_after: Optional[float], waited: float) -> Optional[float]:
        """Seconds to wait before attempt `attempt + 1`, or None when the budget is spent."""
        if attempt >= self.max_attempts:
            return None
        backoff = self.jitter(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if retry_after is not None:
            # Never sooner than the server asked, but never an unbounded wait either.
            backoff = max(backoff, min(retry_after, self.max_retry_after))
        if waited + backoff > self.max_total_wait:
            return None
        return backoff


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or garbled."""
    if not value:
        return None
    try:
        return max(0.0, float(Retry().parse_retry_after(value)))
    except Exception:  # urllib3 raises InvalidHeader; anything unparseable means "no hint"
        return None


def parse_answer(body: bytes) -> PostResult:
    """Planhat's `{"processed": N, "errors": [...]}`; a 200 without it still means "received"."""
    try:
        answer = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return PostResult(processed=None, note=f"the answer was not JSON: {_quote(body)}")
    if not isinstance(answer, Mapping) or not isinstance(answer.get(RESPONSE_PROCESSED), int):
        return PostResult(processed=None, note=f"the answer had no '{RESPONSE_PROCESSED}' count: {_quote(body)}")
    errors = []
    raw_errors = answer.get(RESPONSE_ERRORS) or []
    if isinstance(raw_errors, list):
        for entry in raw_errors:
            if isinstance(entry, Mapping):
                errors.append(RejectedItem(entry.get(RESPONSE_ERROR_ITEM), str(entry.get(RESPONSE_ERROR_REASON, "unknown error"))))
            else:
                errors.append(RejectedItem(None, str(entry)))
    return PostResult(processed=answer[RESPONSE_PROCESSED], errors=errors)


def _quote(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text[:BODY_QUOTE_CHARS] + ("..." if len(text) > BODY_QUOTE_CHARS else "")


def _tls_reason(exc: BaseException) -> str:
    """The TLS reason (e.g. "certificate verify failed: self-signed certificate"), without the URL."""
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError) and current.reason:
            return str(current.reason)
        pending.extend((getattr(current, "reason", None), current.__cause__, current.__context__, *current.args))
    return "TLS handshake failed"


def _is_connect_failure(exc: requests.RequestException) -> bool:
    """True when the request never reached the server (refused, DNS, connect timeout): safe to resend."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, NewConnectionError):
            return True
        pending.extend((getattr(current, "reason", None), current.__cause__, current.__context__, *current.args))
    return False


class PlanhatClient:
    """Posts JSON bodies to Planhat's analytics endpoints. Thread-safe for concurrent posts."""

    def __init__(
        self,
        base_url: str,
        tenant: str,
        api_token: Optional[str],
        *,
        retry_policy: RetryPolicy = RetryPolicy(),
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        session: Optional[requests.Session] = None,
        sleep: Optional[Callable[[float], None]] = None,
        pool_size: int = 8,
    ) -> None:
        """`sleep`: how to wait between attempts; by default a wait that `abort()` cuts short."""
        self._base_url = base_url
        self._urls = {endpoint: base_url + endpoint_path(endpoint, tenant) for endpoint in Endpoint}
        self._api_token = api_token
        self._policy = retry_policy
        self._timeout = (connect_timeout, read_timeout)
        self._aborted = threading.Event()
        self._sleep = sleep or self._aborted.wait
        self._session = session or requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update({"User-Agent": USER_AGENT})

    def close(self) -> None:
        self._session.close()

    def abort(self) -> None:
        """Stop every retry in progress: waits end now, and no further attempt is made.

        Called when the sync has failed, so that sender threads waiting out a long Retry-After do
        not keep sending (or keep the process alive) after the failure is reported.
        """
        self._aborted.set()

    def _check_aborted(self, endpoint: Endpoint, attempt: int) -> None:
        if self._aborted.is_set():
            raise RequestAborted(f"not sent: the sync was stopped (attempt {attempt})", endpoint=endpoint)

    def url_for_logs(self, endpoint: Endpoint) -> str:
        """The endpoint URL with the tenant token masked."""
        return self._base_url + ENDPOINT_PATHS[endpoint].format(tenant="***")

    def _headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if ENDPOINT_NEEDS_API_TOKEN[endpoint] and self._api_token:
            headers["Authorization"] = f"Bearer {self._api_token}"
        return headers

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "") -> PostResult:
        """POST `body` with retries. Raises a PlanhatError subclass when it cannot be delivered."""
        url, headers = self._urls[endpoint], self._headers(endpoint)
        waited = 0.0
        ambiguous = 0
        attempt = 0
        while True:
            attempt += 1
            self._check_aborted(endpoint, attempt)
            retry_after: Optional[float] = None
            try:
                # Redirects are not followed: a redirected POST would carry the token (and the data)
                # to wherever the Location header points.
                response = self._session.post(url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False)
            except requests.exceptions.SSLError as exc:
                raise PlanhatTLSError(
                    f"the TLS connection failed ({_tls_reason(exc)}); certificates are always verified",
                    endpoint=endpoint,
                    ambiguous_failures=ambiguous,
                ) from None
            except requests.RequestException as exc:
                clean = _is_connect_failure(exc)
                failure = f"{type(exc).__name__} ({'not connected' if clean else 'the server may have received it'})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    result = parse_answer(response.content)
                    result.attempts, result.ambiguous_failures = attempt, ambiguous
                    return result
                text = _quote(response.content)
                known = {"endpoint": endpoint, "status": status, "body": text, "ambiguous_failures": ambiguous}
                if status in (401, 403):
                    raise PlanhatAuthError(f"HTTP {status}: {text}", **known)
                if status == 413:
                    raise PlanhatPayloadTooLarge(f"HTTP 413: {text}", **known)
                if 300 <= status < 400:
                    raise PlanhatRejectedRequest(
                        f"HTTP {status}: a redirect, which is not followed (requests carry credentials); "
                        "set `analytics_base_url` to the final address",
                        **known,
                    )
                if status not in RETRYABLE_STATUSES:
                    raise PlanhatRejectedRequest(f"HTTP {status}: {text}", **known)
                clean = status in CLEAN_REFUSAL_STATUSES
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                failure = f"HTTP {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after is not None else "")
            delay = self._policy.delay(attempt, retry_after, waited)
            if delay is None:
                raise PlanhatUnavailable(
                    f"{failure} after {attempt} attempt(s) and {waited:.0f}s of waiting",
                    endpoint=endpoint,
                    ambiguous_failures=ambiguous,
                )
            if not clean:
                ambiguous += 1
            logger.warning(
                f"{context}{endpoint.label}: attempt {attempt}/{self._policy.max_attempts} failed with {failure}; "
                f"retrying in {delay:.1f}s"
            )
            self._sleep(delay)
            waited += delay
