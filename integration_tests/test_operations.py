"""Update, insert and delete through the CLI against the sandbox (issue 20): each mode as the Airbyte UI
maps it (its sync mode) and as a `streams` entry's `operation` says it; what reaches Planhat, what
is counted, and that a re-run changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.harness import catalog, configured_stream, encode_lines, record, stream_state
from destination_planhat.testing.sandbox import PlanhatSandbox
from destination_planhat.testing.sync_checks import assert_books_balance, connector_config, sync_summary

SCHEMA = {"type": "object", "properties": {"externalId": {"type": "string"}, "name": {"type": "string"}}}


def ui_stream(name: str, mode: str, primary_key: Optional[tuple[str, ...]] = ("externalId",)) -> dict[str, Any]:
    """A stream mapped onto companies in the Airbyte UI, in one sync mode."""
    stream: dict[str, Any] = {
        "stream": {"name": name, "json_schema": SCHEMA, "supported_sync_modes": ["full_refresh"]},
        "sync_mode": "full_refresh",
        "destination_sync_mode": mode,
        "destination_object_name": "companies",
    }
    if primary_key:
        stream["primary_key"] = [[key] for key in primary_key]
    return stream


def write(
    tmp_path: Path, planhat: PlanhatSandbox, stream: dict[str, Any], rows: list[dict[str, Any]], **overrides: Any
) -> Any:
    tmp_path.mkdir(parents=True, exist_ok=True)
    name = stream["stream"]["name"]
    messages = [record(name, row) for row in rows] + [stream_state(name, len(rows))]
    config = connector_config(
        planhat,
        api_base_url=planhat.url,
        object_storage_config={"storage_type": "Local", "local_path": str(tmp_path / "rejected")},
        **overrides,
    )
    return run_cli(
        "write", tmp_path, config=config, catalog=catalog(stream), stdin=encode_lines(messages), watch=planhat
    )


def companies(planhat: PlanhatSandbox) -> dict[str, str]:
    return {c["externalId"]: c["name"] for c in planhat.objects("companies") if c.get("externalId")}


def puts(planhat: PlanhatSandbox) -> list[int]:
    """The items of each bulk upsert (PUT) Planhat received, in order."""
    return [r.items for r in planhat.main_api_requests if r.method == "PUT"]


def stored_rejections(tmp_path: Path) -> list[str]:
    return [
        line
        for path in sorted((tmp_path / "rejected").rglob("*"))
        if path.is_file()
        for line in path.read_text().splitlines()
    ]


def test_update_never_creates_and_rejects_the_unknown_keys_with_the_reason(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    planhat.seed("companies", [{"externalId": "a", "name": "A"}, {"externalId": "b", "name": "B"}])
    rows = [{"externalId": "a", "name": "A2"}, {"externalId": "x", "name": "X"}, {"externalId": "b", "name": "B2"}]
    run = write(tmp_path, planhat, ui_stream("accounts", "update"), rows)
    assert run.returncode == 0, run.stderr[-2000:]
    assert companies(planhat) == {"a": "A2", "b": "B2"}  # x was not created
    assert puts(planhat) == [2]  # a and b only
    [state] = run.states
    assert (state["destinationStats"]["recordCount"], state["destinationStats"]["rejectedRecordCount"]) == (2.0, 1.0)
    summary = sync_summary(run)
    stats = summary["streams"]["accounts"]
    assert (stats["not_found"], stats["updated"], stats["created"]) == (1, 2, 0)
    assert stats["local_reasons"] == {"no company with this externalId in Planhat (update never creates)": 1}
    assert_books_balance(summary)
    stored = stored_rejections(tmp_path)
    assert len(stored) == 1 and "no company with externalId 'x'" in stored[0]
    # The keys were read once, before anything was written, with select and paging.
    gets = [r for r in planhat.main_api_requests if r.method == "GET"]
    assert gets and all("select=_id,externalId" in r.path for r in gets)
    # A re-run changes nothing: the same records updated, x still rejected, nothing created.
    again = write(tmp_path / "again", planhat, ui_stream("accounts", "update"), rows)
    assert again.returncode == 0, again.stderr[-2000:]
    assert companies(planhat) == {"a": "A2", "b": "B2"}


def test_insert_never_duplicates_and_counts_the_keys_already_present(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.seed("companies", [{"externalId": "a", "name": "A"}])
    rows = [
        {"externalId": "a", "name": "A changed"},  # present: not sent, not changed
        {"externalId": "n", "name": "N"},
        {"externalId": "n", "name": "N again"},  # inserted by this sync already: present, not sent
    ]
    stream = configured_stream("accounts", SCHEMA, destination_sync_mode="append")
    settings = [{"name": "accounts", "endpoint": "companies", "operation": "insert"}]
    run = write(tmp_path, planhat, stream, rows, streams=settings)
    assert run.returncode == 0, run.stderr[-2000:]
    assert companies(planhat) == {"a": "A", "n": "N"}
    [state] = run.states
    assert (state["destinationStats"]["recordCount"], state["destinationStats"]["rejectedRecordCount"]) == (3.0, 0.0)
    summary = sync_summary(run)
    stats = summary["streams"]["accounts"]
    assert (stats["already_present"], stats["created"]) == (2, 1)
    assert_books_balance(summary)
    # A re-run creates nothing: every key is present now, and no PUT is sent.
    before = len(puts(planhat))
    again = write(tmp_path / "again", planhat, stream, rows, streams=settings)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(puts(planhat)) == before
    assert sync_summary(again)["streams"]["accounts"]["already_present"] == 3
    assert companies(planhat) == {"a": "A", "n": "N"}


def test_insert_mapped_in_the_ui_without_a_primary_key_checks_the_mapped_key(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    planhat.seed("companies", [{"externalId": "a", "name": "A"}])
    run = write(
        tmp_path,
        planhat,
        ui_stream("accounts", "append", None),
        [{"externalId": "a", "name": "A2"}, {"externalId": "b", "name": "B"}],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert companies(planhat) == {"a": "A", "b": "B"}


def deletes_sent(planhat: PlanhatSandbox) -> list[str]:
    return [r.path for r in planhat.main_api_requests if r.method == "DELETE"]


def test_soft_delete_removes_exactly_the_records_named_and_a_rerun_finds_them_absent(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    planhat.seed("companies", [{"externalId": k, "name": k.upper()} for k in ("a", "b", "c")])
    ids = {c["externalId"]: c["_id"] for c in planhat.objects("companies")}
    rows = [{"externalId": "a"}, {"externalId": "zz"}, {"externalId": "c"}]
    run = write(tmp_path, planhat, ui_stream("gone", "soft_delete"), rows)
    assert run.returncode == 0, run.stderr[-2000:]
    assert companies(planhat) == {"b": "B"}
    assert deletes_sent(planhat) == [f"/companies/{ids['a']}", f"/companies/{ids['c']}"]  # by Planhat id, in order
    [state] = run.states
    assert (state["destinationStats"]["recordCount"], state["destinationStats"]["rejectedRecordCount"]) == (3.0, 0.0)
    summary = sync_summary(run)
    stats = summary["streams"]["gone"]
    assert (stats["deleted"], stats["already_absent"]) == (2, 1)
    assert_books_balance(summary)
    # The state came after both deletes were answered: its line follows the log line of the last one.
    assert run.stdout.index("deleted the Company 'c'") < run.stdout.index('"type":"STATE"')
    again = write(tmp_path / "again", planhat, ui_stream("gone", "soft_delete"), rows)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(deletes_sent(planhat)) == 2  # nothing more to delete
    assert sync_summary(again)["streams"]["gone"]["already_absent"] == 3
    assert companies(planhat) == {"b": "B"}


def test_delete_with_archive_sets_archived_on_end_users(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.seed("companies", [{"externalId": "co", "name": "Co", "domains": ["a.example"]}])
    planhat.seed(
        "endusers", [{"externalId": "u1", "email": "u1@a.example"}, {"externalId": "u2", "email": "u2@a.example"}]
    )
    schema = {"type": "object", "properties": {"externalId": {"type": "string"}}}
    stream = configured_stream("left", schema, destination_sync_mode="append")
    settings = [{"name": "left", "endpoint": "endusers", "operation": "delete", "archive": True}]
    run = write(tmp_path, planhat, stream, [{"externalId": "u1"}], streams=settings)
    assert run.returncode == 0, run.stderr[-2000:]
    users = {u["externalId"]: u for u in planhat.objects("endusers")}
    assert users["u1"].get("archived") is True and not users["u2"].get("archived")
    assert deletes_sent(planhat) == []
    assert sync_summary(run)["streams"]["left"]["archived"] == 1


def test_archive_on_an_object_without_the_flag_is_a_config_error(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    stream = configured_stream("left", SCHEMA, destination_sync_mode="append")
    settings = [{"name": "left", "endpoint": "companies", "operation": "delete", "archive": True}]
    run = write(tmp_path, planhat, stream, [{"externalId": "a"}], streams=settings)
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error" and "Companies have no archived flag" in error["message"]


def test_the_guard_stops_the_sync_at_max_deletes_and_says_how_to_raise_it(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    planhat.seed("companies", [{"externalId": f"c{i}", "name": f"C{i}"} for i in range(5)])
    rows = [{"externalId": f"c{i}"} for i in range(5)]
    run = write(tmp_path, planhat, ui_stream("gone", "soft_delete"), rows, max_deletes=3)
    assert run.returncode != 0
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    assert "more than `max_deletes` (3)" in error["message"] and "delete number 4 was not" in error["message"]
    assert "raise `max_deletes`" in error["message"]
    assert len(deletes_sent(planhat)) == 3 and sorted(companies(planhat)) == ["c3", "c4"]
    assert run.states == []  # the state after the records never came: the sync failed before it
    # Raised, the re-run finishes the job: the three deleted are already absent.
    again = write(tmp_path / "again", planhat, ui_stream("gone", "soft_delete"), rows, max_deletes=10)
    assert again.returncode == 0, again.stderr[-2000:]
    assert companies(planhat) == {}
    stats = sync_summary(again)["streams"]["gone"]
    assert (stats["deleted"], stats["already_absent"]) == (2, 3)


def test_max_deletes_zero_turns_deletes_off(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.seed("companies", [{"externalId": "a", "name": "A"}])
    run = write(tmp_path, planhat, ui_stream("gone", "soft_delete"), [{"externalId": "a"}], max_deletes=0)
    assert run.returncode != 0
    assert "`max_deletes` is 0, which turns deletes off" in run.errors[0]["message"]
    assert companies(planhat) == {"a": "A"} and deletes_sent(planhat) == []


CDC_SCHEMA = {
    "type": "object",
    "properties": {
        "externalId": {"type": "string"},
        "name": {"type": "string"},
        "_ab_cdc_deleted_at": {"type": ["null", "string"]},
    },
}
DELETED = "2026-12-01T00:00:00Z"


def cdc_stream() -> dict[str, Any]:
    return configured_stream("accounts", CDC_SCHEMA, destination_sync_mode="append_dedup") | {
        "primary_key": [["externalId"]]
    }


def test_source_deletes_are_ignored_by_default_counted_and_named(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.seed("companies", [{"externalId": "a", "name": "A"}])
    rows = [{"externalId": "a", "name": "A", "_ab_cdc_deleted_at": DELETED}, {"externalId": "b", "name": "B"}]
    run = write(tmp_path, planhat, cdc_stream(), rows, streams=[{"name": "accounts", "endpoint": "companies"}])
    assert run.returncode == 0, run.stderr[-2000:]
    assert companies(planhat) == {"a": "A", "b": "B"} and deletes_sent(planhat) == []
    summary = sync_summary(run)
    assert summary["streams"]["accounts"]["source_deletes_ignored"] == 1
    assert_books_balance(summary)
    assert run.log_lines("on_source_delete: ignore")


def test_source_deletes_delete_exactly_their_keys_in_the_order_read(tmp_path: Path, planhat: PlanhatSandbox) -> None:
    planhat.seed("companies", [{"externalId": k, "name": k.upper()} for k in ("s", "t")])
    rows = [
        {"externalId": "n", "name": "N"},  # created, then deleted in the same sync: absent at the end
        {"externalId": "x", "name": "X"},
        {"externalId": "s", "name": "S", "_ab_cdc_deleted_at": DELETED},
        {"externalId": "n", "_ab_cdc_deleted_at": DELETED},
        {"externalId": "x", "_ab_cdc_deleted_at": DELETED},
        {"externalId": "x", "name": "X again"},  # deleted, then created again: present at the end
        {"externalId": "gone", "_ab_cdc_deleted_at": DELETED},  # Planhat never had it: already absent
    ]
    settings = [{"name": "accounts", "endpoint": "companies", "on_source_delete": "delete"}]
    run = write(tmp_path, planhat, cdc_stream(), rows, streams=settings)
    assert run.returncode == 0, run.stderr[-2000:]
    assert companies(planhat) == {"t": "T", "x": "X again"}
    stats = sync_summary(run)["streams"]["accounts"]
    assert (stats["deleted"], stats["already_absent"]) == (3, 1)
    assert_books_balance(sync_summary(run))
    [state] = run.states
    assert (state["destinationStats"]["recordCount"], state["destinationStats"]["rejectedRecordCount"]) == (7.0, 0.0)
    # A re-run ends the same: n, s and gone absent, x deleted and created again.
    again = write(tmp_path / "again", planhat, cdc_stream(), rows, streams=settings)
    assert again.returncode == 0, again.stderr[-2000:]
    assert companies(planhat) == {"t": "T", "x": "X again"}


def test_skip_unchanged_sends_only_what_differs_and_a_rerun_sends_nothing(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    planhat.seed("companies", [{"externalId": "a", "name": "A"}, {"externalId": "b", "name": "B"}])
    rows = [{"externalId": "a", "name": "A"}, {"externalId": "b", "name": "B2"}, {"externalId": "c", "name": "C"}]
    settings = [{"name": "accounts", "endpoint": "companies", "skip_unchanged": True}]
    stream = configured_stream("accounts", SCHEMA, destination_sync_mode="append")
    run = write(tmp_path, planhat, stream, rows, streams=settings)
    assert run.returncode == 0, run.stderr[-2000:]
    assert companies(planhat) == {"a": "A", "b": "B2", "c": "C"}
    assert puts(planhat) == [2]  # b and c: a is as Planhat has it
    summary = sync_summary(run)
    assert summary["streams"]["accounts"]["skipped_unchanged"] == 1
    assert_books_balance(summary)
    [state] = run.states
    assert (state["destinationStats"]["recordCount"], state["destinationStats"]["rejectedRecordCount"]) == (3.0, 0.0)
    again = write(tmp_path / "again", planhat, stream, rows, streams=settings)
    assert again.returncode == 0, again.stderr[-2000:]
    assert puts(planhat) == [2]  # the re-run sends nothing
    assert sync_summary(again)["streams"]["accounts"]["skipped_unchanged"] == 3
