"""README's "Try it against the sandbox": its three commands, as written, against the sandbox that
`make sandbox` starts (here on a free port: the config is copied with the test sandbox's address)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from destination_planhat.testing.cli import CliRun
from destination_planhat.testing.harness import REPO_ROOT
from destination_planhat.testing.protocol_schema import assert_protocol_output
from destination_planhat.testing.sandbox import PlanhatSandbox

SAMPLE_CONFIG = "integration_tests/sandbox_config.json"

# The README's commands run as written: processes.
pytestmark = pytest.mark.process


def recipe() -> list[str]:
    """The commands of the README's second bash block under "Try it against the sandbox"."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Try it against the sandbox", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert blocks[0].strip() == "make sandbox"
    return [line for line in blocks[1].splitlines() if line.strip()]


def run(command: str, config: Path) -> CliRun:
    """One command of the recipe, with `.venv/bin/python` as this interpreter and the config copied."""
    words = shlex.split(command)
    stdin = b""
    if "<" in words:
        at = words.index("<")
        stdin = (REPO_ROOT / words[at + 1]).read_bytes()
        words = words[:at]
    assert words[0] == ".venv/bin/python" and words[1] == "main.py"
    words = [sys.executable, *words[1:]]
    words[words.index(SAMPLE_CONFIG)] = str(config)
    completed = subprocess.run(words, input=stdin, capture_output=True, timeout=300, cwd=REPO_ROOT)
    stdout = completed.stdout.decode()
    assert_protocol_output(stdout, source=command)
    return CliRun(
        completed.returncode, stdout, completed.stderr.decode(), [json.loads(line) for line in stdout.splitlines()]
    )


def test_check_discover_and_write_as_the_readme_says(tmp_path):
    sample = json.loads((REPO_ROOT / SAMPLE_CONFIG).read_text())
    with PlanhatSandbox() as sandbox:  # the tenant and token of `make sandbox` (the sandbox's defaults)
        config = tmp_path / "sandbox_config.json"
        config.write_text(json.dumps({**sample, "analytics_base_url": sandbox.url, "api_base_url": sandbox.url}))
        check, discover, write = (run(command, config) for command in recipe())

        assert check.connection_status == {"status": "SUCCEEDED"}
        [catalog] = discover.of_type("DESTINATION_CATALOG")
        assert {op["object_name"] for op in catalog["destination_catalog"]["operations"]} >= {"metrics", "companies"}
        assert write.returncode == 0 and len(write.states) == 2 and not write.errors
        assert len(sandbox.received("metrics")) == 2 and len(sandbox.received("user_activities")) == 2


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_sandbox_listens_where_the_sample_config_points():
    dry = subprocess.run(["make", "-n", "sandbox"], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    [command] = [line for line in dry.stdout.splitlines() if "destination_planhat.testing.sandbox" in line]
    port = int(command.split("--port")[1].split()[0])
    sample = json.loads((REPO_ROOT / SAMPLE_CONFIG).read_text())
    for field in ("analytics_base_url", "api_base_url"):
        url = urlsplit(sample[field])
        assert (url.hostname, url.port) == ("127.0.0.1", port), field
    assert "tenant_uuid" in sample and "api_token" in sample
