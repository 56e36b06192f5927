"""What each HTTP status of Planhat's means, per host (planhat/statuses.py): the table, as a table."""

from __future__ import annotations

import pytest

from destination_planhat.planhat.api import Host
from destination_planhat.planhat.statuses import Meaning, meaning, no_calls_left

A, M = Host.ANALYTICS, Host.MAIN


@pytest.mark.parametrize(
    "host, status, expected",
    [
        (A, 200, Meaning.ACKNOWLEDGED),
        (A, 201, Meaning.ACKNOWLEDGED),
        (A, 206, Meaning.ACKNOWLEDGED),  # the analytics host documents no 206: a 2xx like any other
        (M, 200, Meaning.ACKNOWLEDGED),
        (M, 206, Meaning.PARTIAL),
        (M, 400, Meaning.PAYLOAD_REFUSED),
        (A, 400, Meaning.REFUSED),
        (A, 401, Meaning.UNAUTHORIZED),
        (M, 401, Meaning.UNAUTHORIZED),
        (A, 403, Meaning.FORBIDDEN),
        (M, 403, Meaning.PERMISSION),
        (A, 413, Meaning.TOO_LARGE),
        (M, 413, Meaning.TOO_LARGE),
        (A, 429, Meaning.RATE_LIMITED),
        (M, 429, Meaning.RATE_LIMITED),
        (A, 500, Meaning.SERVER_ERROR),
        (M, 502, Meaning.SERVER_ERROR),
        (A, 504, Meaning.SERVER_ERROR),
        (M, 503, Meaning.UNAVAILABLE),
        (A, 301, Meaning.REDIRECT),
        (M, 308, Meaning.REDIRECT),
        (A, 404, Meaning.REFUSED),
        (M, 422, Meaning.REFUSED),
        (A, 501, Meaning.REFUSED),
        (M, 100, Meaning.REFUSED),
    ],
)
def test_the_meaning_of_each_status_per_host(host: Host, status: int, expected: Meaning) -> None:
    assert meaning(host, status) is expected


# meaning -> (sent again after a wait, nothing kept, split in halves, the credentials' fault)
WHAT_FOLLOWS = {
    Meaning.ACKNOWLEDGED: (False, False, False, False),
    Meaning.PARTIAL: (False, False, False, False),
    Meaning.PERMISSION: (False, False, False, True),
    Meaning.PAYLOAD_REFUSED: (False, False, True, False),
    Meaning.TOO_LARGE: (False, False, True, False),
    Meaning.RATE_LIMITED: (True, True, False, False),
    Meaning.UNAVAILABLE: (True, True, False, False),
    Meaning.SERVER_ERROR: (True, False, False, False),
    Meaning.UNAUTHORIZED: (False, False, False, True),
    Meaning.FORBIDDEN: (False, False, False, True),
    Meaning.REDIRECT: (False, False, False, False),
    Meaning.REFUSED: (False, False, False, False),
}


@pytest.mark.parametrize("what", list(Meaning))
def test_what_each_meaning_leads_to(what: Meaning) -> None:
    assert (what.retried, what.nothing_kept, what.splits, what.credentials) == WHAT_FOLLOWS[what]


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, False),
        ({"X-Rate-Limit-Remaining": "0"}, True),
        ({"X-Rate-Limit-Remaining": " 0 "}, True),
        ({"X-Rate-Limit-Remaining": "3"}, False),
    ],
)
def test_no_calls_left(headers: dict[str, str], expected: bool) -> None:
    assert no_calls_left(headers) is expected
