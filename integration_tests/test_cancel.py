"""SIGTERM and SIGINT mid-sync: the connector stops reading, lets the requests on their way finish,
emits every state that became safe, and exits non-zero saying the sync was cancelled.

Why it matters: Airbyte stops a connector with SIGTERM (and kills it after a grace period). Records
that Planhat processed but whose states never came out are sent again by the next attempt, and
Planhat's metrics cannot undo a duplicate. So after a cancel, the records a resume sends again are
at most those of the requests still unanswered when the signal came (and none of those once their
answers arrive within the grace).

How: the sandbox answers every request after a latency, so that requests are on their way when the
signal comes; the input is written whole and the pipe left open, as a source still running. The
test waits for Planhat (the sandbox) to have processed the first requests, signals, and reads
everything the connector printed. Nothing is timed: the waits are bounded only by a generous limit
that a hung connector would hit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from destination_planhat.testing.cli import GIVE_UP_SECONDS, start_cli
from destination_planhat.testing.harness import (
    METRIC_SCHEMA,
    catalog,
    configured_stream,
    encode_lines,
    metric,
    record,
    sandbox_config,
    stream_state,
)
from destination_planhat.testing.sandbox import PlanhatSandbox

# Signals go to a process: every test here runs the connector as one.
pytestmark = pytest.mark.process

COMPANY_SCHEMA = {"type": "object", "properties": {"externalId": {"type": "string"}, "name": {"type": "string"}}}


@dataclass
class Cancelled:
    """What one cancelled sync did."""

    returncode: int
    messages: list[dict[str, Any]]
    processed_at_signal: int  # items Planhat had processed when the signal was sent
    unanswered_at_signal: int  # of those, the items of requests not yet answered
    covered: int  # records before the last emitted state: a resume starts after them
    processed: int  # items Planhat processed in the end

    @property
    def duplicates_on_resume(self) -> int:
        """Records Planhat processed that a resume sends again (they come after the last state)."""
        return self.processed - self.covered

    def logs(self) -> list[str]:
        return [m["log"]["message"] for m in self.messages if m.get("type") == "LOG"]

    def errors(self) -> list[dict[str, Any]]:
        return [m["trace"]["error"] for m in self.messages if m.get("type") == "TRACE" and "error" in m["trace"]]

    def states(self) -> list[dict[str, Any]]:
        return [m["state"] for m in self.messages if m.get("type") == "STATE"]


def cancel_mid_sync(
    tmp_path: Path,
    config: dict[str, Any],
    configured: dict[str, Any],
    messages: Sequence[dict[str, Any]],
    processed: Callable[[], int],
    answered: Callable[[], int],
    wait_for_items: int,
    signals: Sequence[int] = (signal.SIGTERM,),
) -> Cancelled:
    """Run `write`, send `signals` once Planhat has processed `wait_for_items` items, read it all."""
    with start_cli("write", tmp_path, config=config, catalog=configured) as cli:

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError):  # the connector stopped reading: what is tested
                cli.send(encode_lines(messages))

        threading.Thread(target=feed, daemon=True).start()
        pause = threading.Event()
        for _ in range(GIVE_UP_SECONDS * 20):
            if processed() >= wait_for_items or not cli.running():
                break
            pause.wait(0.05)
        if not cli.running():
            ended = [json.dumps(m) for m in cli.finish().messages if m.get("type") in ("TRACE", "LOG")][-5:]
            raise AssertionError("the connector ended before the signal:\n" + "\n".join(ended))
        answered_at_signal, at_signal = answered(), processed()
        assert at_signal >= wait_for_items, f"Planhat processed only {at_signal} items"
        for number in signals:
            cli.process.send_signal(number)
        cli.process.wait(timeout=GIVE_UP_SECONDS)
        run = cli.finish()  # every line read, checked against the protocol and for secrets
    cursors = [m["state"]["stream"]["stream_state"]["cursor"] for m in run.messages if m.get("type") == "STATE"]
    covered = max((int(cursor) for cursor in cursors), default=0)
    return Cancelled(run.returncode, run.messages, at_signal, at_signal - answered_at_signal, covered, processed())


def metric_messages(records: int, state_every: int) -> list[dict[str, Any]]:
    """Metrics with a state every `state_every` records whose cursor is the count of records before it."""
    out: list[dict[str, Any]] = []
    for i in range(records):
        out.append(record("metrics_stream", metric(i)))
        if (i + 1) % state_every == 0:
            out.append(stream_state("metrics_stream", str(i + 1)))
    return out


def company_messages(records: int, state_every: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(records):
        out.append(record("accounts", {"externalId": f"acct-{i}", "name": f"Company {i}"}))
        if (i + 1) % state_every == 0:
            out.append(stream_state("accounts", str(i + 1)))
    return out


def metrics_run(
    sandbox: PlanhatSandbox,
    tmp_path: Path,
    signals: Sequence[int] = (signal.SIGTERM,),
    latency_s: float = 3.0,
    **overrides: Any,
) -> Cancelled:
    """20,000 metrics, batches of 2,000, 2 requests in flight, each answered `latency_s` after Planhat processed it."""
    sandbox.set_faults(latency_s=latency_s)
    config = sandbox_config(sandbox.url, batch_size=2_000, max_in_flight_requests=2, parse_workers=0, **overrides)
    configured = catalog(configured_stream("metrics_stream", METRIC_SCHEMA))
    return cancel_mid_sync(
        tmp_path,
        config,
        configured,
        metric_messages(20_000, 500),
        lambda: len(sandbox.received("metrics")),
        lambda: sum(r.items for r in sandbox.requests if r.status == 200),
        wait_for_items=4_000,
        signals=signals,
    )


def objects_run(sandbox: PlanhatSandbox, tmp_path: Path) -> Cancelled:
    """3,000 companies, batches of 500, each answered 3 s after Planhat processed it."""
    sandbox.set_faults(latency_s=3.0, api="main")
    streams = [{"name": "accounts", "endpoint": "companies"}]
    config = sandbox_config(sandbox.url, batch_size=500, streams=streams, parse_workers=0, api_base_url=sandbox.url)
    return cancel_mid_sync(
        tmp_path,
        config,
        catalog(configured_stream("accounts", COMPANY_SCHEMA)),
        company_messages(3_000, 250),
        lambda: len(sandbox.objects("companies")),
        lambda: sum(r.items for r in sandbox.main_api_requests if r.status == 200 and r.method == "PUT"),
        wait_for_items=500,
    )


def assert_cancelled_cleanly(run: Cancelled) -> None:
    assert run.returncode != 0, "a cancelled sync must not end as succeeded"
    [error] = run.errors()
    assert "cancel" in error["message"].lower(), error
    assert any(line.startswith("summary") for line in run.logs()), run.logs()[-10:]
    # Every emitted state is covered by acknowledged records (a state's cursor counts the records before it).
    assert run.covered <= run.processed, (run.covered, run.processed)
    assert run.duplicates_on_resume <= run.unanswered_at_signal, (
        f"a resume would send {run.duplicates_on_resume} records again, more than the "
        f"{run.unanswered_at_signal} of the requests unanswered at the signal"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_cancelled_metrics_sync_emits_the_states_of_what_planhat_processed(sandbox, tmp_path, signum):
    run = metrics_run(sandbox, tmp_path, (signum,))
    print(
        f"metrics: processed {run.processed} (at the signal {run.processed_at_signal}, "
        f"{run.unanswered_at_signal} unanswered), "
        f"states cover {run.covered}, duplicates on resume {run.duplicates_on_resume}"
    )
    assert_cancelled_cleanly(run)
    assert run.covered >= run.processed_at_signal, "the states of the requests answered in the grace came out"
    assert run.duplicates_on_resume == 0


def test_a_cancelled_objects_sync_emits_the_states_of_what_planhat_processed(sandbox, tmp_path):
    run = objects_run(sandbox, tmp_path)
    print(
        f"objects: processed {run.processed} (at the signal {run.processed_at_signal}, "
        f"{run.unanswered_at_signal} unanswered), "
        f"states cover {run.covered}, duplicates on resume {run.duplicates_on_resume}"
    )
    assert_cancelled_cleanly(run)
    assert run.covered >= run.processed_at_signal
    assert run.duplicates_on_resume == 0


def test_a_second_signal_exits_at_once_and_emits_nothing_unsafe(sandbox, tmp_path):
    run = metrics_run(sandbox, tmp_path, (signal.SIGTERM, signal.SIGTERM))
    assert run.returncode != 0
    assert run.covered <= run.processed, "no state ahead of what Planhat processed"
    for line in (json.dumps(m) for m in run.messages):
        assert line.startswith("{"), "every line printed is whole"


def test_requests_unanswered_within_the_grace_are_given_up_and_no_state_goes_ahead_of_them(sandbox, tmp_path):
    """Planhat answers after 60 s, the grace is 1 s: the connector stops after the grace (the wait is
    bounded by the test's generous limit, not timed), says how many requests it gave up, and emits
    no state for them."""
    run = metrics_run(sandbox, tmp_path, latency_s=60.0, shutdown_grace_seconds=1)
    assert run.returncode != 0
    [error] = run.errors()
    assert "2 request(s) on their way were still unanswered after the grace of 1 s" in error["message"], error
    assert run.covered == 0, "no state for records whose requests were never answered"
    assert run.duplicates_on_resume <= run.unanswered_at_signal
