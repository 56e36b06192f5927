"""Planhat's main API objects, as the sandbox plays them: the object table, the records, bulk upsert.

Why a module of its own: the analytics endpoints are data sinks, but the main API (`PUT /{object}`)
keeps records, matches items to them on keys and answers per item. That logic is pure (no HTTP, no
threads) so that it can be read and tested as Planhat's rules; `planhat_sandbox` serves it over HTTP
and adds auth, permissions, rate limiting and faults. It never imports the connector: the sandbox
must be able to tell the connector it is wrong.

What Planhat documents, with sources, and which points are the sandbox's own reading of something
undocumented (the error entry's shape, 400 when every item fails, an unmatched `_id`, ...) is
written up in the team notes planhat-objects.md, one section per object; the table below follows it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# Planhat: "For all bulk upsert operations, regardless the model there is an upper limit of 5,000
# items per request."
MAX_BULK_ITEMS = 5000

EXTID_PREFIX = "extid-"
SRCID_PREFIX = "srcid-"

# Reasons in the error entries of an answer (Planhat's own entry shape is undocumented).
MISSING_REQUIRED = "missing_required"
COMPANY_NOT_FOUND = "company_not_found"
NOT_FOUND = "not_found"
NOT_AN_OBJECT = "not_an_object"
INVALID_CUSTOM = "invalid_custom"
DUPLICATED = "duplicated"
NO_PERMISSION = "no_permission"
PARENT_NOT_FOUND = "parent_not_found"
INVALID_VALUE = "invalid_value"

# Custom field types Planhat lists on its Custom Field page.
CUSTOM_FIELD_TYPES = (
    "number",
    "text",
    "rich text",
    "checkbox",
    "day",
    "date",
    "list",
    "multipicklist",
    "team member",
    "team members",
    "rating",
    "phone",
    "email",
    "enduser",
    "endusers",
    "url",
)
_CUSTOM_FIELD_FLAGS = ("isFeatured", "isHidden", "isShared", "isLocked", "isMandatory", "isFormula")

# Keyables whose uniqueness Planhat scopes to the record's company ("externalId: unique per Company").
_COMPANY_SCOPED_KEYS = frozenset({"externalId", "extId"})


@dataclass(frozen=True, slots=True)
class Link:
    """A reference to a parent record other than a company (a line item's deal and product).

    Planhat documents only its own id for these, so the sandbox takes nothing else (no ``extid-`` or
    ``srcid-`` form): a value that is not the Planhat id of a record of `parent` is an item error.
    `required`: a create needs it. `company`: the parent's company is the record's (a line item's
    externalId is unique per company, reached through its deal). `fills`: on create, the parent's
    values fill the fields the item leaves out (Planhat: "any fields defined on the product level not
    defined in the creation payload will be autofilled on the new line item").
    """

    field: str
    parent: str
    required: bool = False
    company: bool = False
    fills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """One Planhat object as the sandbox knows it.

    `company_field`: where the item names its company (a Planhat id, ``extid-<externalId>`` or
    ``srcid-<sourceId>``); `company_is_list` for issues' ``companyIds``. `company_required`: a create
    without a company that resolves is an error. `drop_without`: items lacking this field are dropped
    without an error (tickets without email, as Planhat documents). `links`: references to parents
    that are not companies. `create_rule`: what a create must also satisfy, given the record it would
    make (its missing fields, or why a value is wrong).
    """

    path: str
    model: str  # Planhat's model name, as a custom field's `parent` names it (unconfirmed spelling)
    keyables: tuple[str, ...]  # in match order
    required: tuple[str, ...] = ()
    company_field: str | None = "companyId"
    company_required: bool = True
    company_is_list: bool = False
    company_external_id_field: str | None = None  # e.g. tickets' companyExternalId (a bare externalId)
    company_by_email_domain: bool = False  # end users: a company whose `domains` has the email's domain
    drop_without: str | None = None
    links: tuple[Link, ...] = ()
    create_rule: Callable[[Mapping[str, Any]], tuple[list[str], str | None]] | None = None

    @property
    def scoped_by_company(self) -> bool:
        company_link = any(link.company for link in self.links)
        return (self.company_field is not None and not self.company_is_list) or company_link


# Line items (planhat.com/developers/api/line-item): every subscription and fee starts somewhere
# (fromDate, which the product cannot give: it is in `required`); a fee is a one-off "with a start date
# and value"; a subscription with fixedPeriod needs "fromDate, toDate, length and mrr/arr/value", an
# evergreen one (fixedPeriod false) "only fromDate and mrr/arr". A product fills what it has first.
# The sandbox's reading: type defaults to subscription; toDate can stand for length and the other way
# round, and value for mrr/arr with a fixed period (Planhat computes one from the others).
def _line_item_rule(record: Mapping[str, Any]) -> tuple[list[str], str | None]:
    kind = record.get("type") or "subscription"
    if kind not in ("subscription", "fee"):
        return [], f"type must be subscription or fee, got {kind!r}"
    if kind == "fee":
        return ([] if _present(record.get("value")) else ["value"]), None
    revenue = ("mrr", "arr", "value") if record.get("fixedPeriod") is True else ("mrr", "arr")
    missing = [] if any(_present(record.get(name)) for name in revenue) else ["/".join(revenue)]
    if record.get("fixedPeriod") is True and not (_present(record.get("toDate")) or _present(record.get("length"))):
        missing.append("toDate/length")
    return missing, None


# Time entries (planhat.com/developers/api/time-entry): "The total hours logged, must be positive,
# can be a decimal number, and between 0.1 and 24."
def _time_entry_rule(record: Mapping[str, Any]) -> tuple[list[str], str | None]:
    hours = record.get("hours")
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0.1 <= hours <= 24:
        return [], f"hours must be a number between 0.1 and 24, got {hours!r}"
    return [], None


# What a product gives a line item created with its productId (the product's defaults).
_PRODUCT_FILLS = (
    "type",
    "mrr",
    "value",
    "currency",
    "fixedPeriod",
    "autoRenews",
    "length",
    "renewalMrr",
    "renewalPeriod",
    "noticePeriod",
    "noticeUnit",
)


_STANDARD_KEYS = ("_id", "sourceId", "externalId")

OBJECTS: dict[str, ObjectSpec] = {
    spec.path: spec
    for spec in (
        ObjectSpec("companies", "Company", _STANDARD_KEYS, ("name",), company_field=None, company_required=False),
        ObjectSpec("endusers", "EndUser", _STANDARD_KEYS, ("email",), company_by_email_domain=True),
        ObjectSpec("assets", "Asset", _STANDARD_KEYS, ("name",)),
        ObjectSpec("projects", "Project", _STANDARD_KEYS, ("name",)),
        ObjectSpec("licenses", "License", _STANDARD_KEYS, ("_currency", "fromDate")),
        ObjectSpec("sales", "Sale", _STANDARD_KEYS, ("_currency", "salesDate", "value")),
        ObjectSpec("opportunities", "Opportunity", _STANDARD_KEYS),
        ObjectSpec("conversations", "Conversation", _STANDARD_KEYS),
        ObjectSpec(
            "issues",
            "Issue",
            ("_id", "sourceId"),
            ("title",),
            company_field="companyIds",
            company_required=False,
            company_is_list=True,
        ),
        ObjectSpec("invoices", "Invoice", ("_id", "sourceId", "extId"), ("currency",), company_field="cId"),
        ObjectSpec("campaigns", "Campaign", _STANDARD_KEYS, ("name",)),
        ObjectSpec("tasks", "Task", _STANDARD_KEYS, ("mainType",)),
        # Churn's page is a placeholder (it says so); its table: companyId and isChurn required, externalId.
        ObjectSpec("churn", "Churn", ("_id", "externalId"), ("isChurn",)),
        ObjectSpec("nps", "Nps", ("_id", "sourceId"), ("email", "score"), company_field="cId", company_required=False),
        ObjectSpec(
            "tickets",
            "Ticket",
            ("_id", "sourceId"),
            ("sourceId",),
            company_external_id_field="companyExternalId",
            drop_without="email",
        ),
        ObjectSpec(
            "users",
            "User",
            ("_id", "externalId"),
            ("email", "nickName", "firstName", "lastName"),
            company_field=None,
            company_required=False,
        ),
        ObjectSpec("deals", "Deal", _STANDARD_KEYS),
        ObjectSpec("products", "Product", _STANDARD_KEYS, ("name",), company_field=None, company_required=False),
        ObjectSpec(
            "lineitems",
            "LineItem",
            ("_id", "externalId"),
            ("fromDate",),
            company_field=None,
            company_required=False,
            links=(
                Link("dealId", "deals", required=True, company=True),
                Link("productId", "products", fills=_PRODUCT_FILLS),
            ),
            create_rule=_line_item_rule,
        ),
        # Notes are Conversations of type note; the page documents companyExternalId beside companyId.
        ObjectSpec("notes", "Conversation", _STANDARD_KEYS, ("type",), company_external_id_field="companyExternalId"),
        ObjectSpec("objectives", "Objective", _STANDARD_KEYS, ("name",)),
        ObjectSpec(
            "timeentries",
            "TimeEntry",
            _STANDARD_KEYS,
            ("date", "hours"),
            company_required=False,
            create_rule=_time_entry_rule,
        ),
    )
}


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (what items and records are), several times faster than
    copy.deepcopy: the sandbox's CPU competes with the connector's in benchmarks."""
    return orjson.loads(orjson.dumps(value))


def _present(value: object) -> bool:
    """A field counts as given unless it is absent, null or an empty string."""
    return value is not None and value != ""


def _key_text(value: object) -> str | None:
    """Keyable values are matched as text ("123" and 123 are one key); None when not a usable key."""
    if not _present(value) or isinstance(value, (dict, list, bool)):
        return None
    return str(value)


def _error(item: Any, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"item": item, "reason": reason, "message": message, **extra}


def empty_answer() -> dict[str, Any]:
    """The bulk upsert answer with nothing in it: every documented field, in documented order."""
    return {
        "created": 0,
        "createdErrors": [],
        "insertsKeys": [],
        "updated": 0,
        "updatedErrors": [],
        "updatesKeys": [],
        "nonupdates": 0,
        "modified": [],
        "upsertedIds": [],
        "permissionErrors": [],
    }


@dataclass(slots=True)
class UpsertResult:
    """What one bulk upsert did: the HTTP status and body Planhat would answer, and counts to log."""

    status: int
    body: dict[str, Any]
    items: int
    dropped: int = 0

    @property
    def processed(self) -> int:
        return int(self.body.get("created", 0)) + int(self.body.get("updated", 0))

    @property
    def errors(self) -> int:
        return sum(len(self.body.get(name, ())) for name in ("createdErrors", "updatedErrors", "permissionErrors"))


@dataclass(slots=True)
class _Plan:
    """One item of a request after the read-only pass: what it matched, its company, or its error."""

    position: int
    item: Any
    record_id: str | None = None  # the matched record: an update
    company: str | None = None  # resolved company id (single company field)
    companies: list[str] | None = None  # resolved ids (list company field)
    fills: dict[str, Any] | None = None  # values a linked parent gives a create (a line item's product)
    error: dict[str, Any] | None = None
    dropped: bool = False


@dataclass(slots=True)
class _ObjectStats:
    created: int = 0
    updated: int = 0
    errors: int = 0


class _References:
    """How a record names its company and its other parents: references resolved to Planhat ids, as
    Planhat resolves them (a Planhat id, `extid-...`, `srcid-...`, or a company found by email domain),
    and what a parent gives its child (its company, the fields a product fills). Part of ObjectStore."""

    _records: dict[str, dict[str, dict[str, Any]]]
    # (object, keyable) -> key text -> record ids holding it, oldest first
    _index: dict[tuple[str, str], dict[str, list[str]]]

    def resolve_company(self, reference: object) -> str | None:
        """A company reference (Planhat id, ``extid-…``, ``srcid-…``) -> the company's Planhat id."""
        if not isinstance(reference, str) or not reference:
            return None
        if reference.startswith(EXTID_PREFIX):
            return self._first("companies", "externalId", reference[len(EXTID_PREFIX) :])
        if reference.startswith(SRCID_PREFIX):
            return self._first("companies", "sourceId", reference[len(SRCID_PREFIX) :])
        return reference if reference in self._records["companies"] else None

    def _first(self, name: str, key: str, text: str, company: str | None = None) -> str | None:
        ids = self._index.get((name, key), {}).get(text, [])
        spec = OBJECTS[name]
        if company is not None and spec.scoped_by_company and key in _COMPANY_SCOPED_KEYS:
            ids = [rid for rid in ids if self._company_of(spec, self._records[name][rid]) == company]
        return ids[0] if ids else None

    def _company_of(self, spec: ObjectSpec, record: Mapping[str, Any]) -> str | None:
        """The Planhat id of a stored record's company: its own field, or its linked parent's."""
        if spec.company_field is not None and not spec.company_is_list:
            company = record.get(spec.company_field)
            return company if isinstance(company, str) else None
        for link in spec.links:
            parent = self._records[link.parent].get(str(record.get(link.field)))
            if link.company and parent is not None:
                return self._company_of(OBJECTS[link.parent], parent)
        return None

    def _company_by_domain(self, email: object) -> str | None:
        if not isinstance(email, str) or "@" not in email:
            return None
        domain = email.rsplit("@", 1)[1].lower()
        for company_id, company in self._records["companies"].items():
            domains = company.get("domains")
            if isinstance(domains, list) and domain in (str(d).lower() for d in domains):
                return company_id
        return None

    def _resolve_item_company(self, spec: ObjectSpec, item: dict[str, Any], plan: _Plan) -> tuple[bool, dict | None]:
        """Resolve the item's company reference(s) into `plan`; (whether one was given, its error)."""
        if spec.company_field is None:
            return False, None
        if spec.company_is_list:
            references = item.get(spec.company_field)
            if references is None:
                return False, None
            if not isinstance(references, list):
                return True, _error(item, COMPANY_NOT_FOUND, f"{spec.company_field} must be an array of company ids")
            resolved = [self.resolve_company(ref) for ref in references]
            unknown = [ref for ref, rid in zip(references, resolved) if rid is None]
            if unknown:
                return True, _error(item, COMPANY_NOT_FOUND, f"no company matches {unknown[0]!r}")
            plan.companies = [rid for rid in resolved if rid is not None]
            return True, None
        reference = item.get(spec.company_field)
        if _present(reference):
            plan.company = self.resolve_company(reference)
            if plan.company is None:
                return True, _error(item, COMPANY_NOT_FOUND, f"no company matches {spec.company_field} {reference!r}")
            return True, None
        if spec.company_external_id_field is not None and _present(item.get(spec.company_external_id_field)):
            external_id = item[spec.company_external_id_field]
            plan.company = self.resolve_company(EXTID_PREFIX + str(external_id))
            if plan.company is None:
                return True, _error(item, COMPANY_NOT_FOUND, f"no company has externalId {external_id!r}")
            return True, None
        return False, None

    def _resolve_links(self, spec: ObjectSpec, item: dict[str, Any], plan: _Plan) -> dict[str, Any] | None:
        """Check the item's parents that are not companies (only Planhat ids are taken); note the
        company they carry and the values they fill. Returns the item's error, if any."""
        for link in spec.links:
            reference = item.get(link.field)
            if not _present(reference):
                continue
            parent = self._records[link.parent].get(reference) if isinstance(reference, str) else None
            if parent is None:
                return _error(
                    item,
                    PARENT_NOT_FOUND,
                    f"no {link.parent} record has _id {reference!r} ({link.field} takes a Planhat id)",
                    field=link.field,
                )
            if link.company:
                plan.company = self._company_of(OBJECTS[link.parent], parent)
            if link.fills:
                plan.fills = {name: _copy(parent[name]) for name in link.fills if name in parent}
        return None

    def _apply_company(self, spec: ObjectSpec, record: dict[str, Any], plan: _Plan) -> None:
        """Store company references as Planhat ids, and the company's name where Planhat adds one."""
        field_name = spec.company_field
        if field_name is None:  # companies and users: no company reference
            return
        if spec.company_is_list:
            if plan.companies is not None:
                record[field_name] = list(plan.companies)
            return
        if plan.company is None:
            return
        record[field_name] = plan.company
        name_field = "cName" if field_name == "cId" else "companyName"
        record[name_field] = self._records["companies"][plan.company].get("name")


class ObjectStore(_References):
    """The records of every object, with key indexes. Not thread-safe: the sandbox holds a lock."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        # (object, keyable) -> key text -> record ids holding it, oldest first
        self._index: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._next_id = 0
        self.stats: dict[str, _ObjectStats] = {name: _ObjectStats() for name in OBJECTS}

    # ---- reading -------------------------------------------------------------------------

    def records(self, name: str) -> list[dict[str, Any]]:
        """Deep copies of the object's records, in creation order."""
        return copy.deepcopy(list(self._spec_records(name).values()))

    def counts(self) -> dict[str, int]:
        return {name: len(records) for name, records in self._records.items()}

    def page(self, name: str, limit: int, offset: int, select: Sequence[str] = ()) -> list[dict[str, Any]]:
        """One page of a list read; with `select`, only those fields of each record (and its _id)."""
        records = list(self._spec_records(name).values())[offset : offset + limit]
        if select:
            fields = {"_id", *select}
            records = [{k: v for k, v in record.items() if k in fields} for record in records]
        return copy.deepcopy(records)

    def delete(self, name: str, record_id: str) -> bool:
        """`DELETE /{object}/{id}`: the record removed, and its keys with it. False when there is none
        (Planhat answers 404 then). What else a delete does in Planhat (a company's end users, licenses)
        is not documented: the sandbox removes the one record only."""
        records = self._spec_records(name)
        record = records.pop(record_id, None)
        if record is None:
            return False
        spec = OBJECTS[name]
        self._reindex(spec, record_id, record, {})
        return True

    def _spec_records(self, name: str) -> dict[str, dict[str, Any]]:
        if name not in OBJECTS:
            raise ValueError(f"unknown Planhat object {name!r}; known: {', '.join(OBJECTS)}")
        return self._records[name]

    # ---- writing -------------------------------------------------------------------------

    def bulk_upsert(self, name: str, items: Sequence[Any], *, may_create: bool = True) -> UpsertResult:
        """Planhat's ``PUT /{name}`` with `items`: match, create or update, answer per item.

        Three passes: a read-only one (shape, company, match, errors), a duplicate check over the
        whole request (any duplicated key refuses the request with 400 and changes nothing), then
        the writes. `may_create=False` (a token allowed to update but not to create): an item that
        would create a record is listed in permissionErrors, the others are done, and the answer is
        403 (Planhat: 403 when "you don't have the right permissions to execute one or all the
        operations. Check the permissionErrors section").
        """
        spec = OBJECTS[name]
        answer = empty_answer()
        if len(items) > MAX_BULK_ITEMS:
            raise ValueError(f"at most {MAX_BULK_ITEMS} items per request")
        plans = [self._plan(spec, position, item) for position, item in enumerate(items)]

        duplicated = self._duplicates(spec, plans)
        if duplicated:
            for plan, key, value in duplicated:
                target = answer["updatedErrors"] if plan.record_id is not None else answer["createdErrors"]
                target.append(
                    _error(plan.item, DUPLICATED, f"{key} {value!r} is duplicated in the request", key=key, value=value)
                )
            self.stats[name].errors += len(duplicated)
            return UpsertResult(400, answer, len(items))

        dropped = 0
        for plan in plans:
            if plan.dropped:
                dropped += 1
            elif plan.error is not None:
                target = answer["updatedErrors"] if plan.record_id is not None else answer["createdErrors"]
                target.append(plan.error)
            elif plan.record_id is None and not may_create:
                answer["permissionErrors"].append(
                    _error(plan.item, NO_PERMISSION, f"this token may update {name} but not create them", object=name)
                )
            elif plan.record_id is not None:
                changed = self._update(spec, plan.record_id, plan)
                answer["updated"] += 1
                answer["updatesKeys"].append(self._keys_of(spec, plan.record_id, plan.item))
                answer["upsertedIds"].append(plan.record_id)
                if changed:
                    answer["modified"].append(plan.record_id)
                else:
                    answer["nonupdates"] += 1
            else:
                record_id = self._create(spec, plan)
                answer["created"] += 1
                answer["insertsKeys"].append(self._keys_of(spec, record_id, plan.item))
                answer["upsertedIds"].append(record_id)

        result = UpsertResult(200, answer, len(items), dropped)
        stats = self.stats[name]
        stats.created += answer["created"]
        stats.updated += answer["updated"]
        stats.errors += result.errors
        if answer["permissionErrors"]:
            result.status = 403
        elif result.errors:
            result.status = 206 if result.processed else 400
        return result

    def _plan(self, spec: ObjectSpec, position: int, item: Any) -> _Plan:
        plan = _Plan(position, item)
        if not isinstance(item, dict):
            plan.error = _error(item, NOT_AN_OBJECT, "item must be a JSON object")
            return plan
        if spec.drop_without is not None and not _present(item.get(spec.drop_without)):
            plan.dropped = True
            return plan
        company_given, company_error = self._resolve_item_company(spec, item, plan)
        link_error = self._resolve_links(spec, item, plan)
        company_error = company_error or link_error
        try:
            plan.record_id = self._match(spec, item, plan.company)
        except LookupError as missing:
            plan.error = _error(item, NOT_FOUND, str(missing))
            return plan
        if company_error is not None:
            plan.error = company_error
            return plan
        if "custom" in item and not isinstance(item["custom"], dict):
            plan.error = _error(item, INVALID_CUSTOM, "custom must be an object of custom field values")
            return plan
        if plan.record_id is None:
            plan.error = self._create_error(spec, item, plan, company_given)
        return plan

    def _match(self, spec: ObjectSpec, item: dict[str, Any], company: str | None) -> str | None:
        """The record the item updates, by the first keyable that matches; LookupError for an `_id`
        that matches nothing (Planhat ids are made by Planhat, so that cannot be a create)."""
        for key in spec.keyables:
            text = _key_text(item.get(key))
            if text is None:
                continue
            if key == "_id":
                if text in self._records[spec.path]:
                    return text
                continue
            found = self._first(spec.path, key, text, company)
            if found is not None:
                return found
        if _key_text(item.get("_id")) is not None:
            raise LookupError(f"no {spec.path} record has _id {item['_id']!r}")
        return None

    def _create_error(self, spec: ObjectSpec, item: dict[str, Any], plan: _Plan, company_given: bool) -> dict | None:
        record = {**(plan.fills or {}), **item}  # what the create would store
        missing = [name for name in spec.required if not _present(record.get(name))]
        missing += [link.field for link in spec.links if link.required and not _present(item.get(link.field))]
        invalid = None
        if spec.create_rule is not None and not missing:
            more, invalid = spec.create_rule(record)
            missing += more
        if spec.company_required and plan.company is None and not company_given:
            if spec.company_by_email_domain:
                plan.company = self._company_by_domain(item.get("email"))
            if plan.company is None:
                missing.append(spec.company_field or "company")
        if missing:
            return _error(
                item, MISSING_REQUIRED, f"required to create {spec.path}: {', '.join(missing)}", missing=missing
            )
        if invalid is not None:
            return _error(item, INVALID_VALUE, invalid)
        return None

    def _duplicates(self, spec: ObjectSpec, plans: list[_Plan]) -> list[tuple[_Plan, str, str]]:
        """Items of the request that share a keyable value (externalId within one company)."""
        groups: dict[tuple[str, str, str | None], list[_Plan]] = {}
        for plan in plans:
            if not isinstance(plan.item, dict) or plan.dropped:
                continue
            for key in spec.keyables:
                text = _key_text(plan.item.get(key))
                if text is None:
                    continue
                scope = plan.company if spec.scoped_by_company and key in _COMPANY_SCOPED_KEYS else None
                groups.setdefault((key, text, scope), []).append(plan)
        found: list[tuple[_Plan, str, str]] = []
        for (key, text, _), members in groups.items():
            if len(members) > 1:
                found.extend((plan, key, text) for plan in members)
        found.sort(key=lambda entry: entry[0].position)
        return found

    def _new_id(self) -> str:
        """24 hex digits, like Planhat's (MongoDB) ids; sequential, so runs are reproducible."""
        self._next_id += 1
        return f"5a{self._next_id:022x}"

    def _create(self, spec: ObjectSpec, plan: _Plan) -> str:
        record = {**(plan.fills or {}), **_copy(plan.item)}
        record_id = self._new_id()
        record["_id"] = record_id
        self._apply_company(spec, record, plan)
        self._records[spec.path][record_id] = record
        self._reindex(spec, record_id, {}, record)
        return record_id

    def _update(self, spec: ObjectSpec, record_id: str, plan: _Plan) -> bool:
        """The matched record `record_id` (plan.record_id) updated with the plan's item; True if it changed."""
        record = self._records[spec.path][record_id]
        before = _copy(record)
        for key, value in plan.item.items():
            if key == "_id":
                continue
            if key == "custom" and isinstance(record.get("custom"), dict):
                record["custom"] = {**record["custom"], **_copy(value)}
            else:
                record[key] = _copy(value)
        self._apply_company(spec, record, plan)
        self._reindex(spec, record["_id"], before, record)
        return record != before

    def _reindex(self, spec: ObjectSpec, record_id: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        for key in spec.keyables:
            if key == "_id":
                continue
            old, new = _key_text(before.get(key)), _key_text(after.get(key))
            if old == new:
                continue
            index = self._index.setdefault((spec.path, key), {})
            if old is not None and record_id in index.get(old, []):
                index[old].remove(record_id)
            if new is not None:
                index.setdefault(new, []).append(record_id)

    def _keys_of(self, spec: ObjectSpec, record_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """An insertsKeys / updatesKeys entry: the Planhat id and the keyables the item carried."""
        keys: dict[str, Any] = {"_id": record_id}
        for key in spec.keyables:
            if key != "_id" and _present(item.get(key)):
                keys[key] = item[key]
        return keys


# ---- custom fields ----------------------------------------------------------------------------


def normalize_custom_fields(fields: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Custom field definitions as ``GET /customfields`` lists them, with Planhat's defaults filled in.

    Raises ValueError for a definition without name, type or parent, or with an undocumented type.
    """
    normalized: list[dict[str, Any]] = []
    for number, definition in enumerate(fields, start=1):
        if not isinstance(definition, Mapping):
            raise ValueError(f"custom field #{number} must be an object, got {definition!r}")
        for required in ("name", "type", "parent"):
            if not isinstance(definition.get(required), str) or not definition[required]:
                raise ValueError(f"custom field #{number} needs a '{required}' string: {dict(definition)!r}")
        if definition["type"] not in CUSTOM_FIELD_TYPES:
            raise ValueError(
                f"custom field type must be one of {', '.join(CUSTOM_FIELD_TYPES)}, got {definition['type']!r}"
            )
        entry: dict[str, Any] = {"_id": f"5c{number:022x}"}
        entry.update({flag: False for flag in _CUSTOM_FIELD_FLAGS})
        entry["listValues"] = []
        entry.update(copy.deepcopy(dict(definition)))
        normalized.append(entry)
    return normalized


__all__ = [
    "Link",
    "MAX_BULK_ITEMS",
    "OBJECTS",
    "ObjectSpec",
    "ObjectStore",
    "UpsertResult",
    "empty_answer",
    "normalize_custom_fields",
    "CUSTOM_FIELD_TYPES",
]
