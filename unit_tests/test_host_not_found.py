"""A host name that DNS does not know (a wrong `region`) is said so, naming the setting to fix, by
check and by write; a DNS server that does not answer stays a transient failure."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from airbyte_cdk.models import AirbyteMessageSerializer, ConfiguredAirbyteCatalogSerializer, FailureType, Status
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.destination import DestinationPlanhat
from destination_planhat.testing.harness import catalog, configured_stream, record

LOGGER = logging.getLogger("airbyte")
REAL_GETADDRINFO = socket.getaddrinfo
CONFIG = {
    "api_token": "a-token",
    "region": "uss2",
    "streams": [{"name": "accounts", "endpoint": "companies"}],
    "max_attempts": 2,
    "retry_initial_delay_seconds": 0,
}


@pytest.fixture
def planhat_unknown_to_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """DNS answers "no such name" for every *.planhat.com host; the names asked for are recorded."""
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".planhat.com"):
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return REAL_GETADDRINFO(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_check_says_the_regions_host_does_not_exist(planhat_unknown_to_dns):
    status = DestinationPlanhat().check(LOGGER, CONFIG)
    assert status.status == Status.FAILED
    assert status.message is not None
    assert "api-uss2.planhat.com was not found" in status.message and "`region`" in status.message
    assert "resend" not in status.message and "sends again" not in status.message
    assert set(planhat_unknown_to_dns) == {"api-uss2.planhat.com"}


def test_write_fails_with_a_config_error_naming_region(planhat_unknown_to_dns):
    configured = ConfiguredAirbyteCatalogSerializer.load(
        catalog(configured_stream("accounts", {"type": "object", "properties": {"externalId": {"type": "string"}}}))
    )
    message = record("accounts", {"externalId": "acme", "name": "Acme"})
    with pytest.raises(AirbyteTracedException) as raised:
        list(DestinationPlanhat().write(CONFIG, configured, [AirbyteMessageSerializer.load(message)]))
    assert raised.value.failure_type == FailureType.config_error
    assert "api-uss2.planhat.com was not found" in (raised.value.message or "")
    assert "`region`" in (raised.value.message or "")


def test_a_dns_server_that_does_not_answer_is_not_called_a_wrong_region(monkeypatch):
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".planhat.com"):
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return REAL_GETADDRINFO(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    status = DestinationPlanhat().check(LOGGER, CONFIG)
    assert status.status == Status.FAILED
    assert status.message is not None
    assert "Could not reach" in status.message and "`region`" not in status.message
