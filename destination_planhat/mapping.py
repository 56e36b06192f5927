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
step, before anything is sent: `mapping_problems` lists them all for routing's one config error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from destination_planhat.errors import config_error
from destination_planhat.planhat import (
    ALL_FIELDS,
    DIMENSION_ID_CHARACTERS,
    DIMENSION_ID_PATTERN,
    ENDPOINT_FIELDS,
    FIELD_KINDS,
    METRIC_MODELS,
    METRIC_REQUIRED_FIELDS,
    USER_ACTIVITY_IDENTITY_FIELDS,
    Endpoint,
    FieldKind,
)

if TYPE_CHECKING:  # routing imports this module to gather mapping problems
    from destination_planhat.config import StreamSettings
    from destination_planhat.routing import StreamRoute

Item = dict[str, Any]

# How many columns of a schema an error message lists before it says "...".
COLUMNS_IN_MESSAGES = 15
# Dates repeat a lot (one per day in metric tables); their normalized form is memoized up to this many.
DATE_MEMO_SIZE = 20_000


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


# ----- value checks and conversions (one per FieldKind) ---------------------------------------
# Each returns the value to send, or _BAD. They run once per field per record: keep them flat.

_BAD: Any = object()
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII).fullmatch
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*", re.ASCII).fullmatch
_DIMENSION_ID_OK = re.compile(DIMENSION_ID_PATTERN).fullmatch
_MODELS = frozenset(METRIC_MODELS)
# A date-time in UTC (Z, +00:00, +0000, +00) or without a zone, which is taken as UTC.
_UTC_DATE_TIME = re.compile(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:[.,](\d{1,9}))?(?:[Zz]|[+-]00(?::?00)?)?", re.ASCII).fullmatch
_GOOD_DIMENSION_IDS: set[str] = set()  # a memo of valid dimensionIds (few per stream); bounded
GOOD_DIMENSION_IDS_SIZE = 10_000
_DATE_MEMO: dict[str, Any] = {}  # a memo of the pure function _normalize_date; bounded, never evicted


def to_string(value: Any) -> Any:
    """Strings as they are; numbers as their decimal text (ids often arrive as integers)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return _BAD


def to_number(value: Any) -> Any:
    """Finite numbers as they are; numeric strings ("12", "-1.5", "2e3") converted. Booleans are not numbers."""
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else _BAD
    if kind is str and _NUMBER_TEXT(value):
        if (value.isascii() and value.isdigit()) or _INTEGER_TEXT(value):
            return int(value)
        number = float(value)
        return number if math.isfinite(number) else _BAD
    return _BAD


def to_model(value: Any) -> Any:
    return value if type(value) is str and value in _MODELS else _BAD


def to_object(value: Any) -> Any:
    return value if type(value) is dict else _BAD


def to_date(value: Any) -> Any:
    """An ISO 8601 date or date-time, in the form the connector sends (see planhat.DATE_FORMAT_NOTE)."""
    if type(value) is not str:
        return _BAD
    result = _DATE_MEMO.get(value)
    if result is None:
        result = _normalize_date(value)
        if len(_DATE_MEMO) < DATE_MEMO_SIZE:
            _DATE_MEMO[value] = result
    return result


def _normalize_date(text: str) -> Any:
    """Dates stay dates (YYYY-MM-DD); date-times go to UTC as YYYY-MM-DDTHH:MM:SS.mmmZ (naive = UTC).

    Accepts what Python's ISO parser accepts, which covers Airbyte's timestamp_with_timezone and
    timestamp_without_timezone forms: 2026-11-01T10:30:00+02:00, ...Z, ...123456+00:00, a space
    instead of the T.
    """
    candidate = text.strip()
    if not candidate or len(candidate) > 64:
        return _BAD
    if "T" not in candidate and "t" not in candidate and " " not in candidate:
        try:
            return date.fromisoformat(candidate).isoformat()
        except ValueError:
            pass
    utc_form = _UTC_DATE_TIME(candidate)
    if utc_form:  # the usual Airbyte timestamp, already in UTC: rewrite it without datetime arithmetic
        day, time_of_day, fraction = utc_form.groups()
        try:
            datetime.fromisoformat(f"{day}T{time_of_day}")  # still rejects 2026-02-30 and 25:00
        except ValueError:
            return _BAD
        return f"{day}T{time_of_day}.{(fraction or '')[:3].ljust(3, '0')}Z"
    if candidate[-1] in "Zz":  # Python 3.10's parser does not know Z
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return _BAD
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed.isoformat(timespec="milliseconds") + "Z"


def to_dimension_id(value: Any) -> Any:
    if type(value) is str and value in _GOOD_DIMENSION_IDS:
        return value
    text = to_string(value)
    if text is _BAD or not _DIMENSION_ID_OK(text):
        return _BAD
    if len(_GOOD_DIMENSION_IDS) < GOOD_DIMENSION_IDS_SIZE:
        _GOOD_DIMENSION_IDS.add(text)
    return text


CONVERTERS: dict[FieldKind, Callable[[Any], Any]] = {
    FieldKind.STRING: to_string,
    FieldKind.DIMENSION_ID: to_dimension_id,
    FieldKind.NUMBER: to_number,
    FieldKind.MODEL: to_model,
    FieldKind.DATE: to_date,
    FieldKind.OBJECT: to_object,
}


def invalid_reason(field: str, kind: FieldKind) -> str:
    """The reason counted in the summary for a field that fails its check: short, stable, actionable."""
    if kind is FieldKind.STRING:
        return f"{field} is not a string"
    if kind is FieldKind.DIMENSION_ID:
        return f"{field} is not a text of {DIMENSION_ID_CHARACTERS} only"
    if kind is FieldKind.NUMBER:
        return f"{field} is not a number"
    if kind is FieldKind.MODEL:
        return f"{field} is not one of {', '.join(METRIC_MODELS)}"
    if kind is FieldKind.DATE:
        return f"{field} is not an ISO 8601 date or date-time"
    return f"{field} is not a JSON object"


def convert_constant(text: str, kind: FieldKind) -> Any:
    """A constant of the form (always text) as the value its field takes, or _BAD."""
    if kind is FieldKind.OBJECT:
        try:
            parsed = json.loads(text)
        except ValueError:
            return _BAD
        return parsed if type(parsed) is dict else _BAD
    return CONVERTERS[kind](text)


# ----- compile: settings + schema -> plan, or the list of what to fix --------------------------


@dataclass(frozen=True)
class _Source:
    """Where one Planhat field's value comes from in every record of a stream."""

    field: str
    key: Optional[str]  # a top-level column (the fast, common case)...
    path: Optional[tuple[str, ...]]  # ...or a dot path into nested objects
    convert: Callable[[Any], Any]
    reason: str


@dataclass(frozen=True)
class _Plan:
    endpoint: Endpoint
    sources: tuple[_Source, ...]
    constants: Item
    unpivot: tuple[str, ...]


def _schema_properties(json_schema: Optional[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The declared properties of a schema, or None when it declares none (then nothing can be checked)."""
    if not isinstance(json_schema, Mapping):
        return None
    properties = json_schema.get("properties")
    return properties if isinstance(properties, Mapping) and properties else None


def _split_path(path: str, properties: Optional[Mapping[str, Any]]) -> tuple[str, ...]:
    """A column whose own name has dots (declared so in the schema) is one key, not a path."""
    if "." not in path or (properties is not None and path in properties):
        return (path,)
    return tuple(path.split("."))


def _path_problem(parts: tuple[str, ...], properties: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why a path cannot exist in the stream's records according to its schema, or None."""
    level = properties
    for depth, part in enumerate(parts):
        if level is None:
            return None  # the schema stops declaring properties here: nothing more to check
        if part not in level:
            where = "the stream's schema" if depth == 0 else f"the object '{'.'.join(parts[:depth])}'"
            return f"'{part}' is not a column of {where} (it has: {_columns(level)})"
        level = _schema_properties(level[part]) if isinstance(level[part], Mapping) else None
    return None


def _columns(properties: Mapping[str, Any]) -> str:
    names = sorted(properties)
    shown = ", ".join(names[:COLUMNS_IN_MESSAGES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > COLUMNS_IN_MESSAGES else "")


def _compile(
    label: str,
    endpoint: Endpoint,
    settings: Optional["StreamSettings"],
    json_schema: Optional[Mapping[str, Any]],
) -> tuple[_Plan, list[str]]:
    """The plan of a stream's mapper and every problem of its settings (empty when it is usable).

    With `json_schema=None` (the `check` command has no catalog) the checks against the schema
    are left out.
    """
    kinds = FIELD_KINDS[endpoint]
    fields = ENDPOINT_FIELDS[endpoint]
    other = Endpoint.USER_ACTIVITIES if endpoint is Endpoint.METRICS else Endpoint.METRICS
    properties = _schema_properties(json_schema)
    mappings = settings.field_mappings if settings else ()
    unpivot = tuple(settings.unpivot_columns) if settings else ()
    where = f"stream '{label}' ({endpoint.label})"
    problems: list[str] = []

    mapped: dict[str, Any] = {}  # planhat field -> its FieldMapping
    for number, mapping in enumerate(mappings, start=1):
        entry = f"{where}, field_mappings entry {number}"
        field = mapping.planhat_field
        if field not in ALL_FIELDS:
            problems.append(
                f"{entry}: '{field}' is not a Planhat field; choose one of {', '.join(fields)}"
            )
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
            if convert_constant(mapping.constant, kinds[field]) is _BAD:
                problems.append(
                    f"{entry}: the constant {mapping.constant!r} for '{field}' is not valid: "
                    f"{_constant_hint(field, kinds[field])}"
                )
        elif mapping.source_field is not None and properties is not None:
            problem = _path_problem(_split_path(mapping.source_field, properties), properties)
            if problem:
                problems.append(
                    f"{entry}: source_field '{mapping.source_field}' for '{field}': {problem}; fix the "
                    "name, or refresh the source schema"
                )

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
        for column in unpivot:
            if column in seen:
                problems.append(f"{where}: unpivot column '{column}' is listed twice; keep one")
            seen.add(column)
            if not _DIMENSION_ID_OK(column):
                problems.append(
                    f"{where}: unpivot column '{column}' cannot be a dimensionId, which allows {DIMENSION_ID_CHARACTERS} "
                    "only; rename the column at the source"
                )
            if properties is not None and column not in properties:
                problems.append(
                    f"{where}: unpivot column '{column}' is not a column of the stream's schema (it has: "
                    f"{_columns(properties)}); fix the name, or refresh the source schema"
                )

    if (mappings or unpivot) and json_schema is not None:  # an `endpoint`-only entry keeps its old meaning
        problems.extend(_unsourced_required(where, endpoint, mapped, unpivot, properties))

    sources: list[_Source] = []
    constants: Item = {}
    for field in fields:
        if unpivot and field in ("dimensionId", "value"):
            continue
        kind = kinds[field]
        mapping = mapped.get(field)
        if mapping is not None and mapping.constant is not None:
            if mapping.constant != "":
                value = convert_constant(mapping.constant, kind)
                if value is not _BAD:
                    constants[field] = value
            continue
        path = _split_path(mapping.source_field, properties) if mapping is not None else (field,)
        key = path[0] if len(path) == 1 else None
        sources.append(_Source(field, key, None if key else path, CONVERTERS[kind], invalid_reason(field, kind)))
    return _Plan(endpoint, tuple(sources), constants, unpivot), problems


def _unsourced_required(
    where: str, endpoint: Endpoint, mapped: Mapping[str, Any], unpivot: tuple[str, ...], properties: Optional[Mapping[str, Any]]
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


def mapping_problems(
    label: str, endpoint: Endpoint, settings: Optional["StreamSettings"], json_schema: Optional[Mapping[str, Any]]
) -> list[str]:
    """Everything to fix in one stream's mapping settings (empty when there is nothing to fix)."""
    return _compile(label, endpoint, settings, json_schema)[1]


# ----- the per-record mapper --------------------------------------------------------------------


def build_mapper(route: "StreamRoute") -> Mapper:
    """The mapper of one stream. Routing has already reported any problem of its settings."""
    plan, problems = _compile(route.name, route.endpoint, route.settings, route.json_schema)
    if problems:
        raise config_error("Some streams cannot be written to Planhat: " + "; ".join(problems) + ".")
    if plan.unpivot:
        return _unpivot_mapper(plan)
    general = _item_mapper(plan)
    return _fast_item_mapper(plan, general) or general


def _dig(data: Any, path: tuple[str, ...]) -> Any:
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


def _example(field: str, value: Any) -> str:
    text = repr(value)
    return f"{field}={text[:120]}{'...' if len(text) > 120 else ''}"


_Row = tuple[str, Optional[str], Optional[tuple[str, ...]], Callable[[Any], Any], str]


def _rows(sources: tuple[_Source, ...]) -> tuple[_Row, ...]:
    """Sources as plain tuples: unpacking a tuple is cheaper than reading dataclass attributes."""
    return tuple((s.field, s.key, s.path, s.convert, s.reason) for s in sources)


def _fill(rows: tuple[_Row, ...], data: Mapping[str, Any], item: Item) -> Optional[tuple[str, str]]:
    """Put every sourced field into `item`; returns (reason, example) of the first that fails its check."""
    bad = None
    get = data.get
    for field, key, path, convert, reason in rows:
        value = get(key) if key is not None else _dig(data, path)  # type: ignore[arg-type]
        if value is None:
            continue
        converted = convert(value)
        if converted is _BAD:
            if bad is None:
                bad = (reason, _example(field, value))
            converted = value
        item[field] = converted
    return bad


def _item_mapper(plan: _Plan) -> Mapper:
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
            return (Invalid(reason, _example("item", item), item),)
        return (Invalid(bad[0], bad[1], item),)

    return map_record


def _unpivot_mapper(plan: _Plan) -> Mapper:
    """One record -> one metric per non-null unpivot column (dimensionId = column, value = its value)."""
    sources = _rows(plan.sources)
    constants = plan.constants
    columns = tuple((column, f"unpivot column {column} is not a number") for column in plan.unpivot)
    fill = _fill

    def map_record(data: Mapping[str, Any]) -> MapResult:
        common = constants.copy()
        bad = fill(sources, data, common)
        if bad is None:
            external_id = common.get("externalId")
            if external_id is None or external_id == "":
                bad = ("externalId is missing", _example("item", common))
        out: list[Union[Item, Invalid]] = []
        for column, reason in columns:
            raw = data.get(column)
            if raw is None:
                continue
            item = common.copy()
            item["dimensionId"] = column
            value = to_number(raw)
            if value is _BAD:
                item["value"] = raw
                out.append(Invalid(reason, _example(column, raw), item))
                continue
            item["value"] = value
            out.append(item if bad is None else Invalid(bad[0], bad[1], item))
        return out

    return map_record


# ----- the fast path ------------------------------------------------------------------------------
# Most records need no conversion: every value already has its field's type, and their dates and
# dimensionIds were seen before (memoized). A function generated once per stream checks each value
# inline, with no call per field, calls a field's converter only when its value needs converting,
# and builds exactly the item the general mapper would (same fields, same order). A record with an
# invalid value goes to the general mapper, whole, so what is rejected or reported, and how, never
# depends on this path. See bench/ for what it saves. Names from the settings reach the generated
# code as variables, never as source text.

# kind -> a condition on `v` that holds only when the kind's converter would return `v` unchanged.
_UNCHANGED_IF = {
    FieldKind.STRING: "type(v) is str",
    FieldKind.NUMBER: "type(v) is int or (type(v) is float and v - v == 0.0)",  # inf and nan fail v - v == 0
    FieldKind.MODEL: "type(v) is str and v in MODELS",
    FieldKind.OBJECT: "type(v) is dict",
    FieldKind.DIMENSION_ID: "type(v) is str and v in GOOD_DIMENSION_IDS",
}
_KIND_OF_CONVERTER = {convert: kind for kind, convert in CONVERTERS.items()}


def _fast_item_mapper(plan: _Plan, general: Mapper) -> Optional[Mapper]:
    """The generated fast path in front of `general`, or None where it does not apply (dot paths)."""
    if any(source.key is None for source in plan.sources):
        return None
    namespace: dict[str, Any] = {
        "GENERAL": general,
        "CONSTANTS": plan.constants,
        "MODELS": _MODELS,
        "GOOD_DIMENSION_IDS": _GOOD_DIMENSION_IDS,
        "DATE_MEMO": _DATE_MEMO,
        "BAD": _BAD,
    }
    code = ["def map_record(data):", "    get = data.get", "    item = CONSTANTS.copy()" if plan.constants else "    item = {}"]
    for number, source in enumerate(plan.sources):
        kind = _KIND_OF_CONVERTER.get(source.convert)
        namespace[f"KEY{number}"], namespace[f"FIELD{number}"] = source.key, source.field
        namespace[f"CONVERT{number}"] = source.convert
        code += [f"    v = get(KEY{number})", "    if v is not None:"]
        if kind is FieldKind.DATE:
            code += [
                "        w = DATE_MEMO.get(v) if type(v) is str else None",
                f"        v = CONVERT{number}(v) if w is None else w",
            ]
        elif kind in _UNCHANGED_IF:
            code += [f"        if not ({_UNCHANGED_IF[kind]}):", f"            v = CONVERT{number}(v)"]
        else:
            return None  # a kind this generator does not know: the general mapper alone
        code += ["        if v is BAD:", "            return GENERAL(data)", f"        item[FIELD{number}] = v"]
    # The required fields, checked as the general mapper checks them in its common case.
    if plan.endpoint is Endpoint.METRICS:
        namespace["DIMENSION_ID"], namespace["VALUE"], namespace["EXTERNAL_ID"] = METRIC_REQUIRED_FIELDS
        code += ["    if item.get(DIMENSION_ID) and item.get(EXTERNAL_ID) and VALUE in item:"]
    else:
        namespace["EMAIL"], namespace["EU_EXT_ID"] = USER_ACTIVITY_IDENTITY_FIELDS
        code += ["    if item.get(EMAIL) or item.get(EU_EXT_ID):"]
    code += ["        return (item,)", "    return GENERAL(data)"]
    exec(compile("\n".join(code), f"<fast mapper of {plan.endpoint.value}>", "exec"), namespace)
    return namespace["map_record"]
