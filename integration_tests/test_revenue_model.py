"""Planhat's revenue model through the CLI against the sandbox: companies, products, deals and their
line items in one sync, parents first at every depth, references resolved, and a re-run that
creates nothing; then notes, tickets, churn, objectives and time entries, each with its company.

The sandbox takes a line item's dealId and productId as Planhat ids only (the strict reading of
Planhat's page), so a line item that lands with its deal proves the connector looked the deal up.
No timed assertion: a hang fails through the harness's timeout.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from destination_planhat.testing.cli import CliRun, run_cli
from destination_planhat.testing.harness import catalog, configured_stream, encode_lines, record, stream_state
from destination_planhat.testing.sandbox import MAIN_API, PlanhatSandbox
from destination_planhat.testing.sync_checks import assert_books_balance, connector_config, sync_summary

HANG_SECONDS = 600  # a bound for a hung connector, not an expectation
ANY = {"type": "object", "properties": {}}
ENDPOINT_OF = {"accounts": "companies", "catalog": "products", "pipeline": "deals", "lines": "lineitems"}
STREAMS = [{"name": stream, "endpoint": endpoint} for stream, endpoint in ENDPOINT_OF.items()]


def objects_config(sandbox: PlanhatSandbox, streams: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return connector_config(sandbox, tenant_uuid=None, api_base_url=sandbox.url, streams=streams, **overrides)


def write(tmp_path: Path, sandbox: PlanhatSandbox, config: dict[str, Any], messages: list[Any]) -> CliRun:
    """The CLI's write, each STATE stamped with the records the sandbox held when it was printed."""
    streams = [s["name"] for s in config["streams"]]
    return run_cli(
        "write",
        tmp_path,
        config=config,
        catalog=catalog(*(configured_stream(name, ANY) for name in streams)),
        stdin=encode_lines(messages),
        checkpoint=sandbox.object_counts,
        timeout=HANG_SECONDS,
    )


def company(c: int) -> dict[str, Any]:
    return {"externalId": f"acct-{c}", "name": f"Company {c}"}


def product(p: int) -> dict[str, Any]:
    # A 12-month subscription at 50 a month: the line items take length and mrr from it.
    return {
        "externalId": f"prod-{p}",
        "name": f"Product {p}",
        "type": "subscription",
        "fixedPeriod": True,
        "length": 12,
        "mrr": 50,
    }


def deal(d: int, of: int) -> dict[str, Any]:
    return {"externalId": f"deal-{d}", "name": f"Deal {d}", "companyExternalId": f"acct-{of}", "stage": "Closed Won"}


def line(d: int, k: int, p: int) -> dict[str, Any]:
    return {
        "externalId": f"line-{d}-{k}",
        "dealExternalId": f"deal-{d}",
        "productExternalId": f"prod-{p}",
        "fromDate": "2026-01-01",
    }


def revenue_messages(companies: int, products: int, deals: int, lines_per_deal: int) -> list[Any]:
    """Companies and products first, then each deal followed by its line items; a state of each
    stream now and then, and at the end. Every record's parents are read before it."""
    messages: list[Any] = [record("accounts", company(c)) for c in range(companies)]
    messages += [record("catalog", product(p)) for p in range(products)]
    messages += [stream_state("accounts", "all"), stream_state("catalog", "all")]
    for d in range(deals):
        messages.append(record("pipeline", deal(d, d % companies)))
        messages += [record("lines", line(d, k, (d + k) % products)) for k in range(lines_per_deal)]
        if d % 100 == 99:
            messages += [stream_state("pipeline", f"d{d}"), stream_state("lines", f"l{d}")]
    messages += [stream_state("pipeline", "end"), stream_state("lines", "end")]
    return messages


def assert_states_followed_their_records(run: CliRun, messages: list[Any]) -> None:
    """Each state was printed when the sandbox already held every record of its stream read before
    it (records are unique, so the count of its object is the proof), with a count of them and no
    rejection; states keep their input order."""
    read: Counter[str] = Counter()
    expected: list[tuple[str, int]] = []
    for message in messages:
        if message["type"] == "RECORD":
            read[message["record"]["stream"]] += 1
        elif message["type"] == "STATE":
            stream = message["state"]["stream"]["stream_descriptor"]["name"]
            expected.append((stream, read[stream]))
    emitted = [s["stream"]["stream_descriptor"]["name"] for s in run.states]
    assert emitted == [stream for stream, _ in expected]
    assert run.state_checkpoints is not None and len(run.state_checkpoints) == len(expected)
    since: Counter[str] = Counter()
    for state, (stream, before), held in zip(run.states, expected, run.state_checkpoints):
        assert held[ENDPOINT_OF[stream]] >= before, f"a {stream} state was printed before its records were written"
        stats = state["destinationStats"]
        assert (stats["recordCount"], stats["rejectedRecordCount"]) == (before - since[stream], 0)
        since[stream] = before


def test_ten_thousand_line_items_across_a_thousand_deals_land_once_with_their_parents(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    messages = revenue_messages(companies=100, products=10, deals=1000, lines_per_deal=10)
    config = objects_config(planhat, STREAMS)
    run = write(tmp_path, planhat, config, messages)
    assert run.returncode == 0, run.stderr[-3000:]

    summary = sync_summary(run)
    assert_books_balance(summary)
    for stream, expected in (("accounts", 100), ("catalog", 10), ("pipeline", 1000), ("lines", 10_000)):
        counts = summary["streams"][stream]
        assert (counts["read"], counts["created"], counts["updated"]) == (expected, expected, 0), counts
        assert counts["rejected_locally"] == counts["rejected_by_planhat"] == counts["merged"] == 0, counts
    assert_states_followed_their_records(run, messages)

    companies = {c["externalId"]: c["_id"] for c in planhat.objects("companies")}
    products = {p["externalId"]: p["_id"] for p in planhat.objects("products")}
    deals = planhat.objects("deals")
    lines = planhat.objects("lineitems")
    assert (len(companies), len(products), len(deals), len(lines)) == (100, 10, 1000, 10_000)
    deal_ids = {d["externalId"]: d["_id"] for d in deals}
    assert len(deal_ids) == 1000 and len({item["externalId"] for item in lines}) == 10_000  # each once
    for d in deals:
        assert d["companyId"] == companies[f"acct-{int(d['externalId'][5:]) % 100}"]
    for item in lines:
        _, d, k = item["externalId"].split("-")
        assert item["dealId"] == deal_ids[f"deal-{d}"]
        assert item["productId"] == products[f"prod-{(int(d) + int(k)) % 10}"]
        assert (item["length"], item["mrr"]) == (12, 50)  # filled from its product
    puts = Counter(r.endpoint for r in planhat.main_api_requests if r.method == "PUT")
    assert puts["lineitems"] == 2  # 5,000 a request
    reads = [r for r in planhat.main_api_requests if r.method == "GET"]
    assert reads and {r.endpoint for r in reads} == {"deals", "products"}
    assert all(r.status == 200 for r in planhat.main_api_requests)

    # The same sync again: every record updates itself, nothing is created.
    again = write(tmp_path, planhat, config, messages)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = sync_summary(again)
    assert_books_balance(summary)
    assert sum(s["created"] for s in summary["streams"].values()) == 0
    assert summary["streams"]["lines"]["updated"] == 10_000
    assert {name: planhat.object_counts()[name] for name in ENDPOINT_OF.values()} == {
        "companies": 100,
        "products": 10,
        "deals": 1000,
        "lineitems": 10_000,
    }


@pytest.mark.slow  # a slow Planhat on purpose, so that children wait for their parents
@pytest.mark.parametrize("max_in_flight", [1, 2, 8])
def test_line_items_waiting_for_deals_and_companies_never_hold_back_their_parents(
    tmp_path: Path, planhat: PlanhatSandbox, max_in_flight: int
) -> None:
    """Three levels under back-pressure: with a slow Planhat (0.2 s an answer), an open batch of
    companies, of products and of deals come first, then eight batches of line items: the first
    cut hands over the deals, which hand over the companies, and the line items batches queue
    behind them in every slot (1, 2 or 8). Then runs of a new company, its deal, a new product and
    a line item of both, so that parent batches keep going out between line items batches."""
    planhat.set_faults(latency_s=0.2, api=MAIN_API)
    config = objects_config(planhat, STREAMS, batch_size=4, max_in_flight_requests=max_in_flight)
    messages: list[Any] = [record("accounts", company(c)) for c in range(3)]
    messages += [record("catalog", product(p)) for p in range(3)]
    messages += [record("pipeline", deal(d, d)) for d in range(3)]
    messages += [record("lines", line(n % 3, n, n % 3)) for n in range(32)]
    for n in range(3, 9):
        messages += [
            record("accounts", company(n)),
            record("pipeline", deal(n, n)),
            record("catalog", product(n)),
            record("lines", line(n, 100, n)),
        ]
    messages += [stream_state(stream, "end") for stream in ENDPOINT_OF]
    run = write(tmp_path, planhat, config, messages)
    assert run.returncode == 0, run.stderr[-3000:]

    summary = sync_summary(run)
    assert_books_balance(summary)
    assert [summary["streams"][s]["created"] for s in ENDPOINT_OF] == [9, 9, 9, 38]
    assert summary["streams"]["lines"]["rejected_by_planhat"] == 0  # every line item found its deal
    assert_states_followed_their_records(run, messages)
    deal_ids = {d["_id"] for d in planhat.objects("deals")}
    product_ids = {p["_id"] for p in planhat.objects("products")}
    companies = {c["_id"] for c in planhat.objects("companies")}
    assert all(d["companyId"] in companies for d in planhat.objects("deals"))
    assert all(item["dealId"] in deal_ids and item["productId"] in product_ids for item in planhat.objects("lineitems"))


def test_a_line_item_whose_deal_is_nowhere_is_refused_by_planhat_and_counted(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    """Its key is sent as it is (the connector drops nothing): the sandbox, like Planhat's page,
    takes only a Planhat id, refuses it, and the record is counted rejected on its state."""
    planhat.seed("companies", [company(0)])
    messages = [
        record("pipeline", deal(0, 0)),
        record("lines", line(0, 0, 0) | {"productExternalId": None, "mrr": 5}),
        record("lines", line(9, 0, 0) | {"productExternalId": None, "mrr": 5}),  # deal-9 does not exist
        stream_state("pipeline", "end"),
        stream_state("lines", "end"),
    ]
    run = write(tmp_path, planhat, objects_config(planhat, STREAMS), messages)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = sync_summary(run)["streams"]["lines"]
    assert (lines["created"], lines["rejected_by_planhat"]) == (1, 1)
    assert any("extid-deal-9" in reason for reason in lines["planhat_reasons"])
    assert run.log_lines("could not find once in Planhat (dealId 'extid-deal-9': no such record)")
    assert [s["destinationStats"]["rejectedRecordCount"] for s in run.states] == [0, 1]


NEW_OBJECTS = ["deals", "products", "lineitems", "notes", "tickets", "churn", "objectives", "timeentries"]


def test_discover_offers_every_new_object_with_its_fields_keys_and_custom_fields(
    tmp_path: Path, planhat: PlanhatSandbox
) -> None:
    planhat.configure_main_api(
        custom_fields=[
            {"name": "Region", "type": "text", "parent": "Deal"},
            {"name": "Topic", "type": "text", "parent": "Conversation"},
        ]
    )
    config = connector_config(planhat, tenant_uuid=None, api_base_url=planhat.url)
    run = run_cli("discover", tmp_path, config=config)
    [message] = run.of_type("DESTINATION_CATALOG")
    operations: dict[str, Any] = {}
    for op in message["destination_catalog"]["operations"]:
        operations.setdefault(op["object_name"], op)  # each object's first: append_dedup (upsert)
    assert set(NEW_OBJECTS) <= set(operations)
    for name in NEW_OBJECTS:
        op = operations[name]
        assert op["sync_mode"] == "append_dedup" and op["matching_keys"], name
        assert all(key in op["json_schema"]["properties"] for [key] in op["matching_keys"]), name
    lines = operations["lineitems"]["json_schema"]["properties"]
    assert {"dealExternalId", "productExternalId", "fromDate", "mrr"} <= set(lines)
    assert "custom.Region" in operations["deals"]["json_schema"]["properties"]
    assert "custom.Topic" in operations["notes"]["json_schema"]["properties"]
    assert "custom.Topic" in operations["tickets"]["json_schema"]["properties"]


# ----- notes, tickets, churn, objectives, time entries -----------------------------------------------

ACME = {"name": "Acme", "externalId": "acme"}

# Per object: its stream settings, two records that land (with the company by its externalId), and
# per required field a record without it and where it is refused ("planhat": by the sandbox, with a
# reason naming the field; "locally": by the connector).
OTHER_OBJECTS: dict[str, dict[str, Any]] = {
    "notes": {
        "settings": {},
        "good": [
            {"externalId": "n1", "companyExternalId": "acme", "subject": "QBR", "date": "2026-02-01"},
            {"externalId": "n2", "companyExternalId": "acme", "subject": "Call", "type": "note"},
        ],
        "missing": {
            "companyId": ({"externalId": "n3", "subject": "orphan"}, "planhat"),
            "type": ({"externalId": "n4", "companyExternalId": "acme", "type": ""}, "planhat"),
        },
    },
    "tickets": {
        "settings": {"match_on": "sourceId"},
        "good": [
            {"sourceId": "zd-1", "email": "ada@acme.example", "companyExternalId": "acme", "title": "Export"},
            {"sourceId": "zd-2", "email": "bob@acme.example", "companyExternalId": "acme", "timeSpent": 30},
        ],
        "missing": {
            "sourceId": ({"email": "c@acme.example", "companyExternalId": "acme"}, "locally"),
            "email": ({"sourceId": "zd-3", "companyExternalId": "acme"}, "locally"),
            "companyId": ({"sourceId": "zd-4", "email": "d@acme.example"}, "planhat"),
        },
    },
    "churn": {
        "settings": {},
        "good": [
            {"externalId": "c1", "companyExternalId": "acme", "isChurn": True, "churnReason": "Price"},
            {"externalId": "c2", "companyExternalId": "acme", "isChurn": "false"},
        ],
        "missing": {
            "companyId": ({"externalId": "c3", "isChurn": True}, "planhat"),
            "isChurn": ({"externalId": "c4", "companyExternalId": "acme"}, "planhat"),
        },
    },
    "objectives": {
        "settings": {},
        "good": [
            {"externalId": "o1", "companyExternalId": "acme", "name": "Adoption", "health": 8},
            {"externalId": "o2", "companyExternalId": "acme", "name": "Expansion"},
        ],
        "missing": {
            "name": ({"externalId": "o3", "companyExternalId": "acme"}, "planhat"),
            "companyId": ({"externalId": "o4", "name": "Orphan"}, "planhat"),
        },
    },
    "timeentries": {
        "settings": {},
        "good": [
            {"externalId": "t1", "companyExternalId": "acme", "date": "2026-02-02", "hours": 1.5},
            {"externalId": "t2", "companyExternalId": "acme", "date": "2026-02-03T09:00:00Z", "hours": "8"},
        ],
        "missing": {
            "date": ({"externalId": "t3", "companyExternalId": "acme", "hours": 2}, "planhat"),
            "hours": ({"externalId": "t4", "companyExternalId": "acme", "date": "2026-02-04"}, "planhat"),
        },
    },
}


def sync_one(tmp_path: Path, sandbox: PlanhatSandbox, endpoint: str, records: list[dict[str, Any]]) -> CliRun:
    sandbox.seed("companies", [ACME])
    settings = {"name": "rows", "endpoint": endpoint, **OTHER_OBJECTS[endpoint]["settings"]}
    messages = [record("rows", data) for data in records] + [stream_state("rows", "end")]
    run = write(tmp_path, sandbox, objects_config(sandbox, [settings]), messages)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_books_balance(sync_summary(run))
    return run


@pytest.mark.parametrize("endpoint", sorted(OTHER_OBJECTS))
def test_each_object_syncs_with_its_company_and_a_rerun_creates_nothing(
    tmp_path: Path, planhat: PlanhatSandbox, endpoint: str
) -> None:
    good = OTHER_OBJECTS[endpoint]["good"]
    run = sync_one(tmp_path, planhat, endpoint, good)
    stream = sync_summary(run)["streams"]["rows"]
    assert (stream["created"], stream["rejected_by_planhat"], stream["rejected_locally"]) == (2, 0, 0)
    assert [s["destinationStats"]["recordCount"] for s in run.states] == [2]
    [acme] = [c["_id"] for c in planhat.objects("companies")]
    stored = planhat.objects(endpoint)
    assert len(stored) == 2 and all(r["companyId"] == acme for r in stored)
    if endpoint == "notes":
        assert [r["type"] for r in stored] == ["note", "note"]  # the default, and the record's own
    if endpoint == "tickets":
        assert all(r["companyExternalId"] == "acme" for r in stored)  # sent in both documented forms
    if endpoint == "timeentries":
        assert [r["hours"] for r in stored] == [1.5, 8]
        assert stored[1]["date"] == "2026-02-03T09:00:00.000Z"
    settings = {"name": "rows", "endpoint": endpoint, **OTHER_OBJECTS[endpoint]["settings"]}
    again = write(tmp_path, planhat, objects_config(planhat, [settings]), [record("rows", d) for d in good])
    assert sync_summary(again)["streams"]["rows"]["created"] == 0 and len(planhat.objects(endpoint)) == 2


REJECTIONS = [
    pytest.param(endpoint, field, id=f"{endpoint}-without-{field}")
    for endpoint, spec in sorted(OTHER_OBJECTS.items())
    for field in spec["missing"]
]


@pytest.mark.parametrize("endpoint, field", REJECTIONS)
def test_a_record_without_a_required_field_is_rejected_and_counted(
    tmp_path: Path, planhat: PlanhatSandbox, endpoint: str, field: str
) -> None:
    bad, where = OTHER_OBJECTS[endpoint]["missing"][field]
    run = sync_one(tmp_path, planhat, endpoint, [OTHER_OBJECTS[endpoint]["good"][0], bad])
    stream = sync_summary(run)["streams"]["rows"]
    assert stream["created"] == 1 and len(planhat.objects(endpoint)) == 1
    assert [
        (s["destinationStats"]["recordCount"], s["destinationStats"]["rejectedRecordCount"]) for s in run.states
    ] == [(1, 1)]
    if where == "planhat":
        assert stream["rejected_by_planhat"] == 1
        [reason] = stream["planhat_reasons"]
        assert field in reason, reason
    else:
        assert stream["rejected_locally"] == 1
        [reason] = stream["local_reasons"]
        assert reason.startswith(f"{field} is missing"), reason
