"""What each HTTP status of Planhat's means, per host: the one table the client, the retry decision,
the errors and the sender read.

Sources. The main API's bulk upserts (planhat.com/developers/api/http-response-codes): 200 all done;
206 some done, the others listed in createdErrors/updatedErrors; 400 "a problem with the request
payload, usually a required key is missing or it's duplicated"; 403 "you don't have the right
permissions to execute one or all the operations" (permissionErrors); 500 "try again". The analytics
host is a "data sink": it answers 200 to whatever it receives (page above). 401 is a wrong token on
both hosts; 413 the 32 MB body limit; 429 and `X-Rate-Limit-Remaining` come from Planhat's older docs
(no source documents a rate limit on the analytics host, so both hosts read them the same way); 502,
503 and 504 are what a gateway in front of either host answers.

A status whose meaning depends on the body is named for both readings (PERMISSION): the client reads
the body and decides (planhat/client.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from destination_planhat.planhat.api import Host


class Meaning(str, Enum):
    """What an answer's status says happened to a request."""

    ACKNOWLEDGED = "acknowledged"  # done; the body says what was done (planhat/answers.py)
    PARTIAL = "partial"  # main API 206: some items done, the others listed with Planhat's reason
    # main API 403: the items in permissionErrors were refused for lack of permission; when Planhat did
    # some of the items it is a partial answer, when it did none the credentials are refused.
    PERMISSION = "permission"
    # main API 400: "a problem with the request payload" (a missing or duplicated key): Planhat wrote
    # nothing; the batch is split in halves until the refused items are alone.
    PAYLOAD_REFUSED = "payload_refused"
    TOO_LARGE = "too_large"  # 413: the body is over the limit: the batch is split in halves
    RATE_LIMITED = "rate_limited"  # 429: too many requests: wait (Retry-After) and send again; nothing was kept
    UNAVAILABLE = "unavailable"  # 503: not now: send again after a wait; nothing was kept
    SERVER_ERROR = "server_error"  # 500, 502, 504: send again after a wait; Planhat may have kept the items
    UNAUTHORIZED = "unauthorized"  # 401: the credential is wrong
    FORBIDDEN = "forbidden"  # analytics 403: the credential is not allowed; the body may say why
    REDIRECT = "redirect"  # 3xx: never followed (a request carries credentials and data)
    REFUSED = "refused"  # any other status: the request is refused; sending it again will not help

    @property
    def retried(self) -> bool:
        """The same request is sent again after a wait."""
        return self in _RETRIED

    @property
    def nothing_kept(self) -> bool:
        """A refusal before any work: sending the request again cannot duplicate its items."""
        return self in _NOTHING_KEPT

    @property
    def splits(self) -> bool:
        """The batch is sent again in two halves (down to single items)."""
        return self in _SPLITS

    @property
    def credentials(self) -> bool:
        """The target refused the credentials (or their permissions): the user must fix them."""
        return self in _CREDENTIALS


_RETRIED = frozenset({Meaning.RATE_LIMITED, Meaning.UNAVAILABLE, Meaning.SERVER_ERROR})
_NOTHING_KEPT = frozenset({Meaning.RATE_LIMITED, Meaning.UNAVAILABLE})
_SPLITS = frozenset({Meaning.TOO_LARGE, Meaning.PAYLOAD_REFUSED})
_CREDENTIALS = frozenset({Meaning.UNAUTHORIZED, Meaning.FORBIDDEN, Meaning.PERMISSION})

_BOTH_HOSTS: Mapping[int, Meaning] = {
    401: Meaning.UNAUTHORIZED,
    403: Meaning.FORBIDDEN,
    413: Meaning.TOO_LARGE,
    429: Meaning.RATE_LIMITED,
    500: Meaning.SERVER_ERROR,
    502: Meaning.SERVER_ERROR,
    503: Meaning.UNAVAILABLE,
    504: Meaning.SERVER_ERROR,
}

# The table: statuses with a meaning of their own, per host. Any other 2xx is ACKNOWLEDGED, any other
# 3xx a REDIRECT, anything else REFUSED (see `meaning`).
STATUSES: Mapping[Host, Mapping[int, Meaning]] = {
    Host.ANALYTICS: _BOTH_HOSTS,
    Host.MAIN: {
        **_BOTH_HOSTS,
        206: Meaning.PARTIAL,
        400: Meaning.PAYLOAD_REFUSED,
        403: Meaning.PERMISSION,
    },
}

# An answer header of the main API (older docs): how many calls are left in the current window.
RATE_LIMIT_REMAINING_HEADER = "X-Rate-Limit-Remaining"


def meaning(host: Host, status: int) -> Meaning:
    """What `status` means on `host` (a pure function: see its table in unit_tests/test_statuses.py)."""
    named = STATUSES[host].get(status)
    if named is not None:
        return named
    if 200 <= status < 300:
        return Meaning.ACKNOWLEDGED
    if 300 <= status < 400:
        return Meaning.REDIRECT
    return Meaning.REFUSED


def no_calls_left(headers: Mapping[str, str]) -> bool:
    """The answer says no calls are left in the current window (`X-Rate-Limit-Remaining: 0`)."""
    remaining = headers.get(RATE_LIMIT_REMAINING_HEADER)
    return remaining is not None and remaining.strip() == "0"


def rate_limited(host: Host, status: int, headers: Mapping[str, str]) -> bool:
    """Planhat refused the request because too many were sent: a 429, or a refusal that is sent again
    anyway (503, 5xx) while saying no calls are left. Such an answer is a wait (Retry-After), not a
    failed attempt (planhat/client.py)."""
    what = meaning(host, status)
    return what is Meaning.RATE_LIMITED or (what.retried and no_calls_left(headers))
