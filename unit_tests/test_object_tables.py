"""The objects table in README.md and docs/planhat.md is the one written from the target descriptions.

The documents are prose and cannot import planhat/api.py: so each must hold the table that
`destination_planhat.testing.object_tables` writes, exactly. To fix a failure, paste what
`.venv/bin/python -m destination_planhat.testing.object_tables` prints over the document's table.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from destination_planhat.planhat import api
from destination_planhat.planhat.api import OBJECT_ENDPOINTS, TARGETS, Endpoint
from destination_planhat.testing.object_tables import HEADER, object_table

ROOT = Path(__file__).resolve().parent.parent


def table_in(text: str) -> str:
    """The lines of the document's objects table: from its header to the first line that is not a row."""
    lines = text.splitlines()
    first = HEADER.splitlines()[0]
    assert lines.count(first) == 1, "the document must hold the objects table once, with its header"
    start = lines.index(first)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("document", ["README.md", "docs/planhat.md"])
def test_the_document_holds_the_table_written_from_the_targets(document: str) -> None:
    expected = object_table()
    assert table_in((ROOT / document).read_text(encoding="utf-8")) == expected, (
        f"{document}: the objects table differs from the target descriptions; replace it with:\n{expected}"
    )


def test_the_table_has_one_row_per_object_in_order() -> None:
    rows = object_table().splitlines()[2:]
    assert [row.split("|")[1].strip().strip("`") for row in rows] == [e.value for e in OBJECT_ENDPOINTS]


def test_a_changed_description_changes_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: the table follows the descriptions, so a document written before a
    change no longer matches."""
    before = object_table()
    targets = dict(TARGETS)
    targets[Endpoint.CHURN] = replace(TARGETS[Endpoint.CHURN], required=("companyId",))
    monkeypatch.setattr(api, "TARGETS", targets)
    assert object_table() != before
    assert "| `churn` | Churn | externalId, _id | companyId |" in object_table()
