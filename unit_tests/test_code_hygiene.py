"""Rules of issue 11 that hold for every file: no comment that silences the type checker, and no
`getattr`/`hasattr`/`setattr` on `self` (a class reads its own fields as fields, set in __init__).

EXPECTED_REMAINING names files that may keep such comments while they are being cleaned (empty:
none may). A file in it that no longer has one fails the test until it leaves the set, so the set
cannot go stale and hide a new one.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("destination_planhat", "bench", "unit_tests", "integration_tests", "e2e_pyairbyte")
# Looked for in comments only (where mypy reads it), spaced or not.
TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore")
SELF_ATTRIBUTE_BY_NAME = re.compile(r"\b(?:getattr|hasattr|setattr)\(\s*self\s*,")

# Files allowed to keep one while someone cleans them; must stay empty once they are clean.
EXPECTED_REMAINING: set[str] = set()


def python_files() -> list[Path]:
    files = sorted(path for folder in SCANNED for path in (REPO / folder).rglob("*.py"))
    files += sorted(REPO.glob("*.py"))  # main.py, setup.py, conftest.py
    assert files, f"no Python files found under {REPO}"
    return files


def comment_hits(pattern: re.Pattern[str], source: str) -> list[tuple[int, str]]:
    """(line number, comment) of each comment in `source` that matches."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [
        (token.start[0], token.string)
        for token in tokens
        if token.type == tokenize.COMMENT and pattern.search(token.string)
    ]


def ignores_by_file() -> dict[str, list[str]]:
    """Relative path -> `path:line: comment` of each comment that silences mypy."""
    found: dict[str, list[str]] = {}
    for path in python_files():
        name = path.relative_to(REPO).as_posix()
        for number, comment in comment_hits(TYPE_IGNORE, path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(f"{name}:{number}: {comment}")
    return found


def test_the_scan_sees_the_package_the_tests_and_the_benchmarks():
    names = {path.relative_to(REPO).as_posix() for path in python_files()}
    assert {
        "destination_planhat/sync/writer.py",
        "unit_tests/test_code_hygiene.py",
        "bench/profile_hot_path.py",
        "destination_planhat/testing/sandbox.py",
        "e2e_pyairbyte/test_faker_to_planhat.py",
        "main.py",
    } <= names


@pytest.mark.parametrize(
    "line, matches",
    [
        ("x = f()  # type: ignore\n", True),
        ("x = f()  # type: ignore[arg-type]\n", True),
        ("x = f()  #type:ignore[misc]\n", True),
        ("x = f()  # noqa: E501  # type: ignore\n", True),
        ("x = f()  # the type is checked, not ignored\n", False),
        ('x = "# type: ignore"  # in a string: mypy does not read it\n', False),
    ],
)
def test_the_scan_finds_every_spelling_mypy_reads_and_only_in_comments(line, matches):
    assert bool(comment_hits(TYPE_IGNORE, line)) is matches


def test_no_file_silences_the_type_checker_except_those_still_being_cleaned():
    found = ignores_by_file()
    unexpected = [hit for name, lines in found.items() if name not in EXPECTED_REMAINING for hit in lines]
    assert not unexpected, "type the code instead of silencing mypy:\n" + "\n".join(unexpected)


def test_every_file_still_expected_to_have_an_ignore_has_one():
    found = ignores_by_file()
    clean = sorted(name for name in EXPECTED_REMAINING if name not in found)
    assert not clean, f"no longer silence mypy, remove them from EXPECTED_REMAINING: {clean}"


def test_no_class_reads_its_own_fields_by_name():
    found = []
    for path in python_files():
        name = path.relative_to(REPO).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SELF_ATTRIBUTE_BY_NAME.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "set the field in __init__ and read it as a field:\n" + "\n".join(found)


def test_the_package_passes_the_type_checker():
    """mypy over destination_planhat with the repo's mypy.ini: the types the code declares hold. With
    mypy's own incremental cache (.mypy_cache, as `python -m mypy` uses it): a run after a small change
    checks only what it touched, in a second or two instead of a cold run's ten."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout


MAX_CLASS_LINES = 300


def test_no_class_is_over_300_lines():
    """A class that long holds several jobs: give them to the objects that own them (issue 18)."""
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    long.append(f"{path.relative_to(REPO).as_posix()}:{node.lineno}: {node.name} ({lines} lines)")
    assert not long, f"classes over {MAX_CLASS_LINES} lines:\n" + "\n".join(long)
