"""Bad input: each case gets a log line naming its stream (and field), is counted, and costs nothing else.

Most cases share one sync: each case has a stream of its own with good records and a state around
the bad line(s), so one run shows per case that the bad input was named and counted, and that
every other record of the stream still arrived exactly once behind its state. Cases that need their
own input, catalog or config (empty input, no streams, bad configs) run alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.sandbox import METRICS, USER_ACTIVITIES, PlanhatSandbox
from destination_planhat.testing.sync_checks import (
    INVALID,
    LOCAL,
    SECRET_API_TOKEN,
    SECRET_TENANT,
    SEND,
    SKIP,
    SyncCheck,
    Workload,
    check_sync,
    connector_config,
)

BODY_CAP = 4_096  # `max_request_body_bytes` of the shared sync: one record below is bigger


def record_line(stream: str, data_json: bytes) -> bytes:
    """A RECORD line with `data` spliced in as raw JSON text (which may be invalid on purpose)."""
    return (
        b'{"type": "RECORD", "record": {"stream": "'
        + stream.encode()
        + b'", "data": '
        + data_json
        + b', "emitted_at": 1}}\n'
    )


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@dataclass(frozen=True)
class Case:
    streams: dict[str, str]  # the case's own streams -> endpoint
    add_bad_input: Callable[[Workload], None]
    logs: list[tuple[str, ...]]  # each tuple: fragments that one log line must all contain
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> summary counters
    invalid: dict[str, int] = field(default_factory=dict)  # stream -> rejected by Planhat or locally
    summary: dict[str, int] = field(default_factory=dict)  # top-level summary counters (at least)


def _not_json(w: Workload) -> None:
    w.raw(record_line("not_json", b'{"dimensionId": oops}'), "not_json", SKIP)
    w.raw(b"this line is not JSON at all\n")


def _unknown_type(w: Workload) -> None:
    w.raw(b'{"type": "BANANA", "banana": {"peel": true}}\n')


def _unknown_stream(w: Workload) -> None:
    w.record("ghost", {"dimensionId": "ghost", "value": 1, "externalId": "g"}, fate=SKIP)
    w.record("ghost", {"dimensionId": "ghost", "value": 2, "externalId": "g"}, fate=SKIP)


def _data_not_object(w: Workload) -> None:
    w.record("not_object", [1, 2, 3], fate=LOCAL)
    w.record("not_object", "a string", fate=LOCAL)


def _missing_required(w: Workload) -> None:
    w.record("missing_field", {"value": 1, "externalId": "no-dimension"}, fate=INVALID)


def _wrong_types(w: Workload) -> None:
    w.record("wrong_type", {"dimensionId": "wrong_type", "value": "ten", "externalId": "x"}, fate=INVALID)
    w.record("wrong_type_events", {"email": "typed@example.com", "count": "many"}, fate=INVALID)


def _non_finite(w: Workload) -> None:
    w.raw(
        record_line("non_finite", b'{"dimensionId": "non_finite", "value": NaN, "externalId": "n1"}'),
        "non_finite",
        LOCAL,
    )
    w.raw(
        record_line("non_finite", b'{"dimensionId": "non_finite", "value": Infinity, "externalId": "n2"}'),
        "non_finite",
        LOCAL,
    )
    w.raw(
        record_line("non_finite_events", b'{"email": "inf@example.com", "count": -Infinity}'),
        "non_finite_events",
        LOCAL,
    )
    # NaN in a column that is not sent harms nobody: the record goes through without it.
    item = {"dimensionId": "non_finite", "value": 3, "externalId": "n3"}
    w.raw(
        record_line("non_finite", b'{"dimensionId": "non_finite", "value": 3, "externalId": "n3", "score": NaN}'),
        "non_finite",
        SEND,
        item,
    )


def _invalid_utf8(w: Workload) -> None:
    w.raw(record_line("bad_utf8", b'{"email": "caf\xe9@example.com", "action": "bad_utf8"}'), "bad_utf8", LOCAL)


def _lone_surrogate(w: Workload) -> None:
    w.raw(record_line("surrogate", b'{"email": "s@example.com", "action": "\\ud800"}'), "surrogate", LOCAL)


def _too_large(w: Workload) -> None:
    w.record("too_large", {"dimensionId": "too_large", "value": 1, "externalId": "x" * (2 * BODY_CAP)}, fate=LOCAL)


def _deeply_nested(w: Workload) -> None:
    ok = {"email": "deep@example.com", "action": "deep", "info": nested(100)}
    w.record("deep", ok)  # deep, but within what JSON libraries and Planhat take: it arrives intact
    too_deep = json.dumps({"email": "deeper@example.com", "action": "deep", "info": nested(300)}).encode()
    w.raw(record_line("deep", too_deep), "deep", LOCAL)
    unreadable = b'{"info": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}"
    w.raw(record_line("deep", unreadable), "deep", SKIP)


def _no_record_object(w: Workload) -> None:
    w.raw(b'{"type": "RECORD", "recrod": {"stream": "typo"}}\n')


CASES = {
    "a line that is not JSON": Case(
        {"not_json": METRICS},
        _not_json,
        logs=[
            ("stream 'not_json'", "skipped: it is not valid JSON"),
            ("skipped: it is not valid JSON", "this line is not JSON"),
        ],
        counts={"not_json": {"skipped": 1}},
    ),
    "a message of an unknown type": Case(
        {},
        _unknown_type,
        logs=[("'BANANA'", "not an Airbyte message type")],
        summary={"unknown_message_types": 1},
    ),
    "a record for a stream not in the catalog": Case(
        {},
        _unknown_stream,
        logs=[("records of stream 'ghost' are skipped", "not in the configured catalog")],
        counts={"ghost": {"read": 2, "skipped": 2, "sent": 0}},
    ),
    "a record whose data is not an object": Case(
        {"not_object": METRICS},
        _data_not_object,
        logs=[("stream 'not_object'", "the record's data is not a JSON object")],
        counts={"not_object": {"rejected_locally": 2}},
    ),
    "a record missing a required field": Case(
        {"missing_field": METRICS},
        _missing_required,
        logs=[("stream 'missing_field'", "dimensionId")],
        invalid={"missing_field": 1},
    ),
    "records with fields of the wrong type": Case(
        {"wrong_type": METRICS, "wrong_type_events": USER_ACTIVITIES},
        _wrong_types,
        logs=[("stream 'wrong_type'", "value"), ("stream 'wrong_type_events'", "count")],
        invalid={"wrong_type": 1, "wrong_type_events": 1},
    ),
    "NaN and Infinity": Case(
        {"non_finite": METRICS, "non_finite_events": USER_ACTIVITIES},
        _non_finite,
        logs=[
            ("stream 'non_finite'", "value", "NaN"),
            ("stream 'non_finite'", "value", "Infinity"),
            ("stream 'non_finite_events'", "count", "-Infinity"),
        ],
        counts={"non_finite": {"rejected_locally": 2}, "non_finite_events": {"rejected_locally": 1}},
    ),
    "a string with invalid UTF-8": Case(
        {"bad_utf8": USER_ACTIVITIES},
        _invalid_utf8,
        logs=[("stream 'bad_utf8'", "field 'email' is not valid UTF-8")],
        counts={"bad_utf8": {"rejected_locally": 1}},
    ),
    "a string with a lone surrogate": Case(
        {"surrogate": USER_ACTIVITIES},
        _lone_surrogate,
        logs=[("stream 'surrogate'", "field 'action' is not valid UTF-8")],
        counts={"surrogate": {"rejected_locally": 1}},
    ),
    "one record bigger than the body cap": Case(
        {"too_large": METRICS},
        _too_large,
        logs=[("stream 'too_large'", "over the 4,096-byte request limit", "largest field is 'externalId'")],
        counts={"too_large": {"rejected_locally": 1}},
    ),
    "deeply nested values": Case(
        {"deep": USER_ACTIVITIES},
        _deeply_nested,
        logs=[
            ("stream 'deep'", "field 'info.a.a", "nested deeper than 255 levels"),
            ("stream 'deep'", "input line", "skipped"),
        ],
        counts={"deep": {"rejected_locally": 1, "skipped": 1}},
    ),
    "a RECORD without a record object": Case(
        {},
        _no_record_object,
        logs=[("a RECORD message without a record object",)],
    ),
}


def _truncated_last_line(w: Workload) -> None:
    line = record_line("truncated", b'{"dimensionId": "truncated", "value": 1, "externalId": "t"}')
    w.raw(line[: len(line) // 2], "truncated", SKIP)


TRUNCATED = Case(
    {"truncated": METRICS},
    _truncated_last_line,
    logs=[("stream 'truncated'", "the input ended in the middle of a line")],
    counts={"truncated": {"skipped": 1}},
)


def shared_workload() -> Workload:
    """Every case on its own streams, in the middle of good records and states; the input ends mid-line."""
    workload = Workload()
    for case in [*CASES.values(), TRUNCATED]:
        for stream, endpoint in case.streams.items():
            workload.stream(stream, endpoint).records(stream, 5).state(stream)
        case.add_bad_input(workload)
        if case is not TRUNCATED:
            for stream in case.streams:
                workload.records(stream, 5).state(stream)
    return workload


@pytest.fixture(scope="module", params=[0, 2], ids=["parsing in process", "two parse workers"])
def shared_sync(request, tmp_path_factory) -> tuple[SyncCheck, Workload]:
    with PlanhatSandbox(tenant=SECRET_TENANT, api_token=SECRET_API_TOKEN) as sandbox:
        workload = shared_workload()
        config = connector_config(sandbox, batch_size=7, max_request_body_bytes=BODY_CAP, parse_workers=request.param)
        run = run_cli(
            "write",
            tmp_path_factory.mktemp("bad_input"),
            watch=sandbox,
            config=config,
            catalog=workload.catalog(),
            stdin=workload.encode(),
        )
        yield check_sync(run, workload, sandbox), workload


@pytest.mark.parametrize(
    "case", [*CASES.values(), TRUNCATED], ids=[*CASES.keys(), "input that ends in the middle of a line"]
)
def test_bad_input_is_named_counted_and_costs_nothing_else(case: Case, shared_sync):
    sync, workload = shared_sync
    for fragments in case.logs:
        assert any(all(f in line for f in fragments) for line in sync.run.logs), f"no log line with {fragments}"
    for stream, counts in case.counts.items():
        stats = sync.stream(stream)
        assert {key: stats[key] for key in counts} == counts, stream
    for stream, count in case.invalid.items():
        stats = sync.stream(stream)
        assert stats["rejected_by_planhat"] + stats["rejected_locally"] == count, stream
    for key, minimum in case.summary.items():
        assert sync.summary[key] >= minimum, key
    # Nothing else lost: every good record of the case's streams arrived (check_sync checked that
    # each arrived exactly once) and was counted as processed.
    for stream in case.streams:
        good = sum(1 for e in workload.entries if e.stream == stream and e.fate == SEND)
        assert sync.stream(stream)["processed"] == good, stream


def test_an_empty_input_is_a_sync_with_nothing_to_do(planhat, tmp_path):
    workload = Workload().stream("usage", METRICS).stream("events", USER_ACTIVITIES)

    run = run_cli(
        "write", tmp_path, watch=planhat, config=connector_config(planhat), catalog=workload.catalog(), stdin=b""
    )

    sync = check_sync(run, workload, planhat)
    assert planhat.requests == [] and run.states == []
    assert {name: s["read"] for name, s in sync.summary["streams"].items()} == {"usage": 0, "events": 0}


def test_a_last_line_without_newline_is_read(planhat, tmp_path):
    workload = Workload().stream("usage", METRICS).records("usage", 10).state("usage")

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat),
        catalog=workload.catalog(),
        stdin=workload.encode().rstrip(b"\n"),
    )

    sync = check_sync(run, workload, planhat)
    assert sync.stream("usage")["processed"] == 10 and len(run.states) == 1


@pytest.mark.parametrize("parse_workers", [0, 2])
def test_a_byte_order_mark_at_the_start_of_the_input_is_read_as_nothing(planhat, tmp_path, parse_workers):
    """An editor's UTF-8 BOM before the first line: that line (a valid record) is read, not skipped,
    and the state after it counts it as written (issue 19)."""
    workload = Workload().stream("usage", METRICS).records("usage", 1).state("usage").records("usage", 9).state("usage")

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat, parse_workers=parse_workers),
        catalog=workload.catalog(),
        stdin=b"\xef\xbb\xbf" + workload.encode(),
    )

    sync = check_sync(run, workload, planhat)
    assert (sync.stream("usage")["processed"], sync.stream("usage")["skipped"]) == (10, 0)
    assert [s["destinationStats"] for s in run.states] == [
        {"recordCount": 1.0, "rejectedRecordCount": 0.0},
        {"recordCount": 9.0, "rejectedRecordCount": 0.0},
    ]


def test_a_catalog_without_streams_skips_every_record(planhat, tmp_path):
    workload = Workload().stream("usage", METRICS)
    for i in range(3):
        workload.record("usage", {"dimensionId": "usage", "value": i, "externalId": "a"}, fate=SKIP)
    workload.state("usage")

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat),
        catalog={"streams": []},
        stdin=workload.encode(),
    )

    sync = check_sync(run, workload, planhat)
    assert run.log_lines("the configured catalog has no streams: nothing will be written")
    assert run.log_lines("records of stream 'usage' are skipped: the stream is not in the configured catalog")
    assert sync.stream("usage")["skipped"] == 3 and planhat.requests == []


BAD_CONFIGS = {
    "an unknown key": ({"bogus_setting": 1}, "`bogus_setting` is not a setting of this connector"),
    "batch_size 0": ({"batch_size": 0}, "`batch_size`"),
    "batch_size above the maximum": ({"batch_size": 100_001}, "`batch_size`"),
    "batch_size not a number": ({"batch_size": "many"}, "`batch_size`"),
    "max_in_flight_requests 0": ({"max_in_flight_requests": 0}, "`max_in_flight_requests`"),
    "request_timeout_seconds 0": ({"request_timeout_seconds": 0}, "`request_timeout_seconds`"),
    "max_request_body_bytes above Planhat's limit": (
        {"max_request_body_bytes": 64 * 1024 * 1024},
        "`max_request_body_bytes`",
    ),
    "two bad fields at once": ({"batch_size": -1, "bogus": True}, "`bogus`"),
}


@pytest.mark.parametrize("overrides, names", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_check_refuses_a_bad_config_naming_the_field(overrides, names, planhat, tmp_path):
    run = run_cli("check", tmp_path, config=connector_config(planhat, **overrides))

    assert run.connection_status["status"] == "FAILED"
    message = run.connection_status["message"]
    assert names in message, message
    if len(overrides) > 1:
        assert "`batch_size`" in message, "every bad field is named at once"
    assert planhat.requests == [], "check sends nothing with a config that is not valid"


@pytest.mark.parametrize(
    "overrides, names",
    [BAD_CONFIGS["an unknown key"], BAD_CONFIGS["batch_size 0"]],
    ids=["an unknown key", "batch_size 0"],
)
def test_write_refuses_a_bad_config_naming_the_field(overrides, names, planhat, tmp_path):
    workload = Workload().stream("usage", METRICS).records("usage", 3).state("usage")

    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=connector_config(planhat, **overrides),
        catalog=workload.catalog(),
        stdin=workload.encode(),
    )

    assert run.returncode != 0 and run.states == []
    [error] = run.errors
    assert error["failure_type"] == "config_error"
    assert names in error["message"], error["message"]
    assert planhat.requests == []
