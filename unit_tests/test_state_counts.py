"""destinationStats on every state: recordCount (written) + rejectedRecordCount (not written) per scope.

The main test is a model check: random mixes of records that are written, rejected by the
connector's checks, rejected by Planhat (whose fake answer echoes each rejected item with its keys
reordered and its numbers as floats, so positions must be found by value), skipped (a stream not in
the catalog), and unpivoted into several items, with STREAM and GLOBAL states, small batches that
span states, and several requests in flight. For each emitted state the counts must equal what a
plain walk over the input says.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from destination_planhat.mapping.routing import route_streams
from destination_planhat.planhat.answers import PostResult, RejectedItem
from destination_planhat.planhat.api import Endpoint
from destination_planhat.sync.batching import Batch
from destination_planhat.sync.state_stats import StateCounts, match_rejected
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import MIXED_CATALOG, MIXED_STREAMS, config, route, state_counts, state_cursor
from destination_planhat.testing.fake_client import FakeClient
from destination_planhat.testing.harness import global_state, stream_state

CATALOG, STREAMS = MIXED_CATALOG, MIXED_STREAMS
PLANHAT_REFUSES = 666  # the fake Planhat rejects every item with this value


def planhat(index: int, endpoint: Endpoint, items: list[Any]) -> PostResult:
    """Rejects items whose value is PLANHAT_REFUSES or whose action is "refused", echoing each one
    with its keys in reverse order and its integers as floats, as a server in another language might."""

    def refused(item: dict[str, Any]) -> bool:
        return item.get("value") == PLANHAT_REFUSES or item.get("action") == "refused"

    def echoed(item: dict[str, Any]) -> dict[str, Any]:
        return {k: (float(v) if type(v) is int else v) for k, v in reversed(list(item.items()))}

    errors = [RejectedItem(echoed(item), "refused by the fake") for item in items if refused(item)]
    return PostResult(processed=len(items) - len(errors), errors=errors)


def random_record(rng: random.Random, n: int) -> tuple[str, dict[str, Any], bool]:
    """(stream, data, whether the record must count as rejected)."""
    stream = rng.choice("mmmuupx")
    tag = f"r{n}"
    if stream == "m":
        fate = rng.choice(["ok", "ok", "ok", "local", "planhat"])
        value: Any = {"ok": 1, "local": "not a number", "planhat": PLANHAT_REFUSES}[fate]
        return stream, {"dimensionId": "logins", "value": value, "externalId": tag}, fate != "ok"
    if stream == "u":
        fate = rng.choice(["ok", "ok", "planhat", "local"])
        if fate == "local":
            return stream, {"action": "no user id"}, True
        return stream, {"euExtId": tag, "action": "refused" if fate == "planhat" else "login"}, fate == "planhat"
    if stream == "p":  # each column: a value, null (no item), one the checks refuse, or one Planhat refuses
        columns = {c: rng.choice([1, 2, None, None, "n/a", PLANHAT_REFUSES]) for c in ("mrr", "seats")}
        rejected = any(v == "n/a" or v == PLANHAT_REFUSES for v in columns.values())
        return stream, {"company": tag, **columns}, rejected
    return stream, {"id": n}, True  # "x": not in the catalog, skipped


@pytest.mark.parametrize("seed", range(40))
def test_counts_on_every_state_match_a_walk_over_the_input(seed):
    rng = random.Random(seed)
    parsed = config(
        streams=STREAMS, batch_size=rng.randint(1, 7), max_in_flight_requests=rng.randint(1, 4), max_error_percent=100
    )
    emitted: list[dict[str, Any]] = []
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), FakeClient(planhat), emitted.append)
    # The model: per scope ("global" or a stream), [written, rejected] since that scope's last state.
    since: dict[str, list[int]] = {}
    expected: list[tuple[Any, int, int]] = []
    writer.start()
    try:
        for n in range(rng.randint(20, 160)):
            if rng.random() < 0.15:
                scope = rng.choice(["m", "u", "p", "x", "global"])
                written, rejected = since.pop(scope, [0, 0])
                expected.append((n, written, rejected))
                writer.state(global_state(n) if scope == "global" else stream_state(scope, n))
                continue
            stream, data, rejected = random_record(rng, n)
            for scope in (stream, "global"):
                since.setdefault(scope, [0, 0])[1 if rejected else 0] += 1
            writer.record(stream, None, data)
        writer.finish()
    finally:
        writer.close()
    assert [(state_cursor(m), *state_counts(m)) for m in emitted] == expected


def test_a_record_whose_items_are_all_null_counts_as_written_and_one_with_a_refused_item_once():
    parsed = config(streams=STREAMS, batch_size=1)
    emitted: list[dict[str, Any]] = []
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), FakeClient(planhat), emitted.append).start()
    try:
        writer.record("p", None, {"company": "a", "mrr": None, "seats": None})  # no item: written
        writer.record("p", None, {"company": "b", "mrr": PLANHAT_REFUSES, "seats": PLANHAT_REFUSES})  # rejected once
        writer.record("p", None, {"company": "c", "mrr": "n/a", "seats": PLANHAT_REFUSES})  # rejected once
        writer.record("p", None, {"company": "d", "mrr": 1, "seats": 2})  # written
        writer.state(stream_state("p", "s"))
        writer.finish()
    finally:
        writer.close()
    assert [state_counts(m) for m in emitted] == [(2.0, 2.0)]


# ----- the parts ---------------------------------------------------------------------------------------


def test_windows_per_scope_are_kept_apart():
    counts = StateCounts(["a", "b"])
    counts.reject("a", 0)
    first = counts.cut({"a": 2}, global_scope=False)  # a: records 0-1
    counts.reject("a", 2)
    counts.reject("b", 0)
    everything = counts.cut({"a": 3, "b": 1}, global_scope=True)  # since no earlier global state: a 0-2, b 0
    assert counts.counts(first) == (1, 1)
    assert counts.counts(everything) == (1, 3)


def test_a_rejection_counts_in_the_window_of_its_record_even_when_it_comes_later():
    counts = StateCounts(["a"])
    first = counts.cut({"a": 5}, global_scope=False)
    second = counts.cut({"a": 9}, global_scope=False)
    counts.reject_all("a", [(4, False), (5, False)])  # an answer for a batch that spanned both states
    assert (counts.counts(first), counts.counts(second)) == ((4, 1), (3, 1))


def test_several_rejected_items_of_one_record_count_it_once():
    counts = StateCounts(["a"])
    counts.reject("a", 0, several_items=True)
    counts.reject_all("a", [(0, True), (0, True), (1, True)])
    assert counts.counts(counts.cut({"a": 3}, global_scope=False)) == (1, 2)


@pytest.mark.parametrize(
    "items, rejected, positions",
    [
        ([{"a": 1}, {"a": 2}], [{"a": 2.0}], [1]),  # numbers compared as numbers
        ([{"a": 1, "b": [1, {"c": 2}]}], [{"b": [1, {"c": 2}], "a": 1}], [0]),  # any key order, nested
        ([{"a": 1}, {"a": 1}, {"a": 1}], [{"a": 1}, {"a": 1}], [0, 1]),  # equal items in order
        ([{"a": 1}, {"a": 2}, {"a": 3}], [{"changed": True}, {"a": 3}], [2, 0]),  # not found: first free position
        ([{"a": 1}], [[1, 2]], [0]),  # not even an object
    ],
)
def test_rejected_items_are_found_by_value(items, rejected, positions):
    assert match_rejected(items, rejected) == positions


def test_a_split_batch_keeps_which_record_each_item_came_from():
    origins = ((0, 10, 1), (2, 15, 0), (5, 16, 1))  # records 10, 11, then 15 three times, then 16, 17
    batch = Batch.of_items(0, route(), [{"i": i} for i in range(7)], origins=origins)
    expected = [(10, False), (11, False), (15, True), (15, True), (15, True), (16, False), (17, False)]
    assert [batch.ordinal_at(i) for i in range(7)] == expected
    first, second = batch.split()
    assert [first.ordinal_at(i) for i in range(len(first))] + [
        second.ordinal_at(i) for i in range(len(second))
    ] == expected
