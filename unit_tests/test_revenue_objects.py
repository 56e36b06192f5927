"""The revenue model and the remaining objects: what their records become, and how a line item's
deal and product, named by their keys, become Planhat ids before the line item is sent."""

from __future__ import annotations

import threading
from typing import Any, Optional

import orjson
import pytest
import requests_mock

from destination_planhat.config import StreamSettings
from destination_planhat.mapping.analytics import Invalid, RecordRejected
from destination_planhat.mapping.objects import ObjectPlan, build_object_mapper, compile_object
from destination_planhat.mapping.routing import StreamRoute, route_streams
from destination_planhat.planhat.answers import PostResult
from destination_planhat.planhat.api import PLANHAT_ID_LENGTH, Endpoint, id_growth, list_query
from destination_planhat.planhat.client import PlanhatClient
from destination_planhat.planhat.errors import (
    PlanhatAuthError,
    PlanhatError,
    PlanhatRejectedRequest,
    PlanhatUnavailable,
)
from destination_planhat.planhat.pacing import CallPacer
from destination_planhat.planhat.retries import RetryPolicy
from destination_planhat.sync.object_batching import ObjectBatch, ObjectBuffer
from destination_planhat.sync.parent_ids import ParentIds
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import catalog, config, configured_stream
from destination_planhat.testing.fake_client import FakeClient, wait_until


def compiled(endpoint: Endpoint, **settings: object) -> ObjectPlan:
    stream = StreamSettings.model_validate({"name": "s", "endpoint": endpoint.value, **settings})
    plan, problems = compile_object("s", endpoint.target, stream, {})
    assert problems == []
    return plan


def route(endpoint: Endpoint, **settings: object) -> StreamRoute:
    return StreamRoute((None, "s"), endpoint, "test", None, {}, compiled(endpoint, **settings))


# ----- records -> items ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, record, item, key",
    [
        (
            Endpoint.DEALS,
            {
                "externalId": "d1",
                "name": "Renewal",
                "companyExternalId": "acme",
                "mrr": "120",
                "closeDate": "2026-03-01",
            },
            {"externalId": "d1", "name": "Renewal", "companyId": "extid-acme", "mrr": 120, "closeDate": "2026-03-01"},
            ("d1", "extid-acme"),
        ),
        (
            Endpoint.PRODUCTS,
            {"externalId": "p1", "name": "Advanced Data", "type": "subscription", "length": 12, "autoRenews": "true"},
            {"externalId": "p1", "name": "Advanced Data", "type": "subscription", "autoRenews": True, "length": 12},
            ("p1",),  # a product belongs to no company: its externalId alone
        ),
        (
            Endpoint.LINE_ITEMS,
            {"externalId": "l1", "dealExternalId": "d1", "productSourceId": 7, "fromDate": "2026-01-01", "mrr": 10},
            {"externalId": "l1", "fromDate": "2026-01-01", "mrr": 10, "dealId": "extid-d1", "productId": "srcid-7"},
            ("l1", "extid-d1"),  # the deal scopes the line item's externalId
        ),
        (
            Endpoint.NOTES,
            {"externalId": "n1", "companyExternalId": "acme", "subject": "QBR"},
            {
                "externalId": "n1",
                "subject": "QBR",
                "companyId": "extid-acme",
                "companyExternalId": "acme",
                "type": "note",
            },
            ("n1", "extid-acme"),
        ),
        (
            Endpoint.NOTES,
            {"externalId": "n2", "companySourceId": "sf-1", "type": "Meeting"},
            {"externalId": "n2", "type": "Meeting", "companyId": "srcid-sf-1"},  # a type of its own is kept
            ("n2", "srcid-sf-1"),
        ),
        (
            Endpoint.TICKETS,
            {"sourceId": "zd-1", "email": "a@acme.example", "companyExternalId": "acme", "timeSpent": 15},
            {
                "sourceId": "zd-1",
                "email": "a@acme.example",
                "timeSpent": 15,
                "companyId": "extid-acme",
                "companyExternalId": "acme",
            },
            ("zd-1",),  # sourceId is unique per model
        ),
        (
            Endpoint.CHURN,
            {"externalId": "c1", "companyExternalId": "acme", "isChurn": "true", "churnReason": "Price"},
            {"externalId": "c1", "isChurn": True, "churnReason": "Price", "companyId": "extid-acme"},
            ("c1", "extid-acme"),
        ),
        (
            Endpoint.OBJECTIVES,
            {"externalId": "o1", "companyExternalId": "acme", "name": "Adoption", "health": 7},
            {"externalId": "o1", "name": "Adoption", "health": 7, "companyId": "extid-acme"},
            ("o1", "extid-acme"),
        ),
        (
            Endpoint.TIME_ENTRIES,
            {"externalId": "t1", "companyExternalId": "acme", "date": "2026-02-03", "hours": "1.5"},
            {"externalId": "t1", "date": "2026-02-03", "hours": 1.5, "companyId": "extid-acme"},
            ("t1", "extid-acme"),
        ),
    ],
    ids=lambda value: value.value if isinstance(value, Endpoint) else None,
)
def test_each_object_maps_its_fields_and_references(
    endpoint: Endpoint, record: dict[str, Any], item: dict[str, Any], key: tuple[str, ...]
) -> None:
    settings = {"match_on": "sourceId"} if endpoint is Endpoint.TICKETS else {}
    mapped, merge_key = build_object_mapper(compiled(endpoint, **settings))(record)
    assert mapped == item
    assert merge_key == key


def test_a_ticket_without_email_is_refused_here_even_when_it_would_update() -> None:
    """Planhat drops a ticket without email and says nothing: refused locally, where it is counted,
    whatever match_on and invalid_records say."""
    mapper = build_object_mapper(compiled(Endpoint.TICKETS, match_on="sourceId"))
    with pytest.raises(RecordRejected, match="email is missing: Planhat drops tickets without it"):
        mapper({"sourceId": "zd-1", "companyExternalId": "acme"})
    with pytest.raises(RecordRejected, match="email is missing"):
        mapper({"sourceId": "zd-1", "email": ""})


@pytest.mark.parametrize(
    "endpoint, record, missing",
    [
        (Endpoint.DEALS, {"name": "x"}, "companyId"),
        (Endpoint.PRODUCTS, {"type": "fee"}, "name"),
        (Endpoint.LINE_ITEMS, {"fromDate": "2026-01-01"}, "dealId"),
        (Endpoint.LINE_ITEMS, {"dealExternalId": "d1"}, "fromDate"),
        (Endpoint.NOTES, {"subject": "x"}, "companyId"),
        (Endpoint.CHURN, {"companyExternalId": "acme"}, "isChurn"),
        (Endpoint.CHURN, {"isChurn": True}, "companyId"),
        (Endpoint.OBJECTIVES, {"companyExternalId": "acme"}, "name"),
        (Endpoint.OBJECTIVES, {"name": "x"}, "companyId"),
        (Endpoint.TIME_ENTRIES, {"hours": 1}, "date"),
        (Endpoint.TIME_ENTRIES, {"date": "2026-01-01"}, "hours"),
    ],
)
def test_creates_without_a_required_field_are_invalid(endpoint: Endpoint, record: dict[str, Any], missing: str) -> None:
    item, _ = build_object_mapper(compiled(endpoint, match_on="none"))(record)
    assert isinstance(item, Invalid) and item.reason.startswith(f"{missing} is missing (required to create")


def test_a_note_needs_no_type_column_and_a_time_entry_no_company() -> None:
    note, _ = build_object_mapper(compiled(Endpoint.NOTES, match_on="none"))({"companyExternalId": "acme"})
    assert not isinstance(note, Invalid) and note["type"] == "note"
    entry, _ = build_object_mapper(compiled(Endpoint.TIME_ENTRIES, match_on="none"))({"date": "2026-01-01", "hours": 2})
    assert entry == {"date": "2026-01-01", "hours": 2}


def test_a_constant_company_external_id_is_sent_in_both_forms_for_notes() -> None:
    plan = compiled(Endpoint.NOTES, field_mappings=[{"planhat_field": "companyExternalId", "constant": "acme"}])
    item, _ = build_object_mapper(plan)({"externalId": "n1"})
    assert (item["companyId"], item["companyExternalId"]) == ("extid-acme", "acme")


# ----- the room reserved for Planhat ids ---------------------------------------------------------


@pytest.mark.parametrize(
    "item, growth",
    [
        ({"dealId": "extid-d1"}, PLANHAT_ID_LENGTH - len("extid-d1")),
        ({"dealId": "extid-d1", "productId": "srcid-7"}, 2 * PLANHAT_ID_LENGTH - len("extid-d1") - len("srcid-7")),
        ({"dealId": "5a" + "0" * 22}, 0),  # already a Planhat id
        ({"dealId": "extid-" + "x" * 40}, 0),  # a long key only shrinks
        ({"productId": None}, 0),
    ],
)
def test_id_growth_is_the_most_the_ids_can_add(item: dict[str, Any], growth: int) -> None:
    assert id_growth(Endpoint.LINE_ITEMS.target, item) == growth
    assert id_growth(Endpoint.ENDUSERS.target, {"companyId": "extid-a"}) == 0  # extid- is Planhat's own form there


def test_the_buffer_cuts_early_enough_for_the_ids_to_fit() -> None:
    """Line items whose deal key grows by 17 bytes: the buffer cuts them as if they had grown, and the
    batch with the ids in it still fits the limit."""
    item = {"dealId": "extid-a"}
    size = len(orjson.dumps(item)) + 1
    limit = 2 + 2 * (size + id_growth(Endpoint.LINE_ITEMS.target, item))  # room for two grown items
    assert limit > 2 + 3 * size  # three would fit if nothing grew
    buffer = ObjectBuffer(route(Endpoint.LINE_ITEMS), 100, limit)
    cuts = [buffer.add(dict(item), (f"l{i}", "extid-a"), i)[0] for i in range(3)]
    batch = next(cut for cut in cuts if cut is not None)
    assert len(batch) == 2
    client = FakeClient()
    client.lists[Endpoint.DEALS] = [{"_id": "5a" + "0" * 22, "externalId": "a"}]
    resolved = ParentIds(client.read).resolve(batch, "b")
    assert resolved.items() == [{"dealId": "5a" + "0" * 22}] * 2
    assert len(resolved.body()) <= limit


# ----- parent ids ----------------------------------------------------------------------------------


DEAL_IDS = {f"d{i}": f"5a{i:022x}" for i in range(5)}
PRODUCT_ID = "5b" + "0" * 21 + "1"


def line_items_batch(*items: dict[str, Any]) -> ObjectBatch:
    records = tuple((i,) for i in range(len(items)))
    batch = ObjectBatch.of_object_items(7, route(Endpoint.LINE_ITEMS), list(items), records, 1.5, 3)
    batch.waits_for = {Endpoint.DEALS: frozenset({1})}
    return batch


def fake_planhat() -> FakeClient:
    client = FakeClient()
    client.lists[Endpoint.DEALS] = [
        {"_id": planhat_id, "externalId": key, "sourceId": f"sf-{key}"} for key, planhat_id in DEAL_IDS.items()
    ]
    client.lists[Endpoint.PRODUCTS] = [{"_id": PRODUCT_ID, "externalId": "adv", "sourceId": 7}]
    return client


def test_keys_become_planhat_ids_and_the_batch_keeps_its_records_and_waits() -> None:
    client = fake_planhat()
    parent_ids = ParentIds(client.read)
    batch = line_items_batch(
        {"externalId": "l1", "dealId": "extid-d1", "productId": "srcid-7"},
        {"externalId": "l2", "dealId": "srcid-sf-d3", "productId": "extid-adv"},
        {"externalId": "l3", "dealId": DEAL_IDS["d4"]},  # already an id: left alone
    )
    resolved = parent_ids.resolve(batch, "line items batch 3")
    assert resolved.items() == [
        {"externalId": "l1", "dealId": DEAL_IDS["d1"], "productId": PRODUCT_ID},
        {"externalId": "l2", "dealId": DEAL_IDS["d3"], "productId": PRODUCT_ID},
        {"externalId": "l3", "dealId": DEAL_IDS["d4"]},
    ]
    assert (resolved.batch_id, resolved.records, resolved.number, resolved.opened_at) == (7, batch.records, 3, 1.5)
    assert resolved.waits_for == batch.waits_for
    # One read per parent, page by page until an empty page, with only the keys selected.
    assert client.reads == [
        (Endpoint.DEALS, list_query(("_id", "externalId", "sourceId"), 0)),
        (Endpoint.DEALS, list_query(("_id", "externalId", "sourceId"), 5)),
        (Endpoint.PRODUCTS, list_query(("_id", "externalId", "sourceId"), 0)),
        (Endpoint.PRODUCTS, list_query(("_id", "externalId", "sourceId"), 1)),
    ]


def test_known_keys_cost_no_call_and_an_unknown_key_reads_the_list_again() -> None:
    client = fake_planhat()
    parent_ids = ParentIds(client.read)
    parent_ids.resolve(line_items_batch({"dealId": "extid-d1"}), "b1")
    reads = len(client.reads)
    parent_ids.resolve(line_items_batch({"dealId": "extid-d2"}), "b2")
    assert len(client.reads) == reads  # d2 was read with d1
    client.lists[Endpoint.DEALS].append({"_id": "5c" + "0" * 22, "externalId": "new"})  # written since
    resolved = parent_ids.resolve(line_items_batch({"dealId": "extid-new"}), "b3")
    assert resolved.items() == [{"dealId": "5c" + "0" * 22}]
    assert len(client.reads) == reads + 2


def test_a_key_found_nowhere_or_twice_is_sent_as_it_is_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    client = fake_planhat()
    client.lists[Endpoint.DEALS] += [
        {"_id": "5d" + "0" * 22, "externalId": "twice"},
        {"_id": "5e" + "0" * 22, "externalId": "twice"},  # externalId is unique per company only
    ]
    resolved = ParentIds(client.read).resolve(
        line_items_batch({"dealId": "extid-nobody"}, {"dealId": "extid-twice"}, {"dealId": "extid-d0"}), "b"
    )
    assert [item["dealId"] for item in resolved.items()] == ["extid-nobody", "extid-twice", DEAL_IDS["d0"]]
    [warning] = [r.getMessage() for r in caplog.records if "could not find once" in r.getMessage()]
    assert "2 line items" in warning and "'extid-nobody': no such record" in warning
    assert "'extid-twice': 2 records have it" in warning


def test_pages_are_read_until_one_is_empty_whatever_their_size() -> None:
    """Planhat may answer fewer records than the limit asked for (its maximum is not documented for
    deals): only an empty page ends the read."""
    client = fake_planhat()
    deals = [{"_id": f"6a{i:022x}", "externalId": f"k{i}"} for i in range(4500)]
    client.lists[Endpoint.DEALS] = deals
    pages: list[int] = []
    original = client.read

    def capped(endpoint: Endpoint, query: str) -> bytes:  # answers at most 1,000 a page
        page = orjson.loads(original(endpoint, query))[:1000]
        pages.append(len(page))
        return orjson.dumps(page)

    resolved = ParentIds(capped).resolve(line_items_batch({"dealId": "extid-k4499"}), "b")
    assert resolved.items() == [{"dealId": deals[4499]["_id"]}]
    assert pages == [1000, 1000, 1000, 1000, 500, 0]


def test_an_offset_that_is_not_honoured_ends_the_read_instead_of_looping() -> None:
    same_page = orjson.dumps([{"_id": DEAL_IDS["d1"], "externalId": "d1"}])
    calls: list[str] = []

    def ignores_offset(endpoint: Endpoint, query: str) -> bytes:
        calls.append(query)
        return same_page

    resolved = ParentIds(ignores_offset).resolve(line_items_batch({"dealId": "extid-d1"}), "b")
    assert resolved.items() == [{"dealId": DEAL_IDS["d1"]}] and len(calls) == 2


@pytest.mark.parametrize("body", [b'{"message": "nope"}', b"<html>", b""])
def test_an_answer_that_is_not_a_list_ends_the_sync_naming_the_object(body: bytes) -> None:
    with pytest.raises(PlanhatError, match=r"reading the keys of deals \(GET /deals\)") as raised:
        ParentIds(lambda endpoint, query: body).resolve(line_items_batch({"dealId": "extid-d1"}), "b")
    assert raised.value.endpoint is Endpoint.DEALS


def test_objects_without_such_references_are_left_alone() -> None:
    client = fake_planhat()
    batch = ObjectBatch.of_object_items(1, route(Endpoint.ENDUSERS), [{"companyId": "extid-acme"}], ((0,),))
    assert ParentIds(client.read).resolve(batch, "b") is batch
    assert client.reads == []


# ----- the client's list read ------------------------------------------------------------------------


class _NoJitter(RetryPolicy):
    def jitter(self, ceiling: float) -> float:
        return ceiling


def test_a_list_read_is_a_get_with_the_token_retried_after_429_and_5xx() -> None:
    sleeps: list[float] = []
    client = PlanhatClient(
        "https://a.invalid",
        None,
        "tok",
        main_base_url="https://api.invalid",
        retry_policy=_NoJitter(),
        sleep=sleeps.append,
    )
    now = [0.0]  # the pacer's clock, moved by its waits (no real waiting)

    def wait(seconds: float) -> bool:
        now[0] += seconds
        return False

    client.pacer = CallPacer(200, clock=lambda: now[0], wait=wait)
    query = list_query(("_id", "externalId"), 0)
    with requests_mock.Mocker() as http:
        http.get(
            f"https://api.invalid/deals?{query}",
            [
                {"status_code": 429, "headers": {"Retry-After": "2"}},
                {"status_code": 503},
                {"status_code": 200, "content": b'[{"_id": "x"}]'},
            ],
        )
        assert client.read(Endpoint.DEALS, query) == b'[{"_id": "x"}]'
        assert [r.method for r in http.request_history] == ["GET"] * 3
        assert http.request_history[0].headers["Authorization"] == "Bearer tok"
        assert http.request_history[0].qs == {"select": ["_id,externalid"], "limit": ["2000"], "offset": ["0"]}
    assert len(sleeps) == 2
    assert client.pacer.calls == 3  # every attempt takes a call from the shared budget
    assert client.pacer.pauses == 1 and now[0] >= 2  # the 429's Retry-After held the next call


@pytest.mark.parametrize("status, error", [(403, PlanhatAuthError), (404, PlanhatRejectedRequest)])
def test_a_refused_list_read_names_the_object(status: int, error: type) -> None:
    client = PlanhatClient("https://a.invalid", None, "tok", main_base_url="https://api.invalid", sleep=lambda s: None)
    with requests_mock.Mocker() as http:
        http.get("https://api.invalid/products", status_code=status, text="no")
        with pytest.raises(error) as raised:
            client.read(Endpoint.PRODUCTS, "limit=1")
    assert raised.value.endpoint is Endpoint.PRODUCTS and raised.value.status == status


# ----- the writer: parents first through two levels, and a failure on the way ------------------------

REVENUE_STREAMS = [
    {"name": "accounts", "endpoint": "companies"},
    {"name": "pipeline", "endpoint": "deals"},
    {"name": "lines", "endpoint": "lineitems"},
]
ANY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def revenue_writer(client: FakeClient, **overrides: Any) -> PlanhatWriter:
    parsed = config(tenant_uuid=None, api_base_url="http://127.0.0.1:9", streams=REVENUE_STREAMS, **overrides)
    configured = catalog(*(configured_stream(s["name"], ANY_SCHEMA) for s in REVENUE_STREAMS))
    return PlanhatWriter(parsed, route_streams(parsed, configured), client, lambda message: None)


def test_a_line_items_batch_hands_over_its_deals_which_hand_over_their_companies_first() -> None:
    client = FakeClient()
    client.lists[Endpoint.DEALS] = [{"_id": "5a" + "0" * 22, "externalId": "d0"}]
    writer = revenue_writer(client, batch_size=2).start()
    try:
        writer.record("accounts", None, {"externalId": "a0", "name": "A"})
        writer.record("pipeline", None, {"externalId": "d0", "companyExternalId": "a0"})
        writer.record("lines", None, {"externalId": "l0", "dealExternalId": "d0", "fromDate": "2026-01-01"})
        writer.record("lines", None, {"externalId": "l1", "dealExternalId": "d0", "fromDate": "2026-01-01"})
        writer.finish()
    finally:
        writer.close()
    assert [endpoint for endpoint, _ in client.calls] == [Endpoint.COMPANIES, Endpoint.DEALS, Endpoint.LINE_ITEMS]
    assert [item["dealId"] for item in client.calls[2][1]] == ["5a" + "0" * 22] * 2


def test_a_failure_while_parents_are_handed_over_counts_the_waiting_child_batch_as_not_sent() -> None:
    """The companies' request fails while the deals batch waits for a slot, and the line items batch
    that cut them waits behind it: both count as not sent, and every stream's books balance."""
    release = threading.Event()

    def behaviour(index: int, endpoint: Endpoint, items: list[Any]) -> Optional[PostResult]:
        release.wait(10)
        raise PlanhatUnavailable("HTTP 503 after 8 attempt(s)", endpoint=endpoint)

    client = FakeClient(behaviour)
    writer = revenue_writer(client, batch_size=2, max_in_flight_requests=1).start()
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            writer.record("accounts", None, {"externalId": "a0", "name": "A"})
            writer.record("pipeline", None, {"externalId": "d0", "companyExternalId": "a0"})
            writer.record("lines", None, {"externalId": "l0", "dealExternalId": "d0", "fromDate": "2026-01-01"})
            writer.record("lines", None, {"externalId": "l1", "dealExternalId": "d0", "fromDate": "2026-01-01"})
        except BaseException as exc:  # the failure reaches the reading thread
            failures.append(exc)

    reader = threading.Thread(target=feed)
    try:
        reader.start()
        wait_until(lambda: len(client.calls) == 1, "the companies' request")
        release.set()
        reader.join(10)
    finally:
        writer.close()
    assert not reader.is_alive() and len(failures) == 1
    stats = {s.stream: s for s in writer.ledger.all()}
    assert (stats["pipeline"].not_sent, stats["lines"].not_sent) == (1, 2)
    assert stats["accounts"].not_acknowledged == 1
    assert all(s.books_balance() for s in stats.values()), {name: s.as_dict() for name, s in stats.items()}
