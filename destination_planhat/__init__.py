"""Airbyte destination that writes to Planhat: Metrics, User Activities and Planhat's objects.

The folders follow the flow of a sync, from stdin to Planhat:

    reading/  -> sync/  -> Planhat
                 (mapping/ says what each record becomes; rejected/ keeps what could not go)

At the top, the entry points: `destination` (spec, check, write), `discover`, `config` (the
connector's configuration), `run` (the console script) and `spec.json`.

Imports go one way, from the top of this list to the bottom (unit_tests/test_layers.py checks it):

    destination, discover, run   the entry points
    reading/                     stdin -> lines -> decoded records -> the writer
    sync/                        the writer, sinks, batches, sender, states, ledger, reporting
    rejected/                    rejected records, stored
    mapping/                     routing and mapping: what each record becomes
    config                       the configuration model
    planhat/                     Planhat's APIs: facts, answers, errors, retries, pacing, client

`testing/` (the sandbox and test support) may import anything; nothing else imports it.
"""

from typing import Any

__all__ = ["DestinationPlanhat"]


def __getattr__(name: str) -> Any:
    """DestinationPlanhat on first use: the parse worker processes import modules of this package
    (mapping.value_checks, reading.worker_process) and must not pay for importing the Airbyte CDK."""
    if name == "DestinationPlanhat":
        from destination_planhat.destination import DestinationPlanhat

        return DestinationPlanhat
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
