"""When a request is tried again: one policy for how long to wait, one pure decision per answer.

Why a retry loop of our own (planhat/client.py) rather than urllib3's `Retry`: each retry must be logged
with the stream and batch, retries after an ambiguous failure (the server may have processed the
body) must be counted as possible duplicates, a 413 must reach the caller (which splits the batch),
and the total wait per batch is bounded. urllib3's `Retry` does none of these for POST; its
Retry-After parser is reused below.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

import requests
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from destination_planhat.planhat.api import Host
from destination_planhat.planhat.errors import (
    PlanhatAuthError,
    PlanhatError,
    PlanhatPayloadTooLarge,
    PlanhatRejectedRequest,
    PlanhatTLSError,
)
from destination_planhat.planhat.statuses import Meaning, meaning


class Verdict(str, Enum):
    DONE = "done"  # a 2xx: read the answer
    RETRY = "retry"  # try again after a wait: nothing was kept
    RETRY_AMBIGUOUS = "retry_ambiguous"  # try again after a wait: the server may have kept the items
    SPLIT = "split"  # the caller splits the batch and sends the halves (413, or what the target says)
    FAIL = "fail"  # give up on this batch: `error` says why and what it means


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    error: Optional[type[PlanhatError]] = None  # with SPLIT and FAIL: the error to raise


def judge_status(host: Host, status: int, *, can_split: bool = True) -> Decision:
    """What to do after an HTTP answer with this status on this host (a pure function of the status
    table, planhat/statuses.py: see its table in the tests). `can_split`: False for a request that
    cannot be cut in halves (a GET): what would split it then fails it."""
    what = meaning(host, status)
    if what in (Meaning.ACKNOWLEDGED, Meaning.PARTIAL):
        return Decision(Verdict.DONE)
    if what.splits:
        return (
            Decision(Verdict.SPLIT, PlanhatPayloadTooLarge)
            if can_split
            else Decision(Verdict.FAIL, PlanhatRejectedRequest)
        )
    if what.credentials:
        return Decision(Verdict.FAIL, PlanhatAuthError)
    if what.retried:
        return Decision(Verdict.RETRY if what.nothing_kept else Verdict.RETRY_AMBIGUOUS)
    return Decision(Verdict.FAIL, PlanhatRejectedRequest)  # redirects (never followed) and other 4xx/5xx


def judge_exception(exc: requests.RequestException) -> Decision:
    """What to do after a request that got no answer (a pure function of the exception)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return Decision(Verdict.FAIL, PlanhatTLSError)
    return Decision(Verdict.RETRY if is_connect_failure(exc) else Verdict.RETRY_AMBIGUOUS)


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

    def rate_limit_delay(self, waits: int, retry_after: Optional[float], waited: float) -> Optional[float]:
        """Seconds to wait after the `waits`-th rate limit answer of a request (a 429, or no calls left),
        or None when `max_total_wait` is spent. A rate limit is a wait, not a failure: it uses up no
        attempt. It waits what Retry-After asks (capped at `max_retry_after`); without it, or with
        `Retry-After: 0` (which a storm of would otherwise make a busy loop), the backoff."""
        if retry_after:
            wait = min(retry_after, self.max_retry_after)
        else:
            wait = self.jitter(min(self.max_delay, self.base_delay * 2 ** (waits - 1)))
        if waited + wait > self.max_total_wait:
            return None
        return wait


DEFAULT_RETRY_POLICY = RetryPolicy()


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or garbled."""
    if not value:
        return None
    try:
        return max(0.0, float(Retry().parse_retry_after(value)))
    except Exception:  # urllib3 raises InvalidHeader; anything unparseable means "no hint"
        return None


def tls_reason(exc: BaseException) -> str:
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


def is_connect_failure(exc: requests.RequestException) -> bool:
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


# getaddrinfo's answers that mean "this name does not exist" (not "DNS did not answer", EAI_AGAIN).
NAME_NOT_FOUND_ERRNOS = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)


def host_not_found(exc: BaseException) -> bool:
    """True when the request failed because DNS says its host name does not exist: a typo in the
    host (most often in `region`) rather than Planhat or the network being down."""
    return any(isinstance(cause, socket.gaierror) and cause.errno in NAME_NOT_FOUND_ERRNOS for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and every exception behind it (causes, contexts, arguments, urllib3's `reason`)."""
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend((getattr(current, "reason", None), current.__cause__, current.__context__, *current.args))
