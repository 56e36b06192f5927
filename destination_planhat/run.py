"""Entry point of the `destination-planhat` console script and of main.py."""

import sys

from destination_planhat.destination import DestinationPlanhat


def run() -> None:
    DestinationPlanhat().run(sys.argv[1:])
