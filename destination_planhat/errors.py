"""Errors the connector raises on purpose, each with the failure type Airbyte should show."""

from __future__ import annotations

from typing import Optional

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException


def config_error(message: str, internal_message: Optional[str] = None) -> AirbyteTracedException:
    """Something only the user can fix: a field of the config or the stream selection."""
    return AirbyteTracedException(
        message=message, internal_message=internal_message or message, failure_type=FailureType.config_error
    )


def transient_error(message: str, internal_message: Optional[str] = None) -> AirbyteTracedException:
    """Something a later retry of the sync may fix: Planhat down, rate limited, network gone."""
    return AirbyteTracedException(
        message=message, internal_message=internal_message or message, failure_type=FailureType.transient_error
    )


def system_error(message: str, internal_message: Optional[str] = None) -> AirbyteTracedException:
    """Anything else: a request Planhat refuses for a reason the user cannot fix in the config."""
    return AirbyteTracedException(
        message=message, internal_message=internal_message or message, failure_type=FailureType.system_error
    )
