"""Rejected records stored (object_storage_config): the real CLI writes into the Planhat sandbox, and the
records it or Planhat rejects land in a real S3-compatible server on loopback (moto's server mode) or
in a directory, counted as the states count them, and stored before the state that covers them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import requests
from moto.server import ThreadedMotoServer

from destination_planhat.testing.cli import run_cli, start_cli
from destination_planhat.testing.harness import (
    ACTIVITY_SCHEMA,
    METRIC_SCHEMA,
    catalog,
    configured_stream,
    encode_lines,
    record,
    sandbox_config,
    stream_state,
)
from destination_planhat.testing.sandbox import PlanhatSandbox

BUCKET = "rejected-records"
KEY_ID, SECRET_KEY = "AKIDREJECTEDTEST01", "rejected-secret-key-value-0001"
SYNC_ID = 4242
# No AWS credentials or config of the machine may leak into the connector or the test's client.
UNSET_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ASSUME_ROLE_EXTERNAL_ID",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
CLEAN_AWS_ENV = {
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 (and STS) on a free loopback port, for the module (stopping it takes half a second);
    always stopped."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The S3 server with one empty bucket, and an environment without the machine's AWS settings."""
    for name in UNSET_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in CLEAN_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    # moto keeps its buckets in the process, across servers and tests: every test starts from none.
    requests.post(f"{s3_server}/moto-api/reset", timeout=30).raise_for_status()
    _s3(s3_server).create_bucket(Bucket=BUCKET)
    try:
        yield s3_server
    finally:
        requests.post(f"{s3_server}/moto-api/reset", timeout=30)


def _s3(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY
    )


def s3_storage(endpoint: str, **overrides: Any) -> dict[str, Any]:
    storage = {
        "storage_type": "S3",
        "s3_bucket_name": BUCKET,
        "s3_bucket_region": "us-east-1",
        "bucket_path": "planhat/rejected/",
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET_KEY,
        "s3_endpoint": endpoint,
    }
    storage.update(overrides)
    return storage


def stored_s3(endpoint: str, prefix: str = "") -> dict[str, list[dict[str, Any]]]:
    """Every stored object under `prefix`, key -> its lines parsed."""
    client = _s3(endpoint)
    found: dict[str, list[dict[str, Any]]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for entry in page.get("Contents", []):
            body = client.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()
            found[entry["Key"]] = [orjson.loads(line) for line in body.splitlines()]
    return found


def stored_local(root: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        str(path.relative_to(root)): [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def with_sync_id(configured: dict[str, Any]) -> dict[str, Any]:
    configured.update(sync_id=SYNC_ID, generation_id=1, minimum_generation_id=0)
    return configured


def two_stream_catalog() -> dict[str, Any]:
    return catalog(
        with_sync_id(configured_stream("usage", METRIC_SCHEMA)),
        with_sync_id(configured_stream("events", ACTIVITY_SCHEMA, namespace="app")),
    )


def good_metric(i: int) -> dict[str, Any]:
    return {"dimensionId": "logins", "value": i, "externalId": f"c-{i}", "date": "2026-11-01"}


def messages_with_rejections() -> list[Any]:
    """Per state window: records the connector rejects, records Planhat (the sandbox) rejects, good ones.

    With invalid_records: send, a dimensionId with a space passes through to Planhat, which rejects it;
    a metric without a value is rejected by the connector's checks all the same (its record never
    becomes a valid item: the mapping keeps it for `send`, so it is the sandbox that refuses it)."""
    out: list[Any] = []
    out += [record("usage", good_metric(i)) for i in range(3)]
    out.append(record("usage", {"dimensionId": "bad id", "value": 1, "externalId": "c-x"}))  # Planhat rejects
    out.append(record("usage", ["not", "an", "object"]))  # the connector rejects: not a JSON object
    out.append(record("events", {"action": "no user"}, namespace="app"))  # connector: no email/euExtId
    out.append(record("events", {"email": "a@example.com", "action": "ok"}, namespace="app"))
    out.append(stream_state("usage", 1))
    out.append(stream_state("events", 1, namespace="app"))
    out.append(record("usage", {"dimensionId": "also bad", "value": 2, "externalId": "c-y"}))  # Planhat rejects
    out.append(record("ghost", {"x": 1}))  # not in the catalog: counted as rejected
    out.append(b'{"type":"RECORD","record":{"stream":"usage","data":{"value":NaN')  # unreadable, names usage
    out += [record("usage", good_metric(i)) for i in range(3, 5)]
    out.append(stream_state("usage", 2))
    return out


def state_rejected(states: list[dict[str, Any]]) -> float:
    return sum(state["destinationStats"]["rejectedRecordCount"] for state in states)


def all_lines(stored: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [line for lines in stored.values() for line in lines]


@pytest.mark.parametrize("parse_workers", [0, 2])
def test_s3_stores_every_rejected_record_with_stream_reason_and_item(
    sandbox: PlanhatSandbox, s3_endpoint: str, tmp_path: Path, parse_workers: int
) -> None:
    config = sandbox_config(
        sandbox.url, invalid_records="send", parse_workers=parse_workers, object_storage_config=s3_storage(s3_endpoint)
    )
    run = run_cli(
        "write", tmp_path, config=config, catalog=two_stream_catalog(), stdin=encode_lines(messages_with_rejections())
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stored = stored_s3(s3_endpoint)
    lines = all_lines(stored)
    # What is stored is what the states count as rejected, stream by stream (`ghost` has no state of its own).
    assert len(lines) == 6
    for namespace, name in ((None, "usage"), ("app", "events")):
        states = [
            s
            for s in run.states
            if s["stream"]["stream_descriptor"] == ({"name": name} | ({"namespace": namespace} if namespace else {}))
        ]
        assert len(
            [line for line in lines if line["stream"] == {"namespace": namespace, "name": name}]
        ) == state_rejected(states)
    assert state_rejected(run.states) == 5
    assert all(key.startswith(f"planhat/rejected/{SYNC_ID}/") and key.endswith(".jsonl") for key in stored)
    by_reason = {
        (line["stream"]["namespace"], line["stream"]["name"], line["rejected_by"], line["reason"]): line
        for line in lines
    }
    planhat = [line for line in lines if line["rejected_by"] == "planhat" and line["target"] == "metrics"]
    assert sorted(line["item"]["dimensionId"] for line in planhat) == ["also bad", "bad id"]
    assert all(
        line["target"] == "metrics" and line["stream"] == {"namespace": None, "name": "usage"} for line in planhat
    )
    # The item as sent is what the sandbox received.
    received = [item for item in sandbox.received("metrics") if item.get("dimensionId") in ("bad id", "also bad")]
    assert sorted(orjson.dumps(i) for i in received) == sorted(orjson.dumps(line["item"]) for line in planhat)
    assert (None, "usage", "connector", "the record's data is not a JSON object") in by_reason
    assert by_reason[(None, "usage", "connector", "the record's data is not a JSON object")]["record"] == [
        "not",
        "an",
        "object",
    ]
    events = [line for line in lines if line["stream"] == {"namespace": "app", "name": "events"}]
    # Sent as it is (invalid_records: send), and refused by Planhat: stored with the activity as sent.
    assert [(e["rejected_by"], e["target"], e["item"]) for e in events] == [
        ("planhat", "user_activities", {"action": "no user"})
    ]
    assert any(key.startswith(f"planhat/rejected/{SYNC_ID}/app/events/") for key in stored)
    ghost = [line for line in lines if line["stream"]["name"] == "ghost"]
    assert ghost[0]["record"] == {"x": 1} and ghost[0]["reason"] == "the stream is not in the configured catalog"
    unreadable = [line for line in lines if "line" in line]
    assert len(unreadable) == 1 and unreadable[0]["reason"].startswith("unreadable input line")
    # Never a secret in what is stored.
    raw = b"".join(orjson.dumps(line) for line in lines)
    for secret in (config["api_token"], config["tenant_uuid"], KEY_ID, SECRET_KEY):
        assert secret.encode() not in raw


@pytest.mark.parametrize("parse_workers", [0, 2])
def test_local_directory_gets_the_same_files(sandbox: PlanhatSandbox, tmp_path: Path, parse_workers: int) -> None:
    root = tmp_path / "rejected"
    config = sandbox_config(
        sandbox.url,
        invalid_records="send",
        parse_workers=parse_workers,
        object_storage_config={"storage_type": "Local", "local_path": str(root)},
    )
    run = run_cli(
        "write", tmp_path, config=config, catalog=two_stream_catalog(), stdin=encode_lines(messages_with_rejections())
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stored = stored_local(root)
    assert len(all_lines(stored)) == state_rejected(run.states) + 1 == 6  # + ghost, which no state covers
    assert all(key.startswith(f"{SYNC_ID}/") for key in stored)
    assert not [key for key in stored if key.endswith(".partial")]
    assert {key.rsplit("/", 1)[0] for key in stored} == {
        f"{SYNC_ID}/usage",
        f"{SYNC_ID}/app/events",
        f"{SYNC_ID}/ghost",
    }
    assert sorted(line["record_number"] for line in all_lines(stored) if line["stream"]["name"] == "usage") == [
        4,
        5,
        6,
        7,
    ]


@pytest.mark.process
@pytest.mark.parametrize("parse_workers", [0, 2])
def test_each_state_comes_after_its_rejected_records(
    sandbox: PlanhatSandbox, tmp_path: Path, parse_workers: int
) -> None:
    """Input fed a window at a time, the connector left waiting for more: when a state is printed, the
    rejected records it covers are already in the directory, those the connector rejected (the reading
    thread releases the state) and those Planhat rejected (a sender thread releases it)."""
    root = tmp_path / "rejected"
    config = sandbox_config(
        sandbox.url,
        parse_workers=parse_workers,
        flush_interval_seconds=1,
        invalid_records="send",
        object_storage_config={"storage_type": "Local", "local_path": str(root)},
    )
    configured = catalog(with_sync_id(configured_stream("usage", METRIC_SCHEMA)))
    with start_cli("write", tmp_path, config=config, catalog=configured) as connector:
        counted = 0.0
        for window in range(4):
            messages: list[Any] = [record("usage", good_metric(window * 10 + i)) for i in range(2)]
            messages += [record("usage", "not an object")] * window  # the connector rejects these
            messages += [record("usage", {"dimensionId": "bad id", "value": 1, "externalId": "c"})]  # Planhat does
            messages.append(stream_state("usage", window))
            connector.send(encode_lines(messages))
            state = connector.next_state()
            counted += state["destinationStats"]["rejectedRecordCount"]
            assert counted == sum(w + 1 for w in range(window + 1))
            lines = all_lines(stored_local(root))
            assert len(lines) == counted
            assert sum(line["rejected_by"] == "planhat" for line in lines) == window + 1
        run = connector.finish()  # every line of its output valid, no secret in it
    assert run.returncode == 0, run.stderr[-3000:]


def test_a_merged_object_item_refused_by_planhat_is_stored_for_each_of_its_records(
    sandbox: PlanhatSandbox, tmp_path: Path
) -> None:
    root = tmp_path / "rejected"
    schema = {"type": "object", "properties": {"externalId": {}, "email": {}, "firstName": {}, "companyExternalId": {}}}
    config = sandbox_config(
        sandbox.url,
        api_base_url=sandbox.url,
        streams=[{"name": "people", "endpoint": "endusers"}],
        object_storage_config={"storage_type": "Local", "local_path": str(root)},
    )
    messages = [
        record("people", {"externalId": "x", "email": "x@nowhere.example", "companyExternalId": "missing"}),
        record("people", {"externalId": "x", "firstName": "Twice", "companyExternalId": "missing"}),
        record("people", {"email": "no-key@example.com"}),  # no externalId: rejected by the connector
        stream_state("people", 3),
    ]
    run = run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=catalog(with_sync_id(configured_stream("people", schema))),
        stdin=encode_lines(messages),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = all_lines(stored_local(root))
    assert len(lines) == state_rejected(run.states) == 3
    planhat = sorted(
        (line for line in lines if line["rejected_by"] == "planhat"), key=lambda line: line["record_number"]
    )
    assert [line["record_number"] for line in planhat] == [1, 2]
    assert planhat[0]["item"] == planhat[1]["item"] and planhat[0]["item"]["externalId"] == "x"
    assert planhat[0]["item"]["firstName"] == "Twice"  # the merged item, as sent
    assert all(line["target"] == "endusers" for line in lines)
    [local] = [line for line in lines if line["rejected_by"] == "connector"]
    assert local["record_number"] == 3 and "externalId" in local["reason"]


def test_unpivot_stores_each_rejected_item_and_the_state_counts_each_record_once(
    sandbox: PlanhatSandbox, tmp_path: Path
) -> None:
    root = tmp_path / "rejected"
    settings = {
        "name": "daily",
        "endpoint": "metrics",
        "unpivot_columns": ["mrr", "seats"],
        "field_mappings": [{"planhat_field": "externalId", "source_field": "company"}],
    }
    schema = {"type": "object", "properties": {"company": {}, "mrr": {}, "seats": {}}}
    config = sandbox_config(
        sandbox.url, streams=[settings], object_storage_config={"storage_type": "Local", "local_path": str(root)}
    )
    messages = [
        record("daily", {"company": "a", "mrr": 10, "seats": 2}),
        record("daily", {"company": "b", "mrr": "lots", "seats": 3}),  # one item of two rejected
        record("daily", {"company": "c", "mrr": "lots", "seats": "many"}),  # both rejected: still one record
        stream_state("daily", 3),
    ]
    run = run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=catalog(with_sync_id(configured_stream("daily", schema))),
        stdin=encode_lines(messages),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = all_lines(stored_local(root))
    assert len(lines) == 3
    assert state_rejected(run.states) == len({line["record_number"] for line in lines}) == 2
    assert sorted((line["record_number"], line["item"]["dimensionId"]) for line in lines) == [
        (2, "mrr"),
        (3, "mrr"),
        (3, "seats"),
    ]


@pytest.mark.process
@pytest.mark.parametrize("parse_workers", [0, 2])
def test_a_store_that_fails_fails_the_sync_before_the_state(
    sandbox: PlanhatSandbox, s3_endpoint: str, tmp_path: Path, parse_workers: int
) -> None:
    """A bucket that does not exist: the first state after a rejected record is not emitted, nor any later."""
    config = sandbox_config(
        sandbox.url,
        parse_workers=parse_workers,
        flush_interval_seconds=1,
        object_storage_config=s3_storage(s3_endpoint, s3_bucket_name="no-such-bucket"),
    )
    configured = catalog(with_sync_id(configured_stream("usage", METRIC_SCHEMA)))
    with start_cli("write", tmp_path, config=config, catalog=configured) as connector:
        # Nothing rejected before this state: it goes out.
        connector.send(encode_lines([record("usage", good_metric(1)), stream_state("usage", 1)]))
        first = connector.next_state()
        rest = [
            record("usage", {"dimensionId": "x", "externalId": "c"}),
            stream_state("usage", 2),
        ]  # no value: rejected
        rest += [record("usage", good_metric(2)), stream_state("usage", 3)]
        connector.send(encode_lines(rest))
        run = connector.finish()  # every line of its output valid, no secret in it
    assert run.returncode != 0
    assert first["stream"]["stream_state"] == {"cursor": 1}
    assert [state["stream"]["stream_state"]["cursor"] for state in run.states] == [1]
    errors = run.errors
    assert errors and errors[-1]["failure_type"] == "config_error"
    message = errors[-1]["message"]
    assert "s3://no-such-bucket/planhat/rejected/" in message and "NoSuchBucket" in message
    assert "s3_bucket_name" in message
    assert SECRET_KEY not in run.stdout


def test_a_local_directory_that_cannot_be_written_fails_the_sync(sandbox: PlanhatSandbox, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = sandbox_config(
        sandbox.url,
        parse_workers=0,
        object_storage_config={"storage_type": "Local", "local_path": str(blocker / "sub")},
    )
    messages = [record("usage", {"dimensionId": "x", "externalId": "c"}), stream_state("usage", 1)]
    cat = catalog(with_sync_id(configured_stream("usage", METRIC_SCHEMA)))
    run = run_cli("write", tmp_path, config=config, catalog=cat, stdin=encode_lines(messages))
    assert run.returncode != 0 and run.states == []
    assert "local_path" in run.errors[-1]["message"] and str(blocker) in run.errors[-1]["message"]


def test_check_writes_and_deletes_a_marker(sandbox: PlanhatSandbox, s3_endpoint: str, tmp_path: Path) -> None:
    run = run_cli("check", tmp_path, config=sandbox_config(sandbox.url, object_storage_config=s3_storage(s3_endpoint)))
    assert run.connection_status == {"status": "SUCCEEDED"}
    assert stored_s3(s3_endpoint) == {}  # the marker is gone


def test_check_reports_a_bucket_it_cannot_write(sandbox: PlanhatSandbox, s3_endpoint: str, tmp_path: Path) -> None:
    config = sandbox_config(sandbox.url, object_storage_config=s3_storage(s3_endpoint, s3_bucket_name="missing-bucket"))
    run = run_cli("check", tmp_path, config=config)
    status = run.connection_status
    assert status is not None and status["status"] == "FAILED"
    assert "s3://missing-bucket/planhat/rejected/1/testing/test/_check_test" in status["message"]
    assert "NoSuchBucket" in status["message"]


def test_check_refuses_plain_http_off_loopback(sandbox: PlanhatSandbox, tmp_path: Path) -> None:
    config = sandbox_config(sandbox.url, object_storage_config=s3_storage("http://s3.example.com:9000"))
    run = run_cli("check", tmp_path, config=config)
    status = run.connection_status
    assert status is not None and status["status"] == "FAILED"
    assert "object_storage_config.s3_endpoint" in status["message"] and "https" in status["message"]


def test_role_arn_writes_with_the_role_s_temporary_credentials(
    sandbox: PlanhatSandbox, s3_endpoint: str, tmp_path: Path
) -> None:
    """moto's STS answers AssumeRole at the same endpoint; the write then uses the temporary credentials
    (moto does not enforce IAM, so this proves the flow, not AWS's permission checks)."""
    storage = s3_storage(s3_endpoint, role_arn="arn:aws:iam::123456789012:role/rejected-writer")
    config = sandbox_config(sandbox.url, parse_workers=0, object_storage_config=storage)
    messages = [record("usage", {"dimensionId": "x", "externalId": "c"}), stream_state("usage", 1)]
    cat = catalog(with_sync_id(configured_stream("usage", METRIC_SCHEMA)))
    run = run_cli("write", tmp_path, config=config, catalog=cat, stdin=encode_lines(messages))
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(all_lines(stored_s3(s3_endpoint))) == state_rejected(run.states) == 1


def test_after_a_failed_sync_the_rejected_records_are_stored_anyway(sandbox: PlanhatSandbox, tmp_path: Path) -> None:
    """Planhat refuses the token (the sync fails, no state): the record rejected before is still stored."""
    root = tmp_path / "rejected"
    config = sandbox_config(
        sandbox.url, api_token="a-wrong-token", object_storage_config={"storage_type": "Local", "local_path": str(root)}
    )
    messages = [record("usage", "not an object"), record("usage", good_metric(1)), stream_state("usage", 1)]
    run = run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=catalog(with_sync_id(configured_stream("usage", METRIC_SCHEMA))),
        stdin=encode_lines(messages),
    )
    assert run.returncode != 0 and run.states == []
    assert run.errors and run.errors[-1]["failure_type"] == "config_error"
    [line] = all_lines(stored_local(root))
    assert (line["record_number"], line["record"], line["rejected_by"]) == (1, "not an object", "connector")


def test_gzip_files_in_the_bucket(sandbox: PlanhatSandbox, s3_endpoint: str, tmp_path: Path) -> None:
    import gzip

    storage = s3_storage(s3_endpoint, compression={"compression_type": "GZIP"})
    config = sandbox_config(sandbox.url, parse_workers=0, object_storage_config=storage)
    messages = [record("usage", {"dimensionId": "x", "externalId": "c"}), stream_state("usage", 1)]
    run = run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=catalog(with_sync_id(configured_stream("usage", METRIC_SCHEMA))),
        stdin=encode_lines(messages),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    client = _s3(s3_endpoint)
    [entry] = client.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert entry["Key"].startswith(f"planhat/rejected/{SYNC_ID}/usage/") and entry["Key"].endswith(".jsonl.gz")
    [line] = gzip.decompress(client.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()).splitlines()
    assert orjson.loads(line)["item"] == {"dimensionId": "x", "externalId": "c"}
    assert state_rejected(run.states) == 1


def test_the_bucket_name_and_keys_are_enough(sandbox: PlanhatSandbox, s3_endpoint: str, tmp_path: Path) -> None:
    """Region and bucket_path may be left out (their defaults are empty): the spec's check agrees with the model's."""
    storage = {
        "storage_type": "S3",
        "s3_bucket_name": BUCKET,
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET_KEY,
        "s3_endpoint": s3_endpoint,
    }
    run = run_cli("check", tmp_path, config=sandbox_config(sandbox.url, object_storage_config=storage))
    assert run.connection_status == {"status": "SUCCEEDED"}
