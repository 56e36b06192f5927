"""Every fault Planhat or the network can throw at a sync, through the real CLI against the sandbox.

For each fault the sync either completes with every record received exactly once, or at least once
with the duplicates counted and logged (the failure was ambiguous: the server may have processed
the request), or fails with a TRACE of the right failure_type and no STATE for records that were
not acknowledged. `check_sync` asserts the accounting invariants and the state rule on every run.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Optional

import pytest

from destination_planhat.config import PlanhatConfig, parse_config
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.client import PlanhatClient
from destination_planhat.planhat.errors import RequestAborted
from destination_planhat.planhat.retries import RetryPolicy
from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import REPO_ROOT
from destination_planhat.testing.sandbox import METRICS, USER_ACTIVITIES
from destination_planhat.testing.sync_checks import (
    SECRET_API_TOKEN,
    SECRET_TENANT,
    Workload,
    check_sync,
    connector_config,
    mixed_workload,
    retry_waits,
)

# Two normal answers first, so that every fault hits a sync in the middle of its work.
OK = {"kind": "ok"}
MID_SYNC = [OK, OK]
# One request at a time, so a scripted fault hits a known batch.
SEQUENTIAL = {"batch_size": 50, "max_in_flight_requests": 1}
# For the faults that outlast the connector's read timeout: a timeout every normal answer beats by far,
# even on a busy machine (they take milliseconds), and a delay far longer than it (the sandbox stops
# waiting as soon as the connector hangs up, so the delay costs nothing). A timed-out attempt costs
# READ_TIMEOUT seconds.
READ_TIMEOUT = {"request_timeout_seconds": 3}
SLOWER_THAN_THE_READ_TIMEOUT = 120


def status(code: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "status", "status": code, **extra}


@dataclass(frozen=True)
class Recovers:
    """A fault the sync must get through."""

    faults: list[dict[str, Any]]
    log: str  # a fragment the log must contain: the fault was seen and reported
    ambiguous: bool  # the server may have processed the failed attempt: re-sends are counted
    duplicates: int = 0  # items the sandbox processed twice (0: exactly once)
    config: dict[str, Any] = field(default_factory=dict)
    unconfirmed: int = 0


RECOVERS = {
    "429 with Retry-After in seconds": Recovers(
        [status(429, retry_after="1")], "HTTP 429 (Retry-After 1s)", ambiguous=False
    ),
    "429 with Retry-After as an HTTP date": Recovers(
        [status(429, retry_after="<date in 1s>")], "HTTP 429 (Retry-After ", ambiguous=False
    ),
    "429 without Retry-After": Recovers(
        [status(429)], "Planhat is limiting requests (HTTP 429); waiting", ambiguous=False
    ),
    "a burst of 5 consecutive 429s": Recovers(
        [status(429, retry_after="0")] * 5, "Planhat is limiting requests (HTTP 429 (Retry-After 0s))", ambiguous=False
    ),
    "more 429s in a row than attempts (a rate limit is a wait, not a failed attempt)": Recovers(
        [status(429, retry_after="1")] * 8,
        "(a rate limit uses up no attempt; 8s of max_retry_seconds used)",
        ambiguous=False,
    ),
    "503s saying no calls are left, more than attempts": Recovers(
        [status(503, retry_after="0", headers={"X-Rate-Limit-Remaining": "0"})] * 8,
        "Planhat is limiting requests (HTTP 503 (Retry-After 0s))",
        ambiguous=False,
    ),
    "500": Recovers([status(500)], "failed with HTTP 500", ambiguous=True),
    "502": Recovers([status(502)], "failed with HTTP 502", ambiguous=True),
    "503": Recovers([status(503)], "failed with HTTP 503", ambiguous=False),
    "504": Recovers([status(504)], "failed with HTTP 504", ambiguous=True),
    "a burst of 500, 502, 503, 504, 503 within the retry budget": Recovers(
        [status(500), status(502), status(503), status(504), status(503)],
        "attempt 5/6 failed with HTTP 503",
        ambiguous=True,
    ),
    "connection reset before the answer (body not processed)": Recovers(
        [{"kind": "reset_before"}], "failed with ConnectionError (the server may have received it)", ambiguous=True
    ),
    "connection reset after the server processed the batch": Recovers(
        [{"kind": "reset_after"}], "may be counted twice in Planhat", ambiguous=True, duplicates=50
    ),
    "an answer slower than the read timeout (not processed)": Recovers(
        [{"kind": "delay", "seconds": SLOWER_THAN_THE_READ_TIMEOUT, "process": False}],
        "failed with ReadTimeout",
        ambiguous=True,
        config=READ_TIMEOUT,
    ),
    "an answer slower than the read timeout (processed)": Recovers(
        [{"kind": "delay", "seconds": SLOWER_THAN_THE_READ_TIMEOUT, "process": True}],
        "may be counted twice in Planhat",
        ambiguous=True,
        duplicates=50,
        config=READ_TIMEOUT,
    ),
    # Not an acknowledgement (issue 19): Planhat documents `{"processed": N, "errors": [...]}` for every
    # request it receives, so an answer without it is not Planhat's; sent again like after a reset.
    "a 200 whose body is not JSON (a proxy's page), after Planhat processed it": Recovers(
        [{"kind": "bad_body"}], "does not say what was done (the answer was not JSON", ambiguous=True, duplicates=50
    ),
    "a 200 whose body is not JSON, Planhat never saw it": Recovers(
        [{"kind": "bad_body", "process": False}], "does not say what was done (the answer was not JSON", ambiguous=True
    ),
    "a 200 with JSON but no processed/errors": Recovers(
        [{"kind": "bad_json"}],
        "does not say what was done (the answer had no 'processed' count",
        ambiguous=True,
        duplicates=50,
    ),
    "a 206 without counts": Recovers(
        [{"kind": "no_counts"}], "HTTP 206 that does not say what was done", ambiguous=True, duplicates=50
    ),
}


def _materialize(faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill in values that depend on the time of the run (an HTTP date one second from now)."""
    out = []
    for fault in faults:
        fault = dict(fault)
        if fault.get("retry_after") == "<date in 1s>":
            fault["retry_after"] = formatdate(time.time() + 1, usegmt=True)
        out.append(fault)
    return out


# Cases that spend seconds waiting on purpose (Retry-After, answers slower than the read timeout): `slow`,
# so that `make fast` leaves them to `make test`.
WAITS_ON_PURPOSE = {
    "more 429s in a row than attempts (a rate limit is a wait, not a failed attempt)",
    "an answer slower than the read timeout (not processed)",
    "an answer slower than the read timeout (processed)",
    "answers slower than the read timeout, on every attempt",
}


def cases(table: dict[str, Any]) -> list[Any]:
    return [
        pytest.param(case, id=name, marks=[pytest.mark.slow] if name in WAITS_ON_PURPOSE else [])
        for name, case in table.items()
    ]


@pytest.mark.parametrize("case", cases(RECOVERS))
def test_the_sync_recovers(case: Recovers, planhat, tmp_path):
    planhat.set_faults(script=MID_SYNC + _materialize(case.faults))
    workload = mixed_workload()
    config = connector_config(planhat, **SEQUENTIAL, **case.config)

    run = run_cli("write", tmp_path, watch=planhat, config=config, catalog=workload.catalog(), stdin=workload.encode())

    sync = check_sync(run, workload, planhat)
    assert run.log_lines(case.log), f"no log line contains {case.log!r}"
    assert sum(sync.duplicates.values()) == case.duplicates
    resent = sync.total("resent_after_ambiguous_failure")
    if case.ambiguous:
        assert resent >= 50 * sum(1 for f in case.faults if f.get("status") != 503)
        assert run.log_lines("may already have received them")
    else:
        assert resent == 0, "a clean refusal (429, 503) or a 200 cannot cause duplicates"
    assert sync.total("unconfirmed") == case.unconfirmed
    assert sync.total("retries") == len(case.faults) - (1 if case.unconfirmed else 0)


def test_retry_after_is_never_cut_short(planhat, tmp_path):
    """The connector waits at least what Retry-After asks, even when its own backoff is shorter."""
    planhat.set_faults(script=MID_SYNC + [status(429, retry_after="1"), status(503, retry_after="1")])
    workload = mixed_workload(100, 100)

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat, **SEQUENTIAL),
        catalog=workload.catalog(),
        stdin=workload.encode(),
    )

    check_sync(run, workload, planhat)
    assert len(retry_waits(run)) == 2 and min(retry_waits(run)) >= 1.0


@dataclass(frozen=True)
class Fails:
    """A fault the sync cannot get through: it must stop with this failure type and message."""

    faults: list[dict[str, Any]]
    failure_type: str
    message: str  # a fragment of the TRACE's user message
    endpoint: str = METRICS
    config: dict[str, Any] = field(default_factory=dict)


BUDGET = {"max_attempts": 3}
FAILS = {
    "500 longer than the retry budget": Fails(
        [status(500)] * 3, "transient_error", "HTTP 500 after 3 attempt(s)", config=BUDGET
    ),
    "502 longer than the retry budget": Fails(
        [status(502)] * 3, "transient_error", "HTTP 502 after 3 attempt(s)", config=BUDGET
    ),
    "503 longer than the retry budget": Fails(
        [status(503)] * 3, "transient_error", "HTTP 503 after 3 attempt(s)", config=BUDGET
    ),
    "504 longer than the retry budget": Fails(
        [status(504)] * 3, "transient_error", "HTTP 504 after 3 attempt(s)", config=BUDGET
    ),
    "429s longer than the time budget": Fails(
        [status(429, retry_after="1")] * 10,
        "transient_error",
        "HTTP 429 (Retry-After 1s): Planhat was still limiting requests after 3 request(s) and 2s of waiting",
        config={"max_retry_seconds": 2},
    ),
    "a Retry-After longer than the time budget": Fails(
        [status(429, retry_after="30")],
        "transient_error",
        "HTTP 429 (Retry-After 30s): Planhat was still limiting requests after 1 request(s) and 0s of waiting",
        config={"max_retry_seconds": 5},
    ),
    "resets after processing, on every attempt": Fails(
        [{"kind": "reset_after"}] * 3,
        "transient_error",
        "ConnectionError (the server may have received it) after 3",
        config=BUDGET,
    ),
    "answers slower than the read timeout, on every attempt": Fails(
        [{"kind": "delay", "seconds": SLOWER_THAN_THE_READ_TIMEOUT, "process": False}] * 2,
        "transient_error",
        "ReadTimeout (the server may have received it) after 2",
        config={"max_attempts": 2, **READ_TIMEOUT},
    ),
    "401 on Metrics in the middle of the sync": Fails([status(401)], "config_error", "check `api_token`"),
    "403 on User Activities in the middle of the sync": Fails(
        [status(403)], "config_error", "check `tenant_uuid`", endpoint=USER_ACTIVITIES
    ),
    "400 (a request Planhat refuses)": Fails([status(400)], "system_error", "rejected a request: HTTP 400"),
    "200 pages from a proxy, on every attempt": Fails(
        [{"kind": "bad_body", "process": False}] * 3,
        "transient_error",
        "answered without saying what was done with the records: HTTP 200 that does not say what was done (the "
        "answer was not JSON: <html><body><h1>502 Bad Gateway</h1></body></html>) after 3 attempt(s)",
        config=BUDGET,
    ),
}


@pytest.mark.parametrize("case", cases(FAILS))
def test_the_sync_fails_cleanly(case: Fails, planhat, tmp_path):
    planhat.set_faults(script=MID_SYNC + case.faults)
    workload = Workload().stream("only", case.endpoint).records("only", 500, state_every=50)
    config = connector_config(planhat, **SEQUENTIAL, **case.config)

    run = run_cli("write", tmp_path, watch=planhat, config=config, catalog=workload.catalog(), stdin=workload.encode())

    sync = check_sync(run, workload, planhat, failure_type=case.failure_type)
    [error] = run.errors
    assert case.message in error["message"], error["message"]
    # The two batches answered before the fault are covered by states; nothing after them is.
    assert len(run.states) == 2
    stats = sync.stream("only")
    assert stats["processed"] == 100 and stats["not_acknowledged"] + stats["not_sent"] > 0


def test_a_short_count_on_the_analytics_host_is_planhats_receipt_but_the_sync_does_not_succeed(planhat, tmp_path):
    """Planhat counts 49 of 50 items, with no error for the last: its 200 says it received the data
    (a data sink), so the states go out and nothing is sent again (a metric sent twice may be summed);
    the item stays unconfirmed, the summary says so, and the sync ends failed (issue 19)."""
    planhat.set_faults(script=MID_SYNC + [{"kind": "short_count"}])
    workload = Workload().stream("only", METRICS).records("only", 500, state_every=50)
    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat, **SEQUENTIAL),
        catalog=workload.catalog(),
        stdin=workload.encode(),
    )

    sync = check_sync(run, workload, planhat, failure_type="system_error")
    assert len(run.states) == 10  # every state: Planhat acknowledged every request
    stats = sync.stream("only")
    assert (stats["unconfirmed"], stats["processed"], stats["resent_after_ambiguous_failure"]) == (1, 499, 0)
    assert len(planhat.received(METRICS)) == 499 and sum(sync.duplicates.values()) == 0
    [error] = run.errors
    assert "Planhat did not confirm every record: stream 'only': 1 item(s) NOT CONFIRMED" in error["message"]
    assert run.log_lines("summary: stream 'only': 1 item(s) NOT CONFIRMED")


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_fails_the_sync_as_transient(planhat, tmp_path):
    workload = mixed_workload(100, 100)
    config = connector_config(planhat, analytics_base_url=f"http://127.0.0.1:{free_port()}", max_attempts=3)

    run = run_cli("write", tmp_path, watch=planhat, config=config, catalog=workload.catalog(), stdin=workload.encode())

    sync = check_sync(run, workload, planhat, failure_type="transient_error")
    assert "ConnectionError (not connected) after 3 attempt(s)" in run.errors[0]["message"]
    assert run.states == [] and sync.total("acknowledged") == 0
    assert run.log_lines("failed with ConnectionError (not connected); retrying")
    assert sync.total("resent_after_ambiguous_failure") == 0, "a refused connection delivered nothing: no duplicates"


def test_connection_refused_fails_check(tmp_path, planhat):
    config = connector_config(planhat, analytics_base_url=f"http://127.0.0.1:{free_port()}")

    run = run_cli("check", tmp_path, config=config)

    assert run.connection_status["status"] == "FAILED"
    assert "Could not reach Planhat User Activities (http://127.0.0.1:" in run.connection_status["message"]


def test_413_splits_the_batch_until_it_fits(planhat, tmp_path):
    planhat.set_faults(max_body_bytes=1_200)  # about 20 items of the workload
    workload = mixed_workload(200, 200)

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat, batch_size=100),
        catalog=workload.catalog(),
        stdin=workload.encode(),
    )

    sync = check_sync(run, workload, planhat)
    assert sum(sync.duplicates.values()) == 0
    assert run.log_lines("Planhat answered 413 for 100 items; sending them in two halves")
    assert run.log_lines("Planhat answered 413 for 50 items; sending them in two halves")
    assert max(r.body_bytes for r in planhat.requests if r.status == 200) <= 1_200


def test_413_for_a_single_item_rejects_only_that_item(planhat, tmp_path):
    planhat.set_faults(max_body_bytes=1_200)
    workload = Workload().stream("usage", METRICS).records("usage", 30)
    huge = {"dimensionId": "usage", "value": 1, "externalId": "x" * 2_000}
    workload.record("usage", huge, fate="invalid").records("usage", 30, state_every=10)

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat, batch_size=8),
        catalog=workload.catalog(),
        stdin=workload.encode(),
    )

    sync = check_sync(run, workload, planhat)
    assert sync.stream("usage")["rejected_by_planhat"] == 1
    assert sync.stream("usage")["planhat_reasons"] == {"too large for Planhat (HTTP 413)": 1}
    assert run.log_lines("Planhat refused one item as too large (HTTP 413)")


def test_a_failed_sync_stops_at_once_even_with_retries_waiting(planhat, tmp_path):
    """One batch waits out a long Retry-After while another fails for good: the sync must not wait
    for the first (minutes); the failure ends it, and no state is emitted for either batch."""
    planhat.set_faults(script=[status(429, retry_after="600"), status(401)])
    workload = Workload().stream("usage", METRICS).records("usage", 100, state_every=50)
    config = connector_config(planhat, batch_size=50, max_in_flight_requests=2, max_retry_seconds=3600)

    # Without a prompt stop this run would take 300 s (the capped Retry-After) and time out.
    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=config,
        catalog=workload.catalog(),
        stdin=workload.encode(),
        timeout=120,
    )

    check_sync(run, workload, planhat, failure_type="config_error")
    assert run.states == []
    assert len(planhat.requests) == 2, "no request may be made after the failure"


def test_abort_cuts_a_retry_wait_short(planhat):
    """The client's wait between attempts ends as soon as the sync is aborted, without another request."""
    planhat.set_faults(script=[status(429, retry_after="600")])
    client = PlanhatClient(planhat.url, SECRET_TENANT, SECRET_API_TOKEN, retry_policy=RetryPolicy(max_total_wait=3600))
    outcome: dict[str, Optional[BaseException]] = {}

    def post() -> None:
        try:
            client.post(Endpoint.METRICS, b"[]")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    sender = threading.Thread(target=post, daemon=True)
    sender.start()
    assert _wait_for(lambda: len(planhat.requests) == 1)
    client.abort()
    sender.join(timeout=30)

    assert not sender.is_alive()
    assert isinstance(outcome.get("error"), RequestAborted)
    assert len(planhat.requests) == 1
    client.close()


def _wait_for(condition: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


# The settings that bound how long a batch may take, all hidden in the form: name -> (default, minimum, maximum).
TIME_SETTINGS = {
    "request_timeout_seconds": (300, 1, 3600),
    "max_attempts": (8, 1, 50),
    "max_retry_seconds": (900, 0, 86_400),
    "retry_initial_delay_seconds": (1, 0, 60),
}


@pytest.mark.parametrize("name", TIME_SETTINGS)
def test_timeouts_and_the_retry_budget_are_hidden_settings_with_bounded_defaults(name):
    spec = json.loads((REPO_ROOT / "destination_planhat" / "spec.json").read_text())["connectionSpecification"]
    prop = spec["properties"][name]
    default, minimum, maximum = TIME_SETTINGS[name]
    assert prop["airbyte_hidden"] is True
    assert (prop["default"], prop["minimum"], prop["maximum"]) == (default, minimum, maximum)
    field_info = PlanhatConfig.model_fields[name]
    assert field_info.default == default
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field_info.metadata}
    assert (bounds["Ge"], bounds["Le"]) == (minimum, maximum)


def test_the_default_retry_budget_bounds_the_waiting_per_batch():
    """With the defaults, a batch that never gets through gives up after at most 900 s of waiting,
    even when every answer asks for the longest Retry-After, and never waits less than asked."""
    config = parse_config({"tenant_uuid": SECRET_TENANT})
    policy = RetryPolicy(
        max_attempts=config.max_attempts,
        base_delay=config.retry_initial_delay_seconds,
        max_total_wait=config.max_retry_seconds,
    )
    for retry_after in (None, 0.0, 30.0, 10_000.0):
        waited, attempt = 0.0, 0
        while True:
            attempt += 1
            delay = policy.delay(attempt, retry_after, waited)
            if delay is None:
                break
            if retry_after is not None:
                assert delay >= min(retry_after, policy.max_retry_after)
            waited += delay
        assert waited <= config.max_retry_seconds and attempt <= config.max_attempts
