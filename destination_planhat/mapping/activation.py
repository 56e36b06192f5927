"""A configured stream mapped in the Airbyte UI (data activation): its `destination_object_name`.

What the platform hands over (airbyte-workload-init-container ReplicationHydrationProcessor, which
writes the catalog after DestinationCatalogGenerator applied the stream's mappers): the UI's column
-> field mapping is a chain of field-renaming mappers, so the records arrive with the Planhat
field names as their keys (`custom.<Field name>` for custom fields, `companyExternalId` for a
parent), the stream's json_schema lists those names, and its primary key is the chosen matching
key under its Planhat name. So such a stream is mapped as if every column were mapped to itself.

The sync mode says what the stream does (planhat.Target.sync_modes): an object's `append_dedup`
upserts, `update` only updates, `append` only inserts, `soft_delete` deletes; it becomes the
settings' `operation`, as if a `streams` entry had said it.

Precedence: `destination_object_name` decides the target, whatever the schema rules say. A
`streams` entry for the same stream with another endpoint is a config problem naming both; an
entry with the same endpoint adds its settings (field_mappings, unpivot_columns, unmapped_columns)
on top, read against the columns as they arrive (already renamed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from airbyte_cdk.models import ConfiguredAirbyteStream

from destination_planhat.config import FieldMapping, StreamSettings
from destination_planhat.mapping.analytics import declared_properties
from destination_planhat.planhat.api import APPEND, CUSTOM_PREFIX, Endpoint, MatchOn, Operation

OBJECT_NAMES = {endpoint.value: endpoint for endpoint in Endpoint}


def activation_settings(
    label: str,
    configured: ConfiguredAirbyteStream,
    entry: Optional[StreamSettings],
) -> tuple[Optional[Endpoint], Optional[StreamSettings], list[str]]:
    """The target and the settings of a stream with `destination_object_name`, or its problems."""
    object_name = configured.destination_object_name or ""
    where = f"stream '{label}' (destination_object_name '{object_name}', mapped in the Airbyte UI)"
    endpoint = OBJECT_NAMES.get(object_name)
    if endpoint is None:
        return (
            None,
            None,
            [
                f"{where}: '{object_name}' is not a Planhat target of this connector; choose one of "
                f"{', '.join(OBJECT_NAMES)} (refresh the destination's schema in Airbyte if the list looks old)"
            ],
        )
    problems: list[str] = []
    if entry is not None and entry.endpoint is not endpoint:
        problems.append(
            f"{where}: its `streams` entry '{entry.name}' sends it to {entry.endpoint.value}; remove that entry, or "
            f"set its endpoint to {endpoint.value} (destination_object_name decides the target)"
        )
    mode = str(getattr(configured.destination_sync_mode, "value", configured.destination_sync_mode))
    offered = endpoint.target.sync_modes
    operation = offered.get(mode)
    if operation is None:
        choices = " or ".join(f"'{one}'" for one in offered)
        problems.append(
            f"{where}: the sync mode '{mode}' does not fit {endpoint.label}, which is offered with {choices}; "
            f"choose one of them for this stream"
        )
    elif endpoint.is_object and entry is not None and entry.operation is not None and entry.operation is not operation:
        problems.append(
            f"{where}: its `streams` entry says operation '{entry.operation.value}', but the sync mode '{mode}' means "
            f"'{operation.value}'; remove operation from the entry"
        )
    match_on: Optional[MatchOn] = None
    if endpoint.is_object and operation is not None:
        match_on, problem = _match_on(where, endpoint, configured, mode)
        if problem:
            problems.append(problem)
        elif (
            entry is not None and entry.match_on is not None and match_on is not None and entry.match_on is not match_on
        ):
            problems.append(
                f"{where}: its `streams` entry says match_on '{entry.match_on.value}', but the primary key says "
                f"'{match_on.value}'; remove match_on from the entry"
            )
    if problems:
        return None, None, problems
    return endpoint, _settings(label, configured, endpoint, entry, match_on, operation), []


def _match_on(
    where: str, endpoint: Endpoint, configured: ConfiguredAirbyteStream, mode: str
) -> tuple[Optional[MatchOn], Optional[str]]:
    """Upsert, update and soft delete match on the stream's primary key: it must be one of the object's
    matching keys. Insert (`append`) may have none: it then checks the first key the stream maps (none:
    every record is created)."""
    keys = endpoint.target.matching_keys
    choices = " or ".join(str(key) for key in keys)
    primary_key = configured.primary_key or []
    flat = [str(part) for path in primary_key for part in path]
    if not flat:
        if mode == APPEND:  # Insert without a primary key: the first key the stream maps, else none
            columns = _columns(configured.stream.json_schema)
            for keyable, field in endpoint.target.keyables.items():
                if field in columns:
                    return MatchOn(keyable), None
            return MatchOn.NONE, None
        return (
            None,
            f"{where}: {mode} needs a primary key to match records on; choose one of the matching keys {choices}",
        )
    for keyable, field in endpoint.target.keyables.items():
        if sorted(flat) == [field]:
            return MatchOn(keyable), None
    return None, (
        f"{where}: the primary key {primary_key} is not a matching key of {endpoint.label}; choose one of {choices}"
    )


def _settings(
    label: str,
    configured: ConfiguredAirbyteStream,
    endpoint: Endpoint,
    entry: Optional[StreamSettings],
    match_on: Optional[MatchOn],
    operation: Optional[Operation],
) -> Optional[StreamSettings]:
    """The stream's settings: its columns are Planhat fields already, so analytics streams need none
    (their mapper takes same-named columns), and objects need their custom.<name> columns mapped to
    themselves (the object mapper sends only mapped custom fields) and the key from the primary key."""
    if not endpoint.is_object:
        return entry
    mapped = {mapping.planhat_field for mapping in (entry.field_mappings if entry else ())}
    custom = [
        # model_construct: the names come from the catalog as they are (a custom field may end in a
        # dot, which the user-facing `source_field` check would refuse as a dot path)
        FieldMapping.model_construct(planhat_field=column, source_field=column, constant=None)
        for column in _columns(configured.stream.json_schema)
        if column.startswith(CUSTOM_PREFIX) and len(column) > len(CUSTOM_PREFIX) and column not in mapped
    ]
    base = entry or StreamSettings.model_construct(
        name=configured.stream.name,
        namespace=configured.stream.namespace or None,
        endpoint=endpoint,
        field_mappings=(),
        unpivot_columns=(),
        match_on=None,
        unmapped_columns=None,
        operation=None,
        archive=False,
    )
    return base.model_copy(
        update={
            "field_mappings": tuple(base.field_mappings) + tuple(custom),
            "match_on": match_on or base.match_on,
            "operation": operation,
        }
    )


def _columns(json_schema: Optional[Mapping[str, Any]]) -> Sequence[str]:
    properties = declared_properties(json_schema)
    return list(properties) if properties else []
