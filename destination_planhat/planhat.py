"""Everything this connector knows about Planhat's analytics API, in one place.

A change on Planhat's side (a path, a field name, a limit) should be a one-line change here.
"""

from __future__ import annotations

from enum import Enum

DEFAULT_ANALYTICS_BASE_URL = "https://analytics.planhat.com"

# Planhat rejects request bodies over 32 MB. Batches are cut well below that, so that a proxy's
# own framing or a slightly different byte count on Planhat's side never tips a batch over.
PLANHAT_MAX_BODY_BYTES = 32 * 1024 * 1024
SAFE_BODY_BYTES = 30 * 1024 * 1024


class Endpoint(str, Enum):
    """The two Planhat analytics endpoints a stream can be written to."""

    METRICS = "metrics"
    USER_ACTIVITIES = "user_activities"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {Endpoint.METRICS: "Metrics", Endpoint.USER_ACTIVITIES: "User Activities"}

# Paths below the analytics base URL. The tenant token is validated before it is put in a path.
ENDPOINT_PATHS = {
    Endpoint.METRICS: "/dimensiondata/{tenant}",
    Endpoint.USER_ACTIVITIES: "/analytics/bulk/{tenant}",
}

# Only Metrics needs the API token; User Activities must never see it.
ENDPOINT_NEEDS_API_TOKEN = {Endpoint.METRICS: True, Endpoint.USER_ACTIVITIES: False}

# Item fields per endpoint, in the order they are written. Anything else in a record is not sent.
METRIC_FIELDS = ("dimensionId", "value", "externalId", "model", "date")
METRIC_REQUIRED_FIELDS = ("dimensionId", "value", "externalId")
METRIC_MODELS = ("Company", "EndUser", "Asset", "Project")

USER_ACTIVITY_FIELDS = (
    "email",
    "euExtId",
    "action",
    "count",
    "companyExternalId",
    "weight",
    "date",
    "info",
    "name",
)
# At least one of these identifies the end user of an activity.
USER_ACTIVITY_IDENTITY_FIELDS = ("email", "euExtId")

ENDPOINT_FIELDS = {Endpoint.METRICS: METRIC_FIELDS, Endpoint.USER_ACTIVITIES: USER_ACTIVITY_FIELDS}

# Keys of the JSON answer of both endpoints: {"processed": N, "errors": [{"item": ..., "error": ...}]}
RESPONSE_PROCESSED = "processed"
RESPONSE_ERRORS = "errors"
RESPONSE_ERROR_ITEM = "item"
RESPONSE_ERROR_REASON = "error"


def endpoint_path(endpoint: Endpoint, tenant: str) -> str:
    """The URL path of an endpoint; `tenant` must already be validated (letters, digits, dashes)."""
    return ENDPOINT_PATHS[endpoint].format(tenant=tenant)

# Where users find their credentials, quoted in error messages.
WHERE_TENANT_TOKEN = "the Tenant UUID in Planhat's Developer section (app.planhat.com/developer)"
WHERE_API_TOKEN = "a Planhat API access token of a Service Account (a Private App in upgraded Planhat)"
