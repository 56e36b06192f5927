"""The only module that speaks HTTP: one session, timeouts, retries (planhat/retries.py), errors by meaning.

Where a request goes, how it is authenticated and how its answer is read come from the target's
description (planhat.TARGETS); this module only carries them out.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Optional
from urllib.parse import urlsplit

import requests

from destination_planhat.planhat.addresses import Addresses
from destination_planhat.planhat.answers import PostResult, quote
from destination_planhat.planhat.api import (
    CUSTOM_FIELDS_PATH,
    DEFAULT_CALLS_PER_MINUTE,
    PLANHAT_ID_PATTERN,
    TARGETS,
    Endpoint,
    Host,
    Operation,
)
from destination_planhat.planhat.errors import (
    PlanhatHostNotFound,
    PlanhatTLSError,
    PlanhatUnacknowledged,
    PlanhatUnavailable,
    RequestAborted,
)
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
from destination_planhat.planhat.statuses import Meaning, meaning, rate_limited

logger = logging.getLogger("airbyte")

USER_AGENT = "airbyte-destination-planhat"
_PLANHAT_ID_OK = re.compile(PLANHAT_ID_PATTERN).fullmatch


class _MainApiCalls:
    """The main API's calls that may be sent again safely: reads (check's one company, discover's custom
    fields, the list reads of keys) and deletes. Part of PlanhatClient, which owns the session, the
    pacer and the retry policy; the bulk upserts and the analytics posts are PlanhatClient.post."""

    addresses: Addresses
    pacer: CallPacer
    _session: requests.Session
    _policy: RetryPolicy
    _timeout: tuple[float, float]
    _sleep: Callable[[float], object]
    _aborted: threading.Event

    def _check_aborted(self, endpoint: Endpoint, attempt: int) -> None:
        if self._aborted.is_set():
            raise RequestAborted(f"not sent: the sync was stopped (attempt {attempt})", endpoint=endpoint)

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
        path = TARGETS[endpoint].path
        url = f"{self.addresses.base_url(Host.MAIN)}{path}?{query}"
        response = self._repeatable_call(endpoint, "GET", url, f"reading {endpoint.label}", f"GET {path}")
        assert response is not None, "a read is never answered as absent"
        return response.content

    def delete(self, endpoint: Endpoint, planhat_id: str) -> bool:
        """`DELETE /{object}/{id}` on the main API (the target's Operation.DELETE call), paced with every
        other call and retried like them (deleting twice deletes once). True when Planhat deleted the
        record, False when it has no record with that id (404: already absent). Raises a PlanhatError
        naming the object when the delete is refused or Planhat cannot be reached."""
        target = TARGETS[endpoint]
        call = target.operations[Operation.DELETE]
        if _PLANHAT_ID_OK(planhat_id) is None:  # goes into the URL path: nothing else may
            raise ValueError(f"not a Planhat id: {planhat_id!r}")
        url = self.addresses.base_url(Host.MAIN) + call.path.format(id=planhat_id)
        what = f"{call.method} {target.path}/<id>"
        response = self._repeatable_call(
            endpoint, call.method, url, f"deleting from {endpoint.label}", what, absent_on_404=True
        )
        return response is not None

    def _repeatable_call(
        self, endpoint: Endpoint, method: str, url: str, doing: str, what: str, *, absent_on_404: bool = False
    ) -> Optional[requests.Response]:
        """One main API call that may be sent again safely (a read, a delete), paced like every call:
        retried on 5xx, timeouts and connection errors within `max_attempts`; a rate limit is a wait
        that uses up no attempt (as for the upserts). The 2xx answer, or None for a 404 when
        `absent_on_404`. Raises a PlanhatError naming the object when it fails for good."""
        target = TARGETS[endpoint]
        headers = self.addresses.headers(endpoint)
        waited = 0.0
        attempt = 1
        rate_waits = 0
        while True:
            self._check_aborted(endpoint, attempt)
            if not self.pacer.wait():
                self._check_aborted(endpoint, attempt)
            sent_at = self.pacer.now()
            retry_after: Optional[float] = None
            limited = False
            try:
                response = self._session.request(
                    method, url, headers=headers, timeout=self._timeout, allow_redirects=False
                )
            except requests.RequestException as exc:
                if judge_exception(exc).verdict is Verdict.FAIL:
                    raise PlanhatTLSError(f"the TLS connection failed ({tls_reason(exc)})", endpoint=endpoint) from None
                failure = type(exc).__name__
            else:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                self.pacer.observe(status, response.headers, retry_after, sent_at)
                if absent_on_404 and status == 404:
                    return None
                decision = judge_status(Host.MAIN, status, can_split=False)
                if decision.verdict is Verdict.DONE:
                    return response
                if decision.error is not None:
                    raise decision.error(
                        _failure_text(Host.MAIN, status, quote(response.content), target.base_url_field),
                        endpoint=endpoint,
                        status=status,
                        body=quote(response.content),
                    )
                limited = rate_limited(Host.MAIN, status, response.headers)
                failure = f"HTTP {status}"
            if limited:
                rate_waits += 1
                delay = self._policy.rate_limit_delay(rate_waits, retry_after, waited)
            else:
                delay = self._policy.delay(attempt, retry_after, waited)
            if delay is None:
                raise PlanhatUnavailable(
                    f"{what}: {failure} after {attempt} attempt(s) and {waited:.0f}s of waiting", endpoint=endpoint
                )
            logger.warning(
                f"{doing}: attempt {attempt}/{self._policy.max_attempts} failed with {failure}; retrying in {delay:.1f}s"
            )
            self._sleep(delay)
            waited += delay
            if not limited:
                attempt += 1

    def _get_main(self, path: str, endpoint: Endpoint) -> bytes:
        url = self.addresses.base_url(Host.MAIN) + path
        self.pacer.wait()
        try:
            response = self._session.get(
                url, headers=self.addresses.headers(endpoint), timeout=self._timeout, allow_redirects=False
            )
        except requests.exceptions.SSLError as exc:
            raise PlanhatTLSError(f"the TLS connection failed ({tls_reason(exc)})", endpoint=endpoint) from None
        except requests.RequestException as exc:
            if host_not_found(exc):
                raise PlanhatHostNotFound(_not_found_text(url), endpoint=endpoint) from None
            raise PlanhatUnavailable(f"{type(exc).__name__} on GET {path.split('?')[0]}", endpoint=endpoint) from None
        status = response.status_code
        decision = judge_status(Host.MAIN, status, can_split=False)
        if decision.verdict is Verdict.DONE:
            return response.content
        error = decision.error or PlanhatUnavailable
        raise error(
            _failure_text(Host.MAIN, status, quote(response.content), TARGETS[endpoint].base_url_field),
            endpoint=endpoint,
            status=status,
            body=quote(response.content),
        )


class PlanhatClient(_MainApiCalls):
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
        self.addresses = Addresses(base_url, tenant, api_token, main_base_url)
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

    def url_for_logs(self, endpoint: Endpoint) -> str:
        return self.addresses.url_for_logs(endpoint)

    def main_api_url_for_logs(self) -> str:
        return self.addresses.base_url(Host.MAIN)

    def where(self, endpoint: Endpoint) -> str:
        return self.addresses.where(endpoint)

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "", items: Optional[int] = None) -> PostResult:
        """Send `body` (`items` items, when known) to the target with retries. Returns Planhat's
        acknowledgement; raises a PlanhatError subclass when none came.

        An acknowledgement is an answer that says what was done (`PostResult.shortfall`): a 2xx
        without Planhat's counts, or counting fewer items than were sent on the main API, is an
        ambiguous failure, tried again like a connection reset. A rate limit (planhat/statuses.py: a
        429, or no calls left) is a wait, not a failed attempt: it waits as Retry-After asks and uses
        up no attempt; only `max_total_wait` bounds it."""
        target = TARGETS[endpoint]
        url, headers = self.addresses.url(endpoint), self.addresses.headers(endpoint)
        paced = target.host is Host.MAIN
        waited = 0.0
        ambiguous = 0
        attempt = 1  # the attempt under way, as max_attempts counts them
        unresolved = False  # the last attempt failed because the host name does not exist (DNS)
        tries = 0  # requests made, rate limited ones included
        rate_waits = 0
        while True:
            tries += 1
            self._check_aborted(endpoint, tries)
            retry_after: Optional[float] = None
            refused = ""  # Planhat's reasons, when a partial answer refused every item
            limited = False
            unacknowledged = False  # this try was answered without saying what was done
            answer: Optional[PostResult] = None
            if paced and not self.pacer.wait():
                self._check_aborted(endpoint, tries)
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
                            f"{self.pacer.calls_per_minute}), back to it within {self.pacer.recovery_seconds:.0f}s "
                            "once Planhat accepts them again"
                        )
                decision = judge_status(target.host, status)
                what = meaning(target.host, status)
                if what is Meaning.PAYLOAD_REFUSED:
                    # A 400 of the main API lists the refused items like a 206 does: the sender
                    # decides whether the batch is split further or its items are counted as refused.
                    result = target.read_answer(response.content)
                    if result.errors:
                        result.attempts, result.ambiguous_failures, result.status = tries, ambiguous, status
                        return result
                if what is Meaning.PERMISSION:
                    # Planhat did some of the items and refused the others (e.g. a 403 for the items
                    # the Service Account may not create): those are refused, with Planhat's reason.
                    # A 403 that did nothing is the whole request refused: the sync fails below.
                    result = target.read_answer(response.content)
                    if result.processed:
                        answer = result
                    else:
                        refused = _reasons(result)
                if answer is None and decision.verdict is Verdict.DONE:
                    answer = target.read_answer(response.content)
                if answer is not None:
                    why = answer.shortfall(items, target.answer_counts_every_item)
                    if not why:
                        answer.attempts, answer.ambiguous_failures, answer.status = tries, ambiguous, status
                        return answer
                    # Not an acknowledgement: Planhat (or whatever answered) may have done all, some or
                    # none of the items. Sent again like after a connection reset.
                    unacknowledged, clean = True, False
                    failure = f"HTTP {status} that does not say what was done ({why})"
                elif decision.error is not None:
                    raise decision.error(
                        _failure_text(target.host, status, quote(response.content), target.base_url_field),
                        endpoint=endpoint,
                        status=status,
                        body=refused or quote(response.content),
                        ambiguous_failures=ambiguous,
                    )
                else:
                    clean = decision.verdict is Verdict.RETRY
                    limited = rate_limited(target.host, status, response.headers)
                    failure = f"HTTP {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after is not None else "")
            if limited:
                rate_waits += 1
                delay = self._policy.rate_limit_delay(rate_waits, retry_after, waited)
                if delay is None:
                    raise PlanhatUnavailable(
                        f"{failure}: Planhat was still limiting requests after {tries} request(s) and {waited:.0f}s "
                        f"of waiting (max_retry_seconds is {self._policy.max_total_wait:g})",
                        endpoint=endpoint,
                        ambiguous_failures=ambiguous,
                    )
                logger.warning(
                    f"{context}{endpoint.label}: Planhat is limiting requests ({failure}); waiting {delay:.1f}s "
                    f"(a rate limit uses up no attempt; {waited + delay:.0f}s of max_retry_seconds used)"
                )
            else:
                delay = self._policy.delay(attempt, retry_after, waited)
                if delay is None:
                    error = (
                        PlanhatUnacknowledged
                        if unacknowledged
                        else PlanhatHostNotFound
                        if unresolved
                        else PlanhatUnavailable
                    )
                    raise error(
                        f"{failure} after {attempt} attempt(s) and {waited:.0f}s of waiting",
                        endpoint=endpoint,
                        ambiguous_failures=ambiguous,
                    )
                logger.warning(
                    f"{context}{endpoint.label}: attempt {attempt}/{self._policy.max_attempts} failed with {failure}; "
                    f"retrying in {delay:.1f}s"
                )
                attempt += 1
            if not clean:
                ambiguous += 1
            self._sleep(delay)
            waited += delay


def _reasons(result: PostResult) -> str:
    """The distinct reasons of an answer's refused items, for an error message."""
    reasons = list(dict.fromkeys(error.reason for error in result.errors))
    return "; ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")


def _not_found_text(url: str) -> str:
    return f"the host {urlsplit(url).hostname} was not found (DNS: no such name)"


def _failure_text(host: Host, status: int, text: str, base_url_field: str) -> str:
    if meaning(host, status) is Meaning.REDIRECT:
        return (
            f"HTTP {status}: a redirect, which is not followed (requests carry credentials); "
            f"set `{base_url_field}` to the final address"
        )
    return f"HTTP {status}: {text}"
