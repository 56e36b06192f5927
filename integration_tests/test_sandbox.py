"""Tests of the embedded Planhat sandbox itself.

The connector's reliability tests trust the sandbox to behave like Planhat and to misbehave exactly
as scripted; these tests are what earns that trust. Everything runs over real loopback HTTP.
"""

from __future__ import annotations

import http.client
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from destination_planhat.testing.sandbox import METRICS, USER_ACTIVITIES, PlanhatSandbox

REPO_ROOT = Path(__file__).resolve().parent.parent
# Bounds for a hung server, never expectations: a request takes milliseconds. A test that needs a
# client to give up uses a short timeout of its own against a delay far longer than it (the sandbox
# stops waiting as soon as the client hangs up, so the long delay costs nothing).
TIMEOUT_S = 60.0
GIVE_UP_S = 120.0
LONG_DELAY_S = 120.0
METRIC = {"dimensionId": "logins", "value": 3, "externalId": "acme"}
ACTIVITY = {"email": "ada@example.com", "action": "login"}


@pytest.fixture
def sandbox() -> Iterator[PlanhatSandbox]:
    with PlanhatSandbox() as running:
        yield running


def metrics_url(sandbox: PlanhatSandbox, tenant: str | None = None) -> str:
    return f"{sandbox.url}/dimensiondata/{tenant or sandbox.tenant}"


def activities_url(sandbox: PlanhatSandbox, tenant: str | None = None) -> str:
    return f"{sandbox.url}/analytics/bulk/{tenant or sandbox.tenant}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_metrics(sandbox: PlanhatSandbox, body: Any, **kwargs: Any) -> requests.Response:
    """POST to Metrics with the right token unless the test passes its own headers."""
    kwargs.setdefault("headers", bearer(sandbox.api_token))
    kwargs.setdefault("timeout", TIMEOUT_S)
    return requests.post(metrics_url(sandbox), json=body, **kwargs)


def post_activities(sandbox: PlanhatSandbox, body: Any, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT_S)
    return requests.post(activities_url(sandbox), json=body, **kwargs)


def wait_for(condition: Any, timeout_s: float = GIVE_UP_S) -> None:
    """Poll for something a server thread does after the client has already given up (the bound is
    one only a hung server would reach)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ---- accepted items ---------------------------------------------------------------------------


def test_valid_metrics_are_processed_and_recorded_in_order(sandbox: PlanhatSandbox) -> None:
    items = [
        METRIC,
        {"dimensionId": "mrr.total", "value": -1.5, "externalId": "acme", "model": "Company", "date": "2024-05-01"},
        {"dimensionId": "seats_v2-x", "value": 0, "externalId": "u1", "model": "EndUser", "date": "2024-05-01T12:00Z"},
        {"dimensionId": "x", "value": 1e9, "externalId": "c1", "date": "2024-05-01T12:00:00.123+02:00"},
        {"dimensionId": "x", "value": 2, "externalId": "a1", "model": "Asset"},
        {"dimensionId": "x", "value": 2, "externalId": "p1", "model": "Project"},
    ]
    response = post_metrics(sandbox, items)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"processed": 6, "errors": []}
    assert sandbox.received(METRICS) == items
    assert sandbox.received(USER_ACTIVITIES) == []


def test_valid_user_activities_are_processed(sandbox: PlanhatSandbox) -> None:
    items = [
        ACTIVITY,
        {"euExtId": "u-42"},
        {
            "email": "bob@example.com",
            "euExtId": "u-7",
            "action": "export",
            "count": 2,
            "weight": 0.5,
            "date": "2024-05-01T08:00:00Z",
            "companyExternalId": "acme",
            "info": {"format": "csv"},
            "name": "Bob",
        },
    ]
    response = post_activities(sandbox, items)
    assert response.json() == {"processed": 3, "errors": []}
    assert sandbox.received() == items


# ---- validation -------------------------------------------------------------------------------

BAD_MODEL = "model must be one of Company, EndUser, Asset, Project"
METRIC_ERRORS = [
    ({"value": 1, "externalId": "a"}, "dimensionId must be specified"),
    ({"dimensionId": "", "value": 1, "externalId": "a"}, "dimensionId must be specified"),
    ({"dimensionId": 7, "value": 1, "externalId": "a"}, "dimensionId must be specified"),
    ({"dimensionId": "daily logins", "value": 1, "externalId": "a"}, "dimensionId contains invalid characters"),
    ({"dimensionId": "a/b", "value": 1, "externalId": "a"}, "dimensionId contains invalid characters"),
    ({"dimensionId": "m", "externalId": "a"}, "value must be a number"),
    ({"dimensionId": "m", "value": "1", "externalId": "a"}, "value must be a number"),
    ({"dimensionId": "m", "value": True, "externalId": "a"}, "value must be a number"),
    ({"dimensionId": "m", "value": None, "externalId": "a"}, "value must be a number"),
    ({"dimensionId": "m", "value": 1}, "externalId must be specified"),
    ({"dimensionId": "m", "value": 1, "externalId": ""}, "externalId must be specified"),
    ({"dimensionId": "m", "value": 1, "externalId": "a", "model": "Account"}, BAD_MODEL),
    ({"dimensionId": "m", "value": 1, "externalId": "a", "model": None}, BAD_MODEL),
    ({"dimensionId": "m", "value": 1, "externalId": "a", "date": "yesterday"}, "date must be a valid ISO date"),
    ({"dimensionId": "m", "value": 1, "externalId": "a", "date": "2024-13-01"}, "date must be a valid ISO date"),
    ({"dimensionId": "m", "value": 1, "externalId": "a", "date": 1714550400}, "date must be a valid ISO date"),
    ({"dimensionId": "m", "value": 1, "externalId": "a", "companyId": "c"}, "unknown field companyId"),
    ("not an object", "item must be a JSON object"),
]


@pytest.mark.parametrize(("item", "reason"), METRIC_ERRORS)
def test_metric_validation_errors(sandbox: PlanhatSandbox, item: Any, reason: str) -> None:
    response = post_metrics(sandbox, [item, METRIC])
    assert response.status_code == 200  # a data sink: bad items never fail the request
    assert response.json() == {"processed": 1, "errors": [{"item": item, "error": reason}]}
    assert sandbox.received(METRICS, accepted_only=True) == [METRIC]
    assert sandbox.received(METRICS) == [item, METRIC]


ACTIVITY_ERRORS = [
    ({"action": "login"}, "email or euExtId must be specified"),
    ({"email": "", "action": "login"}, "email or euExtId must be specified"),
    ({"email": "a@b.c", "count": "1"}, "count must be a number"),
    ({"email": "a@b.c", "weight": True}, "weight must be a number"),
    ({"email": "a@b.c", "date": "last tuesday"}, "date must be a valid ISO date"),
    ({"email": "a@b.c", "action": 5}, "action must be a string"),
    ({"email": "a@b.c", "name": ["Ada"]}, "name must be a string"),
    ({"email": "a@b.c", "companyExternalId": 12}, "companyExternalId must be a string"),
    ({"email": "a@b.c", "info": "clicked"}, "info must be an object"),
    ({"email": "a@b.c", "cId": "acme"}, "unknown field cId"),
    (42, "item must be a JSON object"),
]


@pytest.mark.parametrize(("item", "reason"), ACTIVITY_ERRORS)
def test_user_activity_validation_errors(sandbox: PlanhatSandbox, item: Any, reason: str) -> None:
    response = post_activities(sandbox, [ACTIVITY, item])
    assert response.json() == {"processed": 1, "errors": [{"item": item, "error": reason}]}


# ---- authentication and tenant ----------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, bearer("wrong-token"), {"Authorization": "demo-api-token"}])
def test_metrics_require_the_bearer_token(sandbox: PlanhatSandbox, headers: dict[str, str]) -> None:
    response = post_metrics(sandbox, [METRIC], headers=headers)
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}
    assert sandbox.received() == []
    [record] = sandbox.requests
    assert (record.status, record.authorization_present, record.authorization_matched) == (401, bool(headers), False)


def test_wrong_tenant_is_unauthorized_on_both_endpoints(sandbox: PlanhatSandbox) -> None:
    metrics = requests.post(
        metrics_url(sandbox, "other-tenant"), json=[METRIC], headers=bearer(sandbox.api_token), timeout=TIMEOUT_S
    )
    activities = requests.post(activities_url(sandbox, "other-tenant"), json=[ACTIVITY], timeout=TIMEOUT_S)
    assert (metrics.status_code, activities.status_code) == (401, 401)
    assert activities.json() == {"message": "Unauthorized"}
    assert sandbox.received() == []
    assert [r.tenant for r in sandbox.requests] == ["other-tenant", "other-tenant"]


def test_activities_need_no_auth_but_a_sent_token_is_recorded(sandbox: PlanhatSandbox) -> None:
    assert post_activities(sandbox, [ACTIVITY]).json()["processed"] == 1
    assert post_activities(sandbox, [ACTIVITY], headers=bearer(sandbox.api_token)).json()["processed"] == 1
    assert post_activities(sandbox, [ACTIVITY], headers=bearer("something-else")).json()["processed"] == 1
    flags = [(r.authorization_present, r.authorization_matched) for r in sandbox.requests]
    assert flags == [(False, False), (True, True), (True, False)]
    assert sandbox.summary()[USER_ACTIVITIES]["authorization_sent"] == 2


# ---- body handling ----------------------------------------------------------------------------


def test_a_single_object_is_a_one_item_array(sandbox: PlanhatSandbox) -> None:
    assert post_metrics(sandbox, METRIC).json() == {"processed": 1, "errors": []}
    assert post_activities(sandbox, ACTIVITY).json() == {"processed": 1, "errors": []}
    assert sandbox.received() == [METRIC, ACTIVITY]


def test_an_empty_array_is_a_valid_no_op(sandbox: PlanhatSandbox) -> None:
    assert post_metrics(sandbox, []).json() == {"processed": 0, "errors": []}
    assert post_activities(sandbox, []).json() == {"processed": 0, "errors": []}


@pytest.mark.parametrize("body", [b"not json", b"", b"[1, 2", b"42", b'"text"'])
def test_a_body_that_is_not_a_json_array_or_object_is_a_400(sandbox: PlanhatSandbox, body: bytes) -> None:
    response = requests.post(metrics_url(sandbox), data=body, headers=bearer(sandbox.api_token), timeout=TIMEOUT_S)
    assert response.status_code == 400
    assert response.json()["message"]


def test_unknown_paths_are_404(sandbox: PlanhatSandbox) -> None:
    assert requests.post(f"{sandbox.url}/dimensiondata", json=[], timeout=TIMEOUT_S).status_code == 404
    assert requests.post(f"{sandbox.url}/analytics/{sandbox.tenant}", json=[], timeout=TIMEOUT_S).status_code == 404
    assert requests.get(metrics_url(sandbox), timeout=TIMEOUT_S).status_code == 404
    assert sandbox.requests == []


def test_body_over_the_limit_is_a_413_and_the_connection_stays_usable() -> None:
    with PlanhatSandbox(max_body_bytes=300) as sandbox, requests.Session() as session:
        sandbox.set_faults(script=[{"kind": "status", "status": 503}])
        big = [METRIC] * 10  # ~560 bytes
        response = session.post(metrics_url(sandbox), json=big, headers=bearer(sandbox.api_token), timeout=TIMEOUT_S)
        assert response.status_code == 413
        assert "300" in response.json()["message"]
        # The 413 consumed no scripted fault, and the keep-alive connection still works.
        auth = bearer(sandbox.api_token)
        assert session.post(metrics_url(sandbox), json=[METRIC], headers=auth, timeout=TIMEOUT_S).status_code == 503
        assert session.post(metrics_url(sandbox), json=[METRIC], headers=auth, timeout=TIMEOUT_S).status_code == 200
        assert sandbox.received() == [METRIC]

        sandbox.set_faults(max_body_bytes=10_000)
        assert post_metrics(sandbox, big).status_code == 200
        sandbox.set_faults(max_body_bytes=100)
        assert post_metrics(sandbox, [METRIC, METRIC]).status_code == 413
        sandbox.reset()  # back to the constructor's 300
        assert post_metrics(sandbox, [METRIC, METRIC]).status_code == 200


def test_http_1_1_keep_alive(sandbox: PlanhatSandbox) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=TIMEOUT_S)
    try:
        path = f"/dimensiondata/{sandbox.tenant}"
        headers = {**bearer(sandbox.api_token), "Content-Type": "application/json"}
        connection.request("POST", path, body=b"[]", headers=headers)
        first = connection.getresponse()
        assert (first.version, first.status, first.read()) == (11, 200, b'{"processed":0,"errors":[]}')
        assert first.getheader("Content-Length") == "27"
        sock = connection.sock
        connection.request("POST", path, body=json.dumps([METRIC]).encode(), headers=headers)
        assert connection.getresponse().read() == b'{"processed":1,"errors":[]}'
        assert connection.sock is sock  # same TCP connection
    finally:
        connection.close()


# ---- scripted faults --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 401, 403, 400])
def test_status_fault_answers_that_status_and_records_nothing(sandbox: PlanhatSandbox, status: int) -> None:
    sandbox.set_faults(script=[{"kind": "status", "status": status, "retry_after": "2"}])
    response = post_metrics(sandbox, [METRIC])
    assert response.status_code == status
    assert response.headers["Retry-After"] == "2"
    assert response.json()["message"]
    assert sandbox.received() == []
    assert post_metrics(sandbox, [METRIC]).status_code == 200  # the script is used up
    assert [(r.status, r.fault, r.processed) for r in sandbox.requests] == [(status, "status", 0), (200, None, 1)]


def test_status_fault_with_http_date_retry_after_and_custom_body(sandbox: PlanhatSandbox) -> None:
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    sandbox.set_faults(
        script=[
            {"kind": "status", "status": 503, "retry_after": when, "body": "busy"},
            {"kind": "status", "status": 502},
        ]
    )
    first = post_activities(sandbox, [ACTIVITY])
    assert (first.status_code, first.headers["Retry-After"], first.text) == (503, when, "busy")
    assert first.headers["Content-Type"] == "text/plain"
    second = post_activities(sandbox, [ACTIVITY])
    assert second.status_code == 502 and "Retry-After" not in second.headers


def test_reset_before_drops_the_connection_without_processing(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "reset_before"}])
    with pytest.raises(requests.exceptions.ConnectionError):
        post_metrics(sandbox, [METRIC])
    assert sandbox.received() == []
    [record] = sandbox.requests
    assert (record.status, record.fault) == (None, "reset_before")
    assert post_metrics(sandbox, [METRIC]).status_code == 200


def test_reset_after_processes_then_drops_the_connection(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "reset_after"}])
    with pytest.raises(requests.exceptions.ConnectionError):
        post_activities(sandbox, [ACTIVITY, ACTIVITY])
    assert sandbox.received() == [ACTIVITY, ACTIVITY]
    assert sandbox.summary()[USER_ACTIVITIES]["processed"] == 2
    assert sandbox.requests[0].fault == "reset_after"


def test_delay_that_processes_first_leaves_items_behind_a_client_timeout(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "delay", "seconds": LONG_DELAY_S, "process": True}])
    with pytest.raises(requests.exceptions.ReadTimeout):
        post_metrics(sandbox, [METRIC], timeout=0.25)
    assert sandbox.received() == [METRIC]  # a retry now would duplicate it


def test_delay_without_processing_drops_the_items_of_a_client_that_gave_up(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "delay", "seconds": LONG_DELAY_S, "process": False}])
    with pytest.raises(requests.exceptions.ReadTimeout):
        post_metrics(sandbox, [METRIC], timeout=0.15)
    wait_for(lambda: len(sandbox.requests) == 1)
    assert (sandbox.requests[0].status, sandbox.requests[0].fault) == (None, "delay")
    assert sandbox.received() == []


def test_delay_answers_normally_when_the_client_waits(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "delay", "seconds": 0.3, "process": False}])
    started = time.monotonic()
    response = post_metrics(sandbox, [METRIC])
    assert time.monotonic() - started >= 0.3
    assert response.json() == {"processed": 1, "errors": []}
    assert sandbox.received() == [METRIC]


@pytest.mark.parametrize("process", [True, False])
def test_bad_body_is_a_200_with_html(sandbox: PlanhatSandbox, process: bool) -> None:
    sandbox.set_faults(script=[{"kind": "bad_body", "body": "<html>oops</html>", "process": process}])
    response = post_metrics(sandbox, [METRIC])
    assert (response.status_code, response.headers["Content-Type"]) == (200, "text/html")
    assert response.text == "<html>oops</html>"
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()
    assert sandbox.received() == ([METRIC] if process else [])


def test_bad_json_is_a_200_without_counts(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "bad_json"}])
    response = post_metrics(sandbox, [METRIC])
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert sandbox.received() == [METRIC]


def test_script_applies_in_order_to_data_requests_only(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "ok"}, {"kind": "status", "status": 429}, {"kind": "status", "status": 500}])
    assert post_metrics(sandbox, [METRIC]).status_code == 200
    assert requests.get(f"{sandbox.url}/_sandbox/summary", timeout=TIMEOUT_S).status_code == 200  # no fault used
    assert post_activities(sandbox, [ACTIVITY]).status_code == 429
    assert post_metrics(sandbox, [METRIC]).status_code == 500
    assert post_metrics(sandbox, [METRIC]).status_code == 200
    assert [r.fault for r in sandbox.requests] == [None, "status", "status", None]


def test_invalid_fault_configs_are_rejected(sandbox: PlanhatSandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.set_faults(script=[{"kind": "explode"}])
    with pytest.raises(ValueError):
        sandbox.set_faults(script=[{"kind": "status", "stauts": 503}])
    with pytest.raises(ValueError):
        sandbox.set_faults(random={"503": 0.7, "429": 0.7})
    with pytest.raises(ValueError):
        sandbox.set_faults(random={"teapot": 0.1})


# ---- random faults and latency ----------------------------------------------------------------


def outcomes(sandbox: PlanhatSandbox, count: int) -> list[int | str]:
    """Status per request, "reset" for a dropped connection; asserts a random 429 says Retry-After: 0."""
    seen: list[int | str] = []
    for _ in range(count):
        try:
            response = post_metrics(sandbox, [METRIC])
        except requests.exceptions.ConnectionError:
            seen.append("reset")
            continue
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "0"
        seen.append(response.status_code)
    return seen


def test_random_faults_are_reproducible_with_the_same_seed(sandbox: PlanhatSandbox) -> None:
    table = {"503": 0.2, "429": 0.15, "reset_before": 0.1}
    sandbox.set_faults(random=table, seed=7)
    first = outcomes(sandbox, 40)
    sandbox.reset()
    sandbox.set_faults(random=table, seed=7)
    assert outcomes(sandbox, 40) == first
    assert {503, 429, "reset", 200} <= set(first)
    assert len(sandbox.received()) == first.count(200)

    sandbox.set_faults(random=table, seed=8)
    assert outcomes(sandbox, 40) != first


def test_random_faults_start_after_the_script(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "ok"}, {"kind": "ok"}], random={"503": 1.0})
    assert outcomes(sandbox, 4) == [200, 200, 503, 503]


def test_latency_delays_each_answer(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(latency_s=0.3)
    for _ in range(2):
        started = time.monotonic()
        assert post_metrics(sandbox, [METRIC]).status_code == 200
        assert time.monotonic() - started >= 0.3  # at least: a busy machine only adds to it


def test_latency_does_not_serialise_requests() -> None:
    """Four requests, each held by a latency no test outlasts: all four are processed (their items
    recorded, before the latency) while none has been answered, so they were handled side by side;
    one after another, the second would wait behind the first's latency. Not timed: it waits for the
    four items (up to a bound only a hung server reaches); stopping the sandbox ends the latency."""
    sandbox = PlanhatSandbox(latency_s=LONG_DELAY_S).start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = [
                pool.submit(post_metrics, sandbox, [{**METRIC, "value": i}], timeout=GIVE_UP_S) for i in range(4)
            ]
            wait_for(lambda: len(sandbox.received()) == 4)
            assert not any(answer.done() for answer in answers), "an answer came before its latency was over"
            sandbox.stop()  # cuts the latency short: the answers, or the connections, end now
            for answer in answers:
                answer.exception(timeout=GIVE_UP_S)
    finally:
        sandbox.stop()
    assert sorted(item["value"] for item in sandbox.received()) == [0, 1, 2, 3]


def test_latency_from_the_constructor_survives_reset() -> None:
    with PlanhatSandbox(latency_s=0.2) as sandbox:
        sandbox.reset()
        started = time.monotonic()
        post_metrics(sandbox, [])
        assert time.monotonic() - started >= 0.2


# ---- control endpoints, summary, record file --------------------------------------------------


def test_control_endpoints_over_http(sandbox: PlanhatSandbox) -> None:
    control = f"{sandbox.url}/_sandbox"
    faults = {"script": [{"kind": "status", "status": 503, "retry_after": "1"}]}
    assert requests.post(f"{control}/faults", json=faults, timeout=TIMEOUT_S).json() == {"ok": True}
    assert post_metrics(sandbox, [METRIC]).status_code == 503
    assert post_metrics(sandbox, [METRIC, {"dimensionId": "bad id", "value": 1, "externalId": "a"}]).status_code == 200
    assert post_activities(sandbox, [ACTIVITY]).status_code == 200

    received = requests.get(f"{control}/received", timeout=TIMEOUT_S).json()
    assert received == [
        {"endpoint": METRICS, "item": METRIC, "accepted": True},
        {"endpoint": METRICS, "item": {"dimensionId": "bad id", "value": 1, "externalId": "a"}, "accepted": False},
        {"endpoint": USER_ACTIVITIES, "item": ACTIVITY, "accepted": True},
    ]
    only_activities = requests.get(f"{control}/received", params={"endpoint": USER_ACTIVITIES}, timeout=TIMEOUT_S)
    assert [entry["item"] for entry in only_activities.json()] == [ACTIVITY]

    summary = requests.get(f"{control}/summary", timeout=TIMEOUT_S).json()
    assert summary == sandbox.summary()
    assert summary[METRICS]["statuses"] == {"200": 1, "503": 1}

    logged = requests.get(f"{control}/requests", timeout=TIMEOUT_S).json()
    assert [(r["endpoint"], r["status"], r["fault"], r["items"]) for r in logged] == [
        (METRICS, 503, "status", 0),
        (METRICS, 200, None, 2),
        (USER_ACTIVITIES, 200, None, 1),
    ]
    assert requests.get(f"{control}/received", params={"endpoint": "x"}, timeout=TIMEOUT_S).status_code == 400
    assert requests.get(f"{control}/health", timeout=TIMEOUT_S).json()["ok"] is True

    bad = requests.post(f"{control}/faults", json={"script": [{"kind": "nope"}]}, timeout=TIMEOUT_S)
    assert bad.status_code == 400 and "nope" in bad.json()["message"]
    assert requests.post(f"{control}/reset", timeout=TIMEOUT_S).json() == {"ok": True}
    assert sandbox.received() == [] and sandbox.requests == []
    assert requests.get(f"{control}/nothing", timeout=TIMEOUT_S).status_code == 404


def test_summary_counts_and_text(sandbox: PlanhatSandbox) -> None:
    bad = {"dimensionId": "m", "value": "x", "externalId": "a"}
    post_metrics(sandbox, [METRIC, METRIC, {**METRIC, "dimensionId": "mrr"}, bad, bad])
    post_metrics(sandbox, [METRIC])
    post_activities(sandbox, [ACTIVITY, {"euExtId": "u1"}, {"action": "login"}])
    summary = sandbox.summary()
    assert summary[METRICS] == {
        "requests": 2,
        "items": 6,
        "processed": 4,
        "errors": 2,
        "max_items_per_request": 5,
        "authorization_sent": 2,
        "error_reasons": {"value must be a number": 2},
        "by_dimension_id": {"logins": 3, "mrr": 1},
        "statuses": {"200": 2},
        "faults": {},
    }
    assert summary[USER_ACTIVITIES]["by_action"] == {"login": 1, "(no action)": 1}
    assert summary[USER_ACTIVITIES]["error_reasons"] == {"email or euExtId must be specified": 1}
    text = sandbox.summary_text()
    assert "requests 2  items 6  processed 4  rejected 2  max items/request 5" in text
    assert "value must be a number" in text and "logins" in text


def test_record_file_gets_one_json_line_per_item(tmp_path: Path) -> None:
    path = tmp_path / "received.jsonl"
    with PlanhatSandbox(record_file=str(path)) as sandbox:
        bad = {"dimensionId": "m", "value": 1}
        post_metrics(sandbox, [METRIC, bad])
        post_activities(sandbox, ACTIVITY)
        sandbox.set_faults(script=[{"kind": "status", "status": 503}])
        post_metrics(sandbox, [METRIC])  # refused: not recorded
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"endpoint": METRICS, "item": METRIC, "accepted": True},
        {"endpoint": METRICS, "item": bad, "accepted": False},
        {"endpoint": USER_ACTIVITIES, "item": ACTIVITY, "accepted": True},
    ]


def test_keep_items_false_only_counts() -> None:
    with PlanhatSandbox(keep_items=False) as sandbox:
        post_metrics(sandbox, [METRIC] * 100)
        assert sandbox.summary()[METRICS]["processed"] == 100
        with pytest.raises(RuntimeError):
            sandbox.received()
        assert requests.get(f"{sandbox.url}/_sandbox/received", timeout=TIMEOUT_S).status_code == 409


# ---- lifecycle and command line ---------------------------------------------------------------


def test_lifecycle_binds_loopback_and_stop_is_idempotent() -> None:
    with pytest.raises(ValueError):
        PlanhatSandbox(host="0.0.0.0")
    sandbox = PlanhatSandbox()
    with pytest.raises(RuntimeError):
        _ = sandbox.url
    sandbox.start()
    try:
        assert sandbox.url == f"http://127.0.0.1:{sandbox.port}" and sandbox.port > 0
        session = requests.Session()  # leaves an idle keep-alive connection for stop() to cut
        assert session.post(metrics_url(sandbox), json=[], headers=bearer(sandbox.api_token), timeout=TIMEOUT_S).ok
    finally:
        sandbox.stop()
    sandbox.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"http://127.0.0.1:{sandbox.port}/dimensiondata/{sandbox.tenant}", json=[], timeout=1)


def test_command_line_prints_the_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "destination_planhat.testing.sandbox", "--port=0", "--tenant=t-1", "--api-token=tok"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], GIVE_UP_S)
        assert ready, "the sandbox did not announce itself"
        line = process.stdout.readline().strip()
        prefix = "planhat-sandbox listening on http://127.0.0.1:"
        assert line.startswith(prefix) and int(line[len(prefix) :]) > 0
        url = line.removeprefix("planhat-sandbox listening on ")
        response = requests.post(f"{url}/dimensiondata/t-1", json=[METRIC], headers=bearer("tok"), timeout=TIMEOUT_S)
        assert response.json() == {"processed": 1, "errors": []}
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=GIVE_UP_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Planhat sandbox summary (tenant t-1)" in out and "processed 1" in out
