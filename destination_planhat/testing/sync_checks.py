"""Run the real CLI and check everything a sync promises, in every reliability test.

`Workload` builds the input (unique records, so each one can be found at the sandbox; states with
unique cursors; raw lines for bad input) and remembers what should become of each record.
`testing/cli.run_cli` runs the command (it refuses any output that carries a secret, and validates
every stdout line against the official Airbyte protocol schema); with `watch=sandbox`, `check_sync`
then checks one write against the sandbox:

- the connector's machine-readable summary balances, per stream:
  read = sent + rejected locally + skipped + not sent, and
  sent = processed + rejected by Planhat + unconfirmed + not acknowledged;
- its counts match what the sandbox saw and answered, per endpoint;
- every record that should arrive arrived, exactly once, or at least once with the duplicates
  no more than the connector counted as re-sent after an ambiguous failure (and exactly the
  items of requests the sandbox processed without the connector getting the answer);
- each emitted STATE comes after every record before it was acknowledged (2xx) by the sandbox,
  states keep their input order, and none is printed after an error;
- the API token only ever travels in the Authorization header of Metrics requests.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import orjson

from destination_planhat.sync.reporting import SUMMARY_JSON_PREFIX
from destination_planhat.testing.cli import GIVE_UP_SECONDS, CliRun
from destination_planhat.testing.harness import ACTIVITY_SCHEMA, METRIC_SCHEMA, catalog, configured_stream
from destination_planhat.testing.sandbox import METRICS, NOT_ACKNOWLEDGING_FAULTS, USER_ACTIVITIES, PlanhatSandbox

# Shaped like the real thing (Planhat's tenant token is a UUID), and unlike anything else in the
# output, so that finding one in the output can only mean a leak.
SECRET_TENANT = "7c1e4b2a-93d5-4f60-8a1b-2d9e5c3f7a41"
SECRET_API_TOKEN = "pat-5f2c9e81d4b7a0363e1f9c2b8d41"

# Fast retries for tests: Retry-After values in scenarios are 0-1 s, backoff starts at 10 ms.
FAST_RETRIES = {"retry_initial_delay_seconds": 0.01, "max_attempts": 6, "max_retry_seconds": 30}
PAYLOAD_TOO_LARGE_REASON = "too large for Planhat (HTTP 413)"

# What should become of a record.
SEND = "send"  # reaches Planhat (accepted or, if its item is invalid, rejected there)
INVALID = "invalid"  # never accepted: rejected by Planhat, or locally if the connector validates
LOCAL = "local"  # rejected by the connector
SKIP = "skip"  # skipped (unknown stream, unreadable line)

SCHEMAS = {METRICS: METRIC_SCHEMA, USER_ACTIVITIES: ACTIVITY_SCHEMA}


def item_key(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)


def metric_item(stream: str, i: int) -> dict[str, Any]:
    """A valid, unique Metrics item: the stream name is the dimensionId."""
    return {"dimensionId": stream, "value": i, "externalId": f"acct-{i}"}


def activity_item(stream: str, i: int) -> dict[str, Any]:
    """A valid, unique User Activities item: the stream name is the action."""
    return {"email": f"user{i}@example.com", "action": stream, "count": 1}


ITEM_MAKERS = {METRICS: metric_item, USER_ACTIVITIES: activity_item}


@dataclass
class Entry:
    """One input line and what should become of it."""

    line: bytes
    stream: Optional[str] = None  # for records
    fate: Optional[str] = None  # SEND / INVALID / LOCAL / SKIP for records, None for other lines
    item: Any = None  # the item Planhat should receive, for SEND and INVALID
    cursor: Optional[str] = None  # for states


@dataclass
class Workload:
    """Input for one sync, built line by line, knowing each record's expected fate."""

    streams: dict[str, str] = field(default_factory=dict)  # stream -> endpoint, in catalog order
    entries: list[Entry] = field(default_factory=list)
    _counters: Counter = field(default_factory=Counter)

    def stream(self, name: str, endpoint: str) -> Workload:
        self.streams[name] = endpoint
        return self

    def records(self, stream: str, count: int, state_every: int = 0) -> Workload:
        """`count` valid unique records of `stream`; a state of that stream every `state_every`."""
        make = ITEM_MAKERS[self.streams[stream]]
        for _ in range(count):
            i = self._counters[stream]
            self._counters[stream] += 1
            self.record(stream, make(stream, i))
            if state_every and self._counters[stream] % state_every == 0:
                self.state(stream)
        return self

    def record(self, stream: str, data: Any, fate: str = SEND, namespace: Optional[str] = None) -> Workload:
        body: dict[str, Any] = {"stream": stream, "data": data, "emitted_at": 1_795_600_000_000}
        if namespace:
            body["namespace"] = namespace
        item = data if fate in (SEND, INVALID) else None
        return self.raw(orjson.dumps({"type": "RECORD", "record": body}) + b"\n", stream, fate, item)

    def raw(self, line: bytes, stream: Optional[str] = None, fate: Optional[str] = None, item: Any = None) -> Workload:
        """A line as is (it may be broken on purpose); `stream`/`fate` when it stands for a record."""
        self.entries.append(Entry(line, stream, fate, item))
        return self

    def state(self, stream: str) -> Workload:
        cursor = f"{stream}@{len(self.entries)}"
        message = {
            "type": "STATE",
            "state": {
                "type": "STREAM",
                "stream": {"stream_descriptor": {"name": stream}, "stream_state": {"cursor": cursor}},
            },
        }
        self.entries.append(Entry(orjson.dumps(message) + b"\n", stream=stream, cursor=cursor))
        return self

    def encode(self) -> bytes:
        return b"".join(entry.line for entry in self.entries)

    def catalog(self) -> dict[str, Any]:
        return catalog(*(configured_stream(name, SCHEMAS[endpoint]) for name, endpoint in self.streams.items()))

    def read_by_stream(self) -> Counter:
        return Counter(e.stream for e in self.entries if e.fate is not None)

    def items(self, endpoint: str, *fates: str) -> list[Any]:
        return [e.item for e in self.entries if e.fate in fates and self.streams.get(e.stream or "") == endpoint]

    @property
    def cursors(self) -> list[str]:
        return [e.cursor for e in self.entries if e.cursor is not None]


def mixed_workload(metrics: int = 300, activities: int = 200, state_every: int = 100) -> Workload:
    """Two streams, one per endpoint, interleaved in runs of 10, each with its own states."""
    workload = Workload().stream("usage", METRICS).stream("events", USER_ACTIVITIES)
    m = a = 0
    while m < metrics or a < activities:
        if m < metrics:
            take = min(10, metrics - m)
            workload.records("usage", take, state_every)
            m += take
        if a < activities:
            take = min(10, activities - a)
            workload.records("events", take, state_every)
            a += take
    return workload


def connector_config(sandbox: PlanhatSandbox, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tenant_uuid": SECRET_TENANT,
        "api_token": SECRET_API_TOKEN,
        "analytics_base_url": sandbox.url,
        **FAST_RETRIES,
    }
    config.update(overrides)
    return {key: value for key, value in config.items() if value is not None}


# ----- what the connector says about the sync --------------------------------------------------


def sync_summary(run: CliRun) -> dict[str, Any]:
    lines = run.log_lines(SUMMARY_JSON_PREFIX)
    assert len(lines) == 1, f"expected one summary line, got {len(lines)}:\n{run.stdout[-3000:]}"
    return json.loads(lines[0].split(SUMMARY_JSON_PREFIX, 1)[1])


def assert_books_balance(summary: Mapping[str, Any]) -> None:
    """The invariants, recomputed from the numbers (the connector's own flag is not trusted)."""
    for name, s in summary["streams"].items():
        # `merged`: object records merged into an earlier item with the same key (one item sent for them).
        # `settled`: records Planhat already was as asked (an insert's key present, a delete's key absent).
        settled = s.get("settled", 0)
        assert s["read"] == s["sent"] + s["rejected_locally"] + s["skipped"] + s["not_sent"] + s["merged"] + settled, (
            name,
            s,
        )
        assert s["sent"] == s["processed"] + s["rejected_by_planhat"] + s["unconfirmed"] + s["not_acknowledged"], (
            name,
            s,
        )
        assert s["acknowledged"] == s["sent"] - s["not_acknowledged"] or summary["status"] == "failed", (name, s)
        assert s["books_balance"] is True, (name, s)
        if summary["status"] == "succeeded":
            assert s["not_sent"] == 0 and s["not_acknowledged"] == 0, (name, s)


@dataclass
class SyncCheck:
    """The outcome of `check_sync`, for further, scenario-specific assertions."""

    run: CliRun
    summary: dict[str, Any]
    duplicates: dict[str, int]  # per endpoint: items the sandbox received more than once

    def stream(self, name: str) -> dict[str, Any]:
        return self.summary["streams"][name]

    def total(self, counter: str) -> int:
        return sum(s[counter] for s in self.summary["streams"].values())


def check_sync(
    run: CliRun,
    workload: Workload,
    sandbox: PlanhatSandbox,
    *,
    failure_type: Optional[str] = None,
) -> SyncCheck:
    """Every guarantee of a sync that either completed or failed with `failure_type`."""
    assert run.state_checkpoints is not None, "run the sync with run_cli(..., watch=sandbox) so states can be checked"
    assert sandbox.wait_idle(timeout=GIVE_UP_SECONDS), "the sandbox is still handling a request"
    if failure_type is None:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert run.errors == [], run.errors
    else:
        assert run.returncode != 0
        assert [e["failure_type"] for e in run.errors] == [failure_type], run.errors
    summary = sync_summary(run)
    assert summary["status"] == ("succeeded" if failure_type is None else "failed")
    assert_books_balance(summary)

    read = workload.read_by_stream()
    for name, s in summary["streams"].items():
        if failure_type is None:
            assert s["read"] == read[name], (name, s["read"], read[name])
        else:
            assert s["read"] <= read[name], (name, s["read"], read[name])
    if failure_type is None:
        assert {name for name, n in read.items() if n} <= set(summary["streams"]), summary["streams"].keys()

    duplicates = {
        endpoint: _check_endpoint(endpoint, workload, sandbox, summary, failure_type is None)
        for endpoint in (METRICS, USER_ACTIVITIES)
    }
    _check_states(run, workload, sandbox, complete=failure_type is None)
    _check_credentials(sandbox)
    return SyncCheck(run, summary, duplicates)


def _check_endpoint(
    endpoint: str, workload: Workload, sandbox: PlanhatSandbox, summary: Mapping[str, Any], complete: bool
) -> int:
    streams = [s for s in summary["streams"].values() if s["endpoint"] == endpoint]
    received = Counter(item_key(item) for item in sandbox.received(endpoint))
    must_arrive = Counter(item_key(item) for item in workload.items(endpoint, SEND))
    may_arrive = must_arrive | Counter(item_key(item) for item in workload.items(endpoint, INVALID))
    assert set(must_arrive.values()) <= {1}, "the workload's records must be unique"

    unexpected = set(received) - set(may_arrive)
    assert not unexpected, f"{endpoint}: the sandbox received {len(unexpected)} item(s) that were never to be sent"
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    resent = sum(s["resent_after_ambiguous_failure"] for s in streams)
    assert duplicates <= resent, f"{endpoint}: {duplicates} duplicate(s), but only {resent} counted as possibly re-sent"

    if complete:
        missing = set(must_arrive) - set(received)
        assert not missing, f"{endpoint}: {len(missing)} record(s) never arrived"
        requests = [r for r in sandbox.requests if r.endpoint == endpoint]
        answered = [r for r in requests if r.status == 200 and r.fault not in NOT_ACKNOWLEDGING_FAULTS]
        # Items Planhat processed whose acknowledgement the connector never got (no answer, or one that
        # did not say what was done): exactly the duplicates.
        unanswered = sum(r.items for r in requests if r.status is None or r.fault in NOT_ACKNOWLEDGING_FAULTS)
        assert duplicates == unanswered, (endpoint, duplicates, unanswered)
        assert sum(s["processed"] for s in streams) == sum(r.processed for r in answered), endpoint
        too_large = sum(s["planhat_reasons"].get(PAYLOAD_TOO_LARGE_REASON, 0) for s in streams)
        assert sum(s["rejected_by_planhat"] for s in streams) - too_large == sum(r.errors for r in answered), endpoint
        # Items a short count left out of Planhat's answer (the analytics host's receipt all the same).
        unconfirmed = sum(r.items - r.processed - r.errors for r in requests if r.fault == "short_count")
        assert sum(s["unconfirmed"] for s in streams) == unconfirmed, endpoint
        # Sent: the records that had to arrive, the invalid ones that did, and single items refused as too large.
        invalid_received = sum(1 for item in workload.items(endpoint, INVALID) if item_key(item) in received)
        assert sum(s["sent"] for s in streams) == len(must_arrive) + invalid_received + too_large, endpoint
        # Each batch (or half batch) the connector counts as answered got one 200, or one 413 for a single item.
        acknowledged = sum(1 for r in requests if r.status == 200 and r.fault not in NOT_ACKNOWLEDGING_FAULTS)
        assert sum(s["requests"] for s in streams) - too_large == acknowledged, endpoint
    return duplicates


def _check_states(run: CliRun, workload: Workload, sandbox: PlanhatSandbox, *, complete: bool) -> None:
    """States keep their order, carry a count, and each one was printed only after every record
    before it that had to arrive was in a request the sandbox had answered 2xx by that moment."""
    positions = {e.cursor: i for i, e in enumerate(workload.entries) if e.cursor is not None}
    emitted = [s["stream"]["stream_state"]["cursor"] for s in run.states]
    assert all(cursor in positions for cursor in emitted), emitted
    assert [positions[c] for c in emitted] == sorted(positions[c] for c in emitted), "states out of order"
    for state in run.states:
        assert state["destinationStats"]["recordCount"] >= 0

    # For each item: the place in the request log of the first acknowledgement (a 2xx that says what
    # was done) that covered it.
    requests = sandbox.requests
    log_index = {
        r.number: i
        for i, r in enumerate(requests)
        if r.status is not None and 200 <= r.status < 300 and r.fault not in NOT_ACKNOWLEDGING_FAULTS
    }
    answered_at: dict[bytes, int] = {}
    # Items a short count left undone were acknowledged all the same (the analytics host's 200 is
    # Planhat's receipt), by the request that carried them.
    for number, _, item in [*sandbox.received_with_request_numbers(), *sandbox.left_out()]:
        if number in log_index:
            key = item_key(item)
            answered_at[key] = min(answered_at.get(key, log_index[number]), log_index[number])
    # Walking the input: how many requests had to be logged before a state at this point may appear.
    needed_before: dict[str, float] = {}
    needed = -1.0
    for entry in workload.entries:
        if entry.fate == SEND:
            needed = max(needed, answered_at.get(item_key(entry.item), float("inf")))
        elif entry.cursor is not None:
            needed_before[entry.cursor] = needed
    if run.state_checkpoints is not None:
        assert len(run.state_checkpoints) == len(emitted)
        checkpoints = run.state_checkpoints
    else:  # not watched: only the end is known
        checkpoints = [len(requests)] * len(emitted)
    for cursor, logged in zip(emitted, checkpoints):
        assert needed_before[cursor] < logged, (
            f"state {cursor} was printed before the records it covers were acknowledged"
        )
    if complete:
        assert emitted == workload.cursors
    else:
        kinds = [m.get("type") for m in run.messages]
        if "TRACE" in kinds:
            assert "STATE" not in kinds[kinds.index("TRACE") :], "a state was printed after the error"


EXPECTED_PATHS = {METRICS: f"/dimensiondata/{SECRET_TENANT}", USER_ACTIVITIES: f"/analytics/bulk/{SECRET_TENANT}"}


def _check_credentials(sandbox: PlanhatSandbox) -> None:
    """The exact path (so no token and no query in any URL); the Bearer token on Metrics only."""
    for request in sandbox.requests:
        assert request.path == EXPECTED_PATHS[request.endpoint], "a request went to an unexpected URL"
        if request.endpoint == USER_ACTIVITIES:
            assert not request.authorization_present, "User Activities received an Authorization header"
        else:
            assert request.authorization_matched, "a Metrics request without the Bearer token"


def retry_waits(run: CliRun) -> list[float]:
    """The waits the connector announced in its retry log lines ("retrying in 1.2s"), rate limits'
    included ("Planhat is limiting requests (...); waiting 2.0s (...")."""
    waits = []
    for line in run.logs:
        if "retrying in " in line:
            waits.append(float(line.rsplit("retrying in ", 1)[1].rstrip("s")))
        elif "Planhat is limiting requests (" in line:
            waits.append(float(line.split("; waiting ", 1)[1].split("s ", 1)[0]))
    return waits
