"""docs/planhat.md and spec.json say the same thing, so the form and the page cannot drift apart.

Every property of the spec (at any depth: `streams` items, mapping items, variants) must have a row
in the page's "Configuration reference" whose first cell is its exact name; that row carries the
spec's title, its default (or "required") and its description word for word, and sits in the
"hidden" table exactly when the spec hides the field. To fix a failure, edit both files together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "planhat.md"
SPEC = ROOT / "destination_planhat" / "spec.json"
REFERENCE_SECTION = "## Configuration reference"
HIDDEN_TABLE = "### Advanced fields (hidden)"


@dataclass(frozen=True)
class SpecProperty:
    path: str  # e.g. streams[].endpoint, for messages
    name: str
    schema: Mapping[str, Any]
    required: bool


@dataclass(frozen=True)
class DocRow:
    title: str
    default: str
    description: str
    hidden: bool


def walk(schema: Mapping[str, Any], prefix: str = "") -> Iterator[SpecProperty]:
    required = set(schema.get("required", ()))
    for name, prop in (schema.get("properties") or {}).items():
        yield SpecProperty(prefix + name, name, prop, name in required)
        yield from walk(prop, f"{prefix}{name}.")
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from walk(items, prefix[:-1] + "[]." if prefix else "[].")
    for keyword in ("oneOf", "anyOf", "allOf"):
        for variant in schema.get(keyword, ()):
            yield from walk(variant, prefix)


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    return json.loads(SPEC.read_text(encoding="utf-8"))


def spec_properties() -> list[SpecProperty]:
    return list(walk(spec()["connectionSpecification"]))


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


@lru_cache(maxsize=1)
def doc_rows() -> dict[str, DocRow]:
    """Rows of the Configuration reference tables, by field name (the first cell, in backticks)."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(REFERENCE_SECTION)
    end = text.index("\n## ", start + len(REFERENCE_SECTION))
    rows: dict[str, DocRow] = {}
    hidden = False
    for line in text[start:end].splitlines():
        if line.startswith("### "):
            hidden = line.strip() == HIDDEN_TABLE
        row = cells(line) if line.startswith("|") else []
        if len(row) == 4 and re.fullmatch(r"`[^`]+`", row[0]):
            name = row[0].strip("`")
            assert name not in rows, f"docs/planhat.md documents `{name}` twice in the Configuration reference"
            rows[name] = DocRow(title=row[1], default=row[2], description=row[3], hidden=hidden)
    return rows


def plain(text: str) -> str:
    return text.replace("`", "")


def is_option_selector(schema: Mapping[str, Any]) -> bool:
    """The key that tells a oneOf's options apart (storage_type): one value, its own default, so that the
    Airbyte UI reads it as the option's const. The docs describe the choice, not each option's value."""
    return schema.get("enum") == [schema.get("default")]


def documented_default(value: Any) -> str:
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def test_the_walk_reaches_nested_properties():
    names = {p.path for p in spec_properties()}
    assert {"tenant_uuid", "streams", "streams[].name", "streams[].endpoint"} <= names


@pytest.mark.parametrize("prop", spec_properties(), ids=lambda p: p.path)
def test_every_spec_property_is_documented_as_the_spec_says(prop: SpecProperty):
    row = doc_rows().get(prop.name)
    assert row is not None, (
        f"spec.json property `{prop.path}` has no row `| `{prop.name}` | ... |` in the Configuration "
        "reference of docs/planhat.md"
    )
    if "title" in prop.schema:
        assert row.title == prop.schema["title"], f"`{prop.path}`: the docs title differs from spec.json's"
    if is_option_selector(prop.schema):
        pass  # one row describes the choice between the options
    elif "default" in prop.schema:
        assert row.default == documented_default(prop.schema["default"]), f"`{prop.path}`: default differs"
    elif prop.required:
        assert row.default == "required", f"`{prop.path}` is required in spec.json"
    if "description" in prop.schema:
        assert plain(prop.schema["description"]) in plain(row.description), (
            f"`{prop.path}`: the docs row must contain spec.json's description word for word "
            "(it may add sentences after it; backticks do not count)"
        )
    assert row.hidden == bool(prop.schema.get("airbyte_hidden")), (
        f"`{prop.path}`: hidden fields (airbyte_hidden) are documented in '{HIDDEN_TABLE}', and only they"
    )


def test_the_documented_sync_modes_are_the_spec_s():
    text = DOCS.read_text(encoding="utf-8")
    supported = {
        row[0].split("]")[0].lstrip("[")
        for row in (cells(line) for line in text.splitlines() if line.startswith("| [") and "sync-modes" in line)
        if row[1] == "Yes"
    }
    assert spec()["supported_destination_sync_modes"] == ["append", "append_dedup"]
    assert supported == {"Full Refresh - Append", "Incremental Sync - Append"}
    partly = {
        row[0].split("]")[0].lstrip("[")
        for row in (cells(line) for line in text.splitlines() if line.startswith("| [") and "sync-modes" in line)
        if row[1] == "Yes (objects only)"
    }
    assert partly == {"Incremental Sync - Append + Deduped"}


def test_the_page_has_the_sections_of_an_airbyte_destination_page():
    headings = re.findall(r"^##+ (.+)$", DOCS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    for heading in (
        "Prerequisites",
        "Setup guide",
        "Configuration reference",
        "How streams are routed",
        "Supported sync modes",
        "Supported objects and streams",
        "Limitations",
        "What the logs mean",
        "Troubleshooting",
        "Changelog",
    ):
        assert heading in headings


def test_the_changelog_has_airbytes_columns():
    text = DOCS.read_text(encoding="utf-8")
    changelog = text[text.index("## Changelog") :]
    header = next(line for line in changelog.splitlines() if line.startswith("| Version"))
    assert cells(header) == ["Version", "Date", "Pull Request", "Subject"]


def test_the_connection_fields_are_listed_in_the_forms_order():
    """The first table lists the fields the form shows at the top level, in the order it shows them:
    by card (the spec's `groups`), the always shown ones first, then the folded ones, each by `order`."""
    schema = spec()["connectionSpecification"]
    groups = [group["id"] for group in schema["groups"]]
    visible = {name: p for name, p in schema["properties"].items() if not p.get("airbyte_hidden") and "group" in p}
    form_order = sorted(
        visible,
        key=lambda name: (
            groups.index(visible[name]["group"]),
            not visible[name].get("always_show"),
            visible[name]["order"],
        ),
    )
    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index("### Connection fields") : text.index("### Per-stream settings")]
    documented = [cells(line)[0].strip("`") for line in table.splitlines() if line.startswith("| `")]
    cards = [name for name in form_order if visible[name]["group"] != "rejected"]  # the storage has its own table
    assert documented == cards
