"""Everything this connector knows about Planhat's APIs, in one place.

A change on Planhat's side (a path, a field name, a limit) should be a one-line change here. Each
place a stream can be written to is a `Target`, described in `TARGETS`: adding one is a description
(plus, where its answers differ, a reader in answers.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Mapping, Optional

from destination_planhat.answers import PostResult, read_analytics_answer

DEFAULT_ANALYTICS_BASE_URL = "https://analytics.planhat.com"

# Planhat rejects request bodies over 32 MB. Batches are cut well below that, so that a proxy's
# own framing or a slightly different byte count on Planhat's side never tips a batch over.
PLANHAT_MAX_BODY_BYTES = 32 * 1024 * 1024
SAFE_BODY_BYTES = 30 * 1024 * 1024


class Endpoint(str, Enum):
    """Where a stream can be written to: the `endpoint` of a `streams` entry (see TARGETS)."""

    METRICS = "metrics"
    USER_ACTIVITIES = "user_activities"

    @property
    def label(self) -> str:
        return TARGETS[self].label

    @property
    def target(self) -> "Target":
        return TARGETS[self]


METRIC_REQUIRED_FIELDS = ("dimensionId", "value", "externalId")
METRIC_MODELS = ("Company", "EndUser", "Asset", "Project")

# At least one of these identifies the end user of an activity.
USER_ACTIVITY_IDENTITY_FIELDS = ("email", "euExtId")



class FieldKind(str, Enum):
    """What local validation checks, and what a constant in `field_mappings` is converted to."""

    STRING = "string"  # numbers are converted to strings (ids often arrive as integers)
    DIMENSION_ID = "dimension_id"  # a string of DIMENSION_ID_CHARACTERS only
    NUMBER = "number"  # a finite number; numeric strings are converted
    MODEL = "model"  # one of METRIC_MODELS
    DATE = "date"  # ISO 8601 date or date-time, see DATE_FORMAT_NOTE
    OBJECT = "object"  # a JSON object


METRIC_FIELD_KINDS = {
    "dimensionId": FieldKind.DIMENSION_ID,
    "value": FieldKind.NUMBER,
    "externalId": FieldKind.STRING,
    "model": FieldKind.MODEL,
    "date": FieldKind.DATE,
}
USER_ACTIVITY_FIELD_KINDS = {
    "email": FieldKind.STRING,
    "euExtId": FieldKind.STRING,
    "action": FieldKind.STRING,
    "count": FieldKind.NUMBER,
    "companyExternalId": FieldKind.STRING,
    "weight": FieldKind.NUMBER,
    "date": FieldKind.DATE,
    "info": FieldKind.OBJECT,
    "name": FieldKind.STRING,
}
# Item fields per endpoint, in the order they are written. Anything else in a record is not sent.
METRIC_FIELDS = tuple(METRIC_FIELD_KINDS)
USER_ACTIVITY_FIELDS = tuple(USER_ACTIVITY_FIELD_KINDS)
# Every Planhat field a `field_mappings` entry may name (the spec's enum), in a stable order.
ALL_FIELDS = tuple(dict.fromkeys(METRIC_FIELDS + USER_ACTIVITY_FIELDS))

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

# What a tenant token looks like. It goes into the URL path, so nothing else may: no "/", "?",
# "#", "%" or ".." can then change which URL a request (and the API token with it) goes to.
TENANT_TOKEN_PATTERN = r"^[A-Za-z0-9-]+$"
_TENANT_TOKEN_OK = re.compile(TENANT_TOKEN_PATTERN).fullmatch


def endpoint_path(endpoint: Endpoint, tenant: str) -> str:
    """The URL path of an endpoint. Refuses a tenant token that is not letters, digits and dashes,
    so that no caller can build a URL from unchecked text (the value itself is never quoted)."""
    if not isinstance(tenant, str) or _TENANT_TOKEN_OK(tenant) is None:
        raise ValueError("`tenant_uuid` must contain only letters, digits and dashes")
    return TARGETS[endpoint].path.format(tenant=tenant)

# Where users find their credentials, quoted in error messages.
WHERE_TENANT_TOKEN = "the Tenant UUID in Planhat's Developer section (app.planhat.com/developer)"
WHERE_API_TOKEN = "a Planhat API access token of a Service Account (a Private App in upgraded Planhat)"


class Host(str, Enum):
    """Which Planhat host a target lives on; its base URL comes from the config."""

    ANALYTICS = "analytics"


@dataclass(frozen=True)
class Target:
    """One place in Planhat a stream can be written to: everything the connector needs to know of it."""

    endpoint: Endpoint
    label: str
    host: Host
    method: str
    path: str  # below the host's base URL; "{tenant}" is the tenant token, checked before use
    needs_api_token: bool  # sent as `Authorization: Bearer`; a target without it never sees the token
    fields: Mapping[str, FieldKind]  # every field an item may have, in the order they are written
    required: tuple[str, ...]  # every one of these must be present
    one_of: tuple[str, ...]  # at least one of these must be present (empty: no such rule)
    max_items: Optional[int]  # per request, or None (then only `batch_size` and the body size cut)
    max_body_bytes: int  # the largest body the connector sends (the config may lower it)
    split_statuses: frozenset[int]  # answers after which the batch is split in halves and resent
    read_answer: Callable[[bytes], PostResult]  # a 2xx body -> items processed and rejected
    base_url_field: str  # the config field with the host's base URL
    credential_fix: str  # what to check when the target refuses the credentials


TARGETS: Mapping[Endpoint, Target] = {
    Endpoint.METRICS: Target(
        endpoint=Endpoint.METRICS,
        label="Metrics",
        host=Host.ANALYTICS,
        method="POST",
        path="/dimensiondata/{tenant}",
        needs_api_token=True,
        fields=METRIC_FIELD_KINDS,
        required=METRIC_REQUIRED_FIELDS,
        one_of=(),
        max_items=None,
        max_body_bytes=SAFE_BODY_BYTES,
        split_statuses=frozenset({413}),
        read_answer=read_analytics_answer,
        base_url_field="analytics_base_url",
        credential_fix=f"check `api_token`: it must be {WHERE_API_TOKEN}, allowed to write metrics",
    ),
    Endpoint.USER_ACTIVITIES: Target(
        endpoint=Endpoint.USER_ACTIVITIES,
        label="User Activities",
        host=Host.ANALYTICS,
        method="POST",
        path="/analytics/bulk/{tenant}",
        needs_api_token=False,
        fields=USER_ACTIVITY_FIELD_KINDS,
        required=(),
        one_of=USER_ACTIVITY_IDENTITY_FIELDS,
        max_items=None,
        max_body_bytes=SAFE_BODY_BYTES,
        split_statuses=frozenset({413}),
        read_answer=read_analytics_answer,
        base_url_field="analytics_base_url",
        credential_fix=f"check `tenant_uuid`: it must be {WHERE_TENANT_TOKEN}",
    ),
}

# Derived from the descriptions above, for the modules that look up one aspect by endpoint.
ENDPOINT_PATHS = {endpoint: target.path for endpoint, target in TARGETS.items()}
ENDPOINT_NEEDS_API_TOKEN = {endpoint: target.needs_api_token for endpoint, target in TARGETS.items()}
FIELD_KINDS = {endpoint: dict(target.fields) for endpoint, target in TARGETS.items()}
ENDPOINT_FIELDS = {endpoint: tuple(target.fields) for endpoint, target in TARGETS.items()}
