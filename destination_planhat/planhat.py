"""Everything this connector knows about Planhat's analytics API, in one place.

A change on Planhat's side (a path, a field name, a limit) should be a one-line change here.
"""

from __future__ import annotations

import re
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

# Every Planhat field a `field_mappings` entry may name (the spec's enum), in a stable order.
ALL_FIELDS = tuple(dict.fromkeys(METRIC_FIELDS + USER_ACTIVITY_FIELDS))


class FieldKind(str, Enum):
    """What local validation checks, and what a constant in `field_mappings` is converted to."""

    STRING = "string"  # numbers are converted to strings (ids often arrive as integers)
    DIMENSION_ID = "dimension_id"  # a string of DIMENSION_ID_CHARACTERS only
    NUMBER = "number"  # a finite number; numeric strings are converted
    MODEL = "model"  # one of METRIC_MODELS
    DATE = "date"  # ISO 8601 date or date-time, see DATE_FORMAT_NOTE
    OBJECT = "object"  # a JSON object


FIELD_KINDS = {
    Endpoint.METRICS: {
        "dimensionId": FieldKind.DIMENSION_ID,
        "value": FieldKind.NUMBER,
        "externalId": FieldKind.STRING,
        "model": FieldKind.MODEL,
        "date": FieldKind.DATE,
    },
    Endpoint.USER_ACTIVITIES: {
        "email": FieldKind.STRING,
        "euExtId": FieldKind.STRING,
        "action": FieldKind.STRING,
        "count": FieldKind.NUMBER,
        "companyExternalId": FieldKind.STRING,
        "weight": FieldKind.NUMBER,
        "date": FieldKind.DATE,
        "info": FieldKind.OBJECT,
        "name": FieldKind.STRING,
    },
}

# A metric's name (dimensionId): Planhat says "no spaces or special characters". The connector
# allows exactly these characters (ASCII letters, digits, underscore, dash, dot), which the
# sandbox accepts too; anything else is rejected locally before it reaches Planhat.
DIMENSION_ID_PATTERN = r"[A-Za-z0-9_.\-]+"
DIMENSION_ID_CHARACTERS = "letters A-Z and a-z, digits 0-9, underscore (_), dash (-) and dot (.)"

# How dates are sent: a date (2026-11-01) as it is; a date-time converted to UTC and written like
# JavaScript's Date.toISOString(), 2026-11-01T08:30:00.000Z (milliseconds, Z). A date-time without
# a time zone is taken as UTC.
DATE_FORMAT_NOTE = (
    "an ISO 8601 date (2026-11-01) or date-time (2026-11-01T10:30:00+02:00); date-times are sent "
    "in UTC as 2026-11-01T08:30:00.000Z"
)

# Keys of the JSON answer of both endpoints: {"processed": N, "errors": [{"item": ..., "error": ...}]}
RESPONSE_PROCESSED = "processed"
RESPONSE_ERRORS = "errors"
RESPONSE_ERROR_ITEM = "item"
RESPONSE_ERROR_REASON = "error"


# What a tenant token looks like. It goes into the URL path, so nothing else may: no "/", "?",
# "#", "%" or ".." can then change which URL a request (and the API token with it) goes to.
TENANT_TOKEN_PATTERN = r"^[A-Za-z0-9-]+$"
_TENANT_TOKEN_OK = re.compile(TENANT_TOKEN_PATTERN).fullmatch


def endpoint_path(endpoint: Endpoint, tenant: str) -> str:
    """The URL path of an endpoint. Refuses a tenant token that is not letters, digits and dashes,
    so that no caller can build a URL from unchecked text (the value itself is never quoted)."""
    if not isinstance(tenant, str) or _TENANT_TOKEN_OK(tenant) is None:
        raise ValueError("`tenant_uuid` must contain only letters, digits and dashes")
    return ENDPOINT_PATHS[endpoint].format(tenant=tenant)

# Where users find their credentials, quoted in error messages.
WHERE_TENANT_TOKEN = "the Tenant UUID in Planhat's Developer section (app.planhat.com/developer)"
WHERE_API_TOKEN = "a Planhat API access token of a Service Account (a Private App in upgraded Planhat)"
