"""The objects table of README.md and docs/planhat.md, written from the target descriptions.

Why: the list of objects lived in four places (spec.json, discover, README, docs) copied by hand.
discover builds its operations from planhat.TARGETS, unit_tests/test_mapping_config.py checks
spec.json's list against them, and this table is the one the documents must hold, word for word
(unit_tests/test_object_tables.py). A new object is then its description in planhat/api.py and its
table in the sandbox; the documents follow by pasting what this prints:

    .venv/bin/python -m destination_planhat.testing.object_tables
"""

from __future__ import annotations

from destination_planhat.planhat.api import OBJECT_ENDPOINTS, Reference, Target

HEADER = (
    "| endpoint | object | keys (`match_on`) | required to create | parents: reference field <- key columns |\n"
    "| :--- | :--- | :--- | :--- | :--- |"
)


def _keys(target: Target) -> str:
    return ", ".join(key if field == key else f"{key} (sent as {field})" for key, field in target.keyables.items())


def _required(target: Target) -> str:
    names = []
    for name in target.required:
        if name in target.defaults:
            name += f" (`{target.defaults[name]}` unless mapped)"
        if name in target.always_required:
            name += " (every item, updates too)"
        names.append(name)
    return ", ".join(names) or "—"


def _reference(reference: Reference) -> str:
    text = reference.field + (" (a list)" if reference.many else "")
    text += " <- " + " / ".join(f"`{alias}`" for alias, _ in reference.aliases)
    if reference.by_planhat_id:
        text += f" (looked up: Planhat id of the {reference.parent.value[:-1]})"
    if reference.bare_field:
        text += f" (the externalId also as {reference.bare_field})"
    return text


def object_table() -> str:
    """The markdown table of every object target, in planhat.OBJECTS' order."""
    rows = [HEADER]
    for endpoint in OBJECT_ENDPOINTS:
        target = endpoint.target
        parents = "; ".join(_reference(reference) for reference in target.references) or "—"
        rows.append(f"| `{endpoint.value}` | {target.label} | {_keys(target)} | {_required(target)} | {parents} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(object_table())
