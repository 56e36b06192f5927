"""source-faker -> Planhat through PyAirbyte. Run from the repository's root:

    make setup                                    # the connector: .venv/bin/destination-planhat
    python3 -m venv .venv-pyairbyte && .venv-pyairbyte/bin/pip install airbyte==0.71.3
    make sandbox                                  # in another terminal: a local Planhat on 127.0.0.1:8080
    .venv-pyairbyte/bin/python e2e_pyairbyte/faker_to_planhat.py

PyAirbyte installs source-faker itself. For your own Planhat, put your tokens in PLANHAT and leave out
analytics_base_url. e2e_pyairbyte/test_faker_to_planhat.py runs this same code against the sandbox.
"""

from pathlib import Path
from typing import Any

import airbyte as ab

FAKER_CONFIG = {"count": 2000, "seed": 2026, "parallelism": 1}
# faker's users -> User Activities (one signed_up activity per user), its purchases -> Metrics (one per purchase)
STREAMS = [
    {
        "name": "users",
        "endpoint": "user_activities",
        "field_mappings": [
            {"planhat_field": "email", "source_field": "email"},
            {"planhat_field": "action", "constant": "signed_up"},
            {"planhat_field": "date", "source_field": "created_at"},
        ],
    },
    {
        "name": "purchases",
        "endpoint": "metrics",
        "field_mappings": [
            {"planhat_field": "dimensionId", "constant": "purchases"},
            {"planhat_field": "value", "constant": "1"},
            {"planhat_field": "externalId", "source_field": "user_id"},
            {"planhat_field": "model", "constant": "EndUser"},
            {"planhat_field": "date", "source_field": "purchased_at"},
        ],
    },
]
PLANHAT = {  # the tokens `make sandbox` expects
    "tenant_uuid": "demo-tenant-0001",
    "api_token": "demo-api-token",
    "analytics_base_url": "http://127.0.0.1:8080",
    "streams": STREAMS,
}


def faker_to_planhat(
    planhat: dict[str, Any], destination: str | Path = ".venv/bin/destination-planhat", faker: str | Path | None = None
) -> Any:
    """Check the destination, then write faker's users and purchases to Planhat; the write's result."""
    source = ab.get_source("source-faker", config=FAKER_CONFIG, local_executable=faker)
    source.select_streams(["users", "purchases"])
    planhat_destination = ab.get_destination("destination-planhat", config=planhat, local_executable=destination)
    planhat_destination.check()
    # "append": Planhat's analytics endpoints only append; PyAirbyte's default asks for append_dedup
    return planhat_destination.write(source, cache=False, write_strategy="append")


if __name__ == "__main__":
    result = faker_to_planhat(PLANHAT)
    print(f"{result.processed_records} records written to Planhat")
