"""spec.json as the Airbyte UI draws it: which fields a user sees first, in which order, and what is
folded away. The renderer follows the rules of Airbyte's "Connector Specification Reference" and the
web app's form builder (airbyte-platform, airbyte-webapp/src/core/form/schemaToFormBlock.ts and
views/Connector/ConnectorForm/useBuildForm.ts):

- `airbyte_hidden` fields are not drawn.
- Top-level fields are drawn in cards by `group`, the cards in the order of the spec's `groups`.
- In a card (or a nested object), required fields and `always_show` fields come first, by `order`;
  the other optional fields are folded into an "Optional fields" section, by `order` too. Fields
  without an `order` follow those with one: required before optional, then by name.
- `order` may not repeat within an object or a group.
- A oneOf is drawn as a choice: every option is an object with one key whose `const` (or an `enum`
  of one value with that value as its `default`) tells it apart; without one the form cannot be
  built. The option shown first is the first one, unless the oneOf's `default` is one of those values.
- An array of objects is drawn as a list of small forms; other arrays only as a list of values.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

SPEC = Path(__file__).resolve().parent.parent / "destination_planhat" / "spec.json"
FOLDED = "(optional fields, folded)"


class FormError(AssertionError):
    """The Airbyte UI could not draw the spec as it is (or would draw it ambiguously)."""


def field_order(name: str, schema: Mapping[str, Any], required: set[str]) -> tuple[int, int, int, str]:
    """The sort key of one field among its neighbours: by `order`, then those without one, required first."""
    if "order" in schema:
        return (0, schema["order"], 0, name)
    return (1, 0, 0 if name in required else 1, name)


def check_unique_orders(fields: Mapping[str, Mapping[str, Any]], where: str) -> None:
    counts = Counter(schema["order"] for schema in fields.values() if "order" in schema)
    repeated = sorted(order for order, count in counts.items() if count > 1)
    if repeated:
        names = [name for name, schema in fields.items() if schema.get("order") in repeated]
        raise FormError(f"{where}: order {repeated} is used more than once ({', '.join(names)})")


def option_value(option: Mapping[str, Any], key: str) -> Any:
    """The value that tells a oneOf option apart, as the web app reads it (const, or enum of one + default)."""
    schema = option.get("properties", {}).get(key, {})
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and len(enum) == 1 and "default" in schema:
        return schema["default"]
    return None


def selection_key(schema: Mapping[str, Any], where: str) -> str:
    options = schema["oneOf"]
    if not all(isinstance(o, Mapping) and o.get("type") == "object" for o in options):
        raise FormError(f"{where}: every oneOf option must be an object")
    keys = [set(k for k in o.get("properties", {}) if option_value(o, k) is not None) for o in options]
    shared = sorted(set.intersection(*keys)) if keys else []
    if not shared:
        raise FormError(f"{where}: the oneOf options share no key with a const (or an enum of one with its default)")
    return shared[0]


def render_value(name: str, schema: Mapping[str, Any], where: str, indent: str) -> list[str]:
    """One field: its title, and below it what it unfolds into (a oneOf's options, an array's item form)."""
    title = schema.get("title", name)
    if "oneOf" in schema:
        key = selection_key(schema, where)
        values = [option_value(o, key) for o in schema["oneOf"]]
        default = schema.get("default")
        chosen = values.index(default) if default in values else 0
        if isinstance(default, Mapping) and default.get(key) != values[chosen]:
            raise FormError(f"{where}: the UI shows option {values[chosen]!r} first, but the default is {default!r}")
        lines = [f"{indent}{title}: one of {' | '.join(str(v) for v in values)}, shown first: {values[chosen]}"]
        for option, value in zip(schema["oneOf"], values):
            lines.append(f"{indent}  [{value}]")
            lines += render_object(option, f"{where}[{value}]", indent + "    ", skip={key})
        return lines
    if schema.get("type") == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping) or items.get("type") != "object":
            raise FormError(f"{where}: the items of an array must be objects (the UI draws no other forms)")
        return [f"{indent}{title}: a list of"] + render_object(items, f"{where}[]", indent + "  ")
    if schema.get("type") == "object" and "properties" in schema:
        return [f"{indent}{title}:"] + render_object(schema, where, indent + "  ")
    return [f"{indent}{title}"]


def render_fields(fields: Mapping[str, Mapping[str, Any]], required: set[str], where: str, indent: str) -> list[str]:
    check_unique_orders(fields, where)
    visible = {name: schema for name, schema in fields.items() if not schema.get("airbyte_hidden")}
    shown = [n for n in visible if n in required or visible[n].get("always_show")]
    folded = [n for n in visible if n not in shown]
    lines: list[str] = []
    for name in sorted(shown, key=lambda n: field_order(n, visible[n], required)):
        lines += render_value(name, visible[name], f"{where}.{name}", indent)
    if folded:
        lines.append(f"{indent}{FOLDED}")
        for name in sorted(folded, key=lambda n: field_order(n, visible[n], required)):
            lines += render_value(name, visible[name], f"{where}.{name}", indent + "  ")
    return lines


def render_object(schema: Mapping[str, Any], where: str, indent: str, skip: frozenset[str] | set[str] = frozenset()):
    fields = {name: prop for name, prop in schema.get("properties", {}).items() if name not in skip}
    return render_fields(fields, set(schema.get("required", ())), where, indent)


def render_form(spec: Mapping[str, Any]) -> list[str]:
    """The whole form, top to bottom, one line per field or card, as the Airbyte UI first draws it."""
    schema = spec["connectionSpecification"]
    fields = schema["properties"]
    for name, prop in fields.items():
        if not prop.get("airbyte_hidden") and "group" not in prop and schema.get("groups"):
            raise FormError(f"`{name}` is drawn in a card of its own, apart from the spec's groups: give it a group")
    for where, prop in nested_properties(schema):
        if "group" in prop:
            raise FormError(f"{where}: `group` is allowed on top-level fields only")
    lines: list[str] = []
    required = set(schema.get("required", ()))
    if not any("group" in prop for prop in fields.values()):
        return render_fields(fields, required, "(form)", "  ")  # one card, without a title
    group_ids = [group["id"] for group in schema.get("groups", ())]
    ungrouped = sorted({prop["group"] for prop in fields.values() if "group" in prop} - set(group_ids))
    titles = {group["id"]: group.get("title", group["id"]) for group in schema.get("groups", ())}
    for group in group_ids + ungrouped:
        members = {name: prop for name, prop in fields.items() if prop.get("group") == group}
        body = render_fields(members, required, group, "  ")
        if body:
            lines += [f"[{titles.get(group, group)}]"] + body
    check_unique_orders({n: p for n, p in fields.items() if "group" not in p}, "(no group)")
    return lines


def nested_properties(schema: Mapping[str, Any], where: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    """Every property below the top level (in objects, array items and oneOf options), with its path."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for name, prop in schema.get("properties", {}).items():
        path = f"{where}.{name}" if where else name
        if where:
            found.append((path, prop))
        for option in prop.get("oneOf", ()):
            found += [(f"{path}{p}", s) for p, s in nested_properties(option, " ")]
        items = prop.get("items")
        if isinstance(items, Mapping):
            found += nested_properties(items, f"{path}[]")
        if "properties" in prop:
            found += nested_properties(prop, path)
    return found


def spec() -> dict[str, Any]:
    return json.loads(SPEC.read_text(encoding="utf-8"))


# ----- the connector's form ------------------------------------------------------------------------

# What a user meets, top to bottom: the credentials first, then the streams, then where rejected
# records go; everything else folded away or hidden (airbyte_hidden, documented in docs/planhat.md).
EXPECTED_FORM = """
[Planhat account]
  Tenant UUID
  API Token
  Region
[Streams]
  Stream settings: a list of
    Stream name
    Planhat endpoint
    (optional fields, folded)
      Stream namespace
      Field mappings: a list of
        Planhat field
        (optional fields, folded)
          Source field
          Constant
      Unpivot columns (Metrics only): a list of
        Column
        (optional fields, folded)
          Dimension ID
      Match on (objects)
      Unmapped columns (objects)
      Operation (objects)
      Archive instead of delete
      Deletes at the source (objects)
      Skip unchanged records (objects)
  (optional fields, folded)
    Invalid records
    Max error percent
    Dry run
    Batch size
    Max deletes per sync
[Rejected records]
  (optional fields, folded)
    Rejected records storage: one of None | S3 | Local, shown first: None
      [None]
      [S3]
        Access Key ID
        Secret Access Key
        S3 Bucket Name
        (optional fields, folded)
          Role ARN
          S3 Bucket Region
          S3 Endpoint
          Prefix Path in the Bucket
      [Local]
        Local Path
"""


def test_the_form_shows_the_credentials_first_and_folds_the_rest():
    assert render_form(spec()) == EXPECTED_FORM.strip("\n").splitlines()


def test_the_credentials_are_shown_without_unfolding():
    """Neither credential is always needed (objects need no tenant token, User Activities no API token),
    so neither is required: both are always_show, the first two fields of the first card."""
    properties = spec()["connectionSpecification"]["properties"]
    assert spec()["connectionSpecification"]["required"] == []
    assert [n for n in ("tenant_uuid", "api_token") if properties[n].get("always_show")] == ["tenant_uuid", "api_token"]
    assert render_form(spec())[1:3] == ["  Tenant UUID", "  API Token"]


def test_values_with_a_shape_have_examples_and_a_pattern_descriptor():
    properties = spec()["connectionSpecification"]["properties"]
    for name, prop in properties.items():
        if "pattern" in prop:
            assert prop.get("pattern_descriptor"), f"`{name}` has a pattern but no pattern_descriptor"
            assert prop.get("examples"), f"`{name}` has a pattern but no examples"
    assert "us2" in properties["region"]["examples"]


# ----- the renderer applies the rules it claims ------------------------------------------------------


def form(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    schema = {"type": "object", "required": list(required), "properties": properties, **extra}
    return {"connectionSpecification": schema}


def test_renderer_folds_optional_fields_unless_always_show():
    rendered = render_form(
        form(
            {
                "b": {"title": "B", "order": 1, "group": "g"},
                "a": {"title": "A", "order": 0, "group": "g"},
                "c": {"title": "C", "order": 2, "always_show": True, "group": "g"},
                "d": {"title": "D", "group": "g"},
                "e": {"title": "E", "airbyte_hidden": True},
            },
            required=("b",),
            groups=[{"id": "g", "title": "G"}],
        )
    )
    assert rendered == ["[G]", "  B", "  C", f"  {FOLDED}", "    A", "    D"]


def test_renderer_puts_fields_without_order_last_required_first():
    rendered = render_form(form({"z": {}, "y": {}, "x": {"order": 0, "always_show": True}}, required=("z",)))
    assert rendered == ["  x", "  z", f"  {FOLDED}", "    y"]
    fields = {"z": {}, "y": {"always_show": True}, "x": {"order": 0, "always_show": True}}
    assert render_fields(fields, {"z"}, "test", "") == ["x", "z", "y"]


def test_renderer_refuses_a_repeated_order():
    with pytest.raises(FormError, match=r"order \[2\] is used more than once \(region, batch_size\)"):
        render_form(form({"region": {"order": 2}, "batch_size": {"order": 2}}))


def test_renderer_refuses_a_oneof_without_a_const_key():
    options = [
        {"type": "object", "properties": {"kind": {"type": "string", "enum": ["None"]}}},
        {"type": "object", "properties": {"kind": {"type": "string", "enum": ["S3"]}}},
    ]
    with pytest.raises(FormError, match="share no key with a const"):
        render_form(form({"storage": {"type": "object", "oneOf": options}}))
    for option in options:
        option["properties"]["kind"]["default"] = option["properties"]["kind"]["enum"][0]
    assert render_form(form({"storage": {"type": "object", "oneOf": options}}))[-1] == "      [S3]"


def test_renderer_refuses_arrays_of_anything_but_objects():
    either = {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "object"}]}}
    with pytest.raises(FormError, match="items of an array must be objects"):
        render_form(form({"columns": either}))


def test_renderer_refuses_a_group_below_the_top_level():
    nested = {"type": "object", "properties": {"inner": {"group": "g"}}}
    with pytest.raises(FormError, match="allowed on top-level fields only"):
        render_form(form({"outer": nested}))
