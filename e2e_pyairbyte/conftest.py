"""PyAirbyte end-to-end tests run in their own virtual environment (.venv-pyairbyte), not the connector's."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # for destination_planhat.testing.sandbox (stdlib + orjson only)
