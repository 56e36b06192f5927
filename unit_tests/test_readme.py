"""README's first screen says what the connector does, and its PyAirbyte example is the file the
end-to-end test runs (e2e_pyairbyte/faker_to_planhat.py), word for word."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def first_paragraph() -> str:
    body = README.split("\n\n", 2)[1]  # after the title
    return " ".join(body.split())


def test_the_first_paragraph_names_the_four_things_the_connector_does():
    paragraph = first_paragraph()
    for thing in ("Metrics", "User Activities", "Planhat's objects", "data activation"):
        assert thing in paragraph, f"README's first paragraph does not mention {thing}"
    assert "docs/planhat.md" in paragraph


def test_the_sandbox_recipe_comes_before_anything_else():
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    assert headings[0] == "Try it against the sandbox"


def test_the_pyairbyte_example_is_the_file_the_e2e_test_runs():
    script = (ROOT / "e2e_pyairbyte" / "faker_to_planhat.py").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert script in blocks, "README's PyAirbyte example differs from e2e_pyairbyte/faker_to_planhat.py"
    assert "import airbyte as ab" in script and "pip install airbyte==" in script
