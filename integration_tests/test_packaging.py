"""The Dockerfile's install steps, without Docker: copy what it COPYs, `pip install .` into a fresh
virtual environment (non-editable, as the image does), then run the installed connector."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from destination_planhat.testing.harness import encode_lines, mixed_catalog, mixed_messages, sandbox_config
from destination_planhat.testing.protocol_schema import assert_protocol_output

REPO_ROOT = Path(__file__).resolve().parent.parent


def dockerfile_steps() -> tuple[list[str], list[str]]:
    """The sources the Dockerfile COPYs into the image, and its RUN pip install arguments."""
    sources: list[str] = []
    installs: list[str] = []
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
        if words[0].upper() == "RUN" and words[1:3] == ["pip", "install"]:
            installs.append(" ".join(words[3:]))
    return sources, installs


@pytest.mark.slow
@pytest.mark.process
def test_dockerfile_install_steps_in_a_fresh_virtualenv(sandbox, tmp_path):
    sources, installs = dockerfile_steps()
    assert installs == ["--no-cache-dir ."], (
        "this test mirrors `RUN pip install --no-cache-dir .`; update both together"
    )
    code = tmp_path / "integration_code"
    code.mkdir()
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        if path.is_dir():
            shutil.copytree(path, code / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, code / source)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "."],
        cwd=code,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-4000:]

    # Run from elsewhere, so only the installed package can be imported.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    located = subprocess.run(
        [
            str(python),
            "-c",
            "import destination_planhat, pathlib; print(pathlib.Path(destination_planhat.__file__).parent)",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert located.returncode == 0, located.stderr
    package_dir = Path(located.stdout.strip())
    assert env_dir in package_dir.parents, f"imported {package_dir}, not the installed copy"
    assert (package_dir / "spec.json").is_file(), "spec.json was not packaged"

    for command in (
        [str(env_dir / "bin" / "destination-planhat"), "spec"],
        [str(python), str(code / "main.py"), "spec"],
    ):
        spec = subprocess.run(command, cwd=elsewhere, capture_output=True, timeout=120, env=env)
        assert spec.returncode == 0, spec.stderr[-4000:]
        messages = [json.loads(line) for line in spec.stdout.splitlines() if line.strip().startswith(b"{")]
        [spec_message] = [m for m in messages if m["type"] == "SPEC"]
        assert "tenant_uuid" in spec_message["spec"]["connectionSpecification"]["properties"]
    # A real sync through the installed console script, with two parse workers: they must find the
    # installed package, orjson and msgspec on their own (they start without site-packages scanning).
    (elsewhere / "catalog.json").write_text(json.dumps(mixed_catalog()))
    (elsewhere / "config.json").write_text(json.dumps(sandbox_config(sandbox.url, batch_size=100, parse_workers=2)))
    write = subprocess.run(
        [str(env_dir / "bin" / "destination-planhat"), "write", "--config", "config.json", "--catalog", "catalog.json"],
        cwd=elsewhere,
        input=encode_lines(mixed_messages(metrics=300, activities=200, state_every=100)),
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert write.returncode == 0, write.stderr.decode()[-4000:]
    assert "input parsing: 2 worker process(es)" in write.stdout.decode()
    assert (len(sandbox.received("metrics")), len(sandbox.received("user_activities"))) == (300, 200)
    # discover through the console script too (the CDK's destinations have no such command).
    sandbox.configure_main_api(custom_fields=[{"name": "Tier", "type": "text", "parent": "Company"}])
    (elsewhere / "config.json").write_text(json.dumps(sandbox_config(sandbox.url, api_base_url=sandbox.url)))
    discover = subprocess.run(
        [str(env_dir / "bin" / "destination-planhat"), "discover", "--config", "config.json"],
        cwd=elsewhere,
        capture_output=True,
        timeout=120,
        env=env,
    )
    assert discover.returncode == 0, discover.stderr.decode()[-4000:]
    assert_protocol_output(discover.stdout.decode(), source="discover")
    [catalog] = [json.loads(line) for line in discover.stdout.splitlines() if b'"DESTINATION_CATALOG"' in line]
    companies = next(op for op in catalog["destination_catalog"]["operations"] if op["object_name"] == "companies")
    assert "custom.Tier" in companies["json_schema"]["properties"]
    assert sys.version_info >= (3, 10)
