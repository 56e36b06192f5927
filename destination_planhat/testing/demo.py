"""`make demo`: real syncs into the embedded Planhat sandbox, printed for a human.

Starts the sandbox on a free loopback port, runs the connector's `spec`, `check`, `write` and `discover`
commands as Airbyte would (subprocesses, JSON lines), then shows what the connector said and what
the sandbox received. Nothing leaves this machine.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from destination_planhat.planhat.api import TARGETS
from destination_planhat.testing.cli import CliRun, run_cli
from destination_planhat.testing.harness import (
    ACTIVITY_SCHEMA,
    API_TOKEN,
    METRIC_SCHEMA,
    TENANT,
    catalog,
    configured_stream,
    encode_lines,
    record,
    sandbox_config,
    stream_state,
)
from destination_planhat.testing.sandbox import PlanhatSandbox

COMPANIES = ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
ACTIONS = ["logged_in", "exported_report", "invited_user", "created_dashboard"]


def sample_messages(days: int = 5) -> Iterator[dict[str, Any]]:
    """Three streams over a few days, a state per stream per day, and two rows Planhat will reject."""
    rng = random.Random(7)
    for day in range(1, days + 1):
        date = f"2026-11-{day:02d}"
        for company in COMPANIES:
            for dimension in ("active_users", "api_calls"):
                yield record(
                    "product_usage",
                    {
                        "dimensionId": dimension,
                        "value": rng.randint(1, 500),
                        "externalId": company,
                        "model": "Company",
                        "date": date,
                        "_ab_cdc_updated_at": None,
                    },
                )
            yield record(
                "nps_scores",
                {
                    "dimensionId": "nps",
                    "value": rng.randint(0, 10),
                    "externalId": f"{company}-admin",
                    "model": "EndUser",
                    "date": date,
                },
            )
        for n in range(40):
            company = rng.choice(COMPANIES)
            yield record(
                "feature_events",
                {
                    "email": f"user{n}@{company}.example",
                    "action": rng.choice(ACTIONS),
                    "count": 1,
                    "companyExternalId": company,
                    "date": f"{date}T09:{n:02d}:00Z",
                },
            )
        for stream in ("product_usage", "nps_scores", "feature_events"):
            yield stream_state(stream, date)
    # Planhat answers 200 to these too, and lists them as errors: the connector logs and counts them.
    yield record("product_usage", {"dimensionId": "weekly active", "value": 3, "externalId": "acme"})
    yield record("feature_events", {"action": "logged_in", "count": 1})
    yield stream_state("product_usage", "end")
    yield stream_state("feature_events", "end")


def demo_catalog() -> dict[str, Any]:
    # nps_scores has no dimensionId column in its schema: it is routed by the `streams` setting.
    nps_schema = {
        "type": "object",
        "properties": {k: v for k, v in METRIC_SCHEMA["properties"].items() if k != "dimensionId"},
    }
    return catalog(
        configured_stream("product_usage", METRIC_SCHEMA),
        configured_stream("feature_events", ACTIVITY_SCHEMA),
        configured_stream("nps_scores", nps_schema),
    )


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)))


def show_logs(run: CliRun, *, prefixes: tuple[str, ...] = ()) -> None:
    for line in run.logs:
        if not prefixes or line.startswith(prefixes) or "->" in line:
            print(f"  log: {line}")


def main() -> int:
    with PlanhatSandbox(tenant=TENANT, api_token=API_TOKEN) as sandbox, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        config = sandbox_config(sandbox.url, batch_size=100, streams=[{"name": "nps_scores", "endpoint": "metrics"}])
        print(f"Planhat sandbox listening on {sandbox.url} (tenant {TENANT})")

        heading("spec")
        spec = run_cli("spec", tmp_path, process=True).of_type("SPEC")[0]["spec"]
        fields = spec["connectionSpecification"]["properties"]
        print("  fields:", ", ".join(name for name in fields if not fields[name].get("airbyte_hidden")))
        print("  hidden:", ", ".join(name for name in fields if fields[name].get("airbyte_hidden")))

        heading("check")
        check = run_cli("check", tmp_path, config=config, process=True)
        print(f"  {json.dumps(check.connection_status)}")

        heading("write")
        messages = list(sample_messages())
        records = sum(1 for m in messages if m["type"] == "RECORD")
        print(f"  sending {records} records and {len(messages) - records} states on stdin")
        run = run_cli(
            "write", tmp_path, config=config, catalog=demo_catalog(), stdin=encode_lines(messages), process=True
        )
        show_logs(run, prefixes=("stream", "summary"))
        for state in run.states:
            stream = state["stream"]["stream_descriptor"]["name"]
            cursor = state["stream"]["stream_state"]["cursor"]
            print(f"  STATE {stream} cursor={cursor} recordCount={state['destinationStats']['recordCount']:.0f}")
        for error in run.errors:
            print(f"  ERROR {error['message']}")

        heading("what the sandbox received")
        print(sandbox.summary_text())
        for endpoint in ("metrics", "user_activities"):
            items = sandbox.received(endpoint)
            print(f"  first {endpoint} items: " + "; ".join(json.dumps(i) for i in items[:2]))
        heading("write objects: companies (with custom fields) and their end users, in one run")
        objects_config = dict(
            config,
            api_base_url=sandbox.url,
            streams=[
                {
                    "name": "accounts",
                    "endpoint": "companies",
                    "unmapped_columns": "custom",
                    "field_mappings": [{"planhat_field": "externalId", "source_field": "id"}],
                },
                {"name": "contacts", "endpoint": "endusers"},
            ],
        )
        account_schema = {"type": "object", "properties": {"id": {}, "name": {}, "plan": {}, "seats": {}}}
        contact_schema = {
            "type": "object",
            "properties": {"externalId": {}, "email": {}, "firstName": {}, "companyExternalId": {}},
        }
        object_catalog = {
            "streams": [
                {
                    "stream": {"name": name, "json_schema": schema, "supported_sync_modes": ["full_refresh"]},
                    "sync_mode": "full_refresh",
                    "destination_sync_mode": "append_dedup",
                    "primary_key": [[key]],
                }
                for name, schema, key in (
                    ("accounts", account_schema, "id"),
                    ("contacts", contact_schema, "externalId"),
                )
            ]
        }
        object_messages = []
        for i, (name, plan) in enumerate((("Acme", "enterprise"), ("Globex", "pro"), ("Initech", "free"))):
            object_messages.append(
                {
                    "type": "RECORD",
                    "record": {
                        "stream": "accounts",
                        "emitted_at": 0,
                        "data": {"id": f"acct-{i}", "name": name, "plan": plan, "seats": 10 * (i + 1)},
                    },
                }
            )
            object_messages.append(
                {
                    "type": "RECORD",
                    "record": {
                        "stream": "contacts",
                        "emitted_at": 0,
                        "data": {
                            "externalId": f"c-{i}",
                            "email": f"ada{i}@{name.lower()}.example",
                            "firstName": "Ada",
                            "companyExternalId": f"acct-{i}",
                        },
                    },
                }
            )
        objects_run = run_cli(
            "write",
            tmp_path,
            config=objects_config,
            catalog=object_catalog,
            stdin=encode_lines(object_messages),
            process=True,
        )
        show_logs(objects_run, prefixes=("summary",))
        for error in objects_run.errors:
            print(f"  ERROR {error['message']}")
        heading("what the sandbox holds (main API)")
        names = {c["_id"]: c["name"] for c in sandbox.objects("companies")}
        for company in sandbox.objects("companies"):
            print(
                f"  company {company['name']} externalId={company.get('externalId')} custom={json.dumps(company.get('custom'))}"
            )
        for user in sandbox.objects("endusers"):
            print(
                f"  end user {user['email']} externalId={user.get('externalId')} company={names.get(user.get('companyId'))}"
            )
        revenue_ok = revenue_model(sandbox, tmp_path, objects_config)
        activation_ok = data_activation(sandbox, tmp_path, config)
        operations_ok = update_and_delete(sandbox, tmp_path, config)
        ok = (
            revenue_ok
            and activation_ok
            and operations_ok
            and objects_run.returncode == 0
            and len(sandbox.objects("endusers")) == 3
        )
        status = check.connection_status
        ok = ok and run.returncode == 0 and status is not None and status["status"] == "SUCCEEDED"
        print("\ndemo " + ("succeeded" if ok else "FAILED"))
        return 0 if ok else 1


def revenue_model(sandbox: PlanhatSandbox, tmp_path: Path, config: dict[str, Any]) -> bool:
    """Planhat's revenue model in one run: a company, a product, a deal of the company and its line
    items, which name their deal and product by their own ids (looked up as Planhat ids)."""
    heading("write the revenue model: a company, a product, a deal and its line items, in one run")
    streams = {"crm_accounts": "companies", "crm_products": "products", "crm_deals": "deals", "crm_lines": "lineitems"}
    settings = dict(config, streams=[{"name": name, "endpoint": endpoint} for name, endpoint in streams.items()])
    rows: list[tuple[str, dict[str, Any]]] = [
        ("crm_accounts", {"externalId": "acct-9", "name": "Soylent"}),
        (
            "crm_products",
            {
                "externalId": "adv",
                "name": "Advanced Data",
                "type": "subscription",
                "fixedPeriod": True,
                "length": 12,
                "mrr": 400,
            },
        ),
        (
            "crm_deals",
            {"externalId": "opp-1", "name": "Soylent renewal", "companyExternalId": "acct-9", "stage": "Closed Won"},
        ),
        (
            "crm_lines",
            {"externalId": "li-1", "dealExternalId": "opp-1", "productExternalId": "adv", "fromDate": "2027-01-01"},
        ),
        (
            "crm_lines",
            {"externalId": "li-2", "dealExternalId": "opp-1", "type": "fee", "value": 2500, "fromDate": "2027-01-01"},
        ),
    ]
    messages = [record(stream, data) for stream, data in rows] + [stream_state(name, "end") for name in streams]
    schema = {"type": "object", "properties": {}}
    run = run_cli(
        "write",
        tmp_path,
        config=settings,
        catalog=catalog(*(configured_stream(name, schema) for name in streams)),
        stdin=encode_lines(messages),
    )
    show_logs(run, prefixes=("summary",))
    for text in run.log_lines("read the keys of"):
        print(f"  log: {text}")
    for error in run.errors:
        print(f"  ERROR {error['message']}")
    names = {c["_id"]: c["name"] for c in sandbox.objects("companies")}
    products = {p["_id"]: p["name"] for p in sandbox.objects("products")}
    deals = {d["_id"]: d["name"] for d in sandbox.objects("deals")}
    for deal in sandbox.objects("deals"):
        print(f"  deal {deal['name']!r} externalId={deal['externalId']} company={names.get(deal['companyId'])}")
    for item in sandbox.objects("lineitems"):
        product = products.get(item.get("productId"), "no product")
        print(
            f"  line item {item['externalId']} deal={deals.get(item['dealId'])!r} product={product!r} "
            f"type={item.get('type')} mrr={item.get('mrr')} value={item.get('value')} length={item.get('length')}"
        )
    return run.returncode == 0 and len(sandbox.objects("lineitems")) == 2


DEMO_CUSTOM_FIELDS: list[dict[str, Any]] = [
    {"name": "Plan tier", "type": "list", "parent": "Company", "listValues": ["free", "pro", "enterprise"]},
    {"name": "Health", "type": "number", "parent": "Company", "isFormula": True},
]


def data_activation(sandbox: PlanhatSandbox, tmp_path: Path, config: dict[str, Any]) -> bool:
    """discover, then a stream mapped as the Airbyte UI would (destination_object_name, renamed
    columns, the matching key as primary key), with its rejected records stored in a directory."""
    sandbox.configure_main_api(custom_fields=DEMO_CUSTOM_FIELDS)
    settings = dict(config, api_base_url=sandbox.url)
    settings.pop("streams", None)
    heading("discover (what the Airbyte UI can map onto)")
    discovered = run_cli("discover", tmp_path, config=settings, process=True)
    [message] = discovered.of_type("DESTINATION_CATALOG")
    operations: dict[str, dict[str, Any]] = {}
    modes: dict[str, list[str]] = {}
    for op in message["destination_catalog"]["operations"]:
        operations.setdefault(op["object_name"], op)
        modes.setdefault(op["object_name"], []).append(op["sync_mode"])
    for name, op in operations.items():
        keys = (
            " matching keys " + ", ".join("/".join(key) for key in op["matching_keys"])
            if op.get("matching_keys")
            else ""
        )
        print(f"  {name:16} {'/'.join(modes[name]):36} {len(op['json_schema']['properties']):3} fields{keys}")
    custom = [field for field in operations["companies"]["json_schema"]["properties"] if field.startswith("custom.")]
    print("  companies' custom fields offered: " + ", ".join(custom) + " (the formula field 'Health' is left out)")
    heading("write with data activation: stream 'crm_accounts' mapped onto companies in the UI")
    rejected_dir = tmp_path / "rejected"
    settings["object_storage_config"] = {"storage_type": "Local", "local_path": str(rejected_dir)}
    schema = {"type": "object", "properties": {"externalId": {}, "name": {}, "custom.Plan tier": {}}}
    mapped = {
        "streams": [
            {
                "stream": {"name": "crm_accounts", "json_schema": schema, "supported_sync_modes": ["full_refresh"]},
                "sync_mode": "full_refresh",
                "destination_sync_mode": "append_dedup",
                "destination_object_name": "companies",
                "primary_key": [["externalId"]],
            }
        ]
    }
    rows = [
        {"externalId": "acct-0", "name": "Acme Corp", "custom.Plan tier": "enterprise"},
        {"externalId": "acct-9", "name": "Soylent", "custom.Plan tier": "pro"},
        {"name": "no key: rejected, so that a resend can never create a duplicate"},
    ]
    messages = [{"type": "RECORD", "record": {"stream": "crm_accounts", "emitted_at": 0, "data": row}} for row in rows]
    messages.append(stream_state("crm_accounts", "end"))
    run = run_cli("write", tmp_path, config=settings, catalog=mapped, stdin=encode_lines(messages), process=True)
    show_logs(run, prefixes=("summary",))
    for state in run.states:
        stats = state["destinationStats"]
        print(
            f"  STATE crm_accounts recordCount={stats['recordCount']:.0f} rejectedRecordCount={stats.get('rejectedRecordCount', 0):.0f}"
        )
    for company in sandbox.objects("companies"):
        print(
            f"  company {company['name']} externalId={company.get('externalId')} custom={json.dumps(company.get('custom'))}"
        )
    stored = sorted(rejected_dir.rglob("*.jsonl"))
    for path in stored:
        print(f"  rejected record stored in {path.relative_to(rejected_dir)}:")
        for line in path.read_text(encoding="utf-8").splitlines():
            print(f"    {line}")
    return run.returncode == 0 and len(stored) == 1 and len(operations) == len(TARGETS)


def update_and_delete(sandbox: PlanhatSandbox, tmp_path: Path, config: dict[str, Any]) -> bool:
    """Two streams mapped onto companies in the UI: one in the sync mode Update (nothing is created),
    one in Soft delete (each record's company deleted by its key, within max_deletes)."""
    settings = dict(config, api_base_url=sandbox.url)
    settings.pop("streams", None)
    schema = {"type": "object", "properties": {"externalId": {}, "name": {}}}

    def mapped(name: str, mode: str) -> dict[str, Any]:
        return {
            "stream": {"name": name, "json_schema": schema, "supported_sync_modes": ["full_refresh"]},
            "sync_mode": "full_refresh",
            "destination_sync_mode": mode,
            "destination_object_name": "companies",
            "primary_key": [["externalId"]],
        }

    before = {str(c.get("externalId")) for c in sandbox.objects("companies")}
    heading("write with the sync mode Update: 'crm_renames' (acct-0 is in Planhat, acct-404 is not)")
    rows = [{"externalId": "acct-0", "name": "Acme Corporation"}, {"externalId": "acct-404", "name": "Never created"}]
    messages = [{"type": "RECORD", "record": {"stream": "crm_renames", "emitted_at": 0, "data": row}} for row in rows]
    messages.append(stream_state("crm_renames", "end"))
    catalog = {"streams": [mapped("crm_renames", "update")]}
    updated = run_cli("write", tmp_path, config=settings, catalog=catalog, stdin=encode_lines(messages))
    show_logs(updated, prefixes=("summary", "stream 'crm_renames'"))
    heading("write with the sync mode Soft delete: 'crm_closed' deletes acct-9 (acct-405 is already absent)")
    rows = [{"externalId": "acct-9"}, {"externalId": "acct-405"}]
    messages = [{"type": "RECORD", "record": {"stream": "crm_closed", "emitted_at": 0, "data": row}} for row in rows]
    messages.append(stream_state("crm_closed", "end"))
    catalog = {"streams": [mapped("crm_closed", "soft_delete")]}
    deleted = run_cli("write", tmp_path, config=settings, catalog=catalog, stdin=encode_lines(messages))
    show_logs(deleted, prefixes=("summary", "stream 'crm_closed'"))
    after = {str(c.get("externalId")) for c in sandbox.objects("companies")}
    print(f"  companies before: {len(before)}, after: {len(after)}; removed: {sorted(before - after)}")
    return (
        updated.returncode == 0 and deleted.returncode == 0 and before - after == {"acct-9"} and "acct-404" not in after
    )


if __name__ == "__main__":
    sys.exit(main())
