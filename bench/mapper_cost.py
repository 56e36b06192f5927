"""Per-record cost of each way the Decoder can map a record, next to the cost of parsing it.

    .venv/bin/python bench/mapper_cost.py      # prints ns per record; no assertions (the machine is shared)

For two kinds of records of each endpoint: records whose values all have their fields' types (the
common case, which msgspec's typed encoder takes), and records whose values need converting (ids
given as numbers, numbers given as text, date-times with a zone), which the typed encoder declines
and the Decoder's second try maps. Each way is timed on the same records, taking turns, best of 7:

- typed: typed_records.typed_item_encoder (data decoded, checked and encoded by msgspec, in C);
- mapper: orjson.loads of the data, the stream's mapper (mapping.build_mapper, the one mapper of the
  connector, which the Decoder's second try and the general path both use), orjson.dumps.

(Until issue 11 a third way existed, a mapper generated per stream with `exec` (mapping/value_checks.py); on these
records it was within a few per cent of the plain mapper, and once the typed try took the common
record it no longer earned its place: see bench/RESULTS.md.)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402
import orjson  # noqa: E402

from destination_planhat.mapping.analytics import MappingPlan, build_mapper, compile_mapping, fast_plan  # noqa: E402
from destination_planhat.planhat.api import Endpoint  # noqa: E402
from destination_planhat.reading.typed_records import typed_item_encoder  # noqa: E402
from destination_planhat.testing.harness import ACTIVITY_SCHEMA, METRIC_SCHEMA, activity, metric  # noqa: E402

N = 100_000


def compiled(endpoint: Endpoint, schema: dict[str, Any]) -> MappingPlan:
    """A stream without settings, compiled as routing compiles it."""
    plan, problems = compile_mapping("s", endpoint, None, schema)
    assert not problems, problems
    return plan


def ways(plan: MappingPlan) -> dict[str, Callable[[bytes], Any]]:
    fast = fast_plan(plan)
    assert fast is not None
    typed = typed_item_encoder(*fast)
    assert typed is not None
    general = build_mapper(plan)
    loads, dumps, raw = orjson.loads, orjson.dumps, msgspec.Raw

    def with_mapper(mapper: Callable[[Any], Any]) -> Callable[[bytes], Any]:
        def run(data: bytes) -> Any:
            item = mapper(loads(data))[0]
            return dumps(item) if type(item) is dict else None

        return run

    def typed_way(data: bytes) -> Any:
        try:
            return typed(raw(data))
        except msgspec.MsgspecError:
            return None

    return {"typed": typed_way, "mapper": with_mapper(general)}


def converted_metric(i: int) -> dict[str, Any]:
    return {
        **metric(i),
        "externalId": i % 500,
        "value": str(i % 97),
        "date": f"2026-11-{1 + i % 28:02d}T10:00:00+02:00",
    }


def converted_activity(i: int) -> dict[str, Any]:
    return {**activity(i), "count": "1", "companyExternalId": i % 500}


def main() -> int:
    cases = [
        ("metrics, values of their fields' types", compiled(Endpoint.METRICS, METRIC_SCHEMA), metric),
        ("metrics, values to convert", compiled(Endpoint.METRICS, METRIC_SCHEMA), converted_metric),
        ("activities, values of their fields' types", compiled(Endpoint.USER_ACTIVITIES, ACTIVITY_SCHEMA), activity),
        ("activities, values to convert", compiled(Endpoint.USER_ACTIVITIES, ACTIVITY_SCHEMA), converted_activity),
    ]
    lines = [
        orjson.dumps({"type": "RECORD", "record": {"stream": "m", "data": metric(i), "emitted_at": 1}})
        for i in range(N)
    ]
    print(f"{N:,} records per case; CPU ns per record, best of 7 (the ways take turns)")
    loads = orjson.loads
    from airbyte_cdk.models import AirbyteMessageSerializer

    load = AirbyteMessageSerializer.load
    reference = best_of(
        {
            "orjson.loads of the RECORD line": lambda: [loads(x) for x in lines],
            "CDK parse floor of the line": lambda: [load(loads(x)) for x in lines],
        }
    )
    for name, seconds in reference.items():
        print(f"  reference: {name}: {seconds / N * 1e9:.0f} ns")
    for label, plan, make in cases:
        records = [orjson.dumps(make(i)) for i in range(N)]
        runs = ways(plan)
        handled = {name: sum(run(r) is not None for r in records[:1000]) for name, run in runs.items()}
        timings = best_of(
            {name: (lambda run=run, records=records: [run(r) for r in records]) for name, run in runs.items()}
        )
        cells = ", ".join(
            f"{name} {seconds / N * 1e9:.0f}" + ("" if handled[name] == 1000 else " (declines)")
            for name, seconds in timings.items()
        )
        print(f"  {label}: {cells}")
    return 0


def best_of(stages: dict[str, Callable[[], Any]], rounds: int = 7) -> dict[str, float]:
    best = {name: float("inf") for name in stages}
    for _ in range(rounds):
        for name, stage in stages.items():
            started = time.thread_time()
            stage()
            best[name] = min(best[name], time.thread_time() - started)
    return best


if __name__ == "__main__":
    sys.exit(main())
