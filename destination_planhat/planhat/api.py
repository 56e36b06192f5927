"""Everything this connector knows about Planhat's APIs, in one place.

A change on Planhat's side (a path, a field name, a limit) should be a one-line change here. Each
place a stream can be written to is a `Target`, described in `TARGETS`: adding one is a description
(plus, where its answers differ, a reader in planhat/answers.py). What each HTTP status means, per
host, is in planhat/statuses.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Optional, get_args

from destination_planhat.planhat.answers import PostResult, read_analytics_answer, read_upsert_answer

DEFAULT_ANALYTICS_BASE_URL = "https://analytics.planhat.com"
# Planhat's main API: https://api.planhat.com, or a regional host https://api-<region>.planhat.com
# (the region is the prefix of the app's URL: app-us2.planhat.com -> us2).
MAIN_API_HOST = "api{region}.planhat.com"
REGION_PATTERN = r"^[a-z0-9]*$"
# "For all bulk upsert operations, regardless the model there is an upper limit of 5,000 items per request."
MAX_UPSERT_ITEMS = 5_000
# Planhat's soft quota on its main API: about 200 calls per minute.
DEFAULT_CALLS_PER_MINUTE = 200


# The main API's list of custom field definitions (read by `discover`; nothing is written there).
# Each definition: `name` (the key under an item's `custom`), `type` (see planhat/custom_fields.py), `parent`
# (the model, as Target.model), `isFormula`, `isLocked`, `listValues` (the options of list types).
CUSTOM_FIELDS_PATH = "/customfields"


# Airbyte's sync modes (DestinationSyncMode values) a target is offered with.
APPEND = "append"
APPEND_DEDUP = "append_dedup"
UPDATE = "update"
SOFT_DELETE = "soft_delete"
# A custom field of an object is addressed as `custom.<Field name as shown in Planhat>`: the name a
# `field_mappings` entry and discover's schemas use; the item carries it as `custom: {name: value}`.
CUSTOM_PREFIX = "custom."


def main_api_base_url(region: str) -> str:
    return "https://" + MAIN_API_HOST.format(region=f"-{region}" if region else "")


# Planhat rejects request bodies over 32 MB. Batches are cut well below that, so that a proxy's
# own framing or a slightly different byte count on Planhat's side never tips a batch over.
PLANHAT_MAX_BODY_BYTES = 32 * 1024 * 1024
SAFE_BODY_BYTES = 30 * 1024 * 1024


class Endpoint(str, Enum):
    """Where a stream can be written to: the `endpoint` of a `streams` entry (see TARGETS)."""

    METRICS = "metrics"
    USER_ACTIVITIES = "user_activities"
    # Planhat objects, by the path of their bulk upsert (PUT /{path}); see OBJECT_TARGETS.
    COMPANIES = "companies"
    ENDUSERS = "endusers"
    ASSETS = "assets"
    PROJECTS = "projects"
    LICENSES = "licenses"
    SALES = "sales"
    OPPORTUNITIES = "opportunities"
    CONVERSATIONS = "conversations"
    ISSUES = "issues"
    INVOICES = "invoices"
    CAMPAIGNS = "campaigns"
    TASKS = "tasks"
    NPS = "nps"
    DEALS = "deals"
    PRODUCTS = "products"
    LINE_ITEMS = "lineitems"
    NOTES = "notes"
    TICKETS = "tickets"
    CHURN = "churn"
    OBJECTIVES = "objectives"
    TIME_ENTRIES = "timeentries"

    @property
    def label(self) -> str:
        return TARGETS[self].label

    @property
    def target(self) -> Target:
        return TARGETS[self]

    @property
    def is_object(self) -> bool:
        return TARGETS[self].host is Host.MAIN


METRIC_REQUIRED_FIELDS = ("dimensionId", "value", "externalId")
# The objects a metric can be about (the `model` field); a Literal so that typed decoders can check it in C.
MetricModel = Literal["Company", "EndUser", "Asset", "Project"]
METRIC_MODELS: tuple[str, ...] = get_args(MetricModel)

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
    BOOLEAN = "boolean"  # true/false; the texts "true" and "false" are converted (objects only)
    ARRAY = "array"  # a JSON array (objects only)


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
# Every analytics field a `field_mappings` entry may name, in a stable order.
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
    MAIN = "main"  # api.planhat.com or a regional host: the objects


# What to check when a host's name does not exist in DNS: where the connector takes that host from.
HOST_FIXES: Mapping[Host, str] = {
    Host.ANALYTICS: (
        "Check `analytics_base_url` (leave it empty for Planhat's https://analytics.planhat.com) and that this "
        "machine can resolve DNS names"
    ),
    Host.MAIN: (
        "Check `region`: it must be the prefix of your Planhat app's address (us2 for app-us2.planhat.com, eu for "
        "app-eu.planhat.com), or empty for app.planhat.com; or `api_base_url`, when it is set"
    ),
}


class MatchOn(str, Enum):
    """What an object's bulk upsert matches existing records on: a `streams` entry's `match_on`."""

    EXTERNAL_ID = "externalId"  # your own system's id
    SOURCE_ID = "sourceId"  # an integration's id
    PLANHAT_ID = "_id"  # Planhat's own id: every item updates an existing record
    NONE = "none"  # no key: every item creates a record (a resend creates it again)


# How a reference field names a parent by the parent's own keys instead of its Planhat id.
EXTID_PREFIX = "extid-"
SRCID_PREFIX = "srcid-"
# Planhat's ids are MongoDB ObjectIds: 24 hexadecimal digits.
PLANHAT_ID_LENGTH = 24


@dataclass(frozen=True)
class Reference:
    """A field of an object that points at a parent object (a company, a deal, a product).

    The field takes the parent's Planhat id. A record may instead give the parent's externalId or
    sourceId in a column named by `aliases` (companyExternalId, dealSourceId, ...), which the
    connector sends as `extid-<externalId>` / `srcid-<sourceId>`: the form Planhat documents for a
    company reference. For the references where Planhat documents only its own id
    (`by_planhat_id`: a line item's dealId and productId), that prefixed form is looked up by the
    sender once the parent is acknowledged, and replaced by the parent's Planhat id (sync/parent_ids.py).
    `bare_field`: the parent's externalId is also sent as it is in this field (notes' and tickets'
    companyExternalId, which their pages document beside companyId).
    """

    field: str
    parent: Endpoint
    many: bool = False  # the field is an array of references (issues' companyIds)
    aliases: tuple[tuple[str, str], ...] = (("companyExternalId", EXTID_PREFIX), ("companySourceId", SRCID_PREFIX))
    by_planhat_id: bool = False
    bare_field: str = ""


def reference_keys(reference: Reference, value: Any) -> Iterator[str]:
    """The parents' keys (`extid-...`, `srcid-...`) in a reference field's value."""
    for one in value if reference.many and type(value) is list else (value,):
        if type(one) is str and one.startswith((EXTID_PREFIX, SRCID_PREFIX)):
            yield one


def by_id_references(target: Target) -> tuple[Reference, ...]:
    """The target's references that Planhat takes only as the parent's Planhat id."""
    return tuple(reference for reference in target.references if reference.by_planhat_id)


def id_growth(target: Target, item: Mapping[str, Any]) -> int:
    """The most bytes an item's JSON can grow by when the keys in its by-id references become Planhat
    ids (0 for an object without such references): each key may become a PLANHAT_ID_LENGTH id."""
    growth = 0
    for reference in by_id_references(target):
        for key in reference_keys(reference, item.get(reference.field)):
            growth += max(0, PLANHAT_ID_LENGTH - len(key))
    return growth


def parent_reference(field: str, parent: Endpoint, stem: str, *, by_planhat_id: bool = False) -> Reference:
    """A reference whose aliases are `<stem>ExternalId` and `<stem>SourceId` (dealExternalId ...)."""
    aliases = ((f"{stem}ExternalId", EXTID_PREFIX), (f"{stem}SourceId", SRCID_PREFIX))
    return Reference(field, parent, aliases=aliases, by_planhat_id=by_planhat_id)


# Reading a list, `GET /{object}?select=<fields>&limit=<n>&offset=<k>`: how the connector finds the
# Planhat ids of parents by their keys (sync/parent_ids.py). The largest `limit` Planhat takes is not
# stated on the deal and product pages (2,000 is the usual maximum of its list reads): a read goes on
# until a page comes back empty, so that a smaller maximum on Planhat's side skips nothing.
LIST_PAGE_LIMIT = 2_000


def list_query(fields: tuple[str, ...], offset: int) -> str:
    """The query of one page of a list read: the fields to return, the page size, where it starts."""
    return f"select={','.join(fields)}&limit={LIST_PAGE_LIMIT}&offset={offset}"


class Operation(str, Enum):
    """What a stream does to its target's records: a `streams` entry's `operation` (archive is a
    delete's `archive: true`), or what the Airbyte UI's sync mode of a mapped stream means."""

    UPSERT = "upsert"  # a record with the key is updated, one without is created (the bulk upsert)
    UPDATE = "update"  # only records whose key Planhat has are sent: nothing is created
    INSERT = "insert"  # only records whose key Planhat lacks are sent: nothing is updated or duplicated
    DELETE = "delete"  # each record's object is deleted, by its key (DELETE /{object}/{id})
    ARCHIVE = "archive"  # each record's object gets `archived: true` (objects with the flag)


# What the Airbyte UI's sync mode of a mapped object stream means (airbyte-protocol DestinationSyncMode;
# the data-activation UI calls them Upsert, Update, Insert and Soft delete).
OBJECT_SYNC_MODES: Mapping[str, Operation] = {
    APPEND_DEDUP: Operation.UPSERT,
    UPDATE: Operation.UPDATE,
    APPEND: Operation.INSERT,
    SOFT_DELETE: Operation.DELETE,
}
# The flag an object is archived with (end users, conversations, issues: their pages list it).
ARCHIVED_FIELD = "archived"
# `{id}` in a call's path: one record's Planhat id (an ObjectId, 24 hexadecimal digits).
PLANHAT_ID_PATTERN = r"^[0-9a-fA-F]{24}$"


@dataclass(frozen=True)
class Call:
    """How one operation of a target is carried out: the request's method and path (below the host's
    base URL; `{id}` is one record's Planhat id, filled in per call), and how a 2xx answer is read
    (None: the status alone says it was done)."""

    method: str
    path: str
    read_answer: Optional[Callable[[bytes], PostResult]] = None
    per_record: bool = False  # one call per record (a delete), else one call per batch


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
    read_answer: Callable[[bytes], PostResult]  # a 2xx body -> items processed and rejected
    # Whether an acknowledgement must account for every item sent (done or refused): see
    # PostResult.shortfall and docs/planhat.md (What counts as an acknowledgement).
    answer_counts_every_item: bool
    base_url_field: str  # the config field with the host's base URL
    credential_fix: str  # what to check when the target refuses the credentials
    # Objects only: match_on value -> the item field it matches on (the keyables the object has).
    keyables: Mapping[str, str] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()  # parent references (companyId ...)
    model: str = ""  # objects: Planhat's model name, as a custom field's `parent` names it (GET /customfields)
    # Objects only: values sent for fields a record leaves out (a note's type is "note").
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Objects only: fields every item must carry, whatever `match_on` (tickets' email: Planhat drops a
    # ticket without one and says nothing, so it is refused here, where it is counted).
    always_required: tuple[str, ...] = ()
    # The operations the target has, each with its call; reading the keys Planhat has is `read_keys`.
    operations: Mapping[Operation, Call] = field(default_factory=dict)
    read_keys: Optional[Call] = None  # GET /{object}?select=...: the keys update, insert and delete need

    @property
    def sync_modes(self) -> Mapping[str, Operation]:
        """The sync modes discover offers for this target, and the operation each means: an object's
        four (Upsert, Update, Insert, Soft delete); `append` for Metrics and User Activities."""
        if not self.endpoint.is_object:
            return {APPEND: Operation.INSERT}
        return {mode: operation for mode, operation in OBJECT_SYNC_MODES.items() if operation in self.operations}

    @property
    def can_archive(self) -> bool:
        return Operation.ARCHIVE in self.operations

    @property
    def comparable_fields(self) -> tuple[str, ...]:
        """The fields `GET /{object}` returns as they are sent (not keys, references or custom, which come
        back in another form): what skip_unchanged compares an item with."""
        keys = set(self.keyables.values()) | {"_id"}
        references = {reference.field for reference in self.references}
        return tuple(
            name
            for name, kind in self.fields.items()
            if kind is not FieldKind.OBJECT and name not in keys and name not in references
        )

    @property
    def matching_keys(self) -> list[list[str]]:
        """The item fields an object's upsert can match on, one key each (externalId, sourceId, _id)."""
        return [[field] for field in self.keyables.values()]


_ANALYTICS_TARGETS: dict[Endpoint, Target] = {
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
        read_answer=read_analytics_answer,
        # Planhat: on the analytics host, "200 means that we have successfully received the data for
        # processing" (a data sink). Its body must carry `processed` to be Planhat's answer, but a count
        # short of the items sent is still Planhat's receipt: those items are unconfirmed, not resent
        # (a metric sent twice may be summed).
        answer_counts_every_item=False,
        base_url_field="analytics_base_url",
        credential_fix=f"check `api_token`: it must be {WHERE_API_TOKEN}, allowed to write metrics",
        operations={Operation.INSERT: Call("POST", "/dimensiondata/{tenant}", read_analytics_answer)},
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
        read_answer=read_analytics_answer,
        # Planhat: on the analytics host, "200 means that we have successfully received the data for
        # processing" (a data sink). Its body must carry `processed` to be Planhat's answer, but a count
        # short of the items sent is still Planhat's receipt: those items are unconfirmed, not resent
        # (a metric sent twice may be summed).
        answer_counts_every_item=False,
        base_url_field="analytics_base_url",
        credential_fix=f"check `tenant_uuid`: it must be {WHERE_TENANT_TOKEN}",
        operations={Operation.INSERT: Call("POST", "/analytics/bulk/{tenant}", read_analytics_answer)},
    ),
}


# ----- Planhat objects (the main API's bulk upserts) ----------------------------------------------
# From Planhat's API reference (planhat.com/developers/api/<object>), first part of each property
# table; see docs/planhat.md for the objects left out and why. `custom` (an object) takes custom
# fields by name. Fields Planhat marks as automatic are left out (they are not written).

S, N, D, O, B, A = (  # noqa: E741 (one letter per kind keeps the field tables readable)
    FieldKind.STRING,
    FieldKind.NUMBER,
    FieldKind.DATE,
    FieldKind.OBJECT,
    FieldKind.BOOLEAN,
    FieldKind.ARRAY,
)
_KEYS = {"_id": S, "externalId": S, "sourceId": S}
_ALL_KEYS = {"externalId": "externalId", "sourceId": "sourceId", "_id": "_id"}
_COMPANY = (Reference("companyId", Endpoint.COMPANIES),)


_NOTE_COMPANY = (Reference("companyId", Endpoint.COMPANIES, bare_field="companyExternalId"),)


@dataclass(frozen=True)
class _Object:
    label: str
    model: str  # the `parent` of its custom fields in GET /customfields (the spelling is unconfirmed)
    fields: Mapping[str, FieldKind]
    required: tuple[str, ...]
    keyables: Mapping[str, str] = field(default_factory=lambda: dict(_ALL_KEYS))
    references: tuple[Reference, ...] = _COMPANY
    defaults: Mapping[str, Any] = field(default_factory=dict)
    always_required: tuple[str, ...] = ()


OBJECTS: Mapping[Endpoint, _Object] = {
    Endpoint.COMPANIES: _Object(
        "Companies",
        "Company",
        {**_KEYS, "name": S, "owner": S, "coOwner": S, "phase": S, "status": S, "domains": A, "custom": O},
        ("name",),
        references=(),
    ),
    Endpoint.ENDUSERS: _Object(
        "End Users",
        "EndUser",
        {
            **_KEYS,
            "email": S,
            "companyId": S,
            "firstName": S,
            "lastName": S,
            "position": S,
            "phone": S,
            "tags": A,
            "featured": B,
            "primary": B,
            "archived": B,
            "custom": O,
        },
        ("email",),  # companyId too, unless the email's domain is a company's (Planhat assigns it then)
    ),
    Endpoint.ASSETS: _Object(
        "Assets",
        "Asset",
        {
            **_KEYS,
            "name": S,
            "companyId": S,
            "serialNumber": S,
            "value": N,
            "_currency": S,
            "installDate": D,
            "status": S,
            "ownerId": S,
            "custom": O,
        },
        ("name", "companyId"),
    ),
    Endpoint.PROJECTS: _Object(
        "Projects",
        "Project",
        {
            **_KEYS,
            "name": S,
            "companyId": S,
            "currency": S,
            "startDate": D,
            "endDate": D,
            "mrr": N,
            "arr": N,
            "nrr": N,
            "custom": O,
        },
        ("name", "companyId"),
    ),
    Endpoint.LICENSES: _Object(
        "Licenses",
        "License",
        {
            **_KEYS,
            "companyId": S,
            "_currency": S,
            "fromDate": D,
            "toDate": D,
            "product": S,
            "fixedPeriod": B,
            "mrr": N,
            "value": N,
            "renewalStatus": S,
            "autoRenews": B,
            "renewalPeriod": N,
            "noticePeriod": N,
            "custom": O,
        },
        ("_currency", "companyId", "fromDate"),
    ),
    Endpoint.SALES: _Object(
        "Sales",
        "Sale",
        {**_KEYS, "companyId": S, "_currency": S, "salesDate": D, "value": N, "product": S, "custom": O},
        ("_currency", "companyId", "salesDate", "value"),
    ),
    Endpoint.OPPORTUNITIES: _Object(
        "Opportunities",
        "Opportunity",
        {
            **_KEYS,
            "companyId": S,
            "title": S,
            "salesStage": S,
            "_currency": S,
            "status": S,
            "dealDate": D,
            "landingDate": D,
            "closeDate": D,
            "ownerId": S,
            "mrr": N,
            "arr": N,
            "nrr": N,
            "contractLength": N,
            "custom": O,
        },
        ("companyId",),
    ),
    Endpoint.CONVERSATIONS: _Object(
        "Conversations",
        "Conversation",
        {
            **_KEYS,
            "companyId": S,
            "type": S,
            "subject": S,
            "description": S,
            "snippet": S,
            "date": D,
            "outDate": D,
            "users": A,
            "activityTags": A,
            "tags": A,
            "starred": B,
            "pinned": B,
            "archived": B,
            "custom": O,
        },
        ("companyId",),
    ),
    Endpoint.ISSUES: _Object(
        "Issues",
        "Issue",
        {
            "_id": S,
            "sourceId": S,
            "title": S,
            "description": S,
            "source": S,
            "sourceUrl": S,
            "priority": S,
            "status": S,
            "archived": B,
            "companyIds": A,
            "enduserIds": A,
            "conversationIds": A,
            "followers": A,
            "custom": O,
        },
        ("title",),
        keyables={"sourceId": "sourceId", "_id": "_id"},
        references=(Reference("companyIds", Endpoint.COMPANIES, many=True),),
    ),
    Endpoint.INVOICES: _Object(
        "Invoices",
        "Invoice",
        # Dates of invoices are days since 1970-01-01 (integers), as Planhat's invoice page says.
        {
            "_id": S,
            "sourceId": S,
            "extId": S,
            "cId": S,
            "currency": S,
            "product": S,
            "status": S,
            "invoiceDate": N,
            "dueDate": N,
            "paidDate": N,
            "amountTotal": N,
            "custom": O,
        },
        ("currency", "cId"),
        keyables={"externalId": "extId", "sourceId": "sourceId", "_id": "_id"},
        references=(Reference("cId", Endpoint.COMPANIES),),
    ),
    Endpoint.CAMPAIGNS: _Object(
        "Campaigns",
        "Campaign",
        {**_KEYS, "name": S, "companyId": S, "campaignPurpose": S, "custom": O},
        ("name", "companyId"),
    ),
    Endpoint.TASKS: _Object(
        "Tasks",
        "Task",
        {
            **_KEYS,
            "mainType": S,
            "companyId": S,
            "action": S,
            "description": S,
            "startTime": D,
            "endTime": D,
            "dateDone": D,
            "repeat": S,
            "repeatDays": N,
            "type": S,
            "ownerId": S,
            "custom": O,
        },
        ("mainType", "companyId"),
    ),
    Endpoint.NPS: _Object(
        "NPS",
        "Nps",
        {
            "_id": S,
            "sourceId": S,
            "email": S,
            "score": N,
            "cId": S,
            "campaignId": S,
            "comment": S,
            "source": S,
            "dateSent": D,
            "dateAnswered": D,
            "custom": O,
        },
        ("email", "score"),
        keyables={"sourceId": "sourceId", "_id": "_id"},
        references=(Reference("cId", Endpoint.COMPANIES),),
    ),
    # ----- Planhat's revenue model (2026): a deal belongs to a company, a line item to a deal, and a
    # line item may name a product, whose values fill the fields the line item leaves out.
    Endpoint.DEALS: _Object(
        "Deals",
        "Deal",
        {
            **_KEYS,
            "name": S,
            "companyId": S,
            "stage": S,
            "ownerId": S,
            "followers": A,
            "mrr": N,
            "total": N,
            "fees": N,
            "currency": S,
            "closeDate": D,
            "custom": O,
        },
        ("companyId",),
    ),
    Endpoint.PRODUCTS: _Object(
        "Products",
        "Product",
        {
            **_KEYS,
            "name": S,
            "type": S,
            "mrr": N,
            "value": N,
            "currency": S,
            "fixedPeriod": B,
            "autoRenews": B,
            "length": N,
            "renewalMrr": N,
            "renewalPeriod": N,
            "noticePeriod": N,
            "noticeUnit": S,
            "packages": A,
            "color": S,
            "custom": O,
        },
        ("name",),
        references=(),
    ),
    Endpoint.LINE_ITEMS: _Object(
        "Line Items",
        "LineItem",
        {
            "_id": S,
            "externalId": S,
            "dealId": S,
            "productId": S,
            "name": S,
            "type": S,
            "status": S,
            "fromDate": D,
            "toDate": D,
            "fixedPeriod": B,
            "length": N,
            "mrr": N,
            "arr": N,
            "value": N,
            "currency": S,
            "autoRenews": B,
            "renewalMrr": N,
            "renewalPeriod": N,
            "noticePeriod": N,
            "noticeUnit": S,
            "custom": O,
        },
        # fromDate: every subscription and fee needs a start date, which a product cannot give.
        ("dealId", "fromDate"),
        keyables={"externalId": "externalId", "_id": "_id"},
        # The deal first: with an externalId key, the deal's reference is part of the merge key.
        references=(
            parent_reference("dealId", Endpoint.DEALS, "deal", by_planhat_id=True),
            parent_reference("productId", Endpoint.PRODUCTS, "product", by_planhat_id=True),
        ),
    ),
    # ----- Notes and tickets are Conversations in Planhat, written through their own endpoints.
    Endpoint.NOTES: _Object(
        "Notes",
        "Conversation",
        {
            **_KEYS,
            "companyId": S,
            "type": S,
            "subject": S,
            "description": S,
            "date": D,
            "activityTags": A,
            "users": A,
            "endusers": A,
            "custom": O,
        },
        ("companyId", "type"),
        references=_NOTE_COMPANY,
        defaults={"type": "note"},
    ),
    Endpoint.TICKETS: _Object(
        "Tickets",
        "Conversation",
        {
            "_id": S,
            "sourceId": S,
            "companyId": S,
            "email": S,
            "source": S,
            "domains": A,
            "title": S,
            "description": S,
            "url": S,
            "tags": A,
            "type": S,
            "severity": S,
            "product": S,
            "timeSpent": N,
            "status": S,
            "history": A,
            "custom": O,
        },
        ("sourceId", "email", "companyId"),
        keyables={"sourceId": "sourceId", "_id": "_id"},
        references=_NOTE_COMPANY,
        always_required=("email",),
    ),
    Endpoint.CHURN: _Object(
        "Churn",
        "Churn",
        {"_id": S, "externalId": S, "companyId": S, "isChurn": B, "churnReason": S, "custom": O},
        ("companyId", "isChurn"),
        keyables={"externalId": "externalId", "_id": "_id"},
    ),
    Endpoint.OBJECTIVES: _Object(
        "Objectives",
        "Objective",
        {**_KEYS, "name": S, "health": N, "companyId": S, "custom": O},
        ("name", "companyId"),
    ),
    Endpoint.TIME_ENTRIES: _Object(
        "Time Entries",
        "TimeEntry",
        {
            **_KEYS,
            "companyId": S,
            "date": D,
            "hours": N,
            "isTimeOff": B,
            "description": S,
            "isBillable": B,
            "billingCode": S,
            "currency": S,
            "billableRate": N,
            "costRate": N,
            "custom": O,
        },
        ("date", "hours"),  # companyId is not required: a time entry may be about no company
    ),
}


def _object_operations(path: str, spec: _Object) -> dict[Operation, Call]:
    """An object's operations: update-only and insert-only are the bulk upsert given only the items
    whose key Planhat has (lacks); a delete is one call per record, by Planhat id; an archive is the
    bulk upsert of `{key, archived: true}`, for objects with the flag."""
    upsert = Call("PUT", path, read_upsert_answer)
    operations = {
        Operation.UPSERT: upsert,
        Operation.UPDATE: upsert,
        Operation.INSERT: upsert,
        Operation.DELETE: Call("DELETE", path + "/{id}", per_record=True),
    }
    if spec.fields.get(ARCHIVED_FIELD) is FieldKind.BOOLEAN:
        operations[Operation.ARCHIVE] = upsert
    return operations


def _object_target(endpoint: Endpoint, spec: _Object) -> Target:
    path = "/" + endpoint.value
    return Target(
        endpoint=endpoint,
        label=spec.label,
        host=Host.MAIN,
        method="PUT",
        path=path,
        needs_api_token=True,
        fields=spec.fields,
        required=spec.required,
        one_of=(),
        max_items=MAX_UPSERT_ITEMS,
        max_body_bytes=SAFE_BODY_BYTES,
        read_answer=read_upsert_answer,
        answer_counts_every_item=True,  # an upsert's answer counts each item created, updated or refused
        base_url_field="api_base_url",
        credential_fix=(
            f"check `api_token`: it must be {WHERE_API_TOKEN}, and its Service Account needs the permission to "
            f"read and write {spec.label} (in Planhat: Settings > Service Accounts > the account's permissions)"
        ),
        keyables=spec.keyables,
        references=spec.references,
        model=spec.model,
        defaults=spec.defaults,
        always_required=spec.always_required,
        operations=_object_operations(path, spec),
        read_keys=Call("GET", path),
    )


TARGETS: Mapping[Endpoint, Target] = {
    **_ANALYTICS_TARGETS,
    **{endpoint: _object_target(endpoint, spec) for endpoint, spec in OBJECTS.items()},
}
OBJECT_ENDPOINTS = tuple(OBJECTS)
ANALYTICS_ENDPOINTS = (Endpoint.METRICS, Endpoint.USER_ACTIVITIES)

# Derived from the descriptions above, for the modules that look up one aspect by endpoint.
ENDPOINT_PATHS = {endpoint: target.path for endpoint, target in TARGETS.items()}
ENDPOINT_NEEDS_API_TOKEN = {endpoint: target.needs_api_token for endpoint, target in TARGETS.items()}
FIELD_KINDS = {endpoint: dict(target.fields) for endpoint, target in TARGETS.items()}
ENDPOINT_FIELDS = {endpoint: tuple(target.fields) for endpoint, target in TARGETS.items()}
