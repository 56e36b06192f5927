"""A stream's mapping settings are compiled once per sync, in routing, and handed on as its plan.

Routing compiles each stream (analytics.compile_mapping, objects.compile_object), reports the
problems of every stream at once and keeps the plan on the route; the writer builds the stream's
mapper and the parse workers' plan from it. The mapping modules know nothing of routing.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

import destination_planhat
from destination_planhat.mapping import analytics, objects
from destination_planhat.mapping.analytics import MappingPlan
from destination_planhat.mapping.objects import ObjectPlan
from destination_planhat.mapping.routing import route_streams, settings_problems
from destination_planhat.planhat.api import Endpoint
from destination_planhat.reading.pipeline import read_input, start_parse_workers
from destination_planhat.sync.writer import PlanhatWriter
from destination_planhat.testing.builders import ACTIVITY_SCHEMA, METRIC_SCHEMA, catalog, config, configured_stream
from destination_planhat.testing.fake_client import FakeClient
from destination_planhat.testing.harness import record, stream_state

ACCOUNT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "title": {"type": "string"}},
}
PIVOT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"company": {"type": "string"}, "mrr": {}, "seats": {}}}
STREAMS = [
    {
        "name": "p",
        "endpoint": "metrics",
        "unpivot_columns": ["mrr", "seats"],
        "field_mappings": [{"planhat_field": "externalId", "source_field": "company"}],
    },
    {
        "name": "accounts",
        "endpoint": "companies",
        "field_mappings": [
            {"planhat_field": "externalId", "source_field": "id"},
            {"planhat_field": "name", "source_field": "title"},
        ],
    },
]
CATALOG = catalog(
    configured_stream("m", METRIC_SCHEMA),
    configured_stream("u", ACTIVITY_SCHEMA),
    configured_stream("p", PIVOT_SCHEMA),
    configured_stream("accounts", ACCOUNT_SCHEMA),
)


def count_compiles(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the compile calls per stream label, wherever in the package they are made from: every
    module's reference to either compile function is replaced by a counting one."""
    calls: Counter[str] = Counter()

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def compile_counted(label: str, *args: Any, **kwargs: Any) -> Any:
            calls[label] += 1
            return original(label, *args, **kwargs)

        return compile_counted

    wrapped = {id(f): (f, counting(f)) for f in (analytics.compile_mapping, objects.compile_object)}
    patched = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(destination_planhat.__name__):
            continue
        for attribute, value in list(vars(module).items()):
            original, counted = wrapped.get(id(value), (None, None))
            if value is original:
                monkeypatch.setattr(module, attribute, counted)
                patched += 1
    assert patched >= 4, "the two compile functions, and routing's names for them"
    return calls


def test_each_stream_is_compiled_once_per_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_compiles(monkeypatch)
    parsed = config(streams=STREAMS, parse_workers=0, batch_size=10)
    client = FakeClient()
    writer = PlanhatWriter(parsed, route_streams(parsed, CATALOG), client, lambda message: None).start()
    lines = [
        record("m", {"dimensionId": "logins", "value": 3, "externalId": "acme"}),
        record("u", {"email": "ada@acme.example", "action": "login"}),
        record("p", {"company": "acme", "mrr": 10, "seats": "4"}),
        record("accounts", {"id": "acme", "title": "Acme"}),
        stream_state("m", 1),
    ]
    try:
        workers = start_parse_workers(writer)  # asks the writer for the parse workers' plan, as a sync does
        assert workers is None
        read_input(io.BytesIO(b"".join(orjson.dumps(line) + b"\n" for line in lines)), writer)
        writer.finish()
    finally:
        writer.close()
    assert calls == {"m": 1, "u": 1, "p": 1, "accounts": 1}
    sent = {(endpoint, tuple(sorted(item.items()))) for endpoint, items in client.calls for item in items}
    assert sent == {
        (Endpoint.METRICS, (("dimensionId", "logins"), ("externalId", "acme"), ("value", 3))),
        (Endpoint.USER_ACTIVITIES, (("action", "login"), ("email", "ada@acme.example"))),
        (Endpoint.METRICS, (("dimensionId", "mrr"), ("externalId", "acme"), ("value", 10))),
        (Endpoint.METRICS, (("dimensionId", "seats"), ("externalId", "acme"), ("value", 4))),
        (Endpoint.COMPANIES, (("externalId", "acme"), ("name", "Acme"))),
    }


def test_routes_carry_the_plan_of_their_kind_of_target() -> None:
    parsed = config(streams=STREAMS)
    routes = route_streams(parsed, CATALOG)
    kinds = {key[1]: type(route.plan) for key, route in routes.items()}
    assert kinds == {"m": MappingPlan, "u": MappingPlan, "p": MappingPlan, "accounts": ObjectPlan}
    pivot = routes[(None, "p")].plan
    assert isinstance(pivot, MappingPlan) and pivot.unpivot == ("mrr", "seats")


def test_a_mistake_is_reported_by_routing_from_the_same_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_compiles(monkeypatch)
    streams = [
        {
            "name": "m",
            "endpoint": "metrics",
            "field_mappings": [{"planhat_field": "externalId", "source_field": "nope"}],
        }
    ]
    with pytest.raises(AirbyteTracedException) as raised:
        route_streams(config(streams=streams), catalog(configured_stream("m", METRIC_SCHEMA)))
    assert "stream 'm' (Metrics), field_mappings entry 1: source_field 'nope'" in str(raised.value.message)
    assert calls == {"m": 1}


def test_the_check_command_compiles_the_settings_without_a_catalog() -> None:
    streams = [
        {
            "name": "m",
            "endpoint": "metrics",
            "match_on": "sourceId",
            "unpivot_columns": ["MRR (EUR)"],
            "field_mappings": [{"planhat_field": "externalId", "source_field": "c"}],
        },
        {"name": "c", "endpoint": "companies", "field_mappings": [{"planhat_field": "colour", "constant": "red"}]},
    ]
    problems = settings_problems(config(streams=streams))
    assert any("stream 'm' (Metrics): `match_on` only applies to objects" in p for p in problems), problems
    assert any("unpivot column 'MRR (EUR)' cannot be a dimensionId" in p for p in problems), problems
    assert any("stream 'c' (Companies), field_mappings entry 1: 'colour' is not a field" in p for p in problems), (
        problems
    )
    assert len(problems) == 3, problems


@pytest.mark.parametrize("module", ["destination_planhat.mapping.analytics", "destination_planhat.mapping.objects"])
def test_the_mapping_modules_do_not_import_routing(module: str) -> None:
    code = f"import {module}, sys; assert 'destination_planhat.mapping.routing' not in sys.modules, sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
