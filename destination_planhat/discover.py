"""`discover`: the DESTINATION_CATALOG that lets the Airbyte UI map a stream onto a Planhat target.

One operation per target of planhat.TARGETS (the single description of every target, so nothing
here lists fields): `object_name` is the target's `endpoint` value (what a configured stream's
`destination_object_name` then names), `json_schema` its fields with their kinds as JSON schema,
`required` what Planhat requires, and for objects `matching_keys` from their keyables.

Sync modes (planhat.Target.sync_modes): Metrics and User Activities `append` (data points are only
ever added); every object four, one operation each: `append_dedup` (Upsert: Planhat's bulk upsert, a
record with the key is updated, else created) and `update` (Update: only records whose key Planhat
has), both with the matching keys; `append` (Insert: only records whose key Planhat lacks, or every
record without a key), without; `soft_delete` (Soft delete: each record's object deleted by its key),
with the matching keys.

How the Airbyte platform checks a connection against this catalog (airbyte-commons-server
ConnectionsHandler.validateCatalogWithDestinationCatalog): each stream's destination_object_name
and sync mode must be an operation; with matching keys, the stream's primary key (after the UI's
field renaming) must equal one of them; every property in `required` must be mapped; and with
`additionalProperties: false` every mapped field must be a property. A field that a parent alias
can stand in for (companyId <- companyExternalId / companySourceId) is therefore never marked
required, or the alias could not be used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Optional

from destination_planhat.planhat.api import (
    APPEND,
    DATE_FORMAT_NOTE,
    DIMENSION_ID_PATTERN,
    EXTID_PREFIX,
    METRIC_MODELS,
    TARGETS,
    FieldKind,
    MatchOn,
    Operation,
    Reference,
    Target,
)
from destination_planhat.planhat.custom_fields import NONE_READ, CustomFields, JsonSchema, read_custom_fields

logger = logging.getLogger("airbyte")

KEY_DESCRIPTIONS = {
    MatchOn.EXTERNAL_ID: "Your system's id of the record; a matching key",
    MatchOn.SOURCE_ID: "An integration's id of the record; a matching key",
    MatchOn.PLANHAT_ID: "Planhat's own id; a matching key (then every record updates an existing one)",
}


def kind_schema(kind: FieldKind) -> JsonSchema:
    """The JSON schema of a standard field's values, by the kind the connector checks it as."""
    if kind is FieldKind.DIMENSION_ID:
        return {"type": "string", "pattern": f"^{DIMENSION_ID_PATTERN}$"}
    if kind is FieldKind.MODEL:
        return {"type": "string", "enum": list(METRIC_MODELS)}
    if kind is FieldKind.DATE:
        return {"type": "string", "format": "date-time", "description": DATE_FORMAT_NOTE}
    return {"type": kind.value}  # string, number, object, boolean, array


def _aliases(target: Target) -> dict[str, tuple[str, str]]:
    """Parent alias column -> (the reference field it stands in for, Planhat's prefix)."""
    return {alias: (reference.field, prefix) for reference in target.references for alias, prefix in reference.aliases}


def _alias_description(reference: Reference, prefix: str) -> str:
    field = reference.field
    if reference.by_planhat_id:
        key = "externalId" if prefix == EXTID_PREFIX else "sourceId"
        return (
            f"The {reference.parent.target.label[:-1].lower()}'s {key}: the connector looks up its Planhat id "
            f"(once the {reference.parent.value} of the same sync are written) and sends it as {field} "
            f"(instead of mapping {field})"
        )
    also = f", and as {reference.bare_field} as it is" if reference.bare_field and prefix == EXTID_PREFIX else ""
    return f'The parent\'s own id, sent as {field}: "{prefix}<value>"{also} (instead of mapping {field})'


# What each operation of an object does, in the schema's description (the UI shows it).
OPERATION_NOTES: Mapping[Operation, str] = {
    Operation.UPSERT: (
        "Upsert: matches on the stream's primary key, which must be one of the matching keys (a record with that "
        "key is updated, one without a match is created)."
    ),
    Operation.UPDATE: (
        "Update: matches on the stream's primary key, one of the matching keys; a record whose key Planhat does "
        "not have is not created but rejected (stored with the rejected records)."
    ),
    Operation.INSERT: (
        "Insert: creates records; a record whose key (externalId, or the key set in `streams`) Planhat already "
        "has is not sent again; a record without a key is always created."
    ),
    Operation.DELETE: (
        "Soft delete: deletes the Planhat record with each record's key (the stream's primary key, one of the "
        "matching keys); a key Planhat does not have counts as already absent. At most `max_deletes` per sync."
    ),
}


def operation(target: Target, custom: Mapping[str, JsonSchema], mode: str = "") -> dict[str, Any]:
    """The DestinationOperation of one target in one sync mode (by default its first)."""
    mode = mode or next(iter(target.sync_modes))
    meaning = target.sync_modes[mode]
    properties: dict[str, JsonSchema] = {name: kind_schema(kind) for name, kind in target.fields.items()}
    aliases = _aliases(target)
    for reference in target.references:
        for alias, prefix in reference.aliases:
            properties[alias] = {"type": "string", "description": _alias_description(reference, prefix)}
    if "custom" in properties:
        properties["custom"] = {
            "type": "object",
            "description": "Custom fields by name, as one JSON object; or map each one to its custom.<Field name>",
        }
    for keyable, field in target.keyables.items():
        properties[field] = {**properties[field], "description": KEY_DESCRIPTIONS[MatchOn(keyable)]}
    for name, default in target.defaults.items():
        properties[name] = {**properties[name], "description": f"{default!r} when not mapped"}
    properties.update(custom)
    replaced = {field for field, _ in aliases.values()}
    required = [name for name in target.required if name not in replaced and name not in target.defaults]
    notes = [f"Planhat {target.label}."]
    if target.one_of:
        notes.append(
            f"Each record needs at least one of {' or '.join(target.one_of)}: map one or both (JSON schema cannot "
            "mark 'one of' as required, so neither is listed in required)."
        )
    for reference in target.references:
        if reference.field in target.required:
            notes.append(
                f"{reference.field} is required to create a record, but not listed in required, because "
                f"{' or '.join(alias for alias, _ in reference.aliases)} can stand in for it: map one of them."
            )
    if target.always_required:
        notes.append(
            f"{', '.join(target.always_required)}: every record needs it, an update too (Planhat drops an item "
            "without it without saying so; the connector refuses it instead)."
        )
    if target.endpoint.is_object:
        notes.append(OPERATION_NOTES[meaning])
    schema: dict[str, Any] = {
        "type": "object",
        "description": " ".join(notes),
        "additionalProperties": False,
        "properties": properties,
    }
    if required and meaning in (Operation.UPSERT, Operation.INSERT):
        # An update or a delete of an existing record needs nothing but its key.
        schema["required"] = required
    result: dict[str, Any] = {
        "object_name": target.endpoint.value,
        "sync_mode": mode,
        "json_schema": schema,
    }
    if target.keyables and mode != APPEND:
        result["matching_keys"] = target.matching_keys
    return result


def destination_catalog(custom: CustomFields = NONE_READ) -> dict[str, Any]:
    """The `destination_catalog` of the DESTINATION_CATALOG message: every target, in TARGETS' order."""
    return {
        "operations": [
            operation(target, custom.by_endpoint.get(endpoint, {}), mode)
            for endpoint, target in TARGETS.items()
            for mode in target.sync_modes
        ]
    }


def discover(token: Optional[str], read: Callable[[], bytes], where: str) -> dict[str, Any]:
    """Read the custom fields (never failing for them), log what was offered, and build the catalog."""
    custom = read_custom_fields(token, read, where)
    if custom.warning:
        logger.warning(f"discover: {custom.warning}")
    else:
        logger.info(f"discover: {custom.count} custom field(s) offered, read from {where}")
    if custom.left_out:
        logger.info("discover: custom fields left out: " + "; ".join(custom.left_out))
    catalog = destination_catalog(custom)
    logger.info(
        f"discover: {len(catalog['operations'])} operations: "
        + ", ".join(f"{endpoint.value} ({', '.join(target.sync_modes)})" for endpoint, target in TARGETS.items())
    )
    return catalog
