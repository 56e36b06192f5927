"""The first try of the Decoder on a RECORD line: msgspec decodes and type-checks it in C.

Why: the Decoder's per-record work in Python (parse to dicts, check each field's type, build the
item, encode it) is most of a sync's CPU time. For the common record, whose every value already has
its Planhat field's type, msgspec does all of that in one C call per line and one per record's data,
straight into a typed struct per stream, and encodes the struct as the item. What is left in Python
is what needs a memo: dates (normalized) and dimensionIds (checked against the allowed characters).

The rule that keeps this safe: this path only ever says "here is the item, exactly as the general
mapper would make it" or "not mine" (None, or a msgspec error). Anything else (a number given as
text, an id given as a number, a null required field, an `info` object, a big integer, text that is
not valid UTF-8...) goes to the next try, the Decoder's orjson path, unchanged from before, and from
there to the general path if need be. unit_tests/test_typed_records.py compares the two on tables of
records. No Airbyte CDK here either (parse workers import it).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple, Optional, Union

import msgspec
import orjson

from destination_planhat.mapping.value_checks import (
    BAD,
    DATE_MEMO,
    GOOD_DIMENSION_IDS,
    FastField,
    to_date,
    to_dimension_id,
)
from destination_planhat.planhat.api import (
    METRIC_REQUIRED_FIELDS,
    USER_ACTIVITY_IDENTITY_FIELDS,
    Endpoint,
    FieldKind,
    MetricModel,
)

# What orjson can encode: integers of 64 bits (a larger one goes the general way, which says why).
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_TYPES: dict[FieldKind, Any] = {
    FieldKind.STRING: str,
    FieldKind.DIMENSION_ID: str,  # and a memo check in Python
    FieldKind.NUMBER: Union[_Int, float],  # msgspec refuses non-finite numbers and booleans
    FieldKind.MODEL: MetricModel,
    FieldKind.DATE: str,  # normalized in Python, memoized
    FieldKind.OBJECT: msgspec.Raw,  # present: not this path's (its content would need checking)
}


# gc=False: none of these structs can be part of a reference cycle (they hold decoded JSON values
# only), so the garbage collector need not track the few it makes per line.
class _Meta(msgspec.Struct, gc=False):
    changes: Any = None


class _Record(msgspec.Struct, gc=False):
    stream: str
    data: msgspec.Raw
    namespace: Optional[str] = None
    meta: Optional[_Meta] = None


class _RecordMessage(msgspec.Struct, tag_field="type", tag="RECORD", gc=False):
    record: _Record


COMMA, CLOSE_BRACE = ord(","), ord("}")

# A RECORD line, its data left raw; raises msgspec.MsgspecError for any other line.
decode_record_line: Callable[[bytes], _RecordMessage] = msgspec.json.Decoder(_RecordMessage).decode


class TypedItems(NamedTuple):
    """One stream's typed path (see `typed_items`)."""

    decoded_type: type  # a msgspec Struct: the record's data, decoded and type-checked in C
    append_decoded: Callable[[Any, bytearray], bool]  # checks one decoded data, appends its item and ","


def typed_item_encoder(
    endpoint: Endpoint, fields: Sequence[FastField], constants: dict[str, Any]
) -> Optional[Callable[[msgspec.Raw], Optional[bytes]]]:
    """For one stream: a record's data (raw JSON) -> its item, encoded, or None (or a msgspec
    error) when this path does not handle it. None when the stream has no typed path. The typed
    path one item at a time, as tests and bench/mapper_cost.py use it."""
    typed = typed_items(endpoint, fields, constants)
    if typed is None:
        return None
    decode: Callable[[msgspec.Raw], Any] = msgspec.json.Decoder(typed.decoded_type).decode
    append_decoded = typed.append_decoded

    def encode_item(raw: msgspec.Raw) -> Optional[bytes]:
        body = bytearray()
        return bytes(body[:-1]) if append_decoded(decode(raw), body) else None

    return encode_item


def typed_items(endpoint: Endpoint, fields: Sequence[FastField], constants: dict[str, Any]) -> Optional[TypedItems]:
    """For one stream: the struct its records' data decode into (every field of its Planhat type),
    and `append_decoded(data, body)`, which checks what msgspec cannot (dimensionId characters,
    dates, the end user's identity) and appends the item and "," to `body` (encoded in place: no
    bytes object per item), or returns False, leaving `body` as it was, when this path does not
    handle the record. None when the stream's settings leave a required field without a source
    (every record is then the general path's to reject), or its columns cannot be struct fields."""
    sourced = {field for field, _, _ in fields}
    if endpoint is Endpoint.METRICS:
        required = set(METRIC_REQUIRED_FIELDS)
        if not required <= sourced | set(constants):
            return None
        identities: tuple[str, ...] = ()
    else:
        required = set()
        identities = tuple(f for f in USER_ACTIVITY_IDENTITY_FIELDS if f in sourced)
        if not identities and not any(constants.get(f) for f in USER_ACTIVITY_IDENTITY_FIELDS):
            return None
    if len({key for _, key, _ in fields}) != len(fields):  # one column feeding two fields: not this path's
        return None
    # The struct's attributes are the Planhat fields' names (so the checks below can name them); its
    # JSON names the source columns. kw_only: required fields may follow optional ones, and the
    # struct keeps the item's field order.
    spec: list[Any] = []
    for field, _, kind in fields:
        kind_type = _TYPES[kind]
        if field in required:  # present, not null, and text not empty: else the general path says why
            spec.append((field, _NonEmpty if kind_type is str else kind_type))
        else:
            spec.append((field, Optional[kind_type], None))
    try:
        decoded_type = msgspec.defstruct(
            "Decoded", spec, rename={field: key for field, key, _ in fields}, omit_defaults=True, kw_only=True, gc=False
        )
    except ValueError:  # msgspec refuses column names with a quote, a backslash or a control character
        return None
    encoded_type: Any = None  # the same struct encodes the item, unless a field comes from a column of another name
    if any(field != key for field, key, _ in fields):
        encoded_type = msgspec.defstruct(
            "Encoded", [(field, Any, None) for field, _, _ in fields], omit_defaults=True, gc=False
        )
    encode_into = msgspec.json.Encoder().encode_into
    to_tuple = msgspec.structs.astuple
    kinds = {field: kind for field, _, kind in fields}
    check_dimension_id = kinds.get("dimensionId") is FieldKind.DIMENSION_ID
    check_date = kinds.get("date") is FieldKind.DATE
    refuse_info = kinds.get("info") is FieldKind.OBJECT
    # User Activities: email or euExtId, not empty, unless a constant gives one.
    identity: Optional[Callable[[Any], Any]] = None
    if identities and not any(constants.get(f) for f in USER_ACTIVITY_IDENTITY_FIELDS):
        identity = operator.attrgetter(identities[0]) if len(identities) == 1 else (lambda r: r.email or r.euExtId)
    prefix = orjson.dumps(constants)[:-1] if constants else b""  # the constants come first in the item
    good_ids, date_memo = GOOD_DIMENSION_IDS, DATE_MEMO

    def append_decoded(record: Any, body: bytearray) -> bool:
        if check_dimension_id:
            value = record.dimensionId
            if value not in good_ids and to_dimension_id(value) is BAD:
                return False
        if check_date:
            value = record.date
            if value is not None:
                normal = date_memo.get(value)
                if normal is None:
                    normal = to_date(value)
                if normal is not value:
                    if normal is BAD:
                        return False
                    if normal != value:
                        record.date = normal
        if refuse_info and record.info is not None:
            return False
        if identity is not None and not identity(record):
            return False
        item = record if encoded_type is None else encoded_type(*to_tuple(record))
        if prefix:  # the constants, then the struct's fields: its "{" becomes ",", or "{}" becomes "}"
            body += prefix
            mark = len(body)
            encode_into(item, body, -1)
            if len(body) - mark == 2:
                del body[mark + 1 :]
                body[mark] = CLOSE_BRACE
            else:
                body[mark] = COMMA
        else:
            encode_into(item, body, -1)
        body += b","
        return True

    return TypedItems(decoded_type, append_decoded)


def record_line_decoder(streams: dict[str, Optional[type]]) -> tuple[Callable[[bytes], Any], dict[type, str]]:
    """One msgspec call per RECORD line of the given streams: the line decoded, the stream told by
    the record's `stream` (a tagged union), and the data decoded into the stream's struct as well
    (or left raw where the stream's value is None). Returns the decode function, which raises a
    msgspec error for any other line or data not of its stream's types, and the stream name of each
    record struct type (`type(message.record)`)."""
    names: dict[type, str] = {}
    for name, decoded_type in streams.items():
        record_type = msgspec.defstruct(
            "Record",
            [
                ("data", decoded_type or msgspec.Raw),
                ("namespace", Optional[str], None),
                ("meta", Optional[_Meta], None),
            ],
            tag_field="stream",
            tag=name,
            gc=False,
        )
        names[record_type] = name
    if not names:
        return decode_record_line, names
    line_type = msgspec.defstruct(
        "RecordLine", [("record", Union[tuple(names)])], tag_field="type", tag="RECORD", gc=False
    )
    return msgspec.json.Decoder(line_type).decode, names
