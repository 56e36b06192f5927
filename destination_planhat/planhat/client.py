"""The only module that speaks HTTP: one session, timeouts, retries (planhat/retries.py), errors by meaning.

Where a request goes, how it is authenticated and how its answer is read come from the target's
description (planhat.TARGETS); this module only carries them out.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Optional
from urllib.parse import urlsplit

import requests

from destination_planhat.planhat.answers import PostResult, quote
from destination_planhat.planhat.api import (
    CUSTOM_FIELDS_PATH,
    DEFAULT_CALLS_PER_MINUTE,
    PLANHAT_ID_PATTERN,
    TARGETS,
    Endpoint,
    Host,
    Operation,
    endpoint_path,
)
from destination_planhat.planhat.errors import PlanhatHostNotFound, PlanhatTLSError, PlanhatUnavailable, RequestAborted
from destination_planhat.planhat.pacing import CallPacer
from destination_planhat.planhat.retries import (
    DEFAULT_RETRY_POLICY,
    RetryPolicy,
    Verdict,
    host_not_found,
    judge_exception,
    judge_status,
    parse_retry_after,
    tls_reason,
)

logger = logging.getLogger("airbyte")

USER_AGENT = "airbyte-destination-planhat"
_PLANHAT_ID_OK = re.compile(PLANHAT_ID_PATTERN).fullmatch


class PlanhatClient:
    """Sends JSON bodies to Planhat's targets. Thread-safe for concurrent requests."""

    def __init__(
        self,
        base_url: str,
        tenant: Optional[str],
        api_token: Optional[str],
        *,
        main_base_url: Optional[str] = None,
        calls_per_minute: int = DEFAULT_CALLS_PER_MINUTE,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        session: Optional[requests.Session] = None,
        sleep: Optional[Callable[[float], None]] = None,
        pool_size: int = 8,
    ) -> None:
        """`base_url`: the analytics host's; `main_base_url`: the main API's (objects), paced at
        `calls_per_minute` (planhat/pacing.py). `tenant`: None when no stream goes to the analytics host.
        `sleep`: how to wait between attempts; by default a wait that `abort()` cuts short."""
        self._base_urls: Mapping[Host, str] = {Host.ANALYTICS: base_url, Host.MAIN: main_base_url or ""}
        self._urls = {
            endpoint: self._base_urls[t.host]
            + (t.path if "{tenant}" not in t.path else endpoint_path(endpoint, tenant or ""))
            for endpoint, t in TARGETS.items()
            if "{tenant}" not in t.path or tenant
        }
        self._api_token = api_token
        self._policy = retry_policy
        self._timeout = (connect_timeout, read_timeout)
        self._aborted = threading.Event()
        self._sleep = sleep or self._aborted.wait
        self.pacer = CallPacer(calls_per_minute)
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
        self.pacer.abort()

    def _check_aborted(self, endpoint: Endpoint, attempt: int) -> None:
        if self._aborted.is_set():
            raise RequestAborted(f"not sent: the sync was stopped (attempt {attempt})", endpoint=endpoint)

    def url_for_logs(self, endpoint: Endpoint) -> str:
        """The target's URL with the tenant token masked."""
        target = TARGETS[endpoint]
        return self._base_urls[target.host] + target.path.format(tenant="***")

    def main_api_url_for_logs(self) -> str:
        return self._base_urls[Host.MAIN]

    def where(self, endpoint: Endpoint) -> str:
        """The target as error messages name it: its label and its URL (secrets masked)."""
        return f"Planhat {endpoint.label} ({self.url_for_logs(endpoint)})"

    def _headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if TARGETS[endpoint].needs_api_token and self._api_token:
            headers["Authorization"] = f"Bearer {self._api_token}"
        return headers

    def verify_main_api(self) -> None:
        """`GET /companies?limit=1`: a read that writes nothing, to check the token on the main API
        (for `check`). Raises a PlanhatError naming Companies when it is refused."""
        self._get_main("/companies?limit=1", Endpoint.COMPANIES)

    def read_custom_fields(self) -> bytes:
        """`GET /customfields` on the main API (for `discover`): the body of the answer, as it came.

        One attempt, no retries: discover must answer quickly and falls back to the standard fields.
        Raises a PlanhatError (named after Companies, whose credential fix applies) when it fails."""
        return self._get_main(CUSTOM_FIELDS_PATH, Endpoint.COMPANIES)

    def read(self, endpoint: Endpoint, query: str) -> bytes:
        """`GET /{object}?{query}` on the main API (a list read: planhat.list_query), paced with the
        bulk upserts and retried like them (a read changes nothing, so every retry is safe). Returns
        the body of the answer; raises a PlanhatError naming the object when it cannot be read."""
        target = TARGETS[endpoint]
        url = f"{self._base_urls[Host.MAIN]}{target.path}?{query}"
        headers = self._headers(endpoint)
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            self._check_aborted(endpoint, attempt)
            if not self.pacer.wait():
                self._check_aborted(endpoint, attempt)
            sent_at = self.pacer.now()
            retry_after: Optional[float] = None
            try:
                response = self._session.get(url, headers=headers, timeout=self._timeout, allow_redirects=False)
            except requests.RequestException as exc:
                if judge_exception(exc).verdict is Verdict.FAIL:
                    raise PlanhatTLSError(f"the TLS connection failed ({tls_reason(exc)})", endpoint=endpoint) from None
                failure = type(exc).__name__
            else:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                self.pacer.observe(status, response.headers, retry_after, sent_at)
                decision = judge_status(status, frozenset())
                if decision.verdict is Verdict.DONE:
                    return response.content
                if decision.error is not None:
                    raise decision.error(
                        _failure_text(status, quote(response.content), target.base_url_field),
                        endpoint=endpoint,
                        status=status,
                        body=quote(response.content),
                    )
                failure = f"HTTP {status}"
            delay = self._policy.delay(attempt, retry_after, waited)
            if delay is None:
                raise PlanhatUnavailable(
                    f"GET {target.path}: {failure} after {attempt} attempt(s) and {waited:.0f}s of waiting",
                    endpoint=endpoint,
                )
            logger.warning(
                f"reading {endpoint.label}: attempt {attempt}/{self._policy.max_attempts} failed with {failure}; "
                f"retrying in {delay:.1f}s"
            )
            self._sleep(delay)
            waited += delay

    def delete(self, endpoint: Endpoint, planhat_id: str) -> bool:
        """`DELETE /{object}/{id}` on the main API (the target's Operation.DELETE call), paced with every
        other call and retried like them (deleting twice deletes once). True when Planhat deleted the
        record, False when it has no record with that id (404: already absent). Raises a PlanhatError
        naming the object when the delete is refused or Planhat cannot be reached."""
        target = TARGETS[endpoint]
        call = target.operations[Operation.DELETE]
        if _PLANHAT_ID_OK(planhat_id) is None:  # goes into the URL path: nothing else may
            raise ValueError(f"not a Planhat id: {planhat_id!r}")
        url = self._base_urls[Host.MAIN] + call.path.format(id=planhat_id)
        headers = self._headers(endpoint)
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            self._check_aborted(endpoint, attempt)
            if not self.pacer.wait():
                self._check_aborted(endpoint, attempt)
            sent_at = self.pacer.now()
            retry_after: Optional[float] = None
            try:
                response = self._session.request(
                    call.method, url, headers=headers, timeout=self._timeout, allow_redirects=False
                )
            except requests.RequestException as exc:
                if judge_exception(exc).verdict is Verdict.FAIL:
                    raise PlanhatTLSError(f"the TLS connection failed ({tls_reason(exc)})", endpoint=endpoint) from None
                failure = type(exc).__name__
            else:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                self.pacer.observe(status, response.headers, retry_after, sent_at)
                if status == 404:
                    return False
                decision = judge_status(status, frozenset())
                if decision.verdict is Verdict.DONE:
                    return True
                if decision.error is not None:
                    raise decision.error(
                        _failure_text(status, quote(response.content), target.base_url_field),
                        endpoint=endpoint,
                        status=status,
                        body=quote(response.content),
                    )
                failure = f"HTTP {status}"
            delay = self._policy.delay(attempt, retry_after, waited)
            if delay is None:
                raise PlanhatUnavailable(
                    f"{call.method} {target.path}/<id>: {failure} after {attempt} attempt(s) and {waited:.0f}s of waiting",
                    endpoint=endpoint,
                )
            logger.warning(
                f"deleting from {endpoint.label}: attempt {attempt}/{self._policy.max_attempts} failed with {failure}; "
                f"retrying in {delay:.1f}s"
            )
            self._sleep(delay)
            waited += delay

    def _get_main(self, path: str, endpoint: Endpoint) -> bytes:
        url = self._base_urls[Host.MAIN] + path
        self.pacer.wait()
        try:
            response = self._session.get(
                url, headers=self._headers(endpoint), timeout=self._timeout, allow_redirects=False
            )
        except requests.exceptions.SSLError as exc:
            raise PlanhatTLSError(f"the TLS connection failed ({tls_reason(exc)})", endpoint=endpoint) from None
        except requests.RequestException as exc:
            if host_not_found(exc):
                raise PlanhatHostNotFound(_not_found_text(url), endpoint=endpoint) from None
            raise PlanhatUnavailable(f"{type(exc).__name__} on GET {path.split('?')[0]}", endpoint=endpoint) from None
        status = response.status_code
        if 200 <= status < 300:
            return response.content
        decision = judge_status(status, frozenset())
        error = decision.error or PlanhatUnavailable
        raise error(
            _failure_text(status, quote(response.content), TARGETS[endpoint].base_url_field),
            endpoint=endpoint,
            status=status,
            body=quote(response.content),
        )

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "") -> PostResult:
        """Send `body` to the target with retries. Raises a PlanhatError subclass when it cannot be delivered."""
        target = TARGETS[endpoint]
        url, headers = self._urls[endpoint], self._headers(endpoint)
        paced = target.host is Host.MAIN
        waited = 0.0
        ambiguous = 0
        attempt = 0
        unresolved = False  # the last attempt failed because the host name does not exist (DNS)
        while True:
            attempt += 1
            self._check_aborted(endpoint, attempt)
            retry_after: Optional[float] = None
            refused = ""  # Planhat's reasons, when a partial answer refused every item
            if paced and not self.pacer.wait():
                self._check_aborted(endpoint, attempt)
            sent_at = self.pacer.now()
            try:
                # Redirects are not followed: a redirected request would carry the token (and the
                # data) to wherever the Location header points.
                response = self._session.request(
                    target.method, url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
                )
            except requests.RequestException as exc:
                decision = judge_exception(exc)
                if decision.verdict is Verdict.FAIL:
                    raise PlanhatTLSError(
                        f"the TLS connection failed ({tls_reason(exc)}); certificates are always verified",
                        endpoint=endpoint,
                        ambiguous_failures=ambiguous,
                    ) from None
                clean = decision.verdict is Verdict.RETRY
                failure = f"{type(exc).__name__} ({'not connected' if clean else 'the server may have received it'})"
                unresolved = host_not_found(exc)
                if unresolved:
                    failure = _not_found_text(url)
            else:
                unresolved = False
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if paced:
                    lowered = self.pacer.observe(status, response.headers, retry_after, sent_at)
                    if lowered is not None:
                        logger.warning(
                            f"{context}{endpoint.label}: Planhat answered 429 (too many requests): calls to the main API "
                            f"now go at most {lowered:.0f} a minute (api_calls_per_minute is "
                            f"{self.pacer.calls_per_minute}), back up slowly while Planhat accepts them"
                        )
                decision = judge_status(status, target.split_statuses)
                if status in target.answer_statuses:
                    # A 400 of the main API lists the refused items like a 206 does: the sender
                    # decides whether the batch is split further or its items are counted as refused.
                    result = target.read_answer(response.content)
                    if result.errors:
                        result.attempts, result.ambiguous_failures, result.status = attempt, ambiguous, status
                        return result
                if status in target.partial_statuses:
                    # Planhat did some of the items and refused the others (e.g. a 403 for the items
                    # the Service Account may not create): those are refused, with Planhat's reason.
                    # A 403 that did nothing is the whole request refused: the sync fails below.
                    result = target.read_answer(response.content)
                    if result.processed:
                        result.attempts, result.ambiguous_failures, result.status = attempt, ambiguous, status
                        return result
                    refused = _reasons(result)
                if decision.verdict is Verdict.DONE:
                    result = target.read_answer(response.content)
                    result.attempts, result.ambiguous_failures, result.status = attempt, ambiguous, status
                    return result
                if decision.error is not None:
                    raise decision.error(
                        _failure_text(status, quote(response.content), target.base_url_field),
                        endpoint=endpoint,
                        status=status,
                        body=refused or quote(response.content),
                        ambiguous_failures=ambiguous,
                    )
                clean = decision.verdict is Verdict.RETRY
                failure = f"HTTP {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after is not None else "")
            delay = self._policy.delay(attempt, retry_after, waited)
            if delay is None:
                raise (PlanhatHostNotFound if unresolved else PlanhatUnavailable)(
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


def _reasons(result: PostResult) -> str:
    """The distinct reasons of an answer's refused items, for an error message."""
    reasons = list(dict.fromkeys(error.reason for error in result.errors))
    return "; ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")


def _not_found_text(url: str) -> str:
    return f"the host {urlsplit(url).hostname} was not found (DNS: no such name)"


def _failure_text(status: int, text: str, base_url_field: str) -> str:
    if 300 <= status < 400:
        return (
            f"HTTP {status}: a redirect, which is not followed (requests carry credentials); "
            f"set `{base_url_field}` to the final address"
        )
    return f"HTTP {status}: {text}"
