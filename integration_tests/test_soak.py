"""The soak: 200,000 records through a Planhat that answers 10% 503, 5% 429 and resets 2% of requests.

Every record must arrive; the only duplicates allowed are those of requests the sandbox processed
but could not answer (reset after processing), and the connector must have counted them. The
figures (time, requests, retries, duplicates) are printed for docs/reliability.md; run
`python -m pytest integration_tests/test_soak.py -s` to see them. The time is printed, never asserted.
The connector runs as a process, as Airbyte runs it, so that the wall time printed (README, "Soak
figures") is the CLI's, parse workers included. Marked `slow` and `process` (10 to 30 s): `make test`
runs it, `make fast` does not.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from destination_planhat.testing.cli import run_cli
from destination_planhat.testing.sandbox import METRICS, USER_ACTIVITIES
from destination_planhat.testing.sync_checks import Workload, check_sync, connector_config

METRIC_RECORDS = 120_000
ACTIVITY_RECORDS = 80_000
FAULTS = {"503": 0.10, "429": 0.05, "reset_before": 0.01, "reset_after": 0.01}
SEED = 20_261_126


def soak_workload() -> Workload:
    """Two streams interleaved in runs of 100, each with a state every 10,000 of its records."""
    workload = Workload().stream("usage", METRICS).stream("events", USER_ACTIVITIES)
    for _ in range(ACTIVITY_RECORDS // 100):
        workload.records("usage", 150, state_every=10_000).records("events", 100, state_every=10_000)
    return workload


@pytest.mark.slow
@pytest.mark.process
def test_soak_200k_records_through_503s_429s_and_resets(planhat, tmp_path):
    planhat.set_faults(random=FAULTS, seed=SEED)
    workload = soak_workload()
    config = connector_config(planhat, batch_size=200, max_attempts=20, max_in_flight_requests=4)

    started = time.monotonic()
    run = run_cli(
        "write",
        tmp_path,
        watch=planhat,
        config=config,
        catalog=workload.catalog(),
        stdin=workload.encode(),
        process=True,
        timeout=600,
    )
    seconds = time.monotonic() - started

    sync = check_sync(run, workload, planhat)
    requests = planhat.requests
    faults = Counter(r.fault for r in requests if r.fault)
    # The random faults really happened, in about the proportions asked for.
    assert faults["status"] > 0 and faults["reset_before"] > 0 and faults["reset_after"] > 0
    statuses = Counter(r.status for r in requests)
    assert statuses[503] > 0 and statuses[429] > 0
    duplicates = sum(sync.duplicates.values())
    assert duplicates == sum(r.items for r in requests if r.fault == "reset_after")
    assert sync.total("processed") == METRIC_RECORDS + ACTIVITY_RECORDS
    assert sync.total("retries") == len(requests) - sync.total("requests")
    print(
        f"\nsoak: {METRIC_RECORDS + ACTIVITY_RECORDS:,} records in {seconds:.1f} s (CLI wall time); "
        f"{len(requests):,} requests, of which {sync.total('retries'):,} retries "
        f"({statuses[503]} x 503, {statuses[429]} x 429, {faults['reset_before']} resets before and "
        f"{faults['reset_after']} after processing); {sync.total('resent_after_ambiguous_failure'):,} items re-sent "
        f"after an ambiguous failure, {duplicates:,} of them actual duplicates at the sandbox; "
        f"{len(run.states)} states emitted"
    )
