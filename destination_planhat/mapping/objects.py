"""One Airbyte record -> one Planhat object item (a company, an end user, ...), checked, with its key.

The analytics mapper (mapping/analytics.py) is tuned for millions of small metrics; objects
come at most 5,000 per request and 200 requests per minute, so this mapper is plain Python.

What a record becomes:
- each standard field of the object (planhat.OBJECTS) from its `field_mappings` entry, else from
  the record's column of the same name, converted to the field's kind (FieldKind);
- `custom.<Field name>` mappings into `custom`; with `unmapped_columns: custom`, every other
  column too, under its own name; a record's `custom` column (an object) is merged in;
- a parent's externalId or sourceId (`companyExternalId` / `companySourceId`, `dealExternalId`, ...,
  as a column or a mapping) as the reference field in Planhat's form, `extid-<id>` / `srcid-<id>`
  (for a deal or a product, the sender replaces that form by the parent's Planhat id: sync/parent_ids.py);
  where the object's page documents a field for the company's bare externalId too (notes' and
  tickets' `companyExternalId`), it is sent there as well;
- a field the record leaves out that has a default (a note's `type`) is sent with it;
- null values are left out: a bulk upsert changes only the fields it is sent.

A field every item must carry whatever `match_on` (`always_required`: a ticket's email, without which
Planhat drops the ticket silently) is checked for every item, and an item without it is refused here.

With a key (`match_on` other than none) an item without it is refused here: sent without its key
it would create a record, and a resend would create it again. Planhat's required fields can only be
checked for items that must be creates (`match_on: none`): with a key, an item may update a record
that has them. The merge key (`merge_key`) is what makes two items of one request the same record:
the key's value, and for externalId (unique per company) the company reference with it.

As for analytics streams, routing compiles each object stream once (`compile_object`: the plan and
every problem of the settings) and keeps the plan on the route; `build_object_mapper` takes that plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

from destination_planhat.config import StreamSettings, UnmappedColumns
from destination_planhat.mapping.analytics import (
    Invalid,
    RecordRejected,
    declared_properties,
    dig,
    example_of,
    source_field_problem,
    split_path,
)
from destination_planhat.mapping.value_checks import BAD, convert_constant, to_date, to_number, to_object, to_string
from destination_planhat.planhat.api import CUSTOM_PREFIX, EXTID_PREFIX, FieldKind, MatchOn, Target

Item = dict[str, Any]
CUSTOM = "custom"
MergeKey = Optional[tuple[str, ...]]
ObjectMapper = Callable[[Mapping[str, Any]], tuple[Union[Item, Invalid], MergeKey]]


def to_boolean(value: Any) -> Any:
    if type(value) is bool:
        return value
    if type(value) is str and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return BAD


def to_array(value: Any) -> Any:
    return value if type(value) is list else BAD


OBJECT_CONVERTERS: dict[FieldKind, Callable[[Any], Any]] = {
    FieldKind.STRING: to_string,
    FieldKind.NUMBER: to_number,
    FieldKind.DATE: to_date,
    FieldKind.OBJECT: to_object,
    FieldKind.BOOLEAN: to_boolean,
    FieldKind.ARRAY: to_array,
}
KIND_WORDS = {
    FieldKind.STRING: "a string",
    FieldKind.NUMBER: "a number",
    FieldKind.DATE: "an ISO 8601 date or date-time",
    FieldKind.OBJECT: "a JSON object",
    FieldKind.BOOLEAN: "true or false",
    FieldKind.ARRAY: "a JSON array",
}


def _constant(text: str, kind: FieldKind) -> Any:
    if kind is FieldKind.ARRAY:
        try:
            parsed = json.loads(text)
        except ValueError:
            return BAD
        return parsed if type(parsed) is list else BAD
    if kind is FieldKind.BOOLEAN:
        return to_boolean(text)
    return convert_constant(text, kind)


@dataclass(frozen=True)
class ObjectField:
    """One value of the item: where it comes from, where it goes, how it is converted."""

    source: tuple[str, ...]  # a column, or a dot path
    target: str  # a standard field, or "custom.<name>"
    convert: Callable[[Any], Any]
    reason: str  # when the conversion fails
    prefix: str = ""  # a parent reference given by the parent's externalId/sourceId
    many: bool = False  # the reference field is an array


@dataclass(frozen=True)
class ObjectPlan:
    """An object stream's mapping, compiled from its settings and schema."""

    target: Target
    fields: tuple[ObjectField, ...]
    constants: Item
    key_field: Optional[str]  # the item field match_on names; None with match_on: none
    match_on: MatchOn
    custom_columns: bool  # unmapped_columns: custom
    used_columns: frozenset[str]  # top-level columns read by `fields` (not custom with unmapped_columns)
    company_field: Optional[str]  # the company reference, part of an externalId merge key


def object_field_names(target: Target) -> list[str]:
    """What a `planhat_field` of an object stream may name (besides custom.<name>)."""
    names = list(target.fields)
    for reference in target.references:
        names.extend(alias for alias, _ in reference.aliases)
    return names


def compile_object(
    label: str, target: Target, settings: Optional[StreamSettings], json_schema: Optional[Mapping[str, Any]]
) -> tuple[ObjectPlan, list[str]]:
    """The plan of an object stream's mapper and every problem of its settings (empty when it is
    usable; otherwise the plan leaves out what is wrong, and must not be used)."""
    where = f"stream '{label}' ({target.label})"
    problems: list[str] = []
    properties = declared_properties(json_schema)
    match_on = settings.effective_match_on if settings else MatchOn.EXTERNAL_ID
    key_field: Optional[str] = None
    if match_on is not MatchOn.NONE:
        key_field = target.keyables.get(match_on.value)
        if key_field is None:
            problems.append(
                f"{where}: match_on '{match_on.value}' is not a key of {target.label}; choose one of "
                f"{', '.join([*target.keyables, 'none'])}"
            )
    if settings is not None and settings.unpivot_columns:
        problems.append(f"{where}: unpivot_columns only apply to Metrics; remove them")
    aliases = {alias: (reference, prefix) for reference in target.references for alias, prefix in reference.aliases}
    mapped: dict[str, Any] = {}
    for number, mapping in enumerate(settings.field_mappings if settings else (), start=1):
        entry = f"{where}, field_mappings entry {number}"
        name = mapping.planhat_field
        is_custom = name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX)
        if not is_custom and name not in target.fields and name not in aliases:
            problems.append(
                f"{entry}: '{name}' is not a field of {target.label}; choose one of "
                f"{', '.join(object_field_names(target))}, or custom.<Field name> for a custom field"
            )
            continue
        if name in mapped:
            problems.append(f"{entry}: '{name}' is mapped twice; keep one entry for it")
            continue
        mapped[name] = mapping
        kind = target.fields.get(name, FieldKind.STRING)
        if mapping.constant not in (None, "") and not is_custom and _constant(mapping.constant, kind) is BAD:
            problems.append(f"{entry}: the constant {mapping.constant!r} for '{name}' is not {KIND_WORDS[kind]}")
        if mapping.source_field is not None and properties is not None:
            problem = source_field_problem(entry, mapping.source_field, name, properties)
            if problem:
                problems.append(problem)

    fields: list[ObjectField] = []
    constants: Item = {}

    def add(
        name: str, kind: FieldKind, prefix: str = "", many: bool = False, reference: str = "", bare: str = ""
    ) -> None:
        mapping = mapped.get(name)
        to = reference or name
        if mapping is not None and mapping.constant is not None:
            if mapping.constant == "":
                return
            value: Any = mapping.constant if name.startswith(CUSTOM_PREFIX) else _constant(mapping.constant, kind)
            if value is BAD:
                return
            if prefix:
                value = [prefix + mapping.constant] if many else prefix + mapping.constant
            if to.startswith(CUSTOM_PREFIX):
                constants.setdefault(CUSTOM, {})[to[len(CUSTOM_PREFIX) :]] = value
            else:
                constants[to] = value
            if bare:
                constants[bare] = mapping.constant
            return
        source = split_path(mapping.source_field, properties) if mapping is not None else (name,)
        convert = to_string if prefix else (OBJECT_CONVERTERS[kind] if not name.startswith(CUSTOM_PREFIX) else _as_is)
        reason = f"{name} is not {KIND_WORDS[FieldKind.STRING if prefix else kind]}"
        fields.append(ObjectField(source, to, convert, reason, prefix, many))
        if bare:  # the same value once more, as it is (companyExternalId beside companyId: "extid-...")
            fields.append(ObjectField(source, bare, to_string, reason))

    for name, kind in target.fields.items():
        add(name, kind)
    for alias, (reference, prefix) in aliases.items():
        bare = reference.bare_field if prefix == EXTID_PREFIX else ""
        add(alias, FieldKind.STRING, prefix, reference.many, reference.field, bare)
    for name in mapped:
        if name.startswith(CUSTOM_PREFIX):
            add(name, FieldKind.STRING)
    used = frozenset(f.source[0] for f in fields)
    custom_columns = settings is not None and settings.unmapped_columns is UnmappedColumns.CUSTOM
    company = next((r.field for r in target.references if not r.many), None)
    plan = ObjectPlan(target, tuple(fields), constants, key_field, match_on, custom_columns, used, company)
    return plan, problems


def _as_is(value: Any) -> Any:
    return value


def build_object_mapper(plan: ObjectPlan) -> ObjectMapper:
    """The mapper of one object stream, from the plan routing compiled (and found no problem in):
    record -> (item or Invalid, merge key). The mapper raises RecordRejected for an item that lacks
    its key (always refused, whatever `invalid_records` says)."""
    fields = plan.fields
    constants = plan.constants
    key_field = plan.key_field
    required = plan.target.required if plan.match_on is MatchOn.NONE else ()
    always_required = plan.target.always_required
    defaults = tuple(plan.target.defaults.items())
    standard = plan.target.fields
    used = plan.used_columns
    custom_columns = plan.custom_columns
    company_field = plan.company_field if key_field == plan.target.keyables.get("externalId") else None
    key_reason = (
        f"{key_field} is missing (match_on: {plan.match_on.value}); sent without it, the item would create a "
        "record, and a resend would create it again"
    )

    def map_record(data: Mapping[str, Any]) -> tuple[Union[Item, Invalid], MergeKey]:
        item: Item = {name: (dict(value) if type(value) is dict else value) for name, value in constants.items()}
        bad: Optional[tuple[str, str]] = None
        for f in fields:
            value = data.get(f.source[0]) if len(f.source) == 1 else dig(data, f.source)
            if value is None:
                continue
            converted = f.convert(value)
            if converted is BAD:
                if bad is None:
                    bad = (f.reason, example_of(f.target, value))
                converted = value
            elif f.prefix:
                converted = [f.prefix + converted] if f.many else f.prefix + converted
            if f.target == CUSTOM and type(converted) is dict:
                custom = item.setdefault(CUSTOM, {})
                if type(custom) is dict:
                    for name, inner in converted.items():
                        custom.setdefault(name, inner)  # a custom.<name> mapping wins over the column
                continue
            if f.target.startswith(CUSTOM_PREFIX):
                custom = item.setdefault(CUSTOM, {})
                if type(custom) is dict:
                    custom[f.target[len(CUSTOM_PREFIX) :]] = converted
                continue
            item[f.target] = converted
        if custom_columns:
            for column, value in data.items():
                if column in used or column in standard or value is None:
                    continue
                custom = item.setdefault(CUSTOM, {})
                if type(custom) is dict:
                    custom.setdefault(column, value)
        for name, default in defaults:
            if item.get(name) is None:
                item[name] = default
        for name in always_required:
            value = item.get(name)
            if value is None or value == "":
                raise RecordRejected(
                    f"{name} is missing: Planhat drops {plan.target.label.lower()} without it without saying so, "
                    "so it is refused here, where it is counted"
                )
        key: MergeKey = None
        if key_field is not None:
            value = item.get(key_field)
            if value is None or value == "":
                raise RecordRejected(key_reason)
            key = (str(value), str(item.get(company_field, ""))) if company_field else (str(value),)
        if bad is not None:
            return Invalid(bad[0], bad[1], item), key
        for name in required:
            value = item.get(name)
            if value is None or value == "":
                return Invalid(
                    f"{name} is missing (required to create {plan.target.label})", example_of("item", item), item
                ), key
        return item, key

    return map_record


def merge_items(earlier: Item, later: Item) -> Item:
    """Two items of one record in one request: later values win, field by field; custom merged too."""
    merged = dict(earlier)
    for name, value in later.items():
        if name == CUSTOM and type(value) is dict and type(merged.get(CUSTOM)) is dict:
            merged[CUSTOM] = {**merged[CUSTOM], **value}
        else:
            merged[name] = value
    return merged
