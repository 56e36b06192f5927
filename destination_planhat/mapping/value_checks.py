"""The per-value checks of Planhat fields: no Airbyte CDK imports.

Why a module of its own: the parse worker processes (reading/worker_process.py) map records with exactly
these functions, and they must start fast and stay small, so nothing here may import the CDK,
pydantic or requests. mapping/analytics.py builds the mapper on top of this module; reading/typed_records.py uses
its memos.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

from destination_planhat.planhat.api import (
    DIMENSION_ID_CHARACTERS,
    DIMENSION_ID_PATTERN,
    METRIC_MODELS,
    FieldKind,
)

Item = dict[str, Any]

# Dates repeat a lot (one per day in metric tables); their normalized form is memoized up to this many.
DATE_MEMO_SIZE = 20_000


# ----- value checks and conversions (one per FieldKind) ---------------------------------------
# Each returns the value to send, or BAD. They run once per field per record: keep them flat.

BAD: Any = object()
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII).fullmatch
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*", re.ASCII).fullmatch
is_dimension_id = re.compile(DIMENSION_ID_PATTERN).fullmatch
_MODELS = frozenset(METRIC_MODELS)
# A date-time in UTC (Z, +00:00, +0000, +00) or without a zone, which is taken as UTC.
_UTC_DATE_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:[.,](\d{1,9}))?(?:[Zz]|[+-]00(?::?00)?)?", re.ASCII
).fullmatch
GOOD_DIMENSION_IDS: set[str] = set()  # a memo of valid dimensionIds (few per stream); bounded
GOOD_DIMENSION_IDS_SIZE = 10_000
DATE_MEMO: dict[str, Any] = {}  # a memo of the pure function _normalize_date; bounded, never evicted


def to_string(value: Any) -> Any:
    """Strings as they are; numbers as their decimal text (ids often arrive as integers)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return BAD


def to_number(value: Any) -> Any:
    """Finite numbers as they are; numeric strings ("12", "-1.5", "2e3") converted. Booleans are not numbers."""
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else BAD
    if kind is str and _NUMBER_TEXT(value):
        if (value.isascii() and value.isdigit()) or _INTEGER_TEXT(value):
            return int(value)
        number = float(value)
        return number if math.isfinite(number) else BAD
    return BAD


def to_model(value: Any) -> Any:
    return value if type(value) is str and value in _MODELS else BAD


def to_object(value: Any) -> Any:
    return value if type(value) is dict else BAD


def to_date(value: Any) -> Any:
    """An ISO 8601 date or date-time, in the form the connector sends (see planhat.DATE_FORMAT_NOTE)."""
    if type(value) is not str:
        return BAD
    result = DATE_MEMO.get(value)
    if result is None:
        result = _normalize_date(value)
        if len(DATE_MEMO) < DATE_MEMO_SIZE:
            DATE_MEMO[value] = result
    return result


def _normalize_date(text: str) -> Any:
    """Dates stay dates (YYYY-MM-DD); date-times go to UTC as YYYY-MM-DDTHH:MM:SS.mmmZ (naive = UTC).

    Accepts what Python's ISO parser accepts, which covers Airbyte's timestamp_with_timezone and
    timestamp_without_timezone forms: 2026-11-01T10:30:00+02:00, ...Z, ...123456+00:00, a space
    instead of the T.
    """
    candidate = text.strip()
    if not candidate or len(candidate) > 64:
        return BAD
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
            return BAD
        return f"{day}T{time_of_day}.{(fraction or '')[:3].ljust(3, '0')}Z"
    if candidate[-1] in "Zz":  # Python 3.10's parser does not know Z
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return BAD
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed.isoformat(timespec="milliseconds") + "Z"


def to_dimension_id(value: Any) -> Any:
    if type(value) is str and value in GOOD_DIMENSION_IDS:
        return value
    text = to_string(value)
    if text is BAD or not is_dimension_id(text):
        return BAD
    if len(GOOD_DIMENSION_IDS) < GOOD_DIMENSION_IDS_SIZE:
        GOOD_DIMENSION_IDS.add(text)
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
    """A constant of the form (always text) as the value its field takes, or BAD."""
    if kind is FieldKind.OBJECT:
        try:
            parsed = json.loads(text)
        except ValueError:
            return BAD
        return parsed if type(parsed) is dict else BAD
    return CONVERTERS[kind](text)


# One Planhat field as parse workers get it: (Planhat field, top-level source column, its kind).
FastField = tuple[str, str, FieldKind]
