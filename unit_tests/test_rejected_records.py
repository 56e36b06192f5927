"""The store of rejected records: where files go (the platform's convention), what a line holds, that
nothing pending is lost on a failed write, that memory stays bounded, and the config's rules."""

from __future__ import annotations

import io
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Optional

import orjson
import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

import destination_planhat.rejected.records as rejected_records
from destination_planhat.config import LocalObjectStorage, S3ObjectStorage, parse_config
from destination_planhat.mapping.routing import route_streams
from destination_planhat.mapping.unclean_json import parse_leniently
from destination_planhat.planhat.answers import PostResult, RejectedItem
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import PlanhatPayloadTooLarge, system_error
from destination_planhat.rejected.records import (
    Layout,
    LocalWriter,
    RejectedRecords,
    StoreFailed,
    check_storage,
    layout_for,
)
from destination_planhat.sync.state_barrier import PendingState, StateBarrier
from destination_planhat.sync.state_stats import StateCut, pair_rejected
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import MIXED_CATALOG, MIXED_STREAMS, config, state_counts, state_cursor
from destination_planhat.testing.fake_client import FakeClient
from destination_planhat.testing.harness import global_state, stream_state

STARTED = datetime(2026, 12, 1, 23, 10, 5, 123000, tzinfo=timezone.utc)
STARTED_MS = 1796166605123


def s3(**fields: Any) -> S3ObjectStorage:
    return S3ObjectStorage(storage_type="S3", s3_bucket_name="my-bucket", **fields)


# ----- where ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bucket_path, sync_id, expected",
    [
        # ObjectStoragePathResolverTest.kt's cases: what the Airbyte UI links to.
        ("my/path", 123, "my/path/123/"),
        ("my/path/", 123, "my/path/123/"),
        ("", 456, "456/"),
        ("/leading/", 7, "leading/7/"),
        ("x", None, "x/no_sync_id/"),
    ],
)
def test_the_sync_folder_is_the_one_the_platform_links(bucket_path: str, sync_id: Optional[int], expected: str) -> None:
    assert layout_for(s3(bucket_path=bucket_path), sync_id, STARTED).sync_prefix() == expected


@pytest.mark.parametrize(
    "namespace, name, part, expected",
    [
        ("app", "events", 0, f"prefix/42/app/events/2026_12_01_{STARTED_MS}_0.jsonl"),
        (None, "usage", 3, f"prefix/42/usage/2026_12_01_{STARTED_MS}_3.jsonl"),  # no namespace: no empty folder
        # Names are one path segment each: a Local directory cannot be left, keys keep their depth.
        ("a/b", "..", 0, f"prefix/42/a_b/_/2026_12_01_{STARTED_MS}_0.jsonl"),
        ("x\\y", "tab\tname", 1, f"prefix/42/x_y/tab_name/2026_12_01_{STARTED_MS}_1.jsonl"),
    ],
)
def test_default_keys(namespace: Optional[str], name: str, part: int, expected: str) -> None:
    assert layout_for(s3(bucket_path="prefix/"), 42, STARTED).key(namespace, name, part) == expected


def test_path_and_file_name_formats_take_the_cdk_variables() -> None:
    storage = s3(
        bucket_path="p",
        path_format="{namespace}/{stream_name}/{year}_{month}_{day}_{epoch}",
        file_name_format="{sync_id}-{part_number}{format_extension}",
    )
    layout = layout_for(storage, 9, STARTED)
    assert layout.key("ns", "s", 2) == f"p/ns/s/2026_12_01_{STARTED_MS}/9-2.jsonl"


def test_local_uses_the_default_layout_under_its_directory(tmp_path: Path) -> None:
    layout = layout_for(LocalObjectStorage(storage_type="Local", local_path=str(tmp_path)), 5, STARTED)
    assert layout.key(None, "usage", 0) == f"5/usage/2026_12_01_{STARTED_MS}_0.jsonl"


# ----- the config -------------------------------------------------------------------------------


def config_error_text(storage: dict[str, Any]) -> str:
    with pytest.raises(AirbyteTracedException) as caught:
        parse_config({"object_storage_config": storage})
    assert caught.value.failure_type == FailureType.config_error
    return caught.value.message or ""


S3_BASE = {"storage_type": "S3", "s3_bucket_name": "my-bucket", "s3_bucket_region": "us-east-1", "bucket_path": ""}


@pytest.mark.parametrize("endpoint", ["http://s3.example.com", "http://10.0.0.5:9000", "http://192.168.1.2"])
def test_plain_http_endpoint_is_refused_off_loopback(endpoint: str) -> None:
    message = config_error_text({**S3_BASE, "s3_endpoint": endpoint})
    assert "`object_storage_config.s3_endpoint` must use https" in message


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000", "https://minio.example.com"]
)
def test_https_or_loopback_http_endpoints_are_accepted(endpoint: str) -> None:
    storage = parse_config(
        {"object_storage_config": {**S3_BASE, "s3_endpoint": endpoint + "/"}}
    ).rejected_records_storage
    assert isinstance(storage, S3ObjectStorage) and storage.s3_endpoint == endpoint


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"access_key_id": "AKID"}, "set both `access_key_id` and `secret_access_key`, or neither"),
        (
            {"s3_bucket_name": "s3://my-bucket/x"},
            "`object_storage_config.s3_bucket_name` must be the name of an S3 bucket",
        ),
        ({"path_format": "{sync_id}/{table}/"}, "`object_storage_config.path_format` uses unknown variable(s) {table}"),
        ({"file_name_format": "{date}.jsonl"}, "`object_storage_config.file_name_format` must contain {part_number}"),
        ({"format": {"format_type": "CSV"}}, "`object_storage_config.format.format_type`"),
        ({"s3_endpoint": "ftp://x"}, "`object_storage_config.s3_endpoint` must be an http(s) URL"),
        ({"nonsense": 1}, "`object_storage_config.nonsense` is not a setting of this connector"),
    ],
)
def test_s3_settings_errors_name_the_field(fields: dict[str, Any], expected: str) -> None:
    assert expected in config_error_text({**S3_BASE, **fields})


def test_the_errors_never_quote_the_keys() -> None:
    message = config_error_text(
        {**S3_BASE, "secret_access_key": "very-secret-value", "s3_endpoint": "http://x.example"}
    )
    assert "very-secret-value" not in message


def test_none_and_absent_store_nothing_and_local_needs_a_path() -> None:
    assert parse_config({}).rejected_records_storage is None
    assert parse_config({"object_storage_config": {"storage_type": "None"}}).rejected_records_storage is None
    assert "`object_storage_config.local_path`" in config_error_text({"storage_type": "Local", "local_path": "  "})
    assert "does not match any of the expected tags: 'None', 'S3', 'Local'" in config_error_text(
        {"storage_type": "GCS"}
    )


# ----- what is stored, and when ---------------------------------------------------------------------


class RecordingWriter:
    """Keeps every put (key -> bytes); fails the next `fail` puts."""

    def __init__(self, fail: int = 0) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail = fail

    def where(self, key: str = "") -> str:
        return f"test://{key}"

    def put(self, key: str, body: IO[bytes], size: int) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreFailed(system_error(f"could not store {key}"))
        data = body.read()
        assert len(data) == size
        self.objects[key] = data

    def check(self, directory: str) -> None:
        raise AssertionError("not used")


def store(writer: RecordingWriter, secrets: tuple[str, ...] = ()) -> RejectedRecords:
    return RejectedRecords(
        writer,
        Layout("p", "{sync_id}/{namespace}/{stream_name}/", "{part_number}{format_extension}", 1, STARTED),
        secrets,
        clock=lambda: 1796166605.5,
    )


def lines_of(writer: RecordingWriter) -> dict[str, list[dict[str, Any]]]:
    return {key: [orjson.loads(line) for line in data.splitlines()] for key, data in writer.objects.items()}


def test_a_line_holds_the_stream_reason_and_item_and_each_flush_writes_new_files() -> None:
    writer = RecordingWriter()
    rejected = store(writer)
    assert not rejected.pending
    rejected.add(
        "app",
        "events",
        record_number=3,
        rejected_by="planhat",
        reason="bad",
        target="user_activities",
        item={"email": "x"},
    )
    rejected.add(None, "usage", record_number=1, rejected_by="connector", reason="no", target="metrics", record=[1])
    assert rejected.pending and writer.objects == {}  # nothing is written before a flush
    rejected.flush()
    assert not rejected.pending
    rejected.add(
        None, "usage", record_number=2, rejected_by="connector", reason="no", target="metrics", line=b"{bad\xff"
    )
    rejected.flush()
    rejected.flush()  # nothing new: no empty file
    assert lines_of(writer) == {
        "p/1/app/events/0.jsonl": [
            {
                "stream": {"namespace": "app", "name": "events"},
                "record_number": 3,
                "rejected_by": "planhat",
                "reason": "bad",
                "target": "user_activities",
                "rejected_at": "2026-12-01T23:10:05.500Z",
                "sync_id": 1,
                "item": {"email": "x"},
            }
        ],
        "p/1/usage/0.jsonl": [
            {
                "stream": {"namespace": None, "name": "usage"},
                "record_number": 1,
                "rejected_by": "connector",
                "reason": "no",
                "target": "metrics",
                "rejected_at": "2026-12-01T23:10:05.500Z",
                "sync_id": 1,
                "record": [1],
            }
        ],
        "p/1/usage/1.jsonl": [
            {
                "stream": {"namespace": None, "name": "usage"},
                "record_number": 2,
                "rejected_by": "connector",
                "reason": "no",
                "target": "metrics",
                "rejected_at": "2026-12-01T23:10:05.500Z",
                "sync_id": 1,
                "line": "{bad\ufffd",
            }
        ],
    }
    assert rejected.stored == {"app.events": 1, "usage": 2} and rejected.files == 3


def test_secrets_are_masked_wherever_they_would_appear() -> None:
    writer = RecordingWriter()
    rejected = store(writer, secrets=("tok-123456", "tenant-abc", "ab"))
    rejected.add(
        None,
        "s",
        record_number=1,
        rejected_by="planhat",
        reason="HTTP 400 from /dimensiondata/tenant-abc",
        target="metrics",
        item={"note": "token tok-123456 here", "short": "ab"},
    )
    rejected.flush()
    [line] = lines_of(writer)["p/1/s/0.jsonl"]
    assert line["reason"] == "HTTP 400 from /dimensiondata/**********"
    assert line["item"] == {"note": "token ********** here", "short": "ab"}  # 2 characters: not masked


def test_a_failed_write_keeps_the_lines_pending() -> None:
    writer = RecordingWriter(fail=1)
    rejected = store(writer)
    rejected.add(None, "s", record_number=1, rejected_by="connector", reason="r", target="metrics", record={})
    with pytest.raises(StoreFailed):
        rejected.flush()
    assert rejected.pending and rejected.stored == {}
    rejected.flush()
    assert list(lines_of(writer)) == ["p/1/s/0.jsonl"] and rejected.stored == {"s": 1}


def test_a_stream_past_the_part_size_is_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rejected_records, "PART_BYTES", 2_000)
    writer = RecordingWriter()
    rejected = store(writer)
    for n in range(1, 41):
        rejected.add(None, "s", record_number=n, rejected_by="connector", reason="r", target="metrics", record={"n": n})
    assert len(writer.objects) >= 2  # parts written before any flush: memory stays bounded
    rejected.flush()
    numbers = [
        line["record_number"]
        for key in sorted(writer.objects, key=lambda k: int(k.rsplit("/", 1)[1].split(".")[0]))
        for line in lines_of(writer)[key]
    ]
    assert numbers == list(range(1, 41))


def test_values_json_cannot_carry_are_kept_readable() -> None:
    writer = RecordingWriter()
    rejected = store(writer)
    lenient = parse_leniently(b'{"v": NaN, "s": "\xff", "big": 123456789012345678901234567890}')
    rejected.add(None, "s", record_number=1, rejected_by="connector", reason="r", target="metrics", record=lenient)
    rejected.flush()
    [line] = lines_of(writer)["p/1/s/0.jsonl"]
    assert line["record"] == {"v": "NaN", "s": "\\udcff", "big": "123456789012345678901234567890"}


def test_local_writer_renames_a_complete_file_into_place(tmp_path: Path) -> None:
    writer = LocalWriter(LocalObjectStorage(storage_type="Local", local_path=str(tmp_path / "out")))
    writer.put("1/s/0.jsonl", io.BytesIO(b'{"a":1}\n'), 8)
    assert (tmp_path / "out/1/s/0.jsonl").read_bytes() == b'{"a":1}\n'
    assert [p.name for p in (tmp_path / "out/1/s").iterdir()] == ["0.jsonl"]


def test_local_writer_failure_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    writer = LocalWriter(LocalObjectStorage(storage_type="Local", local_path=str(tmp_path / "file")))
    with pytest.raises(StoreFailed) as caught:
        writer.put("1/s/0.jsonl", io.BytesIO(b"x\n"), 2)
    traced = caught.value.traced
    assert isinstance(traced, AirbyteTracedException) and traced.failure_type == FailureType.config_error
    assert str(tmp_path / "file" / "1/s/0.jsonl") in (traced.message or "") and "local_path" in (traced.message or "")


def test_local_check_writes_and_removes_its_marker(tmp_path: Path) -> None:
    storage = LocalObjectStorage(storage_type="Local", local_path=str(tmp_path / "r"))
    assert check_storage(storage) is None
    assert [p for p in (tmp_path / "r").rglob("*") if p.is_file()] == []
    (tmp_path / "blocked").write_text("x")
    problem = check_storage(LocalObjectStorage(storage_type="Local", local_path=str(tmp_path / "blocked")))
    assert problem is not None and "_check_test" in problem and "local_path" in problem


# ----- pairing Planhat's rejections with the items sent, and the barrier ---------------------------


def test_pair_rejected_matches_by_value_then_guesses() -> None:
    items = [{"a": 1}, {"a": 2}, {"a": 2}, {"a": 3}]
    pairs = pair_rejected(items, [{"a": 2}, {"changed": True}, {"a": 2.0}])
    assert pairs == [(1, 0, True), (2, 2, True), (0, 1, False)]


def test_a_state_that_cannot_go_out_stops_every_later_state() -> None:
    emitted: list[Any] = []

    def emit(state: PendingState) -> None:
        if state.message["n"] == 2:
            raise RuntimeError("store failed")
        emitted.append(state.message["n"])

    barrier = StateBarrier(emit)
    cut = StateCut(False, ())
    barrier.add_state(PendingState({"n": 1}, cut))
    with pytest.raises(RuntimeError):
        barrier.add_state(PendingState({"n": 2}, cut))
    batch = barrier.open_batch()
    barrier.add_state(PendingState({"n": 3}, cut))
    barrier.acknowledge(batch)
    assert emitted == [1] and barrier.emitted == 1


# ----- the writer: what is stored is what the states count, and it is stored before them ------------

MODEL_CATALOG, MODEL_STREAMS = MIXED_CATALOG, MIXED_STREAMS
REFUSED, TOO_LARGE = 666, 413  # the fake Planhat rejects items with the first value, answers 413 for the second


def fake_planhat(index: int, endpoint: Endpoint, items: list[Any]) -> PostResult:
    """Rejects REFUSED items (echoing them with keys reversed and integers as floats), and answers 413
    to any request with a TOO_LARGE item, so the sender splits down to that item alone."""
    if any(item.get("value") == TOO_LARGE for item in items):
        raise PlanhatPayloadTooLarge("too large", endpoint=endpoint, status=413, body="")

    def echoed(item: dict[str, Any]) -> dict[str, Any]:
        return {k: (float(v) if type(v) is int else v) for k, v in reversed(list(item.items()))}

    errors = [
        RejectedItem(echoed(i), "refused") for i in items if i.get("value") == REFUSED or i.get("action") == "refused"
    ]
    return PostResult(processed=len(items) - len(errors), errors=errors)


def model_record(rng: Any, n: int) -> tuple[str, dict[str, Any], bool]:
    stream = rng.choice("mmmuupx")
    if stream == "m":
        value = rng.choice([1, 1, 1, "not a number", REFUSED, TOO_LARGE])
        return stream, {"dimensionId": "logins", "value": value, "externalId": f"r{n}"}, value != 1
    if stream == "u":
        fate = rng.choice(["ok", "ok", "planhat", "local"])
        if fate == "local":
            return stream, {"action": "no user id"}, True
        return stream, {"euExtId": f"r{n}", "action": "refused" if fate == "planhat" else "login"}, fate == "planhat"
    if stream == "p":
        columns = {c: rng.choice([1, 2, None, None, "n/a", REFUSED]) for c in ("mrr", "seats")}
        return stream, {"company": f"r{n}", **columns}, any(v in ("n/a", REFUSED) for v in columns.values())
    return stream, {"id": n}, True  # not in the catalog


@pytest.mark.parametrize("seed", range(30))
def test_every_rejected_record_is_stored_once_before_the_states_that_count_it(seed: int) -> None:
    rng = random.Random(seed)
    parsed = config(streams=MODEL_STREAMS, batch_size=rng.randint(1, 7), max_in_flight_requests=rng.randint(1, 4))
    files = RecordingWriter()
    rejected = RejectedRecords(
        files, Layout("", "{sync_id}/{namespace}/{stream_name}/", "{part_number}{format_extension}", 1, STARTED)
    )

    def stored() -> set[tuple[str, int]]:
        return {(line["stream"]["name"], line["record_number"]) for lines in lines_of(files).values() for line in lines}

    emitted: list[tuple[Any, tuple[float, float], set[tuple[str, int]]]] = []
    writer = PlanhatWriter(
        parsed,
        route_streams(parsed, MODEL_CATALOG),
        FakeClient(fake_planhat),
        lambda m: emitted.append((state_cursor(m), state_counts(m), stored())),
        rejected=rejected,
    )
    read: dict[str, int] = {}
    expected_rejected: list[tuple[int, str, int]] = []  # (input position, stream, record number)
    scopes: dict[Any, tuple[str, int]] = {}  # state cursor -> (scope, input position)
    writer.start()
    try:
        for n in range(rng.randint(20, 160)):
            if rng.random() < 0.15:
                scope = rng.choice(["m", "u", "p", "x", "global"])
                scopes[n] = (scope, n)
                writer.state(global_state(n) if scope == "global" else stream_state(scope, n))
                continue
            stream, data, is_rejected = model_record(rng, n)
            read[stream] = read.get(stream, 0) + 1
            if is_rejected:
                expected_rejected.append((n, stream, read[stream]))
            writer.record(stream, None, data)
        writer.finish()
    finally:
        writer.close()
    # Every rejected record is stored (once as a record: unpivot may store several items of one).
    assert stored() == {(stream, number) for _, stream, number in expected_rejected}
    previous: dict[str, int] = {}
    for cursor, (_, rejected_count), stored_then in emitted:
        scope, position = scopes[cursor]
        covered = {
            (s, number) for n, s, number in expected_rejected if n < position and (scope == "global" or s == scope)
        }
        # When the state went out, every rejected record before it in its scope was stored already.
        assert covered <= stored_then
        # And the state counts exactly those of its window.
        since = previous.get(scope, -1)
        assert rejected_count == len(
            {
                (s, number)
                for n, s, number in expected_rejected
                if since < n < position and (scope == "global" or s == scope)
            }
        )
        previous[scope] = position


def test_gzip_compression_writes_jsonl_gz_files() -> None:
    import gzip

    writer = RecordingWriter()
    layout = layout_for(s3(bucket_path="p", compression={"compression_type": "GZIP"}), 3, STARTED)
    rejected = RejectedRecords(writer, layout, clock=lambda: 1796166605.5)
    rejected.add(None, "s", record_number=1, rejected_by="connector", reason="r", target="metrics", record={"a": 1})
    rejected.flush()
    [(key, data)] = writer.objects.items()
    assert key == f"p/3/s/2026_12_01_{STARTED_MS}_0.jsonl.gz"
    assert orjson.loads(gzip.decompress(data))["record"] == {"a": 1}
