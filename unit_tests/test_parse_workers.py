"""Parse worker processes change how fast input is read, never what happens to it.

The same input goes through the connector's own process alone and through real worker processes
(reading/worker_process.py, started by worker_pool.ParseWorkers); the batches sent, the states emitted with their
counts, the per-stream books and the warnings (with their line numbers) must be the same. Then the
worker's own rules (what it handles, what it hands back), its failures, and how many workers a
machine gets.
"""

from __future__ import annotations

import io
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from airbyte_cdk.models import AirbyteMessageSerializer
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat import destination
from destination_planhat.destination import DestinationPlanhat
from destination_planhat.mapping.routing import route_streams
from destination_planhat.reading import worker_pool
from destination_planhat.reading.decoder import CHUNK_MAX_BYTES, FAST, ODD, Decoder
from destination_planhat.reading.pipeline import Pipeline, read_input, start_parse_workers
from destination_planhat.reading.worker_pool import (
    ParseWorkerFailed,
    ParseWorkers,
    _cgroup_cpu_quota,
    default_worker_count,
)
from destination_planhat.reading.worker_process import PIPE_BYTES, widen_pipe
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import (
    ACTIVITY_SCHEMA,
    API_TOKEN,
    METRIC_SCHEMA,
    TENANT,
    catalog,
    config,
    configured_stream,
)
from destination_planhat.testing.fake_client import FakeClient
from destination_planhat.testing.harness import record, stream_state
from destination_planhat.testing.recording_target import RecordingTarget

CATALOG = catalog(
    configured_stream("m", METRIC_SCHEMA),
    configured_stream("u", ACTIVITY_SCHEMA),
    configured_stream("m", METRIC_SCHEMA, namespace="ns"),
    configured_stream(
        "wide",
        {
            "type": "object",
            "properties": {"id": {"type": "string"}, "mrr": {"type": "number"}, "seats": {"type": "number"}},
        },
    ),
)
SETTINGS = {
    "batch_size": 7,
    "max_in_flight_requests": 1,  # one request at a time: the order of the calls is the input's
    "max_request_body_bytes": 2048,
    "streams": [
        {
            "name": "wide",
            "endpoint": "metrics",
            "unpivot_columns": ["mrr", "seats"],
            "field_mappings": [{"planhat_field": "externalId", "source_field": "id"}],
        },
    ],
}


def line(message: Any) -> bytes:
    return message if isinstance(message, bytes) else orjson.dumps(message)


def metric(i: int, **changes: Any) -> dict[str, Any]:
    return {
        "dimensionId": "logins",
        "value": i,
        "externalId": f"c{i}",
        "model": "Company",
        "date": "2026-11-01",
        **changes,
    }


def activity(i: int, **changes: Any) -> dict[str, Any]:
    return {"email": f"u{i}@example.com", "action": "logged_in", "count": 1, **changes}


def mixed_input(seed: int = 7) -> bytes:
    """Good records of every kind of stream among every kind of line the connector must handle itself."""
    rng = random.Random(seed)
    odd_lines: list[Any] = [
        stream_state("m", "s1"),
        {"type": "STATE", "state": {"type": "GLOBAL", "global": {"shared_state": {"c": 1}, "stream_states": []}}},
        {"type": "LOG", "log": {"level": "INFO", "message": "hello"}},
        {"type": "MYSTERY"},
        b"not json at all",
        b"",
        b"[1, 2]",
        b'{"type": "RECORD", "record": {"stream": "m", "data": {"dimensionId": "logins", "value": NaN, "externalId": "x"}}}',
        record("m", metric(1, value="not a number")),
        record("m", metric(2, dimensionId="has space")),
        record("m", "not an object"),
        record("u", {"action": "no identity"}),
        record("nowhere", metric(3)),
        record("m", metric(4, date="2026-13-45")),
        record("m", metric(5, externalId="x" * 3000)),  # larger than the 2,048-byte request cap
        record("wide", {"id": "c1", "mrr": 10, "seats": None}),
        record("wide", {"id": "c2", "mrr": "12.5", "seats": 3}),
        {"type": "RECORD"},
        {"type": "RECORD", "record": {"stream": "m"}},
        stream_state("m", "s2", namespace="ns"),
    ]
    lines: list[Any] = []
    for i in range(600):
        kind = rng.random()
        if kind < 0.35:
            lines.append(record("m", metric(i)))
        elif kind < 0.6:
            lines.append(record("u", activity(i)))
        elif kind < 0.7:
            lines.append(
                record("m", metric(i, value=str(i), date=f"2026-11-{1 + i % 28:02d}T10:00:00+02:00"), namespace="ns")
            )
        elif kind < 0.75:
            lines.append(stream_state(rng.choice(["m", "u"]), i))
        else:
            lines.append(rng.choice(odd_lines))
    return b"\n".join(map(line, lines)) + b'\n{"type": "RECORD", "record": {"stream": "m", "data": {"dimensionId": "lo'


class Trickle(io.RawIOBase):
    """A stream that hands out its bytes in small, uneven pieces (lines cut anywhere)."""

    def __init__(self, data: bytes, seed: int = 3) -> None:
        self._data, self._at, self._rng = data, 0, random.Random(seed)

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        piece = self._data[self._at : self._at + self._rng.randint(1, 700)]
        self._at += len(piece)
        return piece

    read = read1


def batches_per_stream(calls: list[tuple[Any, list[Any]]]) -> dict[str, list[list[Any]]]:
    """The batches of each stream, in the order they were sent. (Across streams the order may differ:
    a worker's answer holds runs of several streams, so which stream's batch fills first can change.)"""
    streams: dict[str, list[list[Any]]] = {}
    for endpoint, items in calls:
        first = items[0]
        if endpoint.value == "user_activities":
            stream = "u"
        elif first.get("dimensionId") in ("mrr", "seats"):
            stream = "wide"
        else:
            stream = "ns.m" if "T" in first.get("date", "") else "m"
        streams.setdefault(stream, []).append(items)
    return streams


def sync(data: bytes, workers: int, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """One sync of `data` with `workers` parse workers (0: none); what the outside world saw of it."""
    parsed = config(**SETTINGS)
    client = FakeClient()
    emitted: list[dict[str, Any]] = []
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), client, emitted.append).start()
    pool = ParseWorkers(workers, writer.parallel_plan()).start() if workers else None
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger="airbyte"):
            read_input(Trickle(data), writer, pool)
            writer.finish()
    finally:
        if pool is not None:
            pool.close()
        writer.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return {
        "batches": batches_per_stream(client.calls),
        "states": list(emitted),
        "books": writer.ledger.snapshot(),
        "warnings": warnings,
    }


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_change_nothing_but_speed(workers, caplog):
    data = mixed_input()
    alone, with_workers = sync(data, 0, caplog), sync(data, workers, caplog)
    assert with_workers == alone
    # The input really holds every kind of line (else the comparison would prove little).
    assert sum(map(len, alone["batches"].values())) > 50 and len(alone["states"]) > 20
    assert any("input line" in w and "not valid JSON" in w for w in alone["warnings"])
    assert alone["books"]["m"]["rejected_locally"] > 0 and alone["books"]["wide"]["extra_items"] > 0
    assert alone["books"]["nowhere"]["skipped"] > 0 and alone["books"]["ns.m"]["sent"] > 0


@pytest.mark.parametrize("seed", [1, 2])
def test_workers_change_nothing_for_other_mixes_either(seed, caplog):
    data = mixed_input(seed)
    assert sync(data, 2, caplog) == sync(data, 0, caplog)


# ----- the CDK's write() API: the same pipeline -------------------------------------------------


def cdk_messages(data: bytes) -> tuple[list[Any], bytes]:
    """The lines of `data` that the CDK can read as AirbyteMessage models (what write() receives),
    as models and as the lines they were."""
    models, lines = [], []
    for raw in data.split(b"\n"):
        try:
            models.append(AirbyteMessageSerializer.load(orjson.loads(raw)))
        except Exception:
            continue
        lines.append(raw)
    return models, b"\n".join(lines) + b"\n"


def api_sync(
    models: list[Any], workers: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """DestinationPlanhat.write() over `models`; what the outside world saw of it."""
    client, books = FakeClient(), {}
    monkeypatch.setattr(destination, "build_client", lambda parsed: client)
    real_finish = PlanhatWriter.finish

    def finish(writer: PlanhatWriter) -> None:
        real_finish(writer)
        books.update(writer.ledger.snapshot())

    monkeypatch.setattr(PlanhatWriter, "finish", finish)
    raw_config = {
        "tenant_uuid": TENANT,
        "api_token": API_TOKEN,
        "analytics_base_url": "http://127.0.0.1:9",
        **SETTINGS,
        "parse_workers": workers,
    }
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="airbyte"):
        states = [
            AirbyteMessageSerializer.dump(m) for m in DestinationPlanhat().write(raw_config, CATALOG, iter(models))
        ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return {"batches": batches_per_stream(client.calls), "states": states, "books": books, "warnings": warnings}


@pytest.mark.parametrize("workers", [0, 2])
def test_the_cdk_write_api_goes_through_the_same_pipeline_as_the_cli(workers, caplog, monkeypatch):
    models, lines = cdk_messages(mixed_input())
    cli = sync(lines, workers, caplog)
    api = api_sync(models, workers, caplog, monkeypatch)
    assert api["batches"] == cli["batches"] and api["books"] == cli["books"]
    assert api["warnings"] == cli["warnings"], "bad records and ignored messages reported alike"
    # States: the API hands out models (which keep only the protocol's keys); the same states, same counts.
    assert api["states"] == [AirbyteMessageSerializer.dump(AirbyteMessageSerializer.load(m)) for m in cli["states"]]
    assert (
        len(api["states"]) > 20
        and cli["books"]["m"]["rejected_locally"] > 0
        and cli["books"]["wide"]["extra_items"] > 0
    )


# ----- what a worker handles, and what it hands back ---------------------------------------------


def worker_view(lines: list[Any], max_part_bytes: int = 2048) -> list[tuple[Any, ...]]:
    parsed = config(**SETTINGS)
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), FakeClient(), lambda m: None)
    plan = orjson.loads(orjson.dumps(writer.parallel_plan()))  # as the worker gets it: through JSON
    plan["max_part_bytes"] = max_part_bytes
    index = {(ns, name): i for i, ns, name, *_ in plan["streams"]}
    segments = Decoder(plan).decode(b"\n".join(map(line, lines)))
    named = {v: k for k, v in index.items()}
    return [
        ("FAST", named[s[1]], [orjson.loads(b"[" + s[2][:-1] + b"]"), list(s[3])])
        if s[0] == FAST
        else ("ODD", s[1], s[2])
        for s in segments
    ]


def test_the_plan_holds_only_streams_a_worker_can_map_alone():
    parsed = config(**SETTINGS)
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), FakeClient(), lambda m: None)
    plan = writer.parallel_plan()
    assert sorted((ns or "", name) for _, ns, name, *_ in plan["streams"]) == [("", "m"), ("", "u"), ("ns", "m")]
    assert plan["max_part_bytes"] == 2048
    assert "token" not in orjson.dumps(plan).decode().lower(), "a worker never gets a credential"


def test_items_come_back_encoded_per_stream_and_everything_else_as_it_came():
    good_m, good_u = record("m", metric(1, value="5")), record("u", activity(1))
    segments = worker_view(
        [
            good_m,
            good_u,
            record("m", metric(2)),
            stream_state("m", 1),
            b"junk",
            record("m", metric(3)),
            record("m", metric(4, value="x")),
        ]
    )
    expected_m = {**metric(1), "value": 5}
    assert segments == [
        (
            "FAST",
            (None, "m"),
            [
                [expected_m, metric(2)],
                [len(orjson.dumps(expected_m)) + 1, len(orjson.dumps(expected_m)) + len(orjson.dumps(metric(2))) + 2],
            ],
        ),
        ("FAST", (None, "u"), [[activity(1)], [len(orjson.dumps(activity(1))) + 1]]),
        ("ODD", 3, [line(stream_state("m", 1)), b"junk"]),
        ("FAST", (None, "m"), [[metric(3)], [len(orjson.dumps(metric(3))) + 1]]),
        ("ODD", 6, [line(record("m", metric(4, value="x")))]),
    ]


@pytest.mark.parametrize(
    "message, why",
    [
        (record("m", metric(1, value="x")), "fails a check: the connector's own process rejects it and logs why"),
        (record("m", metric(1, externalId="")), "a required field is empty"),
        (record("m", [1]), "data is not an object"),
        (record("m", metric(1), namespace="elsewhere"), "a stream that is not in the catalog"),
        (record("wide", {"id": "c", "mrr": 1}), "unpivot: one record, several items"),
        (record("m", metric(1, externalId="x" * 3000)), "larger than a request may be"),
        ({"type": "RECORD", "record": {"stream": "m"}}, "a record without data"),
        ({"type": "RECORD", "record": {"stream": ["m"], "data": metric(1)}}, "a stream name that is not a text"),
        (stream_state("m", 1), "a state"),
        (b'{"type":"RECORD","record":{"stream":"m","data":{"value":NaN}}}', "not strict JSON"),
    ],
)
def test_a_worker_hands_back_every_line_it_does_not_fully_handle(message, why):
    assert worker_view([message]) == [("ODD", 0, [line(message)])], why


# ----- failures ----------------------------------------------------------------------------------


def a_writer(emitted: list) -> PlanhatWriter:
    parsed = config(**SETTINGS)
    return PlanhatWriter(parsed, route_streams(parsed, CATALOG), FakeClient(), emitted.append).start()


def test_a_worker_that_dies_fails_the_sync_naming_it_and_the_way_out(caplog):
    emitted: list = []
    writer = a_writer(emitted)
    pool = ParseWorkers(2, writer.parallel_plan()).start()
    os.kill(pool._workers[1].process.pid, signal.SIGKILL)
    data = b"\n".join(line(record("m", metric(i))) for i in range(50_000)) + b"\n"
    try:
        with pytest.raises(AirbyteTracedException) as raised, caplog.at_level(logging.INFO, logger="airbyte"):
            read_input(io.BytesIO(data), writer, pool)
    finally:
        pool.close()
        writer.close()
    message = raised.value.message
    assert message is not None and "parse worker process 2 of 2" in message and "set parse_workers to 0" in message, (
        message
    )
    assert raised.value.failure_type.value == "system_error"
    assert any("sync summary (JSON)" in r.getMessage() and '"failed"' in r.getMessage() for r in caplog.records)
    assert writer.ledger.snapshot()["m"]["books_balance"]


def test_a_worker_that_cannot_start_its_work_is_reported_with_its_exit_code():
    pool = ParseWorkers(1, {"streams": [[0, None, "m", "no such endpoint", [], {}]], "max_part_bytes": 10}).start()
    try:
        pool.send(0, line(record("m", metric(1))))
        with pytest.raises(
            ParseWorkerFailed, match=r"parse worker process 1 of 1 \(exit code 1\): it ended without answering"
        ):
            pool.receive(0)
    finally:
        pool.close()


def test_closing_ends_every_worker_even_one_with_an_answer_nobody_read():
    pool = ParseWorkers(2, {"streams": [], "max_part_bytes": 2048}).start()
    processes = [w.process for w in pool._workers]
    for number in range(2):
        pool.send(number, b"\n".join([b"x" * 1000] * 3000))  # answers larger than a pipe holds
    pool.close()
    assert [p.poll() is not None for p in processes] == [True, True]


@pytest.mark.skipif(sys.platform != "linux", reason="F_SETPIPE_SZ is Linux's: elsewhere a pipe keeps its size")
def test_a_pipe_to_or_from_a_worker_is_widened_as_far_as_the_system_allows():
    import fcntl

    read_fd, write_fd = os.pipe()
    try:
        before = fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ)
        widen_pipe(read_fd)
        after = fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())  # for a process without CAP_SYS_RESOURCE
    assert before < PIPE_BYTES
    assert after == PIPE_BYTES or (after == before and allowed < PIPE_BYTES), (before, after, allowed)


# ----- how many workers ----------------------------------------------------------------------------


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 2), (3, 3), (4, 4), (64, 4)])
def test_one_worker_per_cpu_up_to_four_and_none_on_a_single_cpu(cpus, workers):
    assert default_worker_count(cpus) == workers


@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({}, None),
    ],
)
def test_a_container_cpu_limit_is_read_from_its_cgroup(tmp_path: Path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _cgroup_cpu_quota(tmp_path, tmp_path / "no-membership-file") == quota


@pytest.mark.parametrize(
    "membership, files, quota",
    [
        ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "50000 100000", "cpu.max": "max 100000"}, 0.5),
        ("0::/\n", {"cpu.max": "300000 100000"}, 3.0),
        (
            "4:cpu,cpuacct:/docker/abc\n0::/\n",
            {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"},
            1.5,
        ),
    ],
)
def test_the_process_s_own_cgroup_comes_first(tmp_path: Path, membership, files, quota):
    """A container that sees the host's cgroup tree finds its limit under its own path, not the root."""
    (tmp_path / "self-cgroup").write_text(membership)
    for name, text in files.items():
        (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / name).write_text(text)
    assert _cgroup_cpu_quota(tmp_path / "fs", tmp_path / "self-cgroup") == quota


def test_a_cpu_limit_below_two_means_no_workers(monkeypatch):
    monkeypatch.setattr(worker_pool, "_cgroup_cpu_quota", lambda: 1.0)
    assert worker_pool.available_cpus() == 1 and default_worker_count() == 0


@pytest.mark.parametrize(
    "settings, started, said",
    [
        ({"parse_workers": 0}, 0, "in the connector's own process (parse_workers)"),
        ({"parse_workers": 2}, 2, "2 worker process(es) alongside the connector (parse_workers)"),
        (
            {
                "parse_workers": 2,
                "streams": [
                    {
                        "name": "m",
                        "endpoint": "metrics",
                        "unpivot_columns": ["value"],
                        "field_mappings": [{"planhat_field": "externalId", "source_field": "externalId"}],
                    }
                ],
            },
            0,
            "no stream is mapped without unpivot_columns or dot paths",
        ),
    ],
)
def test_start_parse_workers_follows_the_setting_and_says_why(settings, started, said, caplog):
    parsed = config(**settings)
    writer = PlanhatWriter(
        parsed, route_streams(parsed, catalog(configured_stream("m", METRIC_SCHEMA))), FakeClient(), lambda m: None
    )
    with caplog.at_level(logging.INFO, logger="airbyte"):
        pool = start_parse_workers(writer)
    try:
        assert (pool.count if pool else 0) == started
        assert any(said in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    finally:
        if pool is not None:
            pool.close()


# ----- the pipeline: chunks out in turn, answers applied in order ---------------------------------


class EchoWorkers:
    """Stands in for ParseWorkers: every line comes back as ODD."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.depth = 2 * count
        self.sent: list[tuple[int, bytes]] = []
        self._answers: dict[int, list[list[tuple[Any, ...]]]] = {n: [] for n in range(count)}

    def send(self, number: int, chunk: Any) -> None:
        data = bytes(chunk)
        self.sent.append((number, data))
        self._answers[number].append([(ODD, 0, data.split(b"\n"))])

    def ready(self, number: int) -> bool:
        return False  # answers are only taken when the pipeline must wait for one

    def receive(self, number: int) -> list[tuple[Any, ...]]:
        return self._answers[number].pop(0)


def test_the_pipeline_cuts_whole_lines_into_bounded_chunks_sends_them_in_turn_and_applies_answers_in_order():
    lines = [b"%d:" % i + b"x" * (i % 300) for i in range(12_000)]
    lines[5_000] = b"long:" + b"y" * (CHUNK_MAX_BYTES + 10)  # one line longer than a chunk
    data = b"\n".join(lines) + b"\nunterminated"
    workers = EchoWorkers(3)
    target = RecordingTarget()  # every line here is unreadable JSON: the writer hears of each one, with its line number

    pipeline = Pipeline(workers, target)
    for start in range(0, len(data), 1 << 20):  # pieces of 1 MiB, as a file gives them
        pipeline.add(data[start : start + (1 << 20)])
    pipeline.finish()
    seen = [(kind, number, got) for kind, number, got, *_ in target.calls]
    assert seen == [
        ("bad", number, got) for number, got in [*enumerate(lines, 1), (len(lines) + 1, b"unterminated")]
    ], "every line once, in order, with its number, and nothing else"
    assert [number for number, _ in workers.sent] == [n % 3 for n in range(len(workers.sent))]
    sizes = sorted(len(chunk) for _, chunk in workers.sent)
    assert sizes[-1] == len(lines[5_000]) and sizes[-2] <= CHUNK_MAX_BYTES
    assert len(workers.sent) > 4


def test_workers_that_cannot_start_leave_the_parsing_to_the_connector(monkeypatch, caplog):
    def no_processes(*args: Any, **kwargs: Any) -> Any:
        raise OSError("fork: Resource temporarily unavailable")

    monkeypatch.setattr(worker_pool.subprocess, "Popen", no_processes)
    parsed = config(**SETTINGS, parse_workers=2)
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), FakeClient(), lambda m: None)
    with caplog.at_level(logging.INFO, logger="airbyte"):
        assert start_parse_workers(writer) is None
    assert any(
        "could not start parse worker processes (fork: Resource temporarily unavailable); parsing in this process"
        in r.getMessage()
        for r in caplog.records
    )


def test_a_worker_that_stops_answering_fails_the_sync_instead_of_hanging_it(monkeypatch):
    monkeypatch.setattr(worker_pool, "ANSWER_TIMEOUT_SECONDS", 0.5)
    pool = ParseWorkers(1, {"streams": [], "max_part_bytes": 2048}).start()
    process = pool._workers[0].process
    try:
        os.kill(process.pid, signal.SIGSTOP)  # as a debugger or the OOM-killer's freezer would
        pool.send(0, b"a line")
        with pytest.raises(ParseWorkerFailed, match=r"parse worker process 1 of 1: it did not answer within 0.5 s"):
            pool.receive(0)
    finally:
        os.kill(process.pid, signal.SIGCONT)
        pool.close()


def test_a_worker_imports_no_airbyte_cdk_pydantic_or_requests():
    """Workers start as `python -S` with only this package, orjson and msgspec on the path (reading/worker_pool.py):
    the decode step and the body size rule must not pull in the CDK."""
    import subprocess

    import msgspec

    import destination_planhat

    paths = [str(Path(m.__file__).resolve().parent.parent) for m in (destination_planhat, orjson, msgspec)]
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]; import destination_planhat.reading.worker_process; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airbyte_cdk', 'pydantic', 'requests')))"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code, *paths], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
