"""check(): posts `[]` to each endpoint the config can write to, against the sandbox on loopback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from airbyte_cdk.models import Status

from destination_planhat.destination import CHECK_MAX_WAIT_SECONDS, DestinationPlanhat
from destination_planhat.testing.sandbox import PlanhatSandbox

TENANT = "check-tenant-0001"
TOKEN = "check-token-SECRET"
LOGGER = logging.getLogger("airbyte")


@pytest.fixture
def sandbox() -> Iterator[PlanhatSandbox]:
    server = PlanhatSandbox(tenant=TENANT, api_token=TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(url: str, **overrides: Any):
    config = {"tenant_uuid": TENANT, "api_token": TOKEN, "analytics_base_url": url, **overrides}
    return DestinationPlanhat().check(LOGGER, {k: v for k, v in config.items() if v is not None})


def test_succeeds_and_writes_nothing(sandbox):
    status = check(sandbox.url)
    assert status.status == Status.SUCCEEDED, status.message
    assert sorted((r.endpoint, r.items, r.status) for r in sandbox.requests) == [
        ("metrics", 0, 200),
        ("user_activities", 0, 200),
    ]
    assert sandbox.received() == []


def test_without_api_token_checks_user_activities_only(sandbox):
    status = check(sandbox.url, api_token=None)
    assert status.status == Status.SUCCEEDED, status.message
    assert [(r.endpoint, r.authorization_present) for r in sandbox.requests] == [("user_activities", False)]


def test_the_token_is_sent_to_metrics_only(sandbox):
    check(sandbox.url)
    assert {r.endpoint: r.authorization_matched for r in sandbox.requests} == {
        "metrics": True,
        "user_activities": False,
    }
    assert not any(r.authorization_present for r in sandbox.requests if r.endpoint == "user_activities")


@pytest.mark.parametrize(
    "overrides, named, not_named",
    [
        ({"api_token": "wrong-token-SECRET"}, "`api_token`", "`tenant_uuid`"),
        ({"tenant_uuid": "wrong-tenant-SECRET"}, "`tenant_uuid`", "`api_token`"),
    ],
)
def test_refused_credentials_fail_naming_the_credential(sandbox, overrides, named, not_named):
    status = check(sandbox.url, **overrides)
    assert status.status == Status.FAILED
    assert named in status.message and not_named not in status.message
    assert "SECRET" not in status.message
    assert sandbox.received() == []


def test_nothing_listening_fails_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    status = check(url)
    assert status.status == Status.FAILED
    assert url in status.message
    assert TENANT not in status.message and TOKEN not in status.message


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"tenant_uuid": "   "}, "tenant_uuid"),
        ({"tenant_uuid": None, "api_token": None}, "tenant_uuid"),
        ({"batch_size": 0}, "batch_size"),
        ({"analytics_base_url": "ftp://127.0.0.1"}, "analytics_base_url"),
        ({"analytics_base_url": "http://analytics.planhat.com"}, "analytics_base_url"),
    ],
)
def test_an_invalid_config_fails_without_any_request(sandbox, overrides, named):
    status = check(sandbox.url, **overrides)
    assert status.status == Status.FAILED
    assert named in status.message
    assert sandbox.requests == []


def test_without_tenant_token_reads_the_main_api_only(sandbox):
    """An objects-only setup (data activation): the API token alone is checked, on the main API."""
    status = check(sandbox.url, tenant_uuid=None, api_base_url=sandbox.url)
    assert status.status == Status.SUCCEEDED, status.message
    assert sandbox.requests == []
    assert [(r.method, r.endpoint) for r in sandbox.main_api_requests] == [("GET", "companies")]


@pytest.mark.parametrize(
    "entry, overrides, named",
    [
        ({"name": "usage", "endpoint": "metrics"}, {"api_token": None}, "`api_token`"),
        ({"name": "usage", "endpoint": "metrics"}, {"tenant_uuid": None}, "`tenant_uuid`"),
        ({"name": "events", "endpoint": "user_activities"}, {"tenant_uuid": None}, "`tenant_uuid`"),
        ({"name": "accounts", "endpoint": "companies"}, {"api_token": None}, "`api_token`"),
    ],
)
def test_a_streams_entry_needs_the_credentials_of_its_endpoint(sandbox, entry, overrides, named):
    """The rule write applies to every routed stream (routing.credential_problems), before any request."""
    status = check(sandbox.url, streams=[entry], api_base_url=sandbox.url, **overrides)
    assert status.status == Status.FAILED
    assert named in status.message and f"stream '{entry['name']}'" in status.message
    assert sandbox.requests == [] and sandbox.main_api_requests == []


def test_with_both_tokens_and_no_object_entry_the_main_api_is_not_read(sandbox):
    """A Metrics token needs no permission on companies: the main API is read only when objects may be written."""
    status = check(sandbox.url)  # the main API would be https://api.planhat.com: not asked
    assert status.status == Status.SUCCEEDED, status.message
    assert sandbox.main_api_requests == []
    status = check(sandbox.url, api_base_url=sandbox.url, streams=[{"name": "accounts", "endpoint": "companies"}])
    assert status.status == Status.SUCCEEDED, status.message
    assert [(r.method, r.endpoint) for r in sandbox.main_api_requests] == [("GET", "companies")]


def test_a_rate_limit_longer_than_check_waits_fails_at_once(sandbox):
    """A 429 uses up no attempt (a sync waits up to max_retry_seconds), but check must answer the UI
    quickly: it waits at most CHECK_MAX_WAIT_SECONDS in all, so a Retry-After beyond that fails it now."""
    sandbox.set_faults(script=[{"kind": "status", "status": 429, "retry_after": str(int(CHECK_MAX_WAIT_SECONDS) + 1)}])
    status = check(sandbox.url)
    assert status.status == Status.FAILED
    assert "Planhat was still limiting requests after 1 request(s) and 0s of waiting" in status.message
    assert len(sandbox.requests) == 1


def test_a_200_that_is_not_planhats_answer_fails_check(sandbox):
    """A proxy's page instead of Planhat's answer: check says so rather than succeeding."""
    sandbox.set_faults(script=[{"kind": "bad_body", "process": False}] * 2)
    status = check(sandbox.url, retry_initial_delay_seconds=0.01)
    assert status.status == Status.FAILED
    assert "answered without saying what was done" in status.message and "`analytics_base_url`" in status.message
