"""Tests of the sandbox's Planhat main API: bulk upsert of objects, custom fields, and how it fails.

The connector's object sync will be tested against this server, so these tests pin its rules
(written up, with what Planhat documents and what it leaves open, in the team notes
planhat-objects.md). Where Planhat's docs are silent, a test pins the sandbox's own reading.
Every request goes over real loopback HTTP with `requests`.
"""

from __future__ import annotations

import base64
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from destination_planhat.testing.sandbox import MAIN_API, METRICS, PlanhatSandbox
from destination_planhat.testing.sandbox_objects import MAX_BULK_ITEMS, OBJECTS

REPO_ROOT = Path(__file__).resolve().parent.parent
# A bound for a hung server, never an expectation (a request takes milliseconds). A test that needs
# the client to give up uses a short timeout of its own against a far longer delay.
TIMEOUT_S = 60.0
GIVE_UP_S = 120.0  # for the sandbox's own process to start or stop
ACME = {"name": "Acme", "externalId": "acme", "sourceId": "sf-acme", "domains": ["acme.example"]}
METRIC = {"dimensionId": "logins", "value": 3, "externalId": "acme"}


@pytest.fixture
def sandbox() -> Iterator[PlanhatSandbox]:
    with PlanhatSandbox() as running:
        yield running


@pytest.fixture
def acme(sandbox: PlanhatSandbox) -> str:
    """The Planhat id of a company that every test can refer to."""
    return sandbox.seed("companies", [ACME])["upsertedIds"][0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put(sandbox: PlanhatSandbox, name: str, body: Any, **kwargs: Any) -> requests.Response:
    """PUT /{name} with the sandbox's token unless the test passes its own headers."""
    kwargs.setdefault("headers", bearer(sandbox.api_token))
    kwargs.setdefault("timeout", TIMEOUT_S)
    return requests.put(f"{sandbox.url}/{name}", json=body, **kwargs)


def get(sandbox: PlanhatSandbox, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", bearer(sandbox.api_token))
    kwargs.setdefault("timeout", TIMEOUT_S)
    return requests.get(f"{sandbox.url}/{path}", **kwargs)


def only(records: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(records) == 1, records
    return records[0]


ANSWER_FIELDS = [
    "created",
    "createdErrors",
    "insertsKeys",
    "updated",
    "updatedErrors",
    "updatesKeys",
    "nonupdates",
    "modified",
    "upsertedIds",
    "permissionErrors",
]

# The least each object needs to be created; COMPANY stands for a reference to Acme, DEAL for
# Acme's deal (the `deal` fixture).
COMPANY = "<company>"
DEAL = "<deal>"
MINIMAL_ITEMS: dict[str, dict[str, Any]] = {
    "companies": {"name": "Globex"},
    "endusers": {"email": "ada@example.com", "companyId": COMPANY},
    "assets": {"name": "Drone 7", "companyId": COMPANY},
    "projects": {"name": "SAP integration", "companyId": COMPANY},
    "licenses": {"_currency": "USD", "fromDate": "2024-01-01", "companyId": COMPANY},
    "sales": {"_currency": "EUR", "salesDate": "2024-02-01", "value": 500, "companyId": COMPANY},
    "opportunities": {"companyId": COMPANY},
    "conversations": {"companyId": COMPANY, "type": "note"},
    "issues": {"title": "Export fails"},
    "invoices": {"currency": "USD", "cId": COMPANY},
    "campaigns": {"name": "Adoption push", "companyId": COMPANY},
    "tasks": {"mainType": "task", "companyId": COMPANY},
    "churn": {"companyId": COMPANY, "isChurn": True},
    "nps": {"email": "ada@example.com", "score": 9},
    "tickets": {"sourceId": "zd-1", "email": "ada@example.com", "companyId": COMPANY},
    "users": {"email": "cs@example.com", "nickName": "cs", "firstName": "Cee", "lastName": "Ess"},
    "deals": {"companyId": COMPANY},
    "products": {"name": "Advanced Data"},
    "lineitems": {"dealId": DEAL, "fromDate": "2026-01-01", "mrr": 100},
    "notes": {"companyId": COMPANY, "type": "note"},
    "objectives": {"name": "Adoption", "companyId": COMPANY},
    "timeentries": {"date": "2026-01-05", "hours": 1.5},
}
# What a create without one of these answers "missing" (the company reference included).
REQUIRED: dict[str, list[str]] = {
    name: [field for field, value in item.items() if field != "type"] for name, item in MINIMAL_ITEMS.items()
}
REQUIRED["endusers"] = ["email"]  # the company can come from the email domain instead: see below
REQUIRED["notes"] = ["companyId", "type"]  # a note's type is required ("for this model should be note")
REQUIRED["lineitems"] = ["dealId", "fromDate", "mrr"]  # mrr: a subscription's recurring revenue (see below)


def minimal(name: str, company: str, deal: str = "") -> dict[str, Any]:
    placeholders = {COMPANY: company, DEAL: deal}
    return {
        field: placeholders.get(value, value) if isinstance(value, str) else value
        for field, value in MINIMAL_ITEMS[name].items()
    }


@pytest.fixture
def deal(sandbox: PlanhatSandbox, acme: str) -> str:
    """The Planhat id of a deal of Acme."""
    return sandbox.seed("deals", [{"name": "Renewal", "externalId": "d1", "companyId": acme}])["upsertedIds"][0]


def test_the_tables_cover_every_object() -> None:
    assert MINIMAL_ITEMS.keys() == OBJECTS.keys()


# ---- create --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_create_with_the_required_fields_only(sandbox: PlanhatSandbox, acme: str, deal: str, name: str) -> None:
    response = put(sandbox, name, [minimal(name, acme, deal)])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer) == ANSWER_FIELDS
    assert (answer["created"], answer["updated"], answer["createdErrors"]) == (1, 0, [])
    [new_id] = answer["upsertedIds"]
    assert answer["insertsKeys"][0]["_id"] == new_id and len(new_id) == 24
    created = [r for r in sandbox.objects(name) if r["_id"] == new_id]
    assert only(created).items() >= {k: v for k, v in minimal(name, acme, deal).items()}.items()


def test_create_answers_the_keys_it_was_given(sandbox: PlanhatSandbox) -> None:
    answer = put(sandbox, "companies", [{"name": "A", "externalId": "a", "sourceId": "sf-a"}, {"name": "B"}]).json()
    ids = answer["upsertedIds"]
    assert answer["insertsKeys"] == [{"_id": ids[0], "sourceId": "sf-a", "externalId": "a"}, {"_id": ids[1]}]
    assert [c["name"] for c in sandbox.objects("companies")] == ["A", "B"]


# ---- missing required fields ---------------------------------------------------------------

MISSING_CASES = [(name, field) for name in sorted(OBJECTS) for field in REQUIRED[name]]


@pytest.mark.parametrize(("name", "field"), MISSING_CASES)
def test_a_create_without_a_required_field_is_an_item_error(
    sandbox: PlanhatSandbox, acme: str, deal: str, name: str, field: str
) -> None:
    good = minimal(name, acme, deal)
    bad = {k: v for k, v in minimal(name, acme, deal).items() if k != field}
    if name == "tickets":
        good["sourceId"], bad["sourceId"] = "zd-good", bad.get("sourceId")
        bad = {k: v for k, v in bad.items() if v is not None}
    before = len(sandbox.objects(name))
    response = put(sandbox, name, [good, bad])
    if name == "tickets" and field == "email":  # Planhat: "Items without email will be silently dropped"
        assert response.status_code == 200
        assert (response.json()["created"], response.json()["createdErrors"]) == (1, [])
        return
    assert response.status_code == 206, response.text
    answer = response.json()
    assert answer["created"] == 1
    [error] = answer["createdErrors"]
    assert (error["item"], error["reason"]) == (bad, "missing_required")
    assert any(field in missing for missing in error["missing"]) and field in error["message"]
    assert len(sandbox.objects(name)) == before + 1


@pytest.mark.parametrize("value", [None, ""])
def test_null_or_empty_counts_as_missing(sandbox: PlanhatSandbox, value: Any) -> None:
    response = put(sandbox, "companies", [{"name": value, "externalId": "x"}, {"name": "ok"}])
    assert response.status_code == 206
    assert response.json()["createdErrors"][0]["missing"] == ["name"]


def test_when_every_item_fails_the_answer_is_400_with_the_errors(sandbox: PlanhatSandbox) -> None:
    response = put(sandbox, "companies", [{"externalId": "x"}, {"externalId": "y"}])
    assert response.status_code == 400
    answer = response.json()
    assert answer["created"] == 0 and [e["item"]["externalId"] for e in answer["createdErrors"]] == ["x", "y"]
    assert sandbox.objects("companies") == []


def test_end_users_without_company_are_placed_by_email_domain(sandbox: PlanhatSandbox, acme: str) -> None:
    response = put(sandbox, "endusers", [{"email": "bob@ACME.example"}, {"email": "eve@nowhere.example"}])
    assert response.status_code == 206
    assert response.json()["createdErrors"][0]["missing"] == ["companyId"]
    assert only(sandbox.objects("endusers"))["companyId"] == acme


# ---- update ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["_id", "sourceId", "externalId"])
def test_update_by_each_keyable_changes_only_the_fields_sent(sandbox: PlanhatSandbox, acme: str, key: str) -> None:
    before = only(sandbox.objects("companies"))
    response = put(sandbox, "companies", [{key: before[key], "phase": "onboarding"}])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["created"], answer["updated"], answer["nonupdates"]) == (0, 1, 0)
    assert answer["upsertedIds"] == [acme] and answer["modified"] == [acme]
    assert answer["updatesKeys"] == [{"_id": acme} if key == "_id" else {"_id": acme, key: before[key]}]
    assert only(sandbox.objects("companies")) == {**before, "phase": "onboarding"}


def test_an_update_with_nothing_new_is_a_nonupdate(sandbox: PlanhatSandbox, acme: str) -> None:
    answer = put(sandbox, "companies", [{"externalId": "acme", "name": "Acme"}]).json()
    assert (answer["updated"], answer["nonupdates"], answer["modified"], answer["upsertedIds"]) == (1, 1, [], [acme])


def test_keyables_match_in_order_id_then_source_then_external(sandbox: PlanhatSandbox, acme: str) -> None:
    other = sandbox.seed("companies", [{"name": "Other", "externalId": "other"}])["upsertedIds"][0]
    # sourceId points at Acme, externalId at Other: sourceId wins, and Acme takes the new externalId.
    put(sandbox, "companies", [{"sourceId": "sf-acme", "externalId": "acme-2", "phase": "x"}])
    by_id = {c["_id"]: c for c in sandbox.objects("companies")}
    assert (by_id[acme]["externalId"], by_id[acme]["phase"], by_id[other].get("phase")) == ("acme-2", "x", None)
    # The index follows: the old externalId no longer matches, the new one does.
    assert put(sandbox, "companies", [{"externalId": "acme", "name": "New"}]).json()["created"] == 1
    assert put(sandbox, "companies", [{"externalId": "acme-2", "h": 7}]).json()["upsertedIds"] == [acme]


def test_a_key_that_matches_nothing_creates(sandbox: PlanhatSandbox, acme: str) -> None:
    answer = put(sandbox, "companies", [{"externalId": "new", "sourceId": "sf-new", "name": "New"}]).json()
    assert answer["created"] == 1 and len(sandbox.objects("companies")) == 2


def test_an_id_that_matches_nothing_is_an_error_not_a_create(sandbox: PlanhatSandbox, acme: str) -> None:
    ghost = {"_id": "5a" + "f" * 22, "name": "Ghost"}
    response = put(sandbox, "companies", [ghost, {"name": "Real"}])
    assert response.status_code == 206
    assert [(e["item"], e["reason"]) for e in response.json()["createdErrors"]] == [(ghost, "not_found")]


def test_custom_fields_merge_field_by_field(sandbox: PlanhatSandbox) -> None:
    put(sandbox, "companies", [{"name": "Acme", "externalId": "acme", "custom": {"Tier": "Gold", "Seats": 10}}])
    answer = put(sandbox, "companies", [{"externalId": "acme", "custom": {"Seats": 12, "Region": None}}]).json()
    assert answer["updated"] == 1
    assert only(sandbox.objects("companies"))["custom"] == {"Tier": "Gold", "Seats": 12, "Region": None}
    response = put(sandbox, "companies", [{"externalId": "acme", "custom": ["Tier"]}])
    assert response.status_code == 400 and response.json()["updatedErrors"][0]["reason"] == "invalid_custom"


def test_a_record_of_another_company_with_the_same_external_id_is_not_matched(
    sandbox: PlanhatSandbox, acme: str
) -> None:
    globex = sandbox.seed("companies", [{"name": "Globex", "externalId": "globex"}])["upsertedIds"][0]
    put(sandbox, "endusers", [{"email": "a@x.example", "externalId": "u1", "companyId": acme}])
    # Planhat: externalId is unique per company, so u1 at Globex is another end user.
    answer = put(
        sandbox, "endusers", [{"email": "b@y.example", "externalId": "u1", "companyId": "extid-globex"}]
    ).json()
    assert answer["created"] == 1
    assert sorted(u["companyId"] for u in sandbox.objects("endusers")) == sorted([acme, globex])
    answer = put(sandbox, "endusers", [{"externalId": "u1", "companyId": globex, "position": "CFO"}]).json()
    assert answer["updated"] == 1
    assert {u["companyId"]: u.get("position") for u in sandbox.objects("endusers")} == {acme: None, globex: "CFO"}


# ---- parent references -----------------------------------------------------------------------

COMPANY_REFERENCES = [
    pytest.param(lambda acme: acme, id="planhat-id"),
    pytest.param(lambda acme: "extid-acme", id="extid"),
    pytest.param(lambda acme: "srcid-sf-acme", id="srcid"),
]


@pytest.mark.parametrize("reference", COMPANY_REFERENCES)
@pytest.mark.parametrize("name", ["endusers", "licenses", "assets", "invoices"])
def test_company_references_resolve_to_the_planhat_id(
    sandbox: PlanhatSandbox, acme: str, name: str, reference: Any
) -> None:
    field = OBJECTS[name].company_field
    assert put(sandbox, name, [minimal(name, reference(acme))]).status_code == 200
    record = only(sandbox.objects(name))
    assert record[field] == acme
    assert record["cName" if field == "cId" else "companyName"] == "Acme"


@pytest.mark.parametrize("unknown", ["5a" + "0" * 22, "extid-nobody", "srcid-nobody", "acme"])
def test_an_unknown_company_is_an_item_error(sandbox: PlanhatSandbox, acme: str, unknown: str) -> None:
    bad = minimal("licenses", unknown)
    response = put(sandbox, "licenses", [minimal("licenses", acme), bad])
    assert response.status_code == 206
    [error] = response.json()["createdErrors"]
    assert (error["item"], error["reason"]) == (bad, "company_not_found")
    assert unknown in error["message"]


def test_an_update_naming_an_unknown_company_is_an_update_error(sandbox: PlanhatSandbox, acme: str) -> None:
    put(sandbox, "assets", [{"name": "Drone", "externalId": "d1", "companyId": acme}])
    response = put(sandbox, "assets", [{"externalId": "d1", "companyId": "extid-nobody"}])
    assert response.status_code == 400
    assert response.json()["updatedErrors"][0]["reason"] == "company_not_found"
    assert only(sandbox.objects("assets"))["companyId"] == acme


def test_issues_take_a_list_of_companies(sandbox: PlanhatSandbox, acme: str) -> None:
    globex = sandbox.seed("companies", [{"name": "Globex", "sourceId": "sf-g"}])["upsertedIds"][0]
    answer = put(
        sandbox,
        "issues",
        [
            {"title": "Bug", "sourceId": "JIRA-1", "companyIds": ["extid-acme", "srcid-sf-g"]},
            {"title": "Other", "companyIds": ["extid-acme", "extid-nobody"]},
        ],
    ).json()
    assert answer["created"] == 1 and answer["createdErrors"][0]["reason"] == "company_not_found"
    assert only(sandbox.objects("issues"))["companyIds"] == [acme, globex]


def test_tickets_find_their_company_by_company_external_id(sandbox: PlanhatSandbox, acme: str) -> None:
    answer = put(
        sandbox,
        "tickets",
        [
            {"sourceId": "zd-1", "email": "a@b.c", "companyExternalId": "acme"},
            {"sourceId": "zd-2", "email": "a@b.c", "companyExternalId": "nobody"},
            {"sourceId": "zd-3", "companyId": acme},  # no email: dropped without a word
        ],
    ).json()
    assert (answer["created"], [e["reason"] for e in answer["createdErrors"]]) == (1, ["company_not_found"])
    assert only(sandbox.objects("tickets"))["companyId"] == acme


def test_notes_find_their_company_by_company_external_id(sandbox: PlanhatSandbox, acme: str) -> None:
    answer = put(sandbox, "notes", [{"type": "note", "companyExternalId": "acme", "subject": "QBR"}]).json()
    assert answer["created"] == 1
    assert only(sandbox.objects("notes"))["companyId"] == acme


# ---- the revenue model: a line item's deal and product -----------------------------------------


@pytest.fixture
def product(sandbox: PlanhatSandbox) -> str:
    """A product with defaults: a fixed-period subscription of 12 months at 100 a month."""
    item = {"name": "Advanced Data", "externalId": "adv", "type": "subscription", "fixedPeriod": True, "length": 12}
    return sandbox.seed("products", [{**item, "mrr": 100, "currency": "EUR"}])["upsertedIds"][0]


@pytest.mark.parametrize("reference", ["extid-d1", "srcid-sf-d1", "5a" + "f" * 22, "d1"])
def test_a_line_items_deal_is_taken_by_planhat_id_only(sandbox: PlanhatSandbox, deal: str, reference: str) -> None:
    """Planhat documents extid-/srcid- for company references only: the sandbox takes nothing but
    the deal's Planhat id, so that the connector must look it up."""
    bad = {"dealId": reference, "fromDate": "2026-01-01", "mrr": 1}
    response = put(sandbox, "lineitems", [{**bad, "dealId": deal}, bad])
    assert response.status_code == 206
    [error] = response.json()["createdErrors"]
    assert (error["reason"], error["field"]) == ("parent_not_found", "dealId")
    assert reference in error["message"] and "takes a Planhat id" in error["message"]


def test_a_product_fills_what_the_line_item_leaves_out(sandbox: PlanhatSandbox, deal: str, product: str) -> None:
    answer = put(
        sandbox,
        "lineitems",
        [
            {"externalId": "l1", "dealId": deal, "productId": product, "fromDate": "2026-01-01"},
            {"externalId": "l2", "dealId": deal, "productId": product, "fromDate": "2026-01-01", "mrr": 80},
        ],
    ).json()
    assert answer["created"] == 2
    first, second = sandbox.objects("lineitems")
    assert (first["mrr"], first["length"], first["fixedPeriod"], first["currency"]) == (100, 12, True, "EUR")
    assert second["mrr"] == 80  # the item's own value wins
    response = put(sandbox, "lineitems", [{"dealId": deal, "productId": "extid-adv", "fromDate": "2026-01-01"}])
    assert response.json()["createdErrors"][0]["reason"] == "parent_not_found"


@pytest.mark.parametrize(
    "item, reason, fragment",
    [
        ({"type": "fee"}, "missing_required", "value"),
        ({"type": "subscription"}, "missing_required", "mrr/arr"),
        ({"fixedPeriod": True, "value": 1200}, "missing_required", "toDate/length"),
        ({"type": "one-off", "value": 1}, "invalid_value", "type must be subscription or fee"),
    ],
)
def test_line_item_revenue_rules(
    sandbox: PlanhatSandbox, deal: str, item: dict[str, Any], reason: str, fragment: str
) -> None:
    good = {"dealId": deal, "fromDate": "2026-01-01", "type": "fee", "value": 5}
    response = put(sandbox, "lineitems", [good, {"dealId": deal, "fromDate": "2026-01-01", **item}])
    assert response.status_code == 206
    [error] = response.json()["createdErrors"]
    assert error["reason"] == reason and fragment in error["message"]


def test_a_line_items_external_id_is_unique_per_company_through_its_deal(
    sandbox: PlanhatSandbox, acme: str, deal: str
) -> None:
    globex = sandbox.seed("companies", [{"name": "Globex"}])["upsertedIds"][0]
    other_deal, globex_deal = sandbox.seed(
        "deals", [{"name": "Upsell", "companyId": acme}, {"name": "New", "companyId": globex}]
    )["upsertedIds"]
    line = {"externalId": "l1", "fromDate": "2026-01-01", "mrr": 1}
    assert put(sandbox, "lineitems", [{**line, "dealId": deal}, {**line, "dealId": globex_deal}]).json()["created"] == 2
    response = put(sandbox, "lineitems", [{**line, "dealId": deal}, {**line, "dealId": other_deal}])
    assert response.status_code == 400  # one company, one externalId: the same record twice
    assert [e["reason"] for e in response.json()["updatedErrors"]] == ["duplicated", "duplicated"]


@pytest.mark.parametrize("hours", [0, 0.05, 24.5, "2", True])
def test_a_time_entry_logs_between_0_1_and_24_hours(sandbox: PlanhatSandbox, hours: Any) -> None:
    response = put(
        sandbox, "timeentries", [{"date": "2026-01-05", "hours": 24}, {"date": "2026-01-05", "hours": hours}]
    )
    assert response.status_code == 206
    [error] = response.json()["createdErrors"]
    assert error["reason"] == "invalid_value" and "between 0.1 and 24" in error["message"]


# ---- duplicated keys and request size ----------------------------------------------------------

DUPLICATES = [
    ("companies", "externalId", [{"name": "A", "externalId": "k"}, {"name": "B", "externalId": "k"}]),
    ("companies", "sourceId", [{"name": "A", "sourceId": "k"}, {"name": "B", "sourceId": "k"}]),
    (
        "endusers",
        "externalId",
        [
            {"email": "a@acme.example", "externalId": "k", "companyId": "extid-acme"},
            {"email": "b@acme.example", "externalId": "k", "companyId": "srcid-sf-acme"},
        ],
    ),
    ("issues", "sourceId", [{"title": "A", "sourceId": 7}, {"title": "B", "sourceId": "7"}]),
]


@pytest.mark.parametrize(("name", "key", "items"), DUPLICATES)
def test_a_key_twice_in_one_request_refuses_the_whole_request(
    sandbox: PlanhatSandbox, acme: str, name: str, key: str, items: list[dict[str, Any]]
) -> None:
    response = put(sandbox, name, [*items, minimal(name, acme)])
    assert response.status_code == 400
    errors = response.json()["createdErrors"]
    assert [(e["item"], e["reason"], e["key"]) for e in errors] == [(item, "duplicated", key) for item in items]
    assert "duplicated" in errors[0]["message"]
    assert len(sandbox.objects(name)) == (1 if name == "companies" else 0)  # nothing written, not even the good item


def test_a_duplicated_key_of_an_existing_record_is_an_update_error(sandbox: PlanhatSandbox, acme: str) -> None:
    response = put(sandbox, "companies", [{"_id": acme, "phase": "a"}, {"_id": acme, "phase": "b"}])
    assert response.status_code == 400
    assert [e["reason"] for e in response.json()["updatedErrors"]] == ["duplicated", "duplicated"]
    assert "phase" not in only(sandbox.objects("companies"))


def test_the_same_external_id_at_two_companies_is_not_a_duplicate(sandbox: PlanhatSandbox, acme: str) -> None:
    sandbox.seed("companies", [{"name": "Globex", "externalId": "globex"}])
    items = [
        {"email": "a@b.c", "externalId": "k", "companyId": "extid-acme"},
        {"email": "a@b.c", "externalId": "k", "companyId": "extid-globex"},
    ]
    assert put(sandbox, "endusers", items).json()["created"] == 2


@pytest.mark.parametrize(("count", "status"), [(MAX_BULK_ITEMS, 200), (MAX_BULK_ITEMS + 1, 400)])
def test_at_most_5000_items_per_request(sandbox: PlanhatSandbox, count: int, status: int) -> None:
    response = put(sandbox, "companies", [{"name": f"C{n}", "externalId": f"c{n}"} for n in range(count)])
    assert response.status_code == status
    if status == 400:
        assert str(MAX_BULK_ITEMS) in response.json()["message"]
        assert sandbox.objects("companies") == []
    else:
        assert response.json()["created"] == count == len(sandbox.objects("companies"))


@pytest.mark.parametrize(("body", "status"), [(b"not json", 400), (b'{"name": "A"}', 400), (b"[]", 200)])
def test_the_body_must_be_a_json_array(sandbox: PlanhatSandbox, body: bytes, status: int) -> None:
    response = requests.put(f"{sandbox.url}/companies", data=body, headers=bearer(sandbox.api_token), timeout=TIMEOUT_S)
    assert response.status_code == status
    assert "message" in response.json() if status == 400 else response.json()["created"] == 0


def test_items_that_are_not_objects_are_item_errors(sandbox: PlanhatSandbox) -> None:
    response = put(sandbox, "companies", [{"name": "A"}, "B", 3])
    assert response.status_code == 206
    assert [(e["item"], e["reason"]) for e in response.json()["createdErrors"]] == [
        ("B", "not_an_object"),
        (3, "not_an_object"),
    ]


# ---- auth, permissions, rate limit ------------------------------------------------------------


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user.encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="none"),
        pytest.param(bearer("wrong"), 401, id="wrong-bearer"),
        pytest.param({"Authorization": "demo-api-token"}, 401, id="no-scheme"),
        pytest.param(basic("demo-api-token"), 401, id="basic-without-colon"),
        pytest.param(basic("demo-api-token:"), 200, id="basic-token-colon"),
        pytest.param(bearer("demo-api-token"), 200, id="bearer"),
    ],
)
def test_the_main_api_takes_the_api_token(sandbox: PlanhatSandbox, headers: dict[str, str], status: int) -> None:
    assert put(sandbox, "companies", [{"name": "A"}], headers=headers).status_code == status
    assert get(sandbox, "companies", headers=headers).status_code == status
    assert get(sandbox, "customfields", headers=headers).status_code == status
    assert {r.authorization_matched for r in sandbox.main_api_requests} == {status == 200}
    if status == 401:
        assert sandbox.objects("companies") == []


def test_objects_outside_the_permitted_set_answer_403() -> None:
    with PlanhatSandbox(permitted_objects=["companies"]) as sandbox:
        response = put(sandbox, "endusers", [{"email": "a@b.c", "companyId": "extid-acme"}])
        assert response.status_code == 403
        answer = response.json()
        assert (answer["created"], answer["permissionErrors"][0]["object"]) == (0, "endusers")
        listing = get(sandbox, "endusers", params={"limit": 1})
        assert listing.status_code == 403 and listing.json()["permissionErrors"]
        assert put(sandbox, "companies", [{"name": "A"}]).status_code == 200
        assert sandbox.objects("endusers") == []

        control = f"{sandbox.url}/_sandbox/main_api"
        assert requests.post(control, json={"permitted_objects": None}, timeout=TIMEOUT_S).json() == {"ok": True}
        assert get(sandbox, "endusers").status_code == 200
        sandbox.configure_main_api(permitted_objects=[])
        assert get(sandbox, "companies").status_code == 403
        bad = requests.post(control, json={"permitted_objects": ["planets"]}, timeout=TIMEOUT_S)
        assert bad.status_code == 400 and "planets" in bad.json()["message"]
        sandbox.reset()  # back to the constructor's set
        assert (get(sandbox, "companies").status_code, get(sandbox, "endusers").status_code) == (200, 403)


def test_a_token_that_may_update_but_not_create_answers_403_for_the_new_items_only() -> None:
    """Planhat's 403: "you don't have the right permissions to execute one or all the operations"."""
    with PlanhatSandbox(update_only_objects=["companies"]) as sandbox:
        sandbox.seed("companies", [{"externalId": "old", "name": "Old"}])
        response = put(
            sandbox, "companies", [{"externalId": "old", "name": "Renamed"}, {"externalId": "new", "name": "N"}]
        )
        assert response.status_code == 403
        answer = response.json()
        assert (answer["updated"], answer["created"], answer["createdErrors"]) == (1, 0, [])
        [denied] = answer["permissionErrors"]
        assert denied["item"] == {"externalId": "new", "name": "N"} and "not create" in denied["message"]
        assert [c["name"] for c in sandbox.objects("companies")] == ["Renamed"]
        [logged] = sandbox.main_api_requests
        assert (logged.status, logged.processed, logged.errors) == (403, 1, 1)
        only_new = put(sandbox, "companies", [{"externalId": "new2", "name": "N2"}])
        assert only_new.status_code == 403 and only_new.json()["updated"] == 0
        assert put(sandbox, "endusers", [{"email": "a@b.c", "companyId": "extid-old"}]).status_code == 200
        control = f"{sandbox.url}/_sandbox/main_api"
        requests.post(control, json={"update_only_objects": []}, timeout=TIMEOUT_S).raise_for_status()
        assert put(sandbox, "companies", [{"externalId": "new", "name": "N"}]).status_code == 200
        sandbox.reset()  # back to the constructor's set
        assert put(sandbox, "companies", [{"externalId": "x", "name": "X"}]).status_code == 403


def test_rate_limit_headers_can_be_left_out_but_a_429_keeps_its_retry_after() -> None:
    with PlanhatSandbox(rate_limit_per_minute=1, rate_limit_headers=False) as sandbox:
        first = get(sandbox, "companies")
        assert first.status_code == 200 and "X-Rate-Limit-Remaining" not in first.headers
        limited = get(sandbox, "companies")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "X-Rate-Limit-Limit" not in limited.headers and "X-Rate-Limit-Remaining" not in limited.headers
        sandbox.configure_main_api(rate_limit_headers=True, rate_limit_per_minute=2)
        assert get(sandbox, "companies").headers["X-Rate-Limit-Remaining"] == "1"


def test_no_rate_limit_by_default(sandbox: PlanhatSandbox) -> None:
    for _ in range(30):
        response = get(sandbox, "companies")
        assert response.status_code == 200 and "X-Rate-Limit-Limit" not in response.headers


def test_calls_over_the_rate_limit_answer_429_with_headers() -> None:
    with PlanhatSandbox(rate_limit_per_minute=3) as sandbox:
        seen = [put(sandbox, "companies", [{"name": f"C{n}"}]) for n in range(3)]
        assert [r.headers["X-Rate-Limit-Remaining"] for r in seen] == ["2", "1", "0"]
        assert all(r.status_code == 200 and r.headers["X-Rate-Limit-Limit"] == "3" for r in seen)
        limited = put(sandbox, "companies", [{"name": "late"}])
        assert limited.status_code == 429
        assert (limited.headers["X-Rate-Limit-Limit"], limited.headers["X-Rate-Limit-Remaining"]) == ("3", "0")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert get(sandbox, "customfields").status_code == 429  # every main API call counts
        assert [c["name"] for c in sandbox.objects("companies")] == ["C0", "C1", "C2"]
        # Unauthenticated calls are refused before they count; the analytics host has no such limit.
        assert put(sandbox, "companies", [], headers={}).status_code == 401
        metrics = requests.post(
            f"{sandbox.url}/dimensiondata/{sandbox.tenant}",
            json=[METRIC],
            headers=bearer(sandbox.api_token),
            timeout=TIMEOUT_S,
        )
        assert metrics.status_code == 200 and "X-Rate-Limit-Limit" not in metrics.headers


def test_the_rate_limit_window_resets() -> None:
    # Refused within a window long enough that no machine is too slow to make a second call in it.
    with PlanhatSandbox(rate_limit_per_minute=1, rate_limit_window_s=60) as sandbox:
        assert get(sandbox, "companies").status_code == 200
        limited = get(sandbox, "companies")
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        # A new window (a new setting starts one) of 0.4 s: its one call, then, once it has passed
        # (waited out: a busy machine only waits longer), a call of the next window.
        sandbox.configure_main_api(rate_limit_window_s=0.4)
        assert get(sandbox, "companies").status_code == 200
        time.sleep(0.45)
        assert get(sandbox, "companies").status_code == 200
        sandbox.configure_main_api(rate_limit_per_minute=None)
        assert all(get(sandbox, "companies").status_code == 200 for _ in range(5))
        requests.post(f"{sandbox.url}/_sandbox/main_api", json={"rate_limit_per_minute": 2}, timeout=TIMEOUT_S)
        assert [get(sandbox, "companies").status_code for _ in range(3)] == [200, 200, 429]
        with pytest.raises(ValueError):
            sandbox.configure_main_api(rate_limit_per_minute=0)


# ---- custom fields and reads ------------------------------------------------------------------

CUSTOM_FIELDS = [
    {"name": "Tier", "type": "list", "parent": "Company", "listValues": ["Gold", "Silver"]},
    {"name": "Seats", "type": "number", "parent": "License", "isFormula": True, "isLocked": True},
]


def test_customfields_lists_the_configured_fields() -> None:
    with PlanhatSandbox(custom_fields=CUSTOM_FIELDS) as sandbox:
        response = get(sandbox, "customfields", params={"parent": "Company"})
        assert response.status_code == 200
        fields = response.json()
        assert [(f["name"], f["type"], f["parent"]) for f in fields] == [
            ("Tier", "list", "Company"),
            ("Seats", "number", "License"),
        ]  # the parent filter is ignored: Planhat's is unconfirmed, so clients filter themselves
        assert (fields[0]["listValues"], fields[0]["isFormula"], fields[0]["isLocked"]) == (
            ["Gold", "Silver"],
            False,
            False,
        )
        assert (fields[1]["listValues"], fields[1]["isFormula"], fields[1]["isLocked"]) == ([], True, True)
        assert all(len(f["_id"]) == 24 and f["isHidden"] is False for f in fields)

        requests.post(f"{sandbox.url}/_sandbox/main_api", json={"custom_fields": []}, timeout=TIMEOUT_S)
        assert get(sandbox, "customfields").json() == []
        sandbox.reset()
        assert len(get(sandbox, "customfields").json()) == 2


@pytest.mark.parametrize(
    "definition",
    [
        {"type": "text", "parent": "Company"},
        {"name": "X", "parent": "Company"},
        {"name": "X", "type": "text"},
        {"name": "X", "type": "colour", "parent": "Company"},
        "Tier",
    ],
)
def test_invalid_custom_field_definitions_are_refused(definition: Any) -> None:
    with pytest.raises(ValueError):
        PlanhatSandbox(custom_fields=[definition])


def test_get_list_pages_through_records_without_writing(sandbox: PlanhatSandbox) -> None:
    sandbox.seed("companies", [{"name": f"C{n}"} for n in range(5)])
    assert [c["name"] for c in get(sandbox, "companies", params={"limit": 1}).json()] == ["C0"]
    assert [c["name"] for c in get(sandbox, "companies", params={"limit": 2, "offset": 3}).json()] == ["C3", "C4"]
    assert len(get(sandbox, "companies").json()) == 5
    for params in ({"limit": 0}, {"limit": "x"}, {"offset": -1}, {"limit": 5001}):
        assert get(sandbox, "companies", params=params).status_code == 400
    assert len(sandbox.objects("companies")) == 5


def test_get_list_selects_the_fields_asked_for(sandbox: PlanhatSandbox, acme: str) -> None:
    sandbox.seed("deals", [{"name": "D", "externalId": "d1", "sourceId": "sf-d1", "companyId": acme, "mrr": 5}])
    [deal] = get(sandbox, "deals", params={"select": "externalId,sourceId", "limit": 10}).json()
    assert set(deal) == {"_id", "externalId", "sourceId"}


def test_unknown_main_api_paths_are_404(sandbox: PlanhatSandbox) -> None:
    assert put(sandbox, "planets", []).status_code == 404
    assert put(sandbox, "companies/extra", []).status_code == 404
    assert put(sandbox, "customfields", []).status_code == 404
    assert get(sandbox, "planets").status_code == 404
    assert requests.post(f"{sandbox.url}/companies", json=[], timeout=TIMEOUT_S).status_code == 404
    assert sandbox.main_api_requests == []


# ---- faults and latency ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_status_faults_on_the_main_api_leave_the_analytics_host_alone(sandbox: PlanhatSandbox, status: int) -> None:
    sandbox.set_faults(script=[{"kind": "status", "status": status, "retry_after": "3"}], api=MAIN_API)
    metrics = requests.post(
        f"{sandbox.url}/dimensiondata/{sandbox.tenant}",
        json=[METRIC],
        headers=bearer(sandbox.api_token),
        timeout=TIMEOUT_S,
    )
    assert metrics.status_code == 200
    faulted = put(sandbox, "companies", [{"name": "A"}])
    assert (faulted.status_code, faulted.headers["Retry-After"]) == (status, "3")
    assert sandbox.objects("companies") == []
    assert put(sandbox, "companies", [{"name": "A"}]).status_code == 200
    assert [(r.status, r.fault, r.method) for r in sandbox.main_api_requests] == [
        (status, "status", "PUT"),
        (200, None, "PUT"),
    ]
    assert [r.endpoint for r in sandbox.requests] == [METRICS]  # the analytics log holds analytics requests only


def test_analytics_faults_leave_the_main_api_alone(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "status", "status": 503}])
    assert put(sandbox, "companies", [{"name": "A"}]).status_code == 200
    metrics = requests.post(
        f"{sandbox.url}/dimensiondata/{sandbox.tenant}",
        json=[METRIC],
        headers=bearer(sandbox.api_token),
        timeout=TIMEOUT_S,
    )
    assert metrics.status_code == 503


def test_reset_before_writes_nothing_and_reset_after_writes(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(script=[{"kind": "reset_before"}, {"kind": "reset_after"}], api=MAIN_API)
    with pytest.raises(requests.exceptions.ConnectionError):
        put(sandbox, "companies", [{"name": "Lost"}])
    with pytest.raises(requests.exceptions.ConnectionError):
        put(sandbox, "companies", [{"name": "Kept", "externalId": "kept"}])
    assert [c["name"] for c in sandbox.objects("companies")] == ["Kept"]
    # A retry of the unanswered request updates rather than duplicates: the key matches.
    assert put(sandbox, "companies", [{"name": "Kept", "externalId": "kept"}]).json()["nonupdates"] == 1
    assert [(r.status, r.fault, r.processed) for r in sandbox.main_api_requests] == [
        (None, "reset_before", 0),
        (None, "reset_after", 1),
        (200, None, 1),
    ]


def test_delay_bad_json_and_bad_body_faults(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(
        api=MAIN_API,
        script=[
            {"kind": "delay", "seconds": 120},  # far longer than the client waits; ends when it hangs up
            {"kind": "bad_json", "process": False},
            {"kind": "bad_body"},
        ],
    )
    with pytest.raises(requests.exceptions.ReadTimeout):
        put(sandbox, "companies", [{"name": "Slow"}], timeout=0.1)
    assert sandbox.wait_idle(timeout=GIVE_UP_S)
    assert [c["name"] for c in sandbox.objects("companies")] == ["Slow"]  # processed, answer lost
    bad_json = put(sandbox, "companies", [{"name": "Proxy"}])
    assert (bad_json.status_code, bad_json.json()) == (200, {"ok": True})
    bad_body = get(sandbox, "companies")
    assert bad_body.status_code == 200 and bad_body.headers["Content-Type"] == "text/html"
    assert [c["name"] for c in sandbox.objects("companies")] == ["Slow"]


def test_random_main_api_faults_are_reproducible(sandbox: PlanhatSandbox) -> None:
    def run() -> list[int]:
        sandbox.reset()
        sandbox.set_faults(random={"503": 0.3, "429": 0.2}, seed=11, api="main")
        return [get(sandbox, "companies").status_code for _ in range(30)]

    first = run()
    assert first == run() and {200, 429, 503} <= set(first)


def test_main_api_latency_is_its_own(sandbox: PlanhatSandbox) -> None:
    sandbox.set_faults(latency_s=0.3, api=MAIN_API)
    started = time.monotonic()
    get(sandbox, "companies")
    assert time.monotonic() - started >= 0.3  # at least: a busy machine only adds to it
    # The analytics API does not wait for it: with a main API latency no test outlasts, an analytics
    # request is answered while a main API request is still held (not timed; stop() ends the hold).
    sandbox.set_faults(latency_s=120, api=MAIN_API)
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(get, sandbox, "companies", timeout=120)
        analytics = requests.post(f"{sandbox.url}/analytics/bulk/{sandbox.tenant}", json=[], timeout=TIMEOUT_S)
        assert analytics.status_code == 200
        assert not held.done(), "the main API answered before its latency was over"
        sandbox.stop()
        held.exception(timeout=120)
    with PlanhatSandbox(main_api_latency_s=0.2) as slow:
        slow.reset()
        started = time.monotonic()
        get(slow, "customfields")
        assert time.monotonic() - started >= 0.2


def test_faults_for_the_main_api_over_http(sandbox: PlanhatSandbox) -> None:
    faults = {"api": "main", "script": [{"kind": "status", "status": 500}]}
    assert requests.post(f"{sandbox.url}/_sandbox/faults", json=faults, timeout=TIMEOUT_S).json() == {"ok": True}
    assert get(sandbox, "companies").status_code == 500
    bad = requests.post(f"{sandbox.url}/_sandbox/faults", json={"api": "moon"}, timeout=TIMEOUT_S)
    assert bad.status_code == 400 and "moon" in bad.json()["message"]


# ---- inspection -------------------------------------------------------------------------------


def test_inspection_over_http_and_in_python(sandbox: PlanhatSandbox, acme: str) -> None:
    put(sandbox, "endusers", [{"email": "a@acme.example", "externalId": "u1"}, {"externalId": "u2"}])
    control = f"{sandbox.url}/_sandbox"
    users = requests.get(f"{control}/objects", params={"object": "endusers"}, timeout=TIMEOUT_S).json()
    assert users == sandbox.objects("endusers") and users[0]["companyId"] == acme
    everything = requests.get(f"{control}/objects", timeout=TIMEOUT_S).json()
    assert everything.keys() == OBJECTS.keys() and everything["companies"] == sandbox.objects("companies")
    assert requests.get(f"{control}/objects", params={"object": "planets"}, timeout=TIMEOUT_S).status_code == 400
    with pytest.raises(ValueError):
        sandbox.objects("planets")

    logged = requests.get(f"{control}/requests", params={"api": "main"}, timeout=TIMEOUT_S).json()
    assert [(r["endpoint"], r["method"], r["status"], r["items"], r["processed"], r["errors"]) for r in logged] == [
        ("endusers", "PUT", 206, 2, 1, 1),
    ]
    assert requests.get(f"{control}/requests", timeout=TIMEOUT_S).json() == []  # analytics by default
    assert requests.get(f"{control}/requests", params={"api": "x"}, timeout=TIMEOUT_S).status_code == 400

    summary = requests.get(f"{control}/main_api", timeout=TIMEOUT_S).json()
    assert summary == sandbox.main_api_summary()
    assert summary["statuses"] == {"206": 1}
    assert summary["objects"] == {
        "companies": {"records": 1, "created": 1, "updated": 0, "errors": 0},
        "endusers": {"records": 1, "created": 1, "updated": 0, "errors": 1},
    }
    text = sandbox.summary_text()
    assert "main API" in text and "endusers       records 1  created 1  updated 0  item errors 1" in text

    sandbox.reset()
    assert sandbox.all_objects() == {name: [] for name in OBJECTS} and sandbox.main_api_requests == []
    assert "main API" not in sandbox.summary_text()


def test_returned_records_are_copies(sandbox: PlanhatSandbox, acme: str) -> None:
    only(sandbox.objects("companies"))["name"] = "changed"
    assert only(sandbox.objects("companies"))["name"] == "Acme"


def test_command_line_serves_the_main_api_with_its_settings() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "destination_planhat.testing.sandbox",
            "--port=0",
            "--api-token=tok",
            "--permitted-objects=companies,endusers",
            "--rate-limit-per-minute=2",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], GIVE_UP_S)
        assert ready, "the sandbox did not announce itself"
        url = process.stdout.readline().strip().removeprefix("planhat-sandbox listening on ")
        auth = bearer("tok")
        assert (
            requests.put(f"{url}/companies", json=[{"name": "A"}], headers=auth, timeout=TIMEOUT_S).status_code == 200
        )
        assert requests.get(f"{url}/licenses", headers=auth, timeout=TIMEOUT_S).status_code == 403
        assert requests.get(f"{url}/companies", headers=auth, timeout=TIMEOUT_S).status_code == 429
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=GIVE_UP_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "companies      records 1  created 1" in out and "429 x1" in out
