"""Airbyte destination that writes metrics and user activities to Planhat Analytics."""

from typing import Any

__all__ = ["DestinationPlanhat"]


def __getattr__(name: str) -> Any:
    """DestinationPlanhat on first use: the parse worker processes import modules of this package
    (checks, parse_worker) and must not pay for importing the Airbyte CDK."""
    if name == "DestinationPlanhat":
        from destination_planhat.destination import DestinationPlanhat

        return DestinationPlanhat
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
