"""A tenant's custom fields (`GET /customfields`) as JSON-schema properties of `discover`'s objects.

Each writable custom field becomes the property `custom.<Field name>` of its object: the same name a
`field_mappings` entry uses (`planhat_field: custom.<Field name>`), and a top-level property, because
the Airbyte UI offers only top-level properties as destination fields. The object mapper sends such
a column under the item's `custom` object by the field's name.

Left out: formula fields (`isFormula`: Planhat computes them) and locked ones (`isLocked`: "not
editable"), definitions of a type this table does not know, and those whose `parent` is no object
the connector writes. Reading never fails discover: without a token, or when Planhat refuses or
does not answer, discover offers the standard fields and says why in one warning.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from destination_planhat.planhat.api import (
    CUSTOM_FIELDS_PATH,
    CUSTOM_PREFIX,
    OBJECT_ENDPOINTS,
    WHERE_API_TOKEN,
    Endpoint,
)
from destination_planhat.planhat.errors import PlanhatAuthError, PlanhatError

JsonSchema = dict[str, Any]

# Planhat's custom field types (its Custom Field page) -> the JSON schema of a value. The types
# whose values are references (team members, end users, companies) take ids as text.
_TEXT = {"type": "string"}
CUSTOM_FIELD_SCHEMAS: Mapping[str, JsonSchema] = {
    "number": {"type": "number"},
    "rating": {"type": "number"},
    "text": _TEXT,
    "rich text": _TEXT,
    "phone": _TEXT,
    "email": _TEXT,
    "url": _TEXT,
    "checkbox": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "day": {"type": "string", "format": "date"},
    "team member": _TEXT,
    "team members": {"type": "array", "items": _TEXT},
    "enduser": _TEXT,
    "endusers": {"type": "array", "items": _TEXT},
    "company": _TEXT,
    "companies": {"type": "array", "items": _TEXT},
    # list / multipicklist: an enum of the field's listValues (see custom_field_schema)
    "list": _TEXT,
    "multipicklist": {"type": "array", "items": _TEXT},
}


@dataclass(frozen=True)
class CustomFields:
    """What discover offers per object, and what it could not offer and why (for the log)."""

    by_endpoint: Mapping[Endpoint, Mapping[str, JsonSchema]]  # property name (custom.<name>) -> schema
    left_out: tuple[str, ...] = ()  # "Company 'Score' (formula)", ...
    warning: Optional[str] = None  # why no custom field could be read, and the fix

    @property
    def count(self) -> int:
        return sum(len(fields) for fields in self.by_endpoint.values())


NONE_READ = CustomFields({})


def custom_field_schema(definition: Mapping[str, Any]) -> tuple[Optional[JsonSchema], str]:
    """The JSON schema of one definition's values, or None and why it is left out."""
    if definition.get("isFormula") is True:
        return None, "formula"
    if definition.get("isLocked") is True:
        return None, "locked"
    kind = str(definition.get("type") or "").strip().lower()
    base = CUSTOM_FIELD_SCHEMAS.get(kind)
    if base is None:
        return None, f"type {definition.get('type')!r} not known to the connector"
    schema = json.loads(json.dumps(base))  # a copy: the table is shared
    options = [str(value) for value in definition.get("listValues") or () if isinstance(value, (str, int, float))]
    if kind == "list" and options:
        schema["enum"] = options
    elif kind == "multipicklist" and options:
        schema["items"] = {"type": "string", "enum": options}
    schema["description"] = f"Custom field '{definition['name']}' ({kind})"
    return schema, ""


def group_custom_fields(definitions: Sequence[Any]) -> CustomFields:
    """Definitions as GET /customfields lists them -> properties per object (by `parent`)."""
    # Several targets may write one model (notes and tickets are Conversations): each is offered its fields.
    by_model: dict[str, list[Endpoint]] = {}
    for endpoint in OBJECT_ENDPOINTS:
        by_model.setdefault(endpoint.target.model.lower(), []).append(endpoint)
    by_endpoint: dict[Endpoint, dict[str, JsonSchema]] = {}
    left_out: list[str] = []
    for definition in definitions:
        if not isinstance(definition, Mapping) or not isinstance(definition.get("name"), str) or not definition["name"]:
            left_out.append(f"a definition without a name ({str(definition)[:80]})")
            continue
        parent = str(definition.get("parent") or "")
        endpoints = by_model.get(parent.lower())
        if not endpoints:
            continue  # a model the connector does not write (users, ...): nothing to offer
        schema, why = custom_field_schema(definition)
        if schema is None:
            left_out.append(f"{parent} '{definition['name']}' ({why})")
            continue
        for endpoint in endpoints:
            by_endpoint.setdefault(endpoint, {})[CUSTOM_PREFIX + definition["name"]] = dict(schema)
    return CustomFields(by_endpoint, tuple(left_out))


def read_custom_fields(token: Optional[str], read: Callable[[], bytes], where: str) -> CustomFields:
    """Read and group the tenant's custom fields; on any failure, none and a warning naming why.

    `read` performs `GET /customfields` (PlanhatClient.read_custom_fields); `where` names the host."""
    lead = "custom fields are not offered by discover (only each object's standard fields): "
    if not token:
        return CustomFields({}, warning=lead + f"no `api_token` is set; fill it in with {WHERE_API_TOKEN} to list them")
    try:
        body = read()
    except PlanhatAuthError as exc:
        return CustomFields(
            {},
            warning=(
                lead + f"Planhat refused GET {CUSTOM_FIELDS_PATH} at {where} (HTTP {exc.status}): check `api_token` "
                f"(it must be {WHERE_API_TOKEN}, allowed to read custom fields)"
            ),
        )
    except PlanhatError as exc:
        return CustomFields(
            {},
            warning=(
                lead + f"GET {CUSTOM_FIELDS_PATH} at {where} failed ({exc}); run discover again later (in Airbyte: "
                "refresh the destination's schema), or check `region` / `api_base_url`"
            ),
        )
    try:
        definitions = json.loads(body)
    except ValueError:
        definitions = None
    if not isinstance(definitions, list):
        return CustomFields(
            {},
            warning=(
                lead + f"GET {CUSTOM_FIELDS_PATH} at {where} did not answer with a JSON list; check `api_base_url`"
            ),
        )
    return group_custom_fields(definitions)
