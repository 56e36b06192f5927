"""The Airbyte platform's checks of a data-activation connection against a destination catalog.

A re-statement, for tests, of what the platform does when a connection is created or updated
(airbyte-platform: airbyte-commons-server/src/main/kotlin/io/airbyte/commons/server/handlers/
ConnectionsHandler.kt, `validateCatalogWithDestinationCatalog`, read at HEAD 310e6cb6), on the
configured catalog as the platform writes it for the destination (after the field-renaming mappers
of airbyte-mappers DestinationCatalogGenerator.kt: the stream's json_schema lists the mapped fields
under their destination names, and its primary key is renamed too). The required fields and the
field list come from airbyte-config FieldGenerator.kt: the top-level `properties` and `required`.

The platform throws at the first problem; this returns every problem, each naming its stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def platform_problems(configured_catalog: Mapping[str, Any], destination_catalog: Mapping[str, Any]) -> list[str]:
    """Every problem the platform would report, one string per problem, each starting with the stream."""
    operations = destination_catalog["operations"]
    problems: list[str] = []
    for configured in configured_catalog["streams"]:
        stream = configured["stream"]
        name = f"stream '{stream['name']}'"
        object_name = configured.get("destination_object_name")
        if not object_name:  # DestinationCatalogMissingObjectNameProblem
            problems.append(f"{name}: no destination_object_name")
            continue
        mode = configured["destination_sync_mode"]
        operation = next(
            (op for op in operations if op["object_name"] == object_name and op["sync_mode"] == mode), None
        )
        if operation is None:  # DestinationCatalogInvalidOperationProblem
            problems.append(f"{name}: no operation '{object_name}' with sync mode '{mode}'")
            continue
        keys = operation.get("matching_keys") or []
        if keys:
            primary_key = configured.get("primary_key") or []
            if not primary_key:  # DestinationCatalogMissingPrimaryKeyProblem
                problems.append(f"{name}: no primary key, but '{object_name}' has matching keys {keys}")
            else:
                flat = sorted(part for path in primary_key for part in path)
                if not any(sorted(key) == flat for key in keys):  # DestinationCatalogInvalidPrimaryKeyProblem
                    problems.append(f"{name}: primary key {primary_key} is none of the matching keys {keys}")
        schema = operation["json_schema"]
        destination_fields = list((schema.get("properties") or {}).keys())
        stream_fields = list(((stream.get("json_schema") or {}).get("properties") or {}).keys())
        for required in schema.get("required") or []:  # DestinationCatalogMissingRequiredFieldProblem
            if required not in stream_fields:
                problems.append(f"{name}: required field '{required}' of '{object_name}' is not mapped")
        if schema.get("additionalProperties") is False:  # DestinationCatalogInvalidAdditionalFieldProblem
            for field in stream_fields:
                if field not in destination_fields:
                    problems.append(f"{name}: field '{field}' is not a field of '{object_name}'")
    return problems
