"""Consistency checks between the Dockerfile, .dockerignore and metadata.yaml.

These tests read files only; they neither build the image nor need Docker.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

CONNECTOR_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE_PATH = CONNECTOR_ROOT / "Dockerfile"
DOCKERIGNORE_PATH = CONNECTOR_ROOT / ".dockerignore"
METADATA_PATH = CONNECTOR_ROOT / "metadata.yaml"

WORKDIR = "/airbyte/integration_code"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, `\\` continuations joined)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    if pending.strip():
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def _words(arguments: str) -> list[str]:
    """Arguments of an instruction, in JSON (exec) form or shell form."""
    if arguments.startswith("["):
        value = json.loads(arguments)
        assert isinstance(value, list) and all(isinstance(item, str) for item in value)
        return value
    return shlex.split(arguments)


def _without_flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    rest: list[str] = []
    for word in words:
        if word.startswith("--") and not rest:
            name, _, value = word[2:].partition("=")
            flags[name] = value
        else:
            rest.append(word)
    return flags, rest


def from_image(instructions: list[Instruction]) -> str:
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 1, f"expected one FROM instruction, found {len(froms)}"
    _, words = _without_flags(shlex.split(froms[0].arguments))
    return words[0]


def labels(instructions: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "LABEL":
            continue
        for pair in shlex.split(instruction.arguments):
            key, sep, value = pair.partition("=")
            assert sep, f"LABEL must use key=value pairs: {instruction.arguments!r}"
            found[key] = value
    return found


def env(instructions: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        words = shlex.split(instruction.arguments)
        if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
            found[words[0]] = " ".join(words[1:])
            continue
        for pair in words:
            key, _, value = pair.partition("=")
            found[key] = value
    return found


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Paths that COPY/ADD take from the build context (COPY --from=<stage> excluded)."""
    sources: list[str] = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, words = _without_flags(_words(instruction.arguments))
        if "from" in flags:
            continue
        assert len(words) >= 2, f"{instruction.keyword} needs a source and a destination"
        sources.extend(words[:-1])
    return sources


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            parts.append(pattern[index : end + 1])
            index = end + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = pattern.lstrip("/").rstrip("/")
        rules.append((negated, _dockerignore_regex(pattern)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker semantics, simplified: the last matching rule wins; a match on a folder covers it."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    assert DOCKERFILE_PATH.is_file(), "Dockerfile is missing"
    return parse_dockerfile(DOCKERFILE_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def metadata_data() -> dict:
    return yaml.safe_load(METADATA_PATH.read_text(encoding="utf-8"))["data"]


def test_from_is_metadata_base_image(instructions: list[Instruction], metadata_data: dict) -> None:
    assert from_image(instructions) == metadata_data["connectorBuildOptions"]["baseImage"]


def test_version_label_is_docker_image_tag(instructions: list[Instruction], metadata_data: dict) -> None:
    assert labels(instructions).get("io.airbyte.version") == metadata_data["dockerImageTag"]


def test_name_label_is_docker_repository(instructions: list[Instruction], metadata_data: dict) -> None:
    assert labels(instructions).get("io.airbyte.name") == metadata_data["dockerRepository"]


def test_workdir(instructions: list[Instruction]) -> None:
    workdirs = [i.arguments for i in instructions if i.keyword == "WORKDIR"]
    assert workdirs and workdirs[-1] == WORKDIR


def test_entrypoint_matches_airbyte_entrypoint(instructions: list[Instruction]) -> None:
    entrypoints = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert entrypoints[0].arguments.startswith("["), "ENTRYPOINT must use the exec (JSON) form"
    entrypoint = _words(entrypoints[0].arguments)
    assert entrypoint == ["python", f"{WORKDIR}/main.py"]
    assert env(instructions).get("AIRBYTE_ENTRYPOINT") == " ".join(entrypoint)


def test_installs_the_package(instructions: list[Instruction]) -> None:
    runs = [i.arguments for i in instructions if i.keyword == "RUN"]
    assert any(re.search(r"\bpip install\b.*(?:\s|^)\.(?:\s|$)", run) for run in runs), runs


def test_copied_paths_exist(instructions: list[Instruction]) -> None:
    sources = copy_sources(instructions)
    assert sources, "the Dockerfile copies nothing from the build context"
    for expected in ("setup.py", "README.md", "main.py", "destination_planhat"):
        assert expected in sources, f"the Dockerfile does not COPY {expected}"
    missing = [source for source in sources if not (CONNECTOR_ROOT / source).exists()]
    assert missing == [], f"COPY sources missing from {CONNECTOR_ROOT}: {missing}"


def test_dockerignore_keeps_copied_paths(instructions: list[Instruction]) -> None:
    assert DOCKERIGNORE_PATH.is_file(), ".dockerignore is missing"
    rules = dockerignore_rules(DOCKERIGNORE_PATH.read_text(encoding="utf-8"))
    for source in copy_sources(instructions):
        assert not is_ignored(source, rules), f".dockerignore excludes COPY source {source}"
        source_path = CONNECTOR_ROOT / source
        if source_path.is_dir():
            for file in source_path.rglob("*.py"):
                relative = file.relative_to(CONNECTOR_ROOT).as_posix()
                if "__pycache__" in relative:
                    continue
                assert not is_ignored(relative, rules), f".dockerignore excludes {relative}"


def test_dockerignore_excludes_local_clutter_and_secrets() -> None:
    rules = dockerignore_rules(DOCKERIGNORE_PATH.read_text(encoding="utf-8"))
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "destination_planhat/__pycache__/x.cpython-311.pyc",
        "secrets/config.json",
        "integration_tests/secrets/config.json",
        "bench/out.json",
    ):
        assert is_ignored(path, rules), f".dockerignore lets {path} into the build context"


def test_dockerignore_matcher_sanity() -> None:
    rules = dockerignore_rules("**/__pycache__\nsecrets\n*.md\n!README.md\n")
    assert is_ignored("a/b/__pycache__/c.pyc", rules)
    assert is_ignored("secrets/x", rules)
    assert is_ignored("CHANGELOG.md", rules)
    assert not is_ignored("README.md", rules)
    assert not is_ignored("destination_planhat/planhat/client.py", rules)
