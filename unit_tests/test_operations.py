"""The pieces of update, insert and delete (issue 20), each alone: the list read of Planhat's keys, the
keys kept, the delete call, the max_deletes guard, and the settings that cannot work together."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import requests_mock as requests_mock_module
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.config import parse_config
from destination_planhat.mapping.routing import route_streams
from destination_planhat.planhat.answers import PostResult
from destination_planhat.planhat.api import TARGETS, Endpoint, Operation
from destination_planhat.planhat.client import PlanhatClient
from destination_planhat.planhat.errors import PlanhatError, PlanhatRejectedRequest
from destination_planhat.planhat.retries import RetryPolicy
from destination_planhat.sync.deletes import Deletes
from destination_planhat.sync.ledger import Ledger
from destination_planhat.sync.planhat_keys import ListRead, PlanhatKeys
from destination_planhat.testing.builders import catalog, configured_stream

BASE = "https://planhat.invalid"
PLANHAT_ID = "5a" + "0" * 21 + "1"


class Pages:
    """`read(endpoint, query)` answering from a list of records, as the query's offset says."""

    def __init__(self, records: list[dict[str, Any]], page_size: int = 2) -> None:
        self.records = records
        self.page_size = page_size
        self.queries: list[str] = []

    def __call__(self, endpoint: Endpoint, query: str) -> bytes:
        self.queries.append(query)
        offset = int(dict(part.split("=") for part in query.split("&"))["offset"])
        return orjson.dumps(self.records[offset : offset + self.page_size])


def test_a_list_read_pages_by_offset_until_a_page_is_empty() -> None:
    records = [{"_id": f"id{i}", "externalId": f"e{i}"} for i in range(5)]
    pages = Pages(records)
    read = ListRead(pages, Endpoint.COMPANIES, ("_id", "externalId"), "for a test")
    assert [r["externalId"] for r in read] == ["e0", "e1", "e2", "e3", "e4"]
    assert [q.split("&offset=")[1] for q in pages.queries] == ["0", "2", "4", "5"]
    assert all(q.startswith("select=_id,externalId&limit=") for q in pages.queries)
    assert (read.calls, read.records) == (4, 5)


def test_a_list_read_stops_when_the_offset_is_not_honoured() -> None:
    def same_page(endpoint: Endpoint, query: str) -> bytes:
        return orjson.dumps([{"_id": "a"}, {"_id": "b"}])

    read = ListRead(same_page, Endpoint.COMPANIES, ("_id",), "for a test")
    assert [r["_id"] for r in read] == ["a", "b"] and read.calls == 2


def test_an_answer_that_is_not_a_list_ends_the_read_naming_the_object() -> None:
    read = ListRead(lambda e, q: b'{"message": "nope"}', Endpoint.COMPANIES, ("_id",), "that stream 's' needs")
    with pytest.raises(PlanhatError, match="reading the keys of companies .* that stream 's' needs"):
        list(read)


def test_keys_are_read_once_kept_as_text_and_current() -> None:
    pages = Pages([{"_id": "i1", "externalId": 7}, {"_id": "i2", "externalId": "b"}, {"_id": "i3"}])
    keys = PlanhatKeys(pages)
    known = keys.of(Endpoint.COMPANIES, "externalId", "s", with_ids=True)
    assert "7" in known and "b" in known and len(known) == 2  # i3 has no externalId
    assert known.planhat_id("7") == "i1" and known.planhat_id("zz") == ""
    calls = len(pages.queries)
    assert keys.of(Endpoint.COMPANIES, "externalId", "s", with_ids=True) is known and len(pages.queries) == calls
    known.added("n")  # created by this sync: its id is not known, so a delete reads the keys again
    known.removed("b")
    assert "n" not in known and "b" not in known and known.planhat_id("b") == ""
    plain = keys.of(Endpoint.COMPANIES, "externalId", "s")  # without ids: a set of strings
    plain.added("n")
    assert "n" in plain and "7" in plain and plain.planhat_id("7") == ""
    assert keys.of(Endpoint.COMPANIES, "externalId", "s", with_ids=True, fresh=True) is not known
    assert len(pages.queries) > calls


class FakeDeleteClient:
    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.deleted: list[str] = []

    def delete(self, endpoint: Endpoint, planhat_id: str) -> bool:
        self.deleted.append(planhat_id)
        if planhat_id not in self.present:
            return False
        self.present.discard(planhat_id)
        return True

    def post(self, endpoint: Endpoint, body: bytes, *, context: str = "") -> PostResult:
        raise AssertionError("no archive in this test")


def deletes(max_deletes: int, present: set[str]) -> tuple[Deletes, FakeDeleteClient, Ledger, list[Endpoint]]:
    client = FakeDeleteClient(present)
    ledger = Ledger()
    ledger.stats("gone", "companies")
    settled: list[Endpoint] = []
    return Deletes(client, ledger, max_deletes, settled.append), client, ledger, settled


def test_the_guard_sends_max_deletes_and_refuses_the_next_with_how_to_raise_it() -> None:
    guard, client, ledger, settled = deletes(2, {"a", "b", "c"})
    assert guard.delete("gone", Endpoint.COMPANIES, "a", "ka", archive=False)
    assert not guard.delete("gone", Endpoint.COMPANIES, "x", "kx", archive=False)  # 404: already absent
    with pytest.raises(AirbyteTracedException) as raised:
        guard.delete("gone", Endpoint.COMPANIES, "b", "kb", archive=False)
    assert raised.value.failure_type.value == "config_error"
    assert "more than `max_deletes` (2)" in raised.value.message and "delete number 3 was not" in raised.value.message
    assert client.deleted == ["a", "x"]  # the third was not sent
    stats = ledger.stats("gone")
    assert (stats.deleted, stats.already_absent, stats.sent, stats.settled) == (1, 1, 1, 1)
    assert settled == [Endpoint.COMPANIES, Endpoint.COMPANIES]  # each delete waited for what came before


def test_max_deletes_zero_sends_none() -> None:
    guard, client, _, _ = deletes(0, {"a"})
    with pytest.raises(AirbyteTracedException, match="`max_deletes` is 0, which turns deletes off"):
        guard.delete("gone", Endpoint.COMPANIES, "a", "ka", archive=False)
    assert client.deleted == []


@pytest.mark.parametrize("status, expected", [(200, True), (204, True), (404, False)])
def test_the_delete_call_goes_to_the_record_s_url(status: int, expected: bool) -> None:
    client = PlanhatClient(BASE, None, "token", main_base_url=BASE, sleep=lambda s: None)
    with requests_mock_module.Mocker() as http:
        http.delete(f"{BASE}/companies/{PLANHAT_ID}", status_code=status, json={})
        assert client.delete(Endpoint.COMPANIES, PLANHAT_ID) is expected
        [request] = http.request_history
        assert request.headers["Authorization"] == "Bearer token"


def test_a_delete_is_retried_and_a_refusal_fails_naming_the_object() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.0)
    client = PlanhatClient(BASE, None, "token", main_base_url=BASE, sleep=lambda s: None, retry_policy=policy)
    with requests_mock_module.Mocker() as http:
        http.delete(f"{BASE}/companies/{PLANHAT_ID}", [{"status_code": 503}, {"status_code": 200, "json": {}}])
        assert client.delete(Endpoint.COMPANIES, PLANHAT_ID)
        http.delete(f"{BASE}/companies/{PLANHAT_ID}", status_code=422, json={"message": "no"})
        with pytest.raises(PlanhatRejectedRequest) as raised:
            client.delete(Endpoint.COMPANIES, PLANHAT_ID)
        assert raised.value.endpoint is Endpoint.COMPANIES


@pytest.mark.parametrize("planhat_id", ["../customfields", "extid-a", "5a" + "0" * 21 + "/"])
def test_only_a_planhat_id_goes_into_the_delete_url(planhat_id: str) -> None:
    client = PlanhatClient(BASE, None, "token", main_base_url=BASE, sleep=lambda s: None)
    with pytest.raises(ValueError, match="not a Planhat id"):
        client.delete(Endpoint.COMPANIES, planhat_id)


def test_each_object_has_its_operations_and_only_flagged_ones_archive() -> None:
    for endpoint, target in TARGETS.items():
        if not endpoint.is_object:
            assert set(target.operations) == {Operation.INSERT}
            continue
        assert {Operation.UPSERT, Operation.UPDATE, Operation.INSERT, Operation.DELETE} <= set(target.operations)
        assert target.operations[Operation.DELETE].path == f"/{endpoint.value}/{{id}}"
        assert target.can_archive == ("archived" in target.fields)
    assert [e for e, t in TARGETS.items() if t.can_archive] == [
        Endpoint.ENDUSERS,
        Endpoint.CONVERSATIONS,
        Endpoint.ISSUES,
    ]


BASE_CONFIG = {"api_token": "t", "api_base_url": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"operation": "archive"}, "`operation` archive is a delete: set `operation: delete, archive: true`"),
        ({"archive": True}, "`archive: true` applies to deletes only"),
        ({"operation": "update", "on_source_delete": "delete"}, "`on_source_delete` applies to upsert streams only"),
        ({"operation": "insert", "skip_unchanged": True}, "`skip_unchanged` applies to upserts and updates only"),
    ],
)
def test_settings_that_cannot_work_together_are_config_errors(entry: dict[str, Any], expected: str) -> None:
    with pytest.raises(AirbyteTracedException) as raised:
        parse_config({**BASE_CONFIG, "streams": [{"name": "s", "endpoint": "companies", **entry}]})
    assert expected in raised.value.message


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"operation": "delete", "archive": True}, "Companies have no archived flag (only End Users, Conversations"),
        ({"on_source_delete": "archive"}, "Companies have no archived flag"),
        ({"operation": "update", "match_on": "none"}, "finds Planhat's records by their key, but match_on is none"),
        ({"operation": "delete", "endpoint": "metrics"}, "`operation` only applies to objects"),
        ({"skip_unchanged": True, "match_on": "none"}, "`skip_unchanged` compares each item"),
    ],
)
def test_operations_that_do_not_fit_the_target_are_named_before_anything_is_sent(
    entry: dict[str, Any], expected: str
) -> None:
    config = parse_config(
        {**BASE_CONFIG, "tenant_uuid": "t-1", "streams": [{"name": "s", "endpoint": "companies", **entry}]}
    )
    stream = configured_stream("s", {"type": "object", "properties": {"externalId": {"type": "string"}}})
    with pytest.raises(AirbyteTracedException) as raised:
        route_streams(config, catalog(stream))
    assert expected in raised.value.message and "stream 's'" in raised.value.message
