"""PlanhatWriter with a fake client: states wait for every batch opened before them, in input order.

The fake client records its calls; each emitted state is stamped with what the client had acknowledged
at that moment, so "emitted only after every earlier record was acknowledged" is checked directly.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from typing import Any, Optional, Union

import pytest
from airbyte_cdk.models import AirbyteMessage, FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.mapping.routing import route_streams
from destination_planhat.planhat.answers import PostResult, RejectedItem
from destination_planhat.planhat.api import Endpoint
from destination_planhat.planhat.errors import (
    PlanhatAuthError,
    PlanhatPayloadTooLarge,
    PlanhatRejectedRequest,
    PlanhatUnavailable,
)
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import (
    ACTIVITY_SCHEMA,
    METRIC_SCHEMA,
    catalog,
    config,
    configured_stream,
    legacy_state,
    state_counts,
    state_cursor,
)
from destination_planhat.testing.fake_client import FakeClient, wait_until
from destination_planhat.testing.harness import global_state, stream_state

# Streams "m" (Metrics) and "u" (User Activities); "x" is not in the catalog.
CATALOG = catalog(configured_stream("m", METRIC_SCHEMA), configured_stream("u", ACTIVITY_SCHEMA))

Step = Union[str, AirbyteMessage]  # a stream name means "one record of that stream"


class Run:
    """One writer fed with a script; collects emitted states with the acknowledged items at emit time."""

    def __init__(self, client: FakeClient, **config_overrides: Any) -> None:
        overrides = {"batch_size": 1, "max_in_flight_requests": 4, **config_overrides}
        parsed = config(**overrides)
        self.client = client
        self.emitted: list[tuple[AirbyteMessage, set[str]]] = []
        self._lock = threading.Lock()
        self.read_before: dict[int, set[str]] = {}  # id(state message) -> tags of records read before it
        self.writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), client, self._emit, **self._writer_kwargs())
        self._tags: list[str] = []

    def _writer_kwargs(self) -> dict[str, Any]:
        return {}

    def _emit(self, message: AirbyteMessage) -> None:
        acknowledged = {tag_of(item) for item in self.client.acknowledged_snapshot()}
        with self._lock:
            self.emitted.append((message, acknowledged))

    def start(self) -> Run:
        self.writer.start()
        return self

    def feed(self, steps: Iterable[Step]) -> None:
        for step in steps:
            if isinstance(step, str):
                tag = f"{step}{len(self._tags)}"
                self._tags.append(tag)
                self.writer.record(step, None, record_data(step, tag))
            else:
                self.read_before[id(step)] = {t for t in self._tags if not t.startswith("x")}
                self.writer.state(step)

    def run(self, steps: Iterable[Step]) -> Run:
        self.start()
        try:
            self.feed(steps)
            self.writer.finish()
        finally:
            self.writer.close()
        return self

    @property
    def tags(self) -> list[str]:
        return list(self._tags)

    @property
    def states(self) -> list[AirbyteMessage]:
        with self._lock:
            return [message for message, _ in self.emitted]

    def assert_each_state_followed_its_records(self) -> None:
        for message, acknowledged in self.emitted:
            missing = self.read_before[id(message)] - acknowledged
            assert not missing, (
                f"state {state_cursor(message)!r} was emitted before records {sorted(missing)} were acknowledged"
            )


def record_data(stream: str, tag: str) -> dict[str, Any]:
    if stream == "u":
        return {"euExtId": tag, "action": "login", "_ab_cdc_lsn": 1}
    return {"dimensionId": "logins", "value": 1, "externalId": tag, "_ab_cdc_lsn": 1}


def tag_of(item: dict[str, Any]) -> str:
    return item.get("externalId") or item["euExtId"]


def counts(states: list[dict[str, Any]]) -> list[tuple[Any, float, float]]:
    """(cursor, recordCount, rejectedRecordCount) of each emitted state."""
    return [(state_cursor(m), *state_counts(m)) for m in states]


# ----- ordering ---------------------------------------------------------------------------------


def test_states_wait_for_out_of_order_acknowledgements_and_keep_input_order():
    gates = [threading.Event() for _ in range(3)]
    returned: list[int] = []

    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> Optional[PostResult]:
        gates[index].wait()  # no timeout: a gate that opened by itself on a slow machine would reorder answers
        returned.append(index)
        return None

    run = Run(FakeClient(behaviour), max_in_flight_requests=3).start()
    s1, s2, s3 = stream_state("m", 1), stream_state("u", 2), stream_state("m", 3)
    try:
        run.feed(["m", s1, "u", s2, "m", s3])
        wait_until(lambda: len(run.client.calls) == 3, "three batches in flight")
        assert len(run.client.threads) == 3, "the three batches were posted concurrently"
        gates[2].set()
        gates[1].set()
        wait_until(lambda: len(returned) == 2, "the two later batches to be answered")
        threading.Event().wait(0.05)  # room for a wrong release to happen; never needed for a pass
        assert run.states == [], "no state may pass the first batch, still unanswered"
        gates[0].set()
        wait_until(lambda: len(run.states) == 3, "the three states")
        run.writer.finish()
    finally:
        for gate in gates:
            gate.set()
        run.writer.close()
    assert [state_cursor(m) for m in run.states] == [1, 2, 3]
    run.assert_each_state_followed_its_records()


def test_a_state_waits_for_the_earlier_batch_of_another_stream():
    gates = {"m": threading.Event(), "u": threading.Event()}

    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> Optional[PostResult]:
        gates["m" if endpoint is Endpoint.METRICS else "u"].wait()  # opened by the test, or by its `finally`
        return None

    run = Run(FakeClient(behaviour)).start()
    try:
        run.feed(["m", "u", stream_state("u", "after-both")])
        gates["u"].set()
        wait_until(lambda: len(run.client.acknowledged_snapshot()) == 1, "the User Activities batch")
        threading.Event().wait(0.05)
        assert run.states == []
        gates["m"].set()
        run.writer.finish()
    finally:
        for gate in gates.values():
            gate.set()
        run.writer.close()
    assert [state_cursor(m) for m in run.states] == ["after-both"]
    run.assert_each_state_followed_its_records()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_many_states_with_slow_random_answers_from_several_threads(seed, batch_size):
    rng = random.Random(seed)
    delays = [rng.choice([0, 0, 0.001, 0.003, 0.008]) for _ in range(2000)]

    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> Optional[PostResult]:
        threading.Event().wait(delays[index % len(delays)])
        return None

    steps: list[Step] = []
    expected = []
    for i in range(300):
        steps.append(rng.choice("mmuux"))
        if rng.random() < 0.3:
            kind = rng.choice(["m", "u", "global"])
            state = global_state(i) if kind == "global" else stream_state(kind, i)
            steps.append(state)
            expected.append(i)
    run = Run(FakeClient(behaviour), batch_size=batch_size, max_in_flight_requests=4).run(steps)

    assert [state_cursor(m) for m in run.states] == expected
    run.assert_each_state_followed_its_records()
    sent = [tag_of(item) for _, items in run.client.calls for item in items]
    assert sorted(sent) == sorted(t for t in run.tags if not t.startswith("x")), (
        "each record of the catalog posted once"
    )
    assert all(len(items) <= batch_size for _, items in run.client.calls)
    assert len(run.client.threads) > 1


def test_end_of_input_flushes_partial_batches_and_releases_every_state():
    run = Run(FakeClient(), batch_size=100).run(["m", "u", "m", stream_state("m", "a"), "u", stream_state("u", "b")])
    assert [state_cursor(m) for m in run.states] == ["a", "b"]
    assert sorted((e.value, len(items)) for e, items in run.client.calls) == [("metrics", 2), ("user_activities", 2)]
    run.assert_each_state_followed_its_records()


def test_empty_input_sends_nothing():
    run = Run(FakeClient()).run([])
    assert run.client.calls == [] and run.states == []


def test_states_without_records_are_emitted_without_any_request():
    run = Run(FakeClient()).run([stream_state("m", 1), global_state(2)])
    assert run.client.calls == []
    assert counts(run.states) == [(1, 0, 0), (2, 0, 0)]


def test_records_go_to_their_endpoint_as_mapped_items():
    run = Run(FakeClient(), batch_size=10).run(["m", "u", "x"])
    calls = {endpoint: items for endpoint, items in run.client.calls}
    assert calls == {
        Endpoint.METRICS: [{"dimensionId": "logins", "value": 1, "externalId": "m0"}],
        Endpoint.USER_ACTIVITIES: [{"euExtId": "u1", "action": "login"}],
    }


def test_batches_respect_the_byte_cap():
    class SmallBodies(Run):
        def _writer_kwargs(self) -> dict[str, Any]:
            return {"max_body_bytes": 200}

    run = SmallBodies(FakeClient(), batch_size=10_000).run(["m"] * 50)
    import orjson

    assert len(run.client.calls) > 1
    assert all(len(orjson.dumps(items)) <= 200 for _, items in run.client.calls)
    assert [tag_of(i) for _, items in run.client.calls for i in items] == [f"m{i}" for i in range(50)]


def test_413_splits_the_batch_until_planhat_takes_it_and_each_item_arrives_once():
    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> Optional[PostResult]:
        if len(items) > 2:
            raise PlanhatPayloadTooLarge("HTTP 413: too large", endpoint=endpoint, status=413)
        return None

    run = Run(FakeClient(behaviour), batch_size=10).run(["m"] * 10 + [stream_state("m", "done")])
    assert sorted(tag_of(i) for i in run.client.acknowledged) == sorted(f"m{i}" for i in range(10))
    assert [state_cursor(m) for m in run.states] == ["done"]
    run.assert_each_state_followed_its_records()


def test_planhat_per_item_errors_do_not_fail_the_sync():
    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> PostResult:
        return PostResult(processed=len(items) - 1, errors=[RejectedItem(items[0], "dimensionId must be specified")])

    run = Run(FakeClient(behaviour), batch_size=2).run(["m", "m", stream_state("m", 1)])
    assert counts(run.states) == [(1, 1, 1)]


# ----- destinationStats.recordCount ---------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, expected",
    [
        (["m", "m", stream_state("m", "a")], [("a", 2, 0)]),
        # Per stream: each state counts its own stream's records since that stream's previous state.
        (
            ["m", "u", "m", stream_state("m", "a"), "u", stream_state("u", "b"), "m", stream_state("m", "c")],
            [("a", 2, 0), ("b", 2, 0), ("c", 1, 0)],
        ),
        (["u", stream_state("m", "a")], [("a", 0, 0)]),
        # GLOBAL and LEGACY states count the records of every stream since the previous such state.
        (["m", "u", "u", global_state("g1"), "m", global_state("g2")], [("g1", 3, 0), ("g2", 1, 0)]),
        (["m", "u", legacy_state("l1")], [("l1", 2, 0)]),
        (["m", "u", stream_state("m", "a"), "u", global_state("g")], [("a", 1, 0), ("g", 3, 0)]),
        # Records of a stream that is not in the catalog are received, and skipped: rejected.
        (["m", "x", global_state("g")], [("g", 1, 1)]),
        (["x", "m", stream_state("m", "a")], [("a", 1, 0)]),
        # A state of a stream not in the catalog counts that stream's records since its previous state.
        (
            ["x", "x", stream_state("x", "a"), "x", stream_state("x", "b"), "m", stream_state("x", "c")],
            [("a", 0, 2), ("b", 0, 1), ("c", 0, 0)],
        ),
    ],
)
def test_record_count_of_each_state(steps, expected):
    run = Run(FakeClient(), batch_size=2).run(steps)
    assert counts(run.states) == expected


def test_records_of_a_stream_not_in_the_catalog_are_skipped_counted_and_warned_once(caplog):
    caplog.set_level("INFO", logger="airbyte")
    run = Run(FakeClient()).run(["x", "m", "x", "x"])
    assert [tag_of(i) for _, items in run.client.calls for i in items] == ["m1"]
    warnings = [r.getMessage() for r in caplog.records if "'x'" in r.getMessage() and "skipped" in r.getMessage()]
    assert len([w for w in warnings if not w.startswith("summary")]) == 1
    # The summary table's row for 'x'; its last seven columns are read, sent, ..., skipped.
    [row] = [r.getMessage().split() for r in caplog.records if r.getMessage().startswith("summary: x ")]
    assert (row[-7], row[-6], row[-1]) == ("3", "0", "3")


# ----- failures -----------------------------------------------------------------------------------


FAILURES = [
    (
        PlanhatAuthError("HTTP 401: Unauthorized", endpoint=Endpoint.METRICS, status=401),
        FailureType.config_error,
        "api_token",
    ),
    (
        PlanhatAuthError("HTTP 403: Forbidden", endpoint=Endpoint.USER_ACTIVITIES, status=403),
        FailureType.config_error,
        "tenant_uuid",
    ),
    (PlanhatUnavailable("HTTP 503 after 8 attempt(s)", endpoint=Endpoint.METRICS), FailureType.transient_error, "503"),
    (
        PlanhatRejectedRequest("HTTP 400: bad things", endpoint=Endpoint.METRICS, status=400, body="bad things"),
        FailureType.system_error,
        "bad things",
    ),
]


@pytest.mark.parametrize("error, failure_type, named", FAILURES)
def test_a_failed_batch_fails_the_sync_and_no_later_state_is_emitted(error, failure_type, named):
    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> Optional[PostResult]:
        if index == 2:
            raise error
        return None

    run = Run(FakeClient(behaviour), max_in_flight_requests=1)
    steps: list[Step] = []
    for i in range(6):
        steps += ["m" if error.endpoint is Endpoint.METRICS else "u", stream_state("m", i)]
    run.start()
    with pytest.raises(AirbyteTracedException) as raised:
        try:
            run.feed(steps)
            run.writer.finish()
        finally:
            run.writer.close()
    assert raised.value.failure_type == failure_type
    assert named in raised.value.message
    assert [state_cursor(m) for m in run.states] == [0, 1]
    run.assert_each_state_followed_its_records()


@pytest.mark.parametrize("error, failure_type, named", FAILURES)
def test_a_failed_batch_among_concurrent_ones_releases_no_state_behind_it(error, failure_type, named):
    stream = "m" if error.endpoint is Endpoint.METRICS else "u"

    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> Optional[PostResult]:
        threading.Event().wait(0.001 * (index % 3))
        if index == 10:
            raise error
        return None

    run = Run(FakeClient(behaviour), max_in_flight_requests=4)
    steps: list[Step] = []
    for i in range(40):
        steps += [stream, stream_state(stream, i)]
    run.start()
    with pytest.raises(AirbyteTracedException) as raised:
        try:
            run.feed(steps)
            run.writer.finish()
        finally:
            run.writer.close()
    assert raised.value.failure_type == failure_type
    failed_tag = tag_of(run.client.calls[10][1][0])
    for message, _acknowledged in run.emitted:
        assert failed_tag not in run.read_before[id(message)], "a state behind the failed batch was emitted"
    assert [state_cursor(m) for m in run.states] == list(range(len(run.states)))
    run.assert_each_state_followed_its_records()
