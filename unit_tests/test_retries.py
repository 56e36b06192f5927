"""The retry decision, as a table: a pure function of the answer's status or the request's exception,
and what each error means to Airbyte (failure type, and the fix its message names)."""

from __future__ import annotations

import ssl

import pytest
import requests
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from urllib3.exceptions import NewConnectionError

from destination_planhat.planhat.api import Endpoint, Host
from destination_planhat.planhat.errors import (
    PlanhatAuthError,
    PlanhatPayloadTooLarge,
    PlanhatRejectedRequest,
    PlanhatTLSError,
    PlanhatUnavailable,
    RequestAborted,
    as_traced,
)
from destination_planhat.planhat.retries import Decision, Verdict, judge_exception, judge_status


@pytest.mark.parametrize(
    "host, status, decision",
    [
        (Host.ANALYTICS, 200, Decision(Verdict.DONE)),
        (Host.ANALYTICS, 204, Decision(Verdict.DONE)),
        (Host.ANALYTICS, 206, Decision(Verdict.DONE)),
        (Host.MAIN, 206, Decision(Verdict.DONE)),
        (Host.ANALYTICS, 413, Decision(Verdict.SPLIT, PlanhatPayloadTooLarge)),
        (Host.MAIN, 413, Decision(Verdict.SPLIT, PlanhatPayloadTooLarge)),
        (Host.MAIN, 400, Decision(Verdict.SPLIT, PlanhatPayloadTooLarge)),  # a payload problem: halves
        (Host.ANALYTICS, 400, Decision(Verdict.FAIL, PlanhatRejectedRequest)),
        (Host.ANALYTICS, 401, Decision(Verdict.FAIL, PlanhatAuthError)),
        (Host.ANALYTICS, 403, Decision(Verdict.FAIL, PlanhatAuthError)),
        (Host.MAIN, 401, Decision(Verdict.FAIL, PlanhatAuthError)),
        (Host.MAIN, 403, Decision(Verdict.FAIL, PlanhatAuthError)),  # unless Planhat did some items (client)
        (Host.ANALYTICS, 429, Decision(Verdict.RETRY)),
        (Host.MAIN, 429, Decision(Verdict.RETRY)),
        (Host.ANALYTICS, 503, Decision(Verdict.RETRY)),
        (Host.ANALYTICS, 500, Decision(Verdict.RETRY_AMBIGUOUS)),
        (Host.MAIN, 500, Decision(Verdict.RETRY_AMBIGUOUS)),
        (Host.ANALYTICS, 502, Decision(Verdict.RETRY_AMBIGUOUS)),
        (Host.ANALYTICS, 504, Decision(Verdict.RETRY_AMBIGUOUS)),
        (Host.ANALYTICS, 301, Decision(Verdict.FAIL, PlanhatRejectedRequest)),
        (Host.MAIN, 307, Decision(Verdict.FAIL, PlanhatRejectedRequest)),
        (Host.ANALYTICS, 404, Decision(Verdict.FAIL, PlanhatRejectedRequest)),
        (Host.ANALYTICS, 422, Decision(Verdict.FAIL, PlanhatRejectedRequest)),
        (Host.ANALYTICS, 501, Decision(Verdict.FAIL, PlanhatRejectedRequest)),
    ],
)
def test_decision_by_status(host, status, decision):
    assert judge_status(host, status) == decision


@pytest.mark.parametrize("status", [400, 413])
def test_a_request_that_cannot_be_split_fails_where_a_batch_would_be_split(status):
    assert judge_status(Host.MAIN, status, can_split=False) == Decision(Verdict.FAIL, PlanhatRejectedRequest)


def _refused() -> requests.ConnectionError:
    return requests.ConnectionError(NewConnectionError(None, "Connection refused"))


@pytest.mark.parametrize(
    "exception, decision",
    [
        (requests.exceptions.SSLError(ssl.SSLCertVerificationError("bad")), Decision(Verdict.FAIL, PlanhatTLSError)),
        (requests.ConnectTimeout(), Decision(Verdict.RETRY)),
        (_refused(), Decision(Verdict.RETRY)),
        (requests.ReadTimeout(), Decision(Verdict.RETRY_AMBIGUOUS)),
        (requests.ConnectionError("Connection reset by peer"), Decision(Verdict.RETRY_AMBIGUOUS)),
        (requests.exceptions.ChunkedEncodingError(), Decision(Verdict.RETRY_AMBIGUOUS)),
    ],
)
def test_decision_by_exception(exception, decision):
    assert judge_exception(exception) == decision


WHERE = "Planhat Metrics (https://analytics.planhat.com/dimensiondata/***)"


@pytest.mark.parametrize(
    "error, failure_type, named",
    [
        (PlanhatAuthError("HTTP 401", endpoint=Endpoint.METRICS, status=401), FailureType.config_error, "`api_token`"),
        (
            PlanhatAuthError("HTTP 403", endpoint=Endpoint.USER_ACTIVITIES, status=403),
            FailureType.config_error,
            "`tenant_uuid`",
        ),
        (
            PlanhatTLSError("certificate verify failed", endpoint=Endpoint.METRICS),
            FailureType.config_error,
            "`analytics_base_url`",
        ),
        (
            PlanhatUnavailable("HTTP 503 after 8 attempt(s)", endpoint=Endpoint.METRICS),
            FailureType.transient_error,
            "sends again every record",
        ),
        (
            PlanhatRejectedRequest("HTTP 400: bad", endpoint=Endpoint.METRICS, status=400),
            FailureType.system_error,
            "HTTP 400: bad",
        ),
        (RequestAborted("not sent", endpoint=Endpoint.METRICS), FailureType.system_error, "not sent"),
    ],
)
def test_each_error_carries_its_failure_type_and_fix(error, failure_type, named):
    traced = as_traced(error, WHERE)
    assert isinstance(traced, AirbyteTracedException)
    assert traced.failure_type == failure_type
    assert named in traced.message and WHERE in traced.message
    assert traced.message == error.user_message(WHERE)  # check reports the same words


def test_other_exceptions_pass_unchanged():
    error = ValueError("a bug")
    assert as_traced(error, WHERE) is error
