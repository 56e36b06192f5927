"""Records of Metrics and User Activities, ordinary and odd (every type and shape a field can come in),
for the tests that feed the same records to each way a record can be decoded and mapped
(unit_tests/test_fast_mapper.py, unit_tests/test_typed_records.py): what a record becomes must never
depend on which way it went.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

_fresh = itertools.count()


def fresh(text: str) -> str:
    """A value no memo has seen yet in this test session."""
    return f"{text}{next(_fresh)}"


def metric_records() -> list[dict[str, Any]]:
    day = f"2026-{1 + next(_fresh) % 12:02d}-{1 + next(_fresh) % 28:02d}"
    return [
        {"dimensionId": "logins", "value": 3, "externalId": "c1"},
        {"dimensionId": fresh("new_metric_"), "value": 1.5, "externalId": "c1", "model": "EndUser", "date": day},
        {"dimensionId": "logins", "value": 1, "externalId": "c1", "date": f"{day}T10:30:00+02:00"},
        {"dimensionId": "logins", "value": 1, "externalId": "c1", "date": f"{day} 10:30:00.123456Z"},
        {"dimensionId": "logins", "value": 1, "externalId": "c1", "date": "2026-02-30"},
        {"dimensionId": "logins", "value": 1, "externalId": "c1", "date": 20261101},
        {"dimensionId": "logins", "value": "12", "externalId": 42},
        {"dimensionId": "logins", "value": " -1.5e3 ", "externalId": 7.0},
        {"dimensionId": "logins", "value": True, "externalId": "c1"},
        {"dimensionId": "logins", "value": math.inf, "externalId": "c1"},
        {"dimensionId": "logins", "value": math.nan, "externalId": "c1"},
        {"dimensionId": "logins", "value": 1, "externalId": ""},
        {"dimensionId": "", "value": 1, "externalId": "c1"},
        {"dimensionId": "has spaces", "value": 1, "externalId": "c1"},
        {"dimensionId": 12, "value": 1, "externalId": "c1"},
        {"dimensionId": "logins", "value": None, "externalId": "c1"},
        {"dimensionId": "logins", "externalId": "c1"},
        {"dimensionId": "logins", "value": 1, "externalId": ["c1"]},
        {"dimensionId": "logins", "value": 1, "externalId": "c1", "model": "Company "},
        {"dimensionId": "logins", "value": 1, "externalId": "c1", "model": None, "_ab_cdc_lsn": 9, "other": "x"},
        {"value": 1, "externalId": "c1", "dimensionId": "logins"},
        {},
    ]


def activity_records() -> list[dict[str, Any]]:
    return [
        {"email": "a@example.com", "action": "login", "count": 1, "companyExternalId": "c1"},
        {"euExtId": "u1", "action": "login", "info": {"plan": "pro"}, "weight": 2.5, "name": "Ann"},
        {"euExtId": 77, "action": "login"},
        {"email": "", "euExtId": "", "action": "login"},
        {"email": None, "euExtId": "u1"},
        {"email": "a@example.com", "info": "not an object"},
        {"email": "a@example.com", "count": "3", "weight": "x"},
        {"email": "a@example.com", "date": fresh("2026-11-01T00:00:0") + "Z"},
        {"email": "a@example.com", "date": "2026-11-01"},
        {"email": ["a@example.com"]},
        {"action": "login"},
    ]
