"""source-faker -> destination-planhat through PyAirbyte, exactly as a user would run it.

Runs in .venv-pyairbyte (PyPI `airbyte`); source-faker lives in .venv-source-faker and the connector
in .venv, each a console script handed to PyAirbyte as `local_executable`. Offline mode: PyAirbyte
fetches no connector registry and sends no telemetry; the Planhat side is the sandbox on loopback.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

os.environ["AIRBYTE_OFFLINE_MODE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

import airbyte as ab  # noqa: E402  (after the environment above, which it reads on import)
from faker_to_planhat import FAKER_CONFIG, PLANHAT, faker_to_planhat  # noqa: E402  (the README's example)

from destination_planhat.testing.sandbox import PlanhatSandbox  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DESTINATION_EXECUTABLE = REPO_ROOT / ".venv" / "bin" / "destination-planhat"
FAKER_EXECUTABLE = REPO_ROOT / ".venv-source-faker" / "bin" / "source-faker"
TENANT = "faker-tenant-0001"
API_TOKEN = "faker-api-token"


@pytest.fixture
def sandbox() -> Iterator[PlanhatSandbox]:
    server = PlanhatSandbox(tenant=TENANT, api_token=API_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


def utc_text(timestamp: str) -> str:
    """How the connector is documented to send a date-time: UTC, milliseconds, Z."""
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(timezone.utc)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def expected_activity(user: dict[str, Any]) -> dict[str, Any]:
    item = {"email": user["email"], "action": "signed_up", "date": utc_text(user["created_at"])}
    # Unmapped Planhat fields default to the column of the same name: faker's users have `name` and `weight`.
    for field in ("name", "weight"):
        if user.get(field) is not None:
            item[field] = user[field]
    return item


def expected_metric(purchase: dict[str, Any]) -> dict[str, Any]:
    item = {"dimensionId": "purchases", "value": 1, "externalId": str(purchase["user_id"]), "model": "EndUser"}
    if purchase.get("purchased_at") is not None:
        item["date"] = utc_text(purchase["purchased_at"])
    return item


UTC_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def without_date(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "date"}


def read_all(source: Any, stream: str) -> list[dict[str, Any]]:
    # Hold the dataset while iterating: PyAirbyte stops the source's process when a LazyDataset is
    # garbage collected, so iterating a temporary one silently yields nothing.
    dataset = source.get_records(stream)
    return [dict(record) for record in dataset]


def canonical(items: list[dict[str, Any]]) -> Counter:
    return Counter(tuple(sorted(item.items())) for item in items)


def test_faker_users_and_purchases_reach_planhat_mapped(sandbox, tmp_path, monkeypatch):
    assert DESTINATION_EXECUTABLE.exists(), "run `make setup` first: the connector's console script is missing"
    assert FAKER_EXECUTABLE.exists(), "run `make e2e-pyairbyte`: source-faker's virtual environment is missing"
    monkeypatch.chdir(tmp_path)  # PyAirbyte keeps its local state cache under the working directory
    # What faker makes with this seed, read on its own first (faker repeats it for the same seed).
    source = ab.get_source("source-faker", config=FAKER_CONFIG, local_executable=FAKER_EXECUTABLE)
    users = read_all(source, "users")
    purchases = read_all(source, "purchases")
    planhat = {**PLANHAT, "tenant_uuid": TENANT, "api_token": API_TOKEN, "analytics_base_url": sandbox.url}

    # The README's example as it is, pointed at this test's sandbox; raises when the check or the write fails.
    result = faker_to_planhat(planhat, destination=DESTINATION_EXECUTABLE, faker=FAKER_EXECUTABLE)

    assert len(users) == FAKER_CONFIG["count"]
    assert purchases, "faker made no purchases: the test would prove nothing"

    activities = sandbox.received("user_activities")
    metrics = sandbox.received("metrics")
    assert len(activities) == len(users)
    assert len(metrics) == len(purchases)
    assert canonical(activities) == canonical([expected_activity(u) for u in users])
    # Purchases: which user made how many is fixed by faker's user ids, but whether a purchase has a
    # `purchased_at` is drawn anew on each read (faker's generator is not repeatable there), so dates
    # are checked for their form here; the users above check the date mapping exactly.
    assert canonical([without_date(m) for m in metrics]) == canonical(
        [without_date(expected_metric(p)) for p in purchases]
    )
    dated = [m["date"] for m in metrics if "date" in m]
    assert dated and all(UTC_MILLIS.fullmatch(d) for d in dated), dated[:5]
    summary = sandbox.summary()
    assert summary["user_activities"]["errors"] == 0 and summary["metrics"]["errors"] == 0
    assert result.processed_records == len(users) + len(purchases)
