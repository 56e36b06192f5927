"""Planhat objects through the CLI against the sandbox's main API: companies, end users, licenses,
custom fields, keys and merging, every answer code, parents first, pacing, and faults.

Each run's books are checked (sync_checks.assert_books_balance), and each emitted state's counts
against the records before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import catalog, configured_stream, record, stream_state
from destination_planhat.testing.object_syncs import (
    COMPANY_SCHEMA,
    COMPANY_SETTINGS,
    ENDUSER_SCHEMA,
    LICENSE_SCHEMA,
    company,
    objects_config,
    state_counts,
    write,
)
from destination_planhat.testing.sandbox import MAIN_API, PlanhatSandbox
from destination_planhat.testing.sync_checks import (
    assert_books_balance,
    sync_summary,
)


def by_external_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["externalId"]: r for r in records if "externalId" in r}


@pytest.fixture
def main_api(planhat: PlanhatSandbox) -> PlanhatSandbox:
    return planhat


def test_companies_with_custom_fields_then_a_rerun_updates_them(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    config = objects_config(main_api, [COMPANY_SETTINGS])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    messages = [record("accounts", company(i)) for i in range(3)] + [stream_state("accounts", 3)]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0, run.stderr[-2000:]
    companies = by_external_id(main_api.objects("companies"))
    assert set(companies) == {"acct-0", "acct-1", "acct-2"}
    assert companies["acct-2"]["name"] == "Company 2"
    # custom.<Field name> from a mapping, and an unmapped column (unmapped_columns: custom) by its own name
    assert companies["acct-2"]["custom"] == {"Plan tier": "pro", "seats": 2}
    summary = sync_summary(run)
    assert_books_balance(summary)
    stream = summary["streams"]["accounts"]
    assert (stream["created"], stream["updated"], stream["rejected_by_planhat"]) == (3, 0, 0)
    assert state_counts(run) == [(3.0, 0.0)]
    # The same records again: an upsert on a key is safe to resend (updated, nothing created).
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0
    assert len(main_api.objects("companies")) == 3
    stream = sync_summary(run)["streams"]["accounts"]
    assert (stream["created"], stream["updated"], stream["unchanged"]) == (0, 3, 3)


def test_end_users_reference_companies_of_the_same_run_parents_first(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    users = {"name": "people", "endpoint": "endusers"}
    config = objects_config(main_api, [COMPANY_SETTINGS, users], batch_size=2)
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA), configured_stream("people", ENDUSER_SCHEMA))
    messages: list[Any] = []
    for i in range(5):
        messages.append(record("accounts", company(i)))
        messages.append(
            record(
                "people",
                {
                    "email": f"u{i}@example.com",
                    "externalId": f"u{i}",
                    "companyExternalId": f"acct-{i}",
                    "firstName": "Ada",
                },
            )
        )
    messages.append(stream_state("people", 5))
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = sync_summary(run)
    assert_books_balance(summary)
    assert summary["streams"]["people"]["rejected_by_planhat"] == 0, summary["streams"]["people"]
    ids = {c["externalId"]: c["_id"] for c in main_api.objects("companies")}
    people = by_external_id(main_api.objects("endusers"))
    assert {k: v["companyId"] for k, v in people.items()} == {f"u{i}": ids[f"acct-{i}"] for i in range(5)}
    assert state_counts(run) == [(5.0, 0.0)]


def test_licenses_reference_an_existing_company(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    main_api.seed("companies", [{"name": "Acme", "externalId": "acme"}])
    config = objects_config(main_api, [{"name": "licenses", "endpoint": "licenses"}])
    configured = catalog(configured_stream("licenses", LICENSE_SCHEMA))
    good = {"externalId": "l1", "companyExternalId": "acme", "_currency": "USD", "fromDate": "2024-01-01", "mrr": 10}
    unknown = {**good, "externalId": "l2", "companyExternalId": "nobody"}
    run = write(
        tmp_path,
        main_api,
        config,
        configured,
        [record("licenses", good), record("licenses", unknown), stream_state("licenses", 2)],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    [license_] = main_api.objects("licenses")
    assert license_["externalId"] == "l1" and license_["mrr"] == 10
    stream = sync_summary(run)["streams"]["licenses"]
    assert (stream["created"], stream["rejected_by_planhat"]) == (1, 1)
    assert state_counts(run) == [(1.0, 1.0)]


def test_same_key_twice_in_one_request_is_merged_and_counted(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    config = objects_config(main_api, [COMPANY_SETTINGS])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    messages = [
        record("accounts", {"id": "a", "name": "First", "plan": "free"}),
        record("accounts", {"id": "b", "name": "Other"}),
        record("accounts", {"id": "a", "seats": 9}),  # merged: name and plan kept, seats added
        stream_state("accounts", 3),
    ]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0, run.stderr[-2000:]
    companies = by_external_id(main_api.objects("companies"))
    assert companies["a"]["name"] == "First" and companies["a"]["custom"] == {"Plan tier": "free", "seats": 9}
    summary = sync_summary(run)
    assert_books_balance(summary)
    stream = summary["streams"]["accounts"]
    assert (stream["read"], stream["sent"], stream["merged"], stream["created"]) == (3, 2, 1, 2)
    assert state_counts(run) == [(3.0, 0.0)]  # the merged record is written through its item


def test_a_merged_item_refused_by_planhat_rejects_every_record_in_it(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    config = objects_config(main_api, [{"name": "people", "endpoint": "endusers"}])
    configured = catalog(configured_stream("people", ENDUSER_SCHEMA))
    messages = [
        record("people", {"externalId": "x", "email": "x@nowhere.example", "companyExternalId": "missing"}),
        record("people", {"externalId": "x", "firstName": "Twice", "companyExternalId": "missing"}),
        stream_state("people", 2),
    ]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0
    stream = sync_summary(run)["streams"]["people"]
    assert (stream["sent"], stream["merged"], stream["rejected_by_planhat"]) == (1, 1, 1)
    assert state_counts(run) == [(0.0, 2.0)]


def test_an_item_without_its_key_is_rejected_locally(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    config = objects_config(main_api, [COMPANY_SETTINGS])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    messages = [record("accounts", {"name": "No id"}), record("accounts", company(1)), stream_state("accounts", 2)]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0
    assert [c["name"] for c in main_api.objects("companies")] == ["Company 1"]
    stream = sync_summary(run)["streams"]["accounts"]
    assert stream["rejected_locally"] == 1
    assert any("externalId is missing (match_on: externalId)" in reason for reason in stream["local_reasons"])
    assert state_counts(run) == [(1.0, 1.0)]


def test_an_item_larger_than_a_request_is_rejected_locally_naming_its_largest_field(
    tmp_path: Path, main_api: PlanhatSandbox
) -> None:
    config = objects_config(main_api, [COMPANY_SETTINGS], max_request_body_bytes=1024)
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    messages = [
        record("accounts", company(1)),
        record("accounts", company(2, name="N" * 2000)),
        record("accounts", company(3)),
        stream_state("accounts", 3),
    ]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0
    assert sorted(c["name"] for c in main_api.objects("companies")) == ["Company 1", "Company 3"]
    assert sync_summary(run)["streams"]["accounts"]["rejected_locally"] == 1
    warnings = run.log_lines("stream 'accounts': an item was not sent: larger than the request size limit")
    assert len(warnings) == 1 and "over the 1,024-byte request limit" in warnings[0], run.logs
    assert "its largest field is 'name', 2,002 bytes" in warnings[0]
    assert state_counts(run) == [(2.0, 1.0)]


def test_match_on_none_creates_every_item(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    settings = {"name": "accounts", "endpoint": "companies", "match_on": "none"}
    config = objects_config(main_api, [settings])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    messages = [
        record("accounts", {"name": "Same"}),
        record("accounts", {"name": "Same"}),
        record("accounts", {"plan": "x"}),
    ]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0
    assert [c["name"] for c in main_api.objects("companies")] == ["Same", "Same"]
    stream = sync_summary(run)["streams"]["accounts"]
    assert (stream["created"], stream["merged"], stream["rejected_locally"]) == (2, 0, 1)  # no name: cannot be created


def test_a_400_is_split_until_the_refused_item_is_alone(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    """Keys that compare equal as text ("7" and 7 after conversion) are merged here; a duplicated key
    Planhat sees anyway (here: a sourceId given twice under different externalIds) makes the whole
    request a 400, which is split until the two items go apart."""
    config = objects_config(main_api, [{"name": "accounts", "endpoint": "companies", "match_on": "externalId"}])
    schema = {"type": "object", "properties": {"externalId": {}, "sourceId": {}, "name": {}}}
    configured = catalog(configured_stream("accounts", schema))
    messages = [record("accounts", {"externalId": f"e{i}", "name": f"C{i}"}) for i in range(6)]
    messages[1]["record"]["data"]["sourceId"] = "dup"
    messages[4]["record"]["data"]["sourceId"] = "dup"
    run = write(tmp_path, main_api, config, configured, messages + [stream_state("accounts", 6)])
    assert run.returncode == 0, run.stderr[-2000:]
    statuses = [r.status for r in main_api.main_api_requests]
    assert statuses[0] == 400 and len(statuses) > 1
    summary = sync_summary(run)
    assert_books_balance(summary)
    stream = summary["streams"]["accounts"]
    assert stream["sent"] == 6 and stream["created"] + stream["updated"] + stream["rejected_by_planhat"] == 6
    assert {c["externalId"] for c in main_api.objects("companies")} >= {"e0", "e2", "e3", "e5"}


def test_a_206_counts_the_refused_items_with_their_reasons(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    config = objects_config(main_api, [{"name": "accounts", "endpoint": "companies"}])
    schema = {"type": "object", "properties": {"externalId": {}, "name": {}}}
    configured = catalog(configured_stream("accounts", schema))
    messages = [
        record("accounts", {"externalId": "ok", "name": "Fine"}),
        record("accounts", {"externalId": "nameless"}),
    ]
    run = write(tmp_path, main_api, config, configured, messages + [stream_state("accounts", 2)])
    assert run.returncode == 0
    assert [r.status for r in main_api.main_api_requests] == [206]
    stream = sync_summary(run)["streams"]["accounts"]
    assert (stream["created"], stream["rejected_by_planhat"]) == (1, 1)
    assert stream["planhat_reasons"] and all(reason for reason in stream["planhat_reasons"])
    assert state_counts(run) == [(1.0, 1.0)]


def test_a_whole_request_403_is_a_config_error_naming_the_object_and_permission(
    tmp_path: Path, main_api: PlanhatSandbox
) -> None:
    main_api.configure_main_api(permitted_objects=["endusers"])
    config = objects_config(main_api, [COMPANY_SETTINGS])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    run = write(tmp_path, main_api, config, configured, [record("accounts", company(1)), stream_state("accounts", 1)])
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    assert "Companies" in error["message"] and "permission" in error["message"]
    assert run.states == []


def test_a_403_for_some_items_rejects_those_with_the_reason_and_keeps_the_others(
    tmp_path: Path, main_api: PlanhatSandbox
) -> None:
    """A token that may update companies but not create them: of 5 companies, the 2 Planhat has are
    updated and the 3 new ones refused in permissionErrors (HTTP 403). That is a partial answer: the
    3 are rejected by Planhat with its reason, counted on the state, and the sync goes on."""
    main_api.seed("companies", [{"externalId": f"acct-{i}", "name": f"Old {i}"} for i in range(2)])
    main_api.configure_main_api(update_only_objects=["companies"])
    config = objects_config(main_api, [COMPANY_SETTINGS])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    messages = [record("accounts", company(i)) for i in range(5)] + [stream_state("accounts", 5)]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [r.status for r in main_api.main_api_requests] == [403]
    summary = sync_summary(run)
    assert_books_balance(summary)
    stream = summary["streams"]["accounts"]
    assert (stream["updated"], stream["created"], stream["rejected_by_planhat"]) == (2, 0, 3)
    assert any("may update companies but not create them" in reason for reason in stream["planhat_reasons"])
    assert state_counts(run) == [(2.0, 3.0)]
    assert sorted(c["name"] for c in main_api.objects("companies")) == ["Company 0", "Company 1"]


def test_a_403_that_did_nothing_fails_the_sync_naming_the_object_and_permission(
    tmp_path: Path, main_api: PlanhatSandbox
) -> None:
    """The same token, and only new companies: nothing was done, so the whole request was refused."""
    main_api.configure_main_api(update_only_objects=["companies"])
    config = objects_config(main_api, [COMPANY_SETTINGS])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    run = write(tmp_path, main_api, config, configured, [record("accounts", company(i)) for i in range(3)])
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    message = error["message"]
    assert "Companies" in message and "permission to read and write Companies" in message
    assert "may update companies but not create them" in message  # Planhat's own reason
    assert main_api.objects("companies") == [] and run.states == []


@pytest.mark.parametrize("status", [429, 500])
def test_429_and_500_are_retried_and_the_resend_is_counted(
    tmp_path: Path, main_api: PlanhatSandbox, status: int
) -> None:
    main_api.set_faults(script=[{"kind": "status", "status": status, "retry_after": "0"}], api=MAIN_API)
    config = objects_config(main_api, [COMPANY_SETTINGS])
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    run = write(
        tmp_path,
        main_api,
        config,
        configured,
        [record("accounts", company(i)) for i in range(3)] + [stream_state("accounts", 3)],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(main_api.objects("companies")) == 3
    stream = sync_summary(run)["streams"]["accounts"]
    assert stream["retries"] == 1 and stream["created"] == 3
    # a 500 may have been processed: its resend is counted as such; a 429 was refused cleanly
    assert stream["resent_after_ambiguous_failure"] == (3 if status == 500 else 0)


def test_pacing_keeps_under_the_sandbox_rate_limit(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    """The sandbox allows 5 calls a minute and the connector is given the same budget: its 5 requests
    (batch_size 1) all go through without a 429 (a sixth call within the minute would get one)."""
    main_api.configure_main_api(rate_limit_per_minute=5, rate_limit_window_s=60)
    config = objects_config(main_api, [COMPANY_SETTINGS], batch_size=1, api_calls_per_minute=5)
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    run = write(tmp_path, main_api, config, configured, [record("accounts", company(i)) for i in range(5)])
    assert run.returncode == 0, run.stderr[-2000:]
    statuses = [r.status for r in main_api.main_api_requests]
    assert statuses == [200] * 5


@pytest.mark.slow  # its subject is a 5 s pause
def test_pacing_slows_down_when_planhat_says_no_calls_are_left(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    """The sandbox allows one call per 4-second window, below the connector's budget of 200 a minute:
    its first answer says `X-Rate-Limit-Remaining: 0`, so the connector holds its next call (5 s)
    instead of sending it into a 429 within the window. (The hold starts when the answer arrives,
    after the window started: a busy machine only makes the gap longer.)"""
    main_api.configure_main_api(rate_limit_per_minute=1, rate_limit_window_s=4)
    config = objects_config(main_api, [COMPANY_SETTINGS], batch_size=1)
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    run = write(tmp_path, main_api, config, configured, [record("accounts", company(i)) for i in range(2)])
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(main_api.objects("companies")) == 2
    assert [r.status for r in main_api.main_api_requests] == [200, 200]
    summary = sync_summary(run)
    assert_books_balance(summary)


def test_soak_with_faults_loses_nothing_and_counts_every_resend(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    main_api.set_faults(random={"503": 0.15, "500": 0.1, "429": 0.1, "reset_after": 0.05}, seed=7, api=MAIN_API)
    config = objects_config(
        main_api, [COMPANY_SETTINGS, {"name": "people", "endpoint": "endusers"}], batch_size=40, max_attempts=20
    )
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA), configured_stream("people", ENDUSER_SCHEMA))
    messages: list[Any] = []
    for i in range(400):
        messages.append(record("accounts", company(i)))
        messages.append(
            record("people", {"email": f"u{i}@example.com", "externalId": f"u{i}", "companyExternalId": f"acct-{i}"})
        )
        if i % 50 == 49:
            messages += [stream_state("accounts", i), stream_state("people", i)]
    run = write(tmp_path, main_api, config, configured, messages)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = sync_summary(run)
    assert_books_balance(summary)
    assert len(main_api.objects("companies")) == 400 and len(main_api.objects("endusers")) == 400
    ambiguous = [r for r in main_api.main_api_requests if r.status in (500,) or r.fault == "reset_after"]
    accounts, people = summary["streams"]["accounts"], summary["streams"]["people"]
    assert accounts["retries"] + people["retries"] >= len(ambiguous)
    assert accounts["resent_after_ambiguous_failure"] + people["resent_after_ambiguous_failure"] > 0
    assert people["rejected_by_planhat"] == 0  # every company was there before its end users
    assert [s["destinationStats"]["rejectedRecordCount"] for s in run.states] == [0.0] * len(run.states)


def test_check_reads_one_company_and_names_the_permission_when_refused(
    tmp_path: Path, main_api: PlanhatSandbox
) -> None:
    config = objects_config(main_api, [COMPANY_SETTINGS])
    status = run_cli("check", tmp_path, config=config).connection_status
    assert status == {"status": "SUCCEEDED"}
    main_api.configure_main_api(permitted_objects=["endusers"])
    status = run_cli("check", tmp_path, config=config).connection_status
    assert status is not None and status["status"] == "FAILED"
    assert "HTTP 403" in status["message"] and "permission to read and write Companies" in status["message"]
    assert [(r.method, r.status) for r in main_api.main_api_requests] == [("GET", 200), ("GET", 403)]
    assert main_api.objects("companies") == []  # the check writes nothing
