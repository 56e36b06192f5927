"""An acknowledgement is an answer that says what was done (issue 19), through the CLI against the
sandbox's main API: a 2xx without Planhat's counts (206 `{"message": "Partial Content"}`, a 200 with
a proxy's HTML page), or one that counts fewer items than were sent with no error for the rest, is an
ambiguous failure, sent again like after a connection reset.

Each sync ends with every record stored, or fails with no state past what was stored: never a
succeeded sync with a record missing. The analytics host's cases are in test_faults.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from destination_planhat.testing.harness import catalog, configured_stream, record, stream_state
from destination_planhat.testing.object_syncs import (
    COMPANY_SCHEMA,
    COMPANY_SETTINGS,
    company,
    objects_config,
    write,
)
from destination_planhat.testing.sandbox import MAIN_API, PlanhatSandbox
from destination_planhat.testing.sync_checks import assert_books_balance, sync_summary

RECORDS, BATCH = 40, 10
OK = {"kind": "ok"}
NOT_ACKNOWLEDGEMENTS = {
    "206 without counts, processed": {"kind": "no_counts"},
    "206 without counts, not processed": {"kind": "no_counts", "process": False},
    "200 with a proxy's HTML page, processed": {"kind": "bad_body"},
    "200 with a proxy's HTML page, not processed": {"kind": "bad_body", "process": False},
    "200 counting 9 of 10 items, no error for the last": {"kind": "short_count"},
}
WHY = {
    "no_counts": "the answer had no created/updated counts",
    "bad_body": "the answer was not JSON: <html>",
    "short_count": "its counts cover 9 of the 10 items sent (9 done, 0 refused) and name no error for the others",
}


@pytest.fixture
def main_api(planhat: PlanhatSandbox) -> PlanhatSandbox:
    return planhat


def messages() -> list[Any]:
    out: list[Any] = []
    for i in range(RECORDS):
        out.append(record("accounts", company(i)))
        if i % BATCH == BATCH - 1:
            out.append(stream_state("accounts", i + 1))
    return out


def stored_ids(sandbox: PlanhatSandbox) -> list[str]:
    return [c["externalId"] for c in sandbox.objects("companies")]


def assert_no_state_past_what_was_stored(run: Any, sandbox: PlanhatSandbox) -> None:
    """Each emitted state covers records the sandbox holds: the cursor counts the records before it."""
    stored = set(stored_ids(sandbox))
    for state in run.states:
        before = state["stream"]["stream_state"]["cursor"]
        missing = [i for i in range(before) if f"acct-{i}" not in stored]
        assert not missing, f"a state after {before} records was emitted, but {len(missing)} are not stored"


@pytest.mark.parametrize("fault", NOT_ACKNOWLEDGEMENTS.values(), ids=NOT_ACKNOWLEDGEMENTS.keys())
def test_an_answer_that_does_not_say_what_was_done_is_sent_again(
    tmp_path: Path, main_api: PlanhatSandbox, fault: dict[str, Any]
) -> None:
    """Once, in the middle of the sync: the batch is sent again (an upsert by key is safe to resend),
    counted as possibly re-sent, and every record ends stored once."""
    main_api.set_faults(script=[OK, fault], api=MAIN_API)
    config = objects_config(main_api, [COMPANY_SETTINGS], batch_size=BATCH)
    run = write(tmp_path, main_api, config, catalog(configured_stream("accounts", COMPANY_SCHEMA)), messages())
    assert run.returncode == 0, run.stderr[-3000:]

    assert sorted(stored_ids(main_api)) == sorted(f"acct-{i}" for i in range(RECORDS))  # all, once each
    summary = sync_summary(run)
    assert summary["status"] == "succeeded"
    assert_books_balance(summary)
    stream = summary["streams"]["accounts"]
    assert (stream["processed"], stream["unconfirmed"], stream["retries"]) == (RECORDS, 0, 1)
    assert stream["resent_after_ambiguous_failure"] == BATCH
    assert [s["destinationStats"]["recordCount"] for s in run.states] == [float(BATCH)] * (RECORDS // BATCH)
    [line] = run.log_lines("that does not say what was done")
    assert WHY[fault["kind"]] in line and "attempt 1/6 failed with HTTP" in line


@pytest.mark.parametrize("fault", NOT_ACKNOWLEDGEMENTS.values(), ids=NOT_ACKNOWLEDGEMENTS.keys())
def test_when_no_answer_says_what_was_done_the_sync_fails_with_no_state_past_what_was_stored(
    tmp_path: Path, main_api: PlanhatSandbox, fault: dict[str, Any]
) -> None:
    main_api.set_faults(script=[OK] + [fault] * 3, api=MAIN_API)
    config = objects_config(main_api, [COMPANY_SETTINGS], batch_size=BATCH, max_attempts=3)
    run = write(tmp_path, main_api, config, catalog(configured_stream("accounts", COMPANY_SCHEMA)), messages())
    assert run.returncode != 0

    [error] = run.errors
    assert error["failure_type"] == "transient_error"
    message = error["message"]
    assert "Planhat Companies" in message and "answered without saying what was done with the records" in message
    assert WHY[fault["kind"]] in message and "after 3 attempt(s)" in message
    assert "check that `api_base_url` is Planhat's address" in message
    summary = sync_summary(run)
    assert summary["status"] == "failed"
    assert_books_balance(summary)
    assert summary["streams"]["accounts"]["not_acknowledged"] > 0
    assert len(run.states) == 1  # the first batch only: the one Planhat acknowledged
    assert_no_state_past_what_was_stored(run, main_api)


def test_without_a_key_a_resend_creates_again_what_planhat_did_create(tmp_path: Path, main_api: PlanhatSandbox) -> None:
    """match_on: none, and a 206 without counts after Planhat created the batch: the resend creates the
    records a second time. Counted and logged as possible duplicates; nothing is lost (docs/planhat.md)."""
    main_api.set_faults(script=[{"kind": "no_counts"}], api=MAIN_API)
    settings = {"name": "accounts", "endpoint": "companies", "match_on": "none"}
    config = objects_config(main_api, [settings], batch_size=BATCH)
    configured = catalog(configured_stream("accounts", COMPANY_SCHEMA))
    batch = [record("accounts", {"name": f"Company {i}"}) for i in range(BATCH)] + [stream_state("accounts", BATCH)]
    run = write(tmp_path, main_api, config, configured, batch)
    assert run.returncode == 0, run.stderr[-3000:]

    names = [c["name"] for c in main_api.objects("companies")]
    assert sorted(names) == sorted([f"Company {i}" for i in range(BATCH)] * 2)  # each one twice
    stream = sync_summary(run)["streams"]["accounts"]
    assert stream["resent_after_ambiguous_failure"] == BATCH
    assert run.log_lines("with match_on: none they may be created twice")
