"""Turn one Airbyte record into the Planhat item(s) it stands for, checked before it is sent.

A mapper is compiled once per stream (dot paths split, constants converted to their field's type,
the checks of each field chosen) and then called once per record, so the per-record work is a
short loop over the endpoint's few fields with plain `type()` checks: no jsonschema, no pydantic.

What a mapper returns, per record: a sequence of items (usually one; unpivot makes one per
non-null column, possibly none). An item that fails the checks comes back as `Invalid`, carrying
the reason and the item as it would be sent unchecked; the writer decides, by `invalid_records`,
whether to reject it or to send it anyway. The mapper itself never knows that setting.

Config mistakes (an unknown Planhat field, a field of the other endpoint, unpivot on User
Activities, a source column the stream's schema does not have...) are found by the same compile
step, before anything is sent: `compile_mapping` returns the stream's plan with every problem of its
settings. Routing compiles each stream once, gathers the problems into its one config error, and
keeps the plan on the route; the mapper (`build_mapper`) and the parse workers' plan (`fast_plan`)
are made from that plan, never from the settings again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from destination_planhat.mapping.value_checks import (
    BAD,
    CONVERTERS,
    FastField,
    convert_constant,
    invalid_reason,
    is_dimension_id,
    to_number,
)
from destination_planhat.planhat.api import (
    ALL_FIELDS,
    DIMENSION_ID_CHARACTERS,
    ENDPOINT_FIELDS,
    FIELD_KINDS,
    METRIC_MODELS,
    METRIC_REQUIRED_FIELDS,
    USER_ACTIVITY_IDENTITY_FIELDS,
    Endpoint,
    FieldKind,
)

if TYPE_CHECKING:  # parse workers import this module; config.py would bring pydantic and the CDK to them
    from destination_planhat.config import FieldMapping, StreamSettings

Item = dict[str, Any]

# How many columns of a schema an error message lists before it says "...".
COLUMNS_IN_MESSAGES = 15


@dataclass(frozen=True)
class Invalid:
    """An item that failed local validation.

    `item` is what `invalid_records: send` sends: every field converted where it could be, the
    failing one left as the record had it. `example` is a short text for the log.
    """

    reason: str
    example: str
    item: Item


MapResult = Sequence[Union[Item, Invalid]]
Mapper = Callable[[Mapping[str, Any]], MapResult]


class RecordRejected(Exception):
    """A record that cannot become any Planhat item (e.g. its data is not an object)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----- compile: settings + schema -> plan, or the list of what to fix --------------------------


@dataclass(frozen=True)
class FieldSource:
    """Where one Planhat field's value comes from in every record of a stream."""

    field: str
    path: tuple[str, ...]  # the column, or the dot path into nested objects
    key: Optional[str]  # the column when `path` is one (the fast, common case), else None
    convert: Callable[[Any], Any]
    reason: str


@dataclass(frozen=True)
class MappingPlan:
    """A Metrics or User Activities stream's mapping, compiled from its settings and schema."""

    endpoint: Endpoint
    sources: tuple[FieldSource, ...]
    constants: Item
    unpivot: tuple[str, ...]
    dimension_ids: tuple[str, ...] = ()  # per unpivot column, its dimensionId (the column's name unless set)


def _source(field: str, path: tuple[str, ...], kind: FieldKind) -> FieldSource:
    return FieldSource(field, path, path[0] if len(path) == 1 else None, CONVERTERS[kind], invalid_reason(field, kind))


def declared_properties(json_schema: Optional[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The declared properties of a schema, or None when it declares none (then nothing can be checked)."""
    if not isinstance(json_schema, Mapping):
        return None
    properties = json_schema.get("properties")
    return properties if isinstance(properties, Mapping) and properties else None


def split_path(path: str, properties: Optional[Mapping[str, Any]]) -> tuple[str, ...]:
    """A column whose own name has dots (declared so in the schema) is one key, not a path."""
    if "." not in path or (properties is not None and path in properties):
        return (path,)
    return tuple(path.split("."))


def source_field_problem(entry: str, source_field: str, field: str, properties: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with a mapping's `source_field` against the stream's declared properties, or None."""
    problem = _path_problem(split_path(source_field, properties), properties)
    if problem is None:
        return None
    return (
        f"{entry}: source_field '{source_field}' for '{field}': {problem}; fix the name, or refresh the source schema"
    )


def _path_problem(parts: tuple[str, ...], properties: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why a path cannot exist in the stream's records according to its schema, or None."""
    level = properties
    for depth, part in enumerate(parts):
        if level is None:
            return None  # the schema stops declaring properties here: nothing more to check
        if part not in level:
            where = "the stream's schema" if depth == 0 else f"the object '{'.'.join(parts[:depth])}'"
            return f"'{part}' is not a column of {where} (it has: {_columns(level)})"
        level = declared_properties(level[part]) if isinstance(level[part], Mapping) else None
    return None


def _columns(properties: Mapping[str, Any]) -> str:
    names = sorted(properties)
    shown = ", ".join(names[:COLUMNS_IN_MESSAGES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > COLUMNS_IN_MESSAGES else "")


def compile_mapping(
    label: str,
    endpoint: Endpoint,
    settings: Optional[StreamSettings],
    json_schema: Optional[Mapping[str, Any]],
) -> tuple[MappingPlan, list[str]]:
    """The plan of a stream's mapper and every problem of its settings (empty when it is usable;
    otherwise the plan leaves out what is wrong, and must not be used).

    With `json_schema=None` (the `check` command has no catalog) the checks against the schema
    are left out.
    """
    kinds = FIELD_KINDS[endpoint]
    fields = ENDPOINT_FIELDS[endpoint]
    other = Endpoint.USER_ACTIVITIES if endpoint is Endpoint.METRICS else Endpoint.METRICS
    properties = declared_properties(json_schema)
    mappings = settings.field_mappings if settings else ()
    pairs = settings.unpivot_pairs if settings else ()
    unpivot = tuple(column for column, _ in pairs)
    dimension_ids = tuple(dimension for _, dimension in pairs)
    where = f"stream '{label}' ({endpoint.label})"
    problems: list[str] = []

    mapped: dict[str, FieldMapping] = {}  # planhat field -> its entry
    for number, mapping in enumerate(mappings, start=1):
        entry = f"{where}, field_mappings entry {number}"
        field = mapping.planhat_field
        if field not in ALL_FIELDS:
            problems.append(f"{entry}: '{field}' is not a Planhat field; choose one of {', '.join(fields)}")
            continue
        if field not in kinds:
            problems.append(
                f"{entry}: '{field}' is a {other.label} field, not a {endpoint.label} one; map one of "
                f"{', '.join(fields)}, or set the stream's `endpoint` to {other.value}"
            )
            continue
        if field in mapped:
            problems.append(f"{entry}: '{field}' is mapped twice; keep one entry for it")
            continue
        mapped[field] = mapping
        if mapping.constant is not None:
            if mapping.constant == "":
                continue  # an empty constant leaves the field out; required fields are checked below
            if convert_constant(mapping.constant, kinds[field]) is BAD:
                problems.append(
                    f"{entry}: the constant {mapping.constant!r} for '{field}' is not valid: "
                    f"{_constant_hint(field, kinds[field])}"
                )
        elif mapping.source_field is not None and properties is not None:
            problem = source_field_problem(entry, mapping.source_field, field, properties)
            if problem:
                problems.append(problem)

    if unpivot:
        if endpoint is not Endpoint.METRICS:
            problems.append(
                f"{where}: unpivot_columns only apply to Metrics; remove them, or set the stream's `endpoint` to metrics"
            )
        for field in ("dimensionId", "value"):
            if field in mapped and endpoint is Endpoint.METRICS:
                problems.append(
                    f"{where}: '{field}' comes from unpivot_columns (the column's name and value); remove its "
                    "field_mappings entry"
                )
        seen: set[str] = set()
        for column, dimension in pairs:
            if column in seen:
                problems.append(f"{where}: unpivot column '{column}' is listed twice; keep one")
            seen.add(column)
            if not is_dimension_id(dimension):
                problems.append(
                    f"{where}: unpivot column '{column}' cannot be a dimensionId, which allows {DIMENSION_ID_CHARACTERS} "
                    'only; give it one: {"column": "' + column + '", "dimension_id": "..."}'
                    if column == dimension
                    else f"{where}: the dimension_id '{dimension}' of unpivot column '{column}' allows "
                    f"{DIMENSION_ID_CHARACTERS} only"
                )
            if properties is not None and column not in properties:
                problems.append(
                    f"{where}: unpivot column '{column}' is not a column of the stream's schema (it has: "
                    f"{_columns(properties)}); fix the name, or refresh the source schema"
                )

    if (mappings or unpivot) and json_schema is not None:  # an `endpoint`-only entry keeps its old meaning
        problems.extend(_unsourced_required(where, endpoint, mapped, unpivot, properties))

    sources: list[FieldSource] = []
    constants: Item = {}
    for field in fields:
        if unpivot and field in ("dimensionId", "value"):
            continue
        kind = kinds[field]
        given = mapped.get(field)
        if given is not None and given.constant is not None:
            if given.constant != "":
                value = convert_constant(given.constant, kind)
                if value is not BAD:
                    constants[field] = value
            continue
        # config.py allows exactly one of source_field and constant: here it is the source_field
        source_field = given.source_field if given is not None else None
        path = split_path(source_field, properties) if source_field is not None else (field,)
        sources.append(_source(field, path, kind))
    return MappingPlan(endpoint, tuple(sources), constants, unpivot, dimension_ids), problems


def _unsourced_required(
    where: str,
    endpoint: Endpoint,
    mapped: Mapping[str, FieldMapping],
    unpivot: tuple[str, ...],
    properties: Optional[Mapping[str, Any]],
) -> list[str]:
    """Required fields that no mapping, constant or same-named column can fill: every record would be rejected."""

    def available(field: str) -> bool:
        mapping = mapped.get(field)
        if mapping is not None:
            return mapping.constant != ""
        return properties is None or field in properties

    if endpoint is Endpoint.METRICS:
        required = [f for f in METRIC_REQUIRED_FIELDS if not (unpivot and f in ("dimensionId", "value"))]
        return [
            f"{where}: '{field}' is required by Planhat but neither mapped nor a column of the stream; add a "
            "field_mappings entry for it" + (" (a source_field or a constant)" if field != "externalId" else "")
            for field in required
            if not available(field)
        ]
    if not any(available(field) for field in USER_ACTIVITY_IDENTITY_FIELDS):
        return [
            f"{where}: User Activities need 'email' or 'euExtId', and the stream has neither a mapping nor a column "
            "for them; add a field_mappings entry for one of them"
        ]
    return []


def _constant_hint(field: str, kind: FieldKind) -> str:
    if kind is FieldKind.NUMBER:
        return "write a number such as 1 or 2.5"
    if kind is FieldKind.MODEL:
        return "write one of " + ", ".join(METRIC_MODELS)
    if kind is FieldKind.DATE:
        return "write an ISO 8601 date such as 2026-11-01, or a date-time"
    if kind is FieldKind.DIMENSION_ID:
        return f"use {DIMENSION_ID_CHARACTERS} only"
    if kind is FieldKind.OBJECT:
        return 'write a JSON object such as {"plan": "pro"}'
    return "write a text"


# ----- the per-record mapper --------------------------------------------------------------------


def build_mapper(plan: MappingPlan) -> Mapper:
    """The mapper of one stream, from the plan routing compiled (and found no problem in)."""
    if plan.unpivot:
        return _unpivot_mapper(plan)
    return _item_mapper(plan)


def item_mapper(endpoint: Endpoint, fields: Sequence[FastField], constants: Item) -> Mapper:
    """The same mapper from a plan as fast_plan gives it (what parse workers get): the one general
    mapper, wherever it runs."""
    sources = tuple(_source(field, (key,), kind) for field, key, kind in fields)
    return _item_mapper(MappingPlan(endpoint, sources, dict(constants), ()))


def dig(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if type(data) is not dict:
            return None
        data = data.get(part)
    return data


def _missing_reason(endpoint: Endpoint, item: Item) -> Optional[str]:
    """The first required field an item lacks (an empty text counts as missing), or None."""
    if endpoint is Endpoint.METRICS:
        for field in METRIC_REQUIRED_FIELDS:
            value = item.get(field)
            if value is None or value == "":
                return f"{field} is missing"
        return None
    if item.get("email") or item.get("euExtId"):
        return None
    return "email and euExtId are both missing"


def example_of(field: str, value: Any) -> str:
    text = repr(value)
    return f"{field}={text[:120]}{'...' if len(text) > 120 else ''}"


_Row = tuple[str, Optional[str], tuple[str, ...], Callable[[Any], Any], str]


def _rows(sources: tuple[FieldSource, ...]) -> tuple[_Row, ...]:
    """Sources as plain tuples: unpacking a tuple is cheaper than reading dataclass attributes."""
    return tuple((s.field, s.key, s.path, s.convert, s.reason) for s in sources)


def _fill(rows: tuple[_Row, ...], data: Mapping[str, Any], item: Item) -> Optional[tuple[str, str]]:
    """Put every sourced field into `item`; returns (reason, example) of the first that fails its check."""
    bad = None
    get = data.get
    for field, key, path, convert, reason in rows:
        value = get(key) if key is not None else dig(data, path)
        if value is None:
            continue
        converted = convert(value)
        if converted is BAD:
            if bad is None:
                bad = (reason, example_of(field, value))
            converted = value
        item[field] = converted
    return bad


def _item_mapper(plan: MappingPlan) -> Mapper:
    """One record -> one item."""
    endpoint = plan.endpoint
    sources = _rows(plan.sources)
    constants = plan.constants
    metrics = endpoint is Endpoint.METRICS
    fill = _fill

    def map_record(data: Mapping[str, Any]) -> MapResult:
        item = constants.copy()
        bad = fill(sources, data, item)
        if bad is None:
            # The common case, inlined: required fields present and not empty.
            if metrics:
                if item.get("dimensionId") and item.get("externalId") and "value" in item:
                    return (item,)
            elif item.get("email") or item.get("euExtId"):
                return (item,)
            reason = _missing_reason(endpoint, item)
            if reason is None:
                return (item,)
            return (Invalid(reason, example_of("item", item), item),)
        return (Invalid(bad[0], bad[1], item),)

    return map_record


def _unpivot_mapper(plan: MappingPlan) -> Mapper:
    """One record -> one metric per non-null unpivot column (dimensionId = column, value = its value)."""
    sources = _rows(plan.sources)
    constants = plan.constants
    columns = tuple(
        (column, dimension, f"unpivot column {column} is not a number")
        for column, dimension in zip(plan.unpivot, plan.dimension_ids)
    )
    fill = _fill

    def map_record(data: Mapping[str, Any]) -> MapResult:
        common = constants.copy()
        bad = fill(sources, data, common)
        if bad is None:
            external_id = common.get("externalId")
            if external_id is None or external_id == "":
                bad = ("externalId is missing", example_of("item", common))
        out: list[Union[Item, Invalid]] = []
        for column, dimension, reason in columns:
            raw = data.get(column)
            if raw is None:
                continue
            item = common.copy()
            item["dimensionId"] = dimension
            value = to_number(raw)
            if value is BAD:
                item["value"] = raw
                out.append(Invalid(reason, example_of(column, raw), item))
                continue
            item["value"] = value
            out.append(item if bad is None else Invalid(bad[0], bad[1], item))
        return out

    return map_record


# ----- what parse workers need ----------------------------------------------------------------------


def fast_fields(plan: MappingPlan) -> Optional[list[FastField]]:
    """The plan's fields as (Planhat field, top-level column, kind), or None where a field comes from a dot path."""
    fields: list[FastField] = []
    for source in plan.sources:
        if source.key is None:
            return None
        fields.append((source.field, source.key, _KIND_OF_CONVERTER[source.convert]))
    return fields


_KIND_OF_CONVERTER = {convert: kind for kind, convert in CONVERTERS.items()}


def fast_plan(plan: MappingPlan) -> Optional[tuple[Endpoint, list[FastField], Item]]:
    """What a parse worker needs to map a stream's records: (endpoint, fields, constants), or None
    when the stream has no such plan (unpivot, dot paths): its records are then all mapped by the
    connector's own process."""
    if plan.unpivot:
        return None
    fields = fast_fields(plan)
    return None if fields is None else (plan.endpoint, fields, plan.constants)
