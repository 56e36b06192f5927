"""Objects: the upsert answer reader, the object mapper, merging in the buffer, and the pacer."""

from __future__ import annotations

import orjson
import pytest

from destination_planhat.config import StreamSettings
from destination_planhat.mapping.analytics import Invalid, RecordRejected
from destination_planhat.mapping.objects import ObjectPlan, build_object_mapper, compile_object
from destination_planhat.mapping.routing import StreamRoute
from destination_planhat.planhat.answers import read_upsert_answer
from destination_planhat.planhat.api import OBJECT_ENDPOINTS, Endpoint, Host
from destination_planhat.planhat.pacing import CallPacer
from destination_planhat.sync.ledger import StreamStats
from destination_planhat.sync.object_batching import ObjectBuffer


def compiled(endpoint: Endpoint, **settings: object) -> ObjectPlan:
    """An object stream's plan as routing compiles it (these settings have nothing to fix)."""
    stream = StreamSettings.model_validate({"name": "s", "endpoint": endpoint.value, **settings})
    plan, problems = compile_object("s", endpoint.target, stream, {})
    assert problems == []
    return plan


def route(endpoint: Endpoint) -> StreamRoute:
    return StreamRoute((None, "s"), endpoint, "test", None, {}, compiled(endpoint))


@pytest.mark.parametrize("endpoint", OBJECT_ENDPOINTS)
def test_every_object_is_a_put_on_the_main_api_with_5000_items_and_a_key(endpoint: Endpoint) -> None:
    target = endpoint.target
    assert (target.host, target.method, target.path, target.max_items) == (Host.MAIN, "PUT", f"/{endpoint.value}", 5000)
    assert target.needs_api_token and target.keyables
    assert set(target.required) <= set(target.fields)


@pytest.mark.parametrize(
    "body, processed, created, updated, unchanged, reasons",
    [
        (b'{"created": 2, "updated": 1, "nonupdates": 1, "createdErrors": [], "updatedErrors": []}', 3, 2, 1, 1, []),
        (
            b'{"created": 0, "updated": 0, "createdErrors": [{"item": {"a": 1}, "reason": "missing_required", "message": "name is required"}]}',
            0,
            0,
            0,
            0,
            ["name is required"],
        ),
        (
            b'{"created": 1, "updatedErrors": ["plain text"], "permissionErrors": [{"object": "companies"}]}',
            1,
            1,
            0,
            0,
            ["plain text", '{"object":"companies"}'],
        ),
    ],
)
def test_the_upsert_answer_is_read_defensively(body, processed, created, updated, unchanged, reasons) -> None:
    result = read_upsert_answer(body)
    assert (result.processed, result.created, result.updated, result.unchanged) == (
        processed,
        created,
        updated,
        unchanged,
    )
    assert [error.reason for error in result.errors] == reasons


@pytest.mark.parametrize("body", [b"", b"not json", b"[1]", b'{"message": "x"}'])
def test_an_answer_without_counts_has_none(body: bytes) -> None:
    assert read_upsert_answer(body).processed is None


def test_companyexternalid_becomes_an_extid_reference_and_custom_fields_are_gathered() -> None:
    mapper = build_object_mapper(
        compiled(
            Endpoint.ENDUSERS,
            field_mappings=[{"planhat_field": "custom.Role", "source_field": "role"}],
            unmapped_columns="custom",
        )
    )
    item, key = mapper(
        {
            "externalId": 7,
            "email": "a@b.c",
            "companyExternalId": "acme",
            "role": "admin",
            "shoe": 42,
            "featured": "true",
        }
    )
    assert item == {
        "externalId": "7",
        "email": "a@b.c",
        "featured": True,
        "companyId": "extid-acme",
        "custom": {"Role": "admin", "shoe": 42},
    }
    assert key == ("7", "extid-acme")  # externalId is unique per company


def test_an_item_without_its_key_is_refused_and_bad_types_are_invalid() -> None:
    mapper = build_object_mapper(compiled(Endpoint.COMPANIES))
    with pytest.raises(RecordRejected, match="externalId is missing"):
        mapper({"name": "x"})
    item, _ = mapper({"externalId": "a", "domains": "not a list"})
    assert isinstance(item, Invalid) and item.reason == "domains is not a JSON array"


def test_match_on_none_checks_the_required_fields() -> None:
    mapper = build_object_mapper(compiled(Endpoint.LICENSES, match_on="none"))
    item, key = mapper({"_currency": "USD", "fromDate": "2024-01-01"})
    assert key is None and isinstance(item, Invalid) and "companyId is missing" in item.reason


@pytest.mark.parametrize(
    "endpoint, settings, fragment",
    [
        (Endpoint.ISSUES, {}, "match_on 'externalId' is not a key of Issues"),
        (
            Endpoint.COMPANIES,
            {"field_mappings": [{"planhat_field": "colour", "constant": "red"}]},
            "'colour' is not a field",
        ),
        (Endpoint.LICENSES, {"field_mappings": [{"planhat_field": "mrr", "constant": "lots"}]}, "is not a number"),
        (Endpoint.COMPANIES, {"unpivot_columns": ["a"]}, "unpivot_columns only apply to Metrics"),
    ],
)
def test_settings_problems_name_the_stream_and_the_fix(endpoint, settings, fragment) -> None:
    stream = StreamSettings.model_validate({"name": "s", "endpoint": endpoint.value, **settings})
    problems = compile_object("s", endpoint.target, stream, None)[1]
    assert any(fragment in problem for problem in problems), problems


def test_the_same_key_twice_is_merged_later_values_win_and_every_record_is_kept() -> None:
    stats = StreamStats("s")
    buffer = ObjectBuffer(route(Endpoint.COMPANIES), 10, 10_000, stats=stats)
    assert buffer.add({"externalId": "a", "name": "A", "custom": {"x": 1}}, ("a",), 0) == (None, False)
    assert buffer.add({"externalId": "b"}, ("b",), 1) == (None, False)
    assert buffer.add({"externalId": "a", "phase": "p", "custom": {"y": 2}}, ("a",), 2) == (None, True)
    batch = buffer.take()
    assert batch is not None
    assert orjson.loads(batch.body()) == [
        {"externalId": "a", "name": "A", "custom": {"x": 1, "y": 2}, "phase": "p"},
        {"externalId": "b"},
    ]
    assert batch.records == ((0, 2), (1,))
    first, second = batch.split()
    assert (first.records, second.records) == (((0, 2),), ((1,),))


def test_a_batch_is_cut_at_5000_items_even_with_a_larger_batch_size() -> None:
    buffer = ObjectBuffer(route(Endpoint.COMPANIES), 10_000, 30_000_000)
    cut = [buffer.add({"externalId": str(i)}, (str(i),), i)[0] for i in range(5000)]
    assert [len(b) for b in cut if b is not None] == [5000]


def test_the_pacer_allows_the_budget_then_waits_and_a_429_holds_every_call() -> None:
    now = [0.0]
    waits: list[float] = []
    pacer = CallPacer(3, clock=lambda: now[0], wait=lambda seconds: waits.append(seconds) or len(waits) > 3)
    assert [pacer.wait() for _ in range(3)] == [True, True, True]
    assert waits == []
    assert pacer.wait() is False  # a fourth call within the minute waits (here: until the wait is aborted)
    assert waits and all(w > 0 for w in waits)
    paused = CallPacer(100, clock=lambda: now[0], wait=lambda seconds: waits.append(seconds) or True)
    paused.observe(429, {}, 7.0)
    waits.clear()
    assert paused.wait() is False and waits == [7.0]
