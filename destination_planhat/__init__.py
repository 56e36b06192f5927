"""Airbyte destination that writes metrics and user activities to Planhat Analytics."""

from destination_planhat.destination import DestinationPlanhat

__all__ = ["DestinationPlanhat"]
