from __future__ import annotations

from collections.abc import Iterator

import pytest

from destination_planhat.testing.harness import API_TOKEN, TENANT
from destination_planhat.testing.sandbox import PlanhatSandbox


@pytest.fixture
def sandbox() -> Iterator[PlanhatSandbox]:
    """A fresh Planhat sandbox on a free loopback port, always stopped."""
    server = PlanhatSandbox(tenant=TENANT, api_token=API_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def planhat() -> Iterator[PlanhatSandbox]:
    """A fresh sandbox that expects the distinctive secrets of `sync_checks`, so leaks can be searched for."""
    from destination_planhat.testing.sync_checks import SECRET_API_TOKEN, SECRET_TENANT

    server = PlanhatSandbox(tenant=SECRET_TENANT, api_token=SECRET_API_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()
