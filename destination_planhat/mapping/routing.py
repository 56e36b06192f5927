"""Which Planhat endpoint each configured stream goes to, decided once before anything is sent.

In order: the stream's `destination_object_name` (mapped in the Airbyte UI; mapping/activation.py), its
`streams` entry, its schema (Metrics or User Activities fields).

Each routed stream's mapping settings are compiled here, once per sync (mapping.compile_mapping,
objects.compile_object): the problems go into the one config error, the plan onto the
route, from which the writer builds the stream's mapper."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Union

from airbyte_cdk.models import ConfiguredAirbyteCatalog, ConfiguredAirbyteStream, DestinationSyncMode

from destination_planhat.config import PlanhatConfig, StreamSettings
from destination_planhat.mapping.activation import activation_settings
from destination_planhat.mapping.analytics import MappingPlan, compile_mapping
from destination_planhat.mapping.objects import ObjectPlan, compile_object
from destination_planhat.planhat.api import (
    ENDPOINT_NEEDS_API_TOKEN,
    METRIC_REQUIRED_FIELDS,
    TARGETS,
    USER_ACTIVITY_IDENTITY_FIELDS,
    WHERE_API_TOKEN,
    WHERE_TENANT_TOKEN,
    Endpoint,
    MatchOn,
    Operation,
)
from destination_planhat.planhat.errors import config_error

StreamKey = tuple[Optional[str], str]  # (namespace, name), as Airbyte identifies a stream
StreamPlan = Union[MappingPlan, ObjectPlan]  # a stream's compiled mapping, by its kind of target
SET_IN_STREAMS = "set in the connector's `streams` setting"  # why a stream with an entry goes where it goes


@dataclass(frozen=True)
class StreamRoute:
    key: StreamKey
    endpoint: Endpoint
    why: str  # shown in the log, so users can see how the decision was made
    settings: Optional[StreamSettings]
    json_schema: Mapping[str, Any]
    plan: StreamPlan  # compiled from settings and json_schema, without problems (route_streams checks)

    @property
    def name(self) -> str:
        return stream_label(self.key)


def stream_label(key: StreamKey) -> str:
    namespace, name = key
    return f"{namespace}.{name}" if namespace else name


def schema_properties(json_schema: Mapping[str, Any]) -> set[str]:
    properties = json_schema.get("properties") if isinstance(json_schema, Mapping) else None
    return set(properties) if isinstance(properties, Mapping) else set()


def endpoint_from_schema(json_schema: Mapping[str, Any]) -> Optional[Endpoint]:
    """Metrics when every required metric field is declared, else User Activities when an end user id is."""
    properties = schema_properties(json_schema)
    if all(field in properties for field in METRIC_REQUIRED_FIELDS):
        return Endpoint.METRICS
    if any(field in properties for field in USER_ACTIVITY_IDENTITY_FIELDS):
        return Endpoint.USER_ACTIVITIES
    return None


def route_streams(config: PlanhatConfig, catalog: ConfiguredAirbyteCatalog) -> dict[StreamKey, StreamRoute]:
    """Route every configured stream, or raise ONE config error naming every stream to fix.

    The mapping settings of each stream (field_mappings, unpivot_columns, ...) are compiled here,
    against the stream's schema, once per sync: the problems so that one error lists every mistake of
    every stream, the plan onto the route (the writer builds the stream's mapper from it).
    """
    routes: dict[StreamKey, StreamRoute] = {}
    problems: list[str] = []
    for configured in catalog.streams:
        stream = configured.stream
        key: StreamKey = (stream.namespace or None, stream.name)
        json_schema = stream.json_schema or {}
        choice, stream_problems = _route(config, configured, key, json_schema)
        if stream_problems:
            problems.extend(stream_problems)
        elif choice:
            plan, plan_problems = compile_stream(stream_label(key), choice.endpoint, choice.settings, json_schema)
            route = StreamRoute(key, choice.endpoint, choice.why, choice.settings, json_schema, plan)
            problems.extend(credential_problems(config, route.name, route.endpoint, route.why))
            problems.extend(plan_problems)
            if route.endpoint.is_object and configured.destination_sync_mode == DestinationSyncMode.append_dedup:
                problem = _primary_key_problem(route, configured)
                if problem:
                    problems.append(problem)
            routes[route.key] = route
    if problems:
        raise config_error(streams_error(problems))
    return routes


def streams_error(problems: list[str]) -> str:
    """The one message for streams that cannot be written: `write` raises it, `check` reports it."""
    return "Some streams cannot be written to Planhat: " + "; ".join(problems) + "."


def credential_problems(config: PlanhatConfig, label: str, endpoint: Endpoint, why: str) -> list[str]:
    """What a stream going to `endpoint` lacks of the config's credentials: the one rule that `write`
    applies to every routed stream and `check` to every `streams` entry, so that check fails exactly
    when write would. Metrics need both tokens, User Activities the tenant token, objects the API token."""
    problems = []
    if ENDPOINT_NEEDS_API_TOKEN[endpoint] and not config.token:
        problems.append(
            f"stream '{label}' goes to {endpoint.label} ({why}), which needs an "
            f"API token: fill in `api_token` with {WHERE_API_TOKEN}"
        )
    if not endpoint.is_object and not config.tenant:
        problems.append(
            f"stream '{label}' goes to {endpoint.label} ({why}), which needs the tenant "
            f"token: fill in `tenant_uuid` with {WHERE_TENANT_TOKEN}"
        )
    return problems


class _Choice(NamedTuple):
    """A stream's target and the settings it is written with, before its mapping is compiled."""

    endpoint: Endpoint
    why: str
    settings: Optional[StreamSettings]


def _route(
    config: PlanhatConfig, configured: ConfiguredAirbyteStream, key: StreamKey, json_schema: Mapping[str, Any]
) -> tuple[Optional[_Choice], list[str]]:
    stream = configured.stream
    label = stream_label(key)
    mode = configured.destination_sync_mode
    settings = config.settings_for(stream.name, key[0])
    if configured.destination_object_name:
        endpoint, activation, problems = activation_settings(label, configured, settings)
        if endpoint is None:
            return None, problems
        why = f"destination_object_name '{endpoint.value}', mapped in the Airbyte UI"
        return _Choice(endpoint, why, activation), []
    if settings is not None and settings.endpoint.is_object:
        if mode in (DestinationSyncMode.append, DestinationSyncMode.append_dedup):
            why = SET_IN_STREAMS
            return _Choice(settings.endpoint, why, settings), []
        mode_name = getattr(mode, "value", mode)
        return None, [
            (
                f"stream '{label}' uses the destination sync mode '{mode_name}', but Planhat's {settings.endpoint.label} "
                "can only be upserted (nothing is deleted, so a table cannot be replaced): choose 'append' or "
                "'append_dedup' for this stream (both upsert on its `match_on` key)"
            )
        ]
    if mode != DestinationSyncMode.append:
        # Planhat has no primary keys to deduplicate on and nothing can be replaced or deleted, so
        # append_dedup and overwrite would silently mean "append", and re-sent rows inflate totals.
        mode_name = getattr(mode, "value", mode)
        return None, [
            (
                f"stream '{label}' uses the destination sync mode '{mode_name}', but Planhat's analytics "
                "endpoints only append (nothing can be deduplicated, replaced or deleted): choose 'append' for "
                "this stream (in PyAirbyte: destination.write(source, cache=False, write_strategy='append'))"
            )
        ]
    if settings is not None:
        why = SET_IN_STREAMS
        return _Choice(settings.endpoint, why, settings), []
    endpoint = endpoint_from_schema(json_schema)
    if endpoint is Endpoint.METRICS:
        why = "its schema has " + ", ".join(METRIC_REQUIRED_FIELDS)
    elif endpoint is Endpoint.USER_ACTIVITIES:
        why = "its schema has " + " or ".join(USER_ACTIVITY_IDENTITY_FIELDS)
    else:
        return None, [
            (
                f"stream '{label}' has neither the Metrics fields ({', '.join(METRIC_REQUIRED_FIELDS)}) nor a User "
                f"Activities field ({' or '.join(USER_ACTIVITY_IDENTITY_FIELDS)}) in its schema: add an entry for it "
                "under `streams` with its `endpoint`, or rename its columns at the source"
            )
        ]
    return _Choice(endpoint, why, None), []


def compile_stream(
    label: str, endpoint: Endpoint, settings: Optional[StreamSettings], json_schema: Optional[Mapping[str, Any]]
) -> tuple[StreamPlan, list[str]]:
    """One stream's compiled mapping and every problem of its settings, by its kind of target
    (analytics or object). With `json_schema=None` (no catalog) the checks against the schema are left out."""
    if endpoint.is_object:
        object_plan, object_problems = compile_object(label, endpoint.target, settings, json_schema)
        return object_plan, object_problems + _operation_problems(label, endpoint, settings)
    plan, problems = compile_mapping(label, endpoint, settings, json_schema)
    if settings is not None:
        for name, value in (
            ("match_on", settings.match_on),
            ("unmapped_columns", settings.unmapped_columns),
            ("operation", settings.operation),
            ("archive", settings.archive or None),
            ("on_source_delete", settings.on_source_delete),
            ("skip_unchanged", settings.skip_unchanged or None),
        ):
            if value is not None:
                problems.append(f"stream '{label}' ({endpoint.label}): `{name}` only applies to objects; remove it")
    return plan, problems


def _operation_problems(label: str, endpoint: Endpoint, settings: Optional[StreamSettings]) -> list[str]:
    """An update or a delete finds Planhat's records by their key: it needs one; an archive needs the flag."""
    if settings is None:
        return []
    operation = settings.effective_operation
    target = endpoint.target
    if operation in (Operation.UPDATE, Operation.DELETE, Operation.ARCHIVE) and settings.match_on is MatchOn.NONE:
        return [
            f"stream '{label}' ({endpoint.label}): operation {settings.operation.value if settings.operation else ''} "
            f"finds Planhat's records by their key, but match_on is none: set `match_on` to one of "
            f"{', '.join(target.keyables)}"
        ]
    if settings.source_delete is not None and operation is not Operation.UPSERT:
        return [
            f"stream '{label}' ({endpoint.label}): `on_source_delete` applies to upsert streams only (this one's "
            f"operation is {operation.value}): remove it, or choose the sync mode append_dedup (Upsert)"
        ]
    if settings.skip_unchanged and settings.match_on is MatchOn.NONE:
        return [
            f"stream '{label}' ({endpoint.label}): `skip_unchanged` compares each item with the Planhat record of "
            f"its key, but match_on is none: set `match_on` to one of {', '.join(target.keyables)}"
        ]
    if settings.source_delete is not None and settings.match_on is MatchOn.NONE:
        return [
            f"stream '{label}' ({endpoint.label}): `on_source_delete` finds Planhat's records by their key, but "
            f"match_on is none: set `match_on` to one of {', '.join(target.keyables)}"
        ]
    if Operation.ARCHIVE in (operation, settings.source_delete) and not target.can_archive:
        archivable = ", ".join(t.label for t in TARGETS.values() if t.can_archive)
        return [
            f"stream '{label}' ({endpoint.label}): `archive: true`, but {endpoint.label} have no archived flag "
            f"(only {archivable} do): remove `archive` to delete them"
        ]
    return []


def _primary_key_problem(route: StreamRoute, configured: ConfiguredAirbyteStream) -> Optional[str]:
    """append_dedup on an object: the stream's primary key must be the column match_on reads."""
    settings = route.settings
    match_on = settings.effective_match_on if settings else MatchOn.EXTERNAL_ID
    key_field = route.endpoint.target.keyables.get(match_on.value) if match_on is not MatchOn.NONE else None
    if key_field is None:
        return (
            f"stream '{route.name}' uses 'append_dedup', which needs a key: set `match_on` to one of "
            f"{', '.join(route.endpoint.target.keyables)} (it is {match_on.value})"
        )
    source = key_field
    for mapping in settings.field_mappings if settings else ():
        if mapping.planhat_field == key_field and mapping.source_field:
            source = mapping.source_field
    primary_key = configured.primary_key or configured.stream.source_defined_primary_key or []
    paths = [".".join(str(part) for part in path) for path in primary_key]
    if paths == [source]:
        return None
    return (
        f"stream '{route.name}' uses 'append_dedup' with the primary key {paths or 'none'}, but its records are "
        f"matched in Planhat on {match_on.value} (read from '{source}'): make the primary key ['{source}'], or map "
        f"{key_field} from the primary key's column"
    )


def settings_problems(config: PlanhatConfig) -> list[str]:
    """What is wrong in the `streams` settings without looking at a catalog (for the `check` command):
    the mapping settings of each entry, and the credentials its endpoint needs (the rule `write` applies)."""
    problems: list[str] = []
    for settings in config.streams:
        label = f"{settings.namespace}.{settings.name}" if settings.namespace else settings.name
        problems.extend(credential_problems(config, label, settings.endpoint, SET_IN_STREAMS))
        problems.extend(compile_stream(label, settings.endpoint, settings, None)[1])
    return problems
