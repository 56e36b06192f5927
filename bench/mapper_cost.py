"""Per-record cost of the mapper (mapping + local validation), next to the cost of parsing the record.

Run: .venv/bin/python bench/mapper_cost.py   (prints µs per record and the ratio to the CDK's parser;
no assertions: the machine is shared, so numbers vary).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import orjson
from destination_planhat.config import parse_config
from destination_planhat.routing import StreamRoute
from destination_planhat.planhat import Endpoint
from destination_planhat.mapping import build_mapper
from integration_tests.harness import METRIC_SCHEMA, metric, activity, ACTIVITY_SCHEMA

def bench(route, records, label):
    m = build_mapper(route)
    n = len(records)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        for r in records: m(r)
        best = min(best, time.perf_counter() - t)
    print(f"{label}: {best/n*1e6:.2f} us/record")
    return best / n

cfg = parse_config({"tenant_uuid": "x", "streams": [
  {"name": "purchases", "endpoint": "metrics", "field_mappings": [
     {"planhat_field": "dimensionId", "constant": "purchases"}, {"planhat_field": "value", "constant": "1"},
     {"planhat_field": "externalId", "source_field": "user_id"}, {"planhat_field": "model", "constant": "EndUser"},
     {"planhat_field": "date", "source_field": "purchased_at"}]},
  {"name": "users", "endpoint": "user_activities", "field_mappings": [
     {"planhat_field": "email", "source_field": "email"}, {"planhat_field": "action", "constant": "signed_up"},
     {"planhat_field": "date", "source_field": "created_at"}]},
  {"name": "wide", "endpoint": "metrics", "unpivot_columns": ["mrr", "seats"], "field_mappings": [
     {"planhat_field": "externalId", "source_field": "company.id"}, {"planhat_field": "date", "source_field": "day"}]},
]})
N = 200_000
plain = [metric(i) for i in range(N)]
bench(StreamRoute((None, "m"), Endpoint.METRICS, "", None, METRIC_SCHEMA), plain, "plain metrics (5 fields, date)")
bench(StreamRoute((None, "a"), Endpoint.USER_ACTIVITIES, "", None, ACTIVITY_SCHEMA), [activity(i) for i in range(N)], "plain activities (4 fields)")
purch = [{"id": i, "user_id": i % 2000, "product_id": 3, "purchased_at": f"2026-{1+i%12:02d}-{1+i%28:02d}T{i%24:02d}:{i%60:02d}:{(i*7)%60:02d}+00:00", "created_at": "x"} for i in range(N)]
bench(StreamRoute((None, "purchases"), Endpoint.METRICS, "", cfg.streams[0], {}), purch, "mapped metrics (faker purchases)")
users = [{"id": i, "email": f"u{i}@x.com", "name": "n", "weight": 70, "created_at": f"20{i%25:02d}-0{1+i%9}-1{i%10}T0{i%10}:{i%60:02d}:{(i*7)%60:02d}+00:00"} for i in range(N)]
bench(StreamRoute((None, "users"), Endpoint.USER_ACTIVITIES, "", cfg.streams[1], {}), users, "mapped activities (faker users)")
wide = [{"company": {"id": f"c{i%500}"}, "day": "2026-11-01", "mrr": i % 1000, "seats": str(i % 30)} for i in range(N)]
bench(StreamRoute((None, "wide"), Endpoint.METRICS, "", cfg.streams[2], {}), wide, "unpivot 2 columns (per record)")
t=time.perf_counter(); lines=[orjson.dumps({"type":"RECORD","record":{"stream":"m","data":r,"emitted_at":1}}) for r in plain]
t=time.perf_counter()
for l in lines: orjson.loads(l)
print(f"reference: orjson.loads of one RECORD line: {(time.perf_counter()-t)/N*1e6:.2f} us")
from airbyte_cdk.models import AirbyteMessageSerializer
t=time.perf_counter()
for l in lines[:20000]: AirbyteMessageSerializer.load(orjson.loads(l))
print(f"reference: CDK parse (orjson + AirbyteMessageSerializer.load): {(time.perf_counter()-t)/20000*1e6:.2f} us")
