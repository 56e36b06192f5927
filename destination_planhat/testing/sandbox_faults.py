"""The sandbox's faults: how a data request of either API is (mis)answered, and the plans that
say which fault comes next (a script, then random draws), one plan per API.

Why apart from `sandbox`: the kinds of faults and their rules are what the reliability tests are
written against (see `Fault`); the server only asks a plan for the next fault and acts on it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from random import Random
from typing import Any

import orjson

# The two APIs the sandbox serves; each has its own fault plan and request log, as the two hosts
# (analytics.planhat.com and api.planhat.com) fail independently.
ANALYTICS_API = "analytics"
MAIN_API = "main"
APIS = (ANALYTICS_API, MAIN_API)
# Planhat's documented hard limit per request body.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of handing a body to Planhat's logic: the answer, and what was recorded."""

    status: int
    payload: Any
    items: int = 0
    processed: int = 0
    errors: int = 0
    headers: tuple[tuple[str, str], ...] = ()  # e.g. the main API's X-Rate-Limit-* and Retry-After


FAULT_KINDS = (
    "ok",
    "status",
    "reset_before",
    "reset_after",
    "delay",
    "bad_body",
    "bad_json",
    "no_counts",
    "short_count",
)
_FAULT_FIELDS = frozenset({"kind", "status", "retry_after", "body", "seconds", "process", "headers", "items"})
# Answers that do not say what was done (issue 19): a 2xx whose body lacks Planhat's counts. The
# request may have been processed (`process`), as behind a proxy that answers for Planhat.
NOT_ACKNOWLEDGING_FAULTS = ("bad_body", "bad_json", "no_counts")
# The items of a short count: Planhat does all but the last `items` and counts only those it did.
DEFAULT_SHORT_ITEMS = 1
_RANDOM_KINDS = ("reset_before", "reset_after", "bad_body", "bad_json")
_DEFAULT_FAULT_BODIES = {
    "bad_body": "<html><body><h1>502 Bad Gateway</h1></body></html>",
    "bad_json": '{"ok": true}',
    "no_counts": '{"message": "Partial Content"}',
}
_DEFAULT_FAULT_STATUSES = {"no_counts": 206}


@dataclass(frozen=True, slots=True)
class Fault:
    """One way to (mis)answer one data request; see `PlanhatSandbox.set_faults`.

    Kinds: `ok`; `status` (answers `status`, with `retry_after`, `body` and `headers`, nothing done);
    `reset_before` / `reset_after` (the connection is reset before or after Planhat processed it);
    `delay` (`seconds` before the answer, processed or not); `bad_body` / `bad_json` (a 200 with an
    HTML page or JSON without counts, processed or not); `no_counts` (`status`, 206 by default, with
    `body`, `{"message": "Partial Content"}` by default: no counts, processed or not); `short_count`
    (Planhat does all but the last `items` items and its answer counts only those it did).
    """

    kind: str = "ok"
    status: int = 200
    retry_after: str | None = None
    body: str | None = None
    seconds: float = 0.0
    process: bool = True
    headers: tuple[tuple[str, str], ...] = ()  # extra answer headers of a status fault, e.g. a Location
    items: int = DEFAULT_SHORT_ITEMS  # short_count: the items at the end of the request left undone

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Fault:
        """Build a fault from its dict form, rejecting typos early rather than silently ignoring them."""
        unknown = set(spec) - _FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)} in {dict(spec)!r}")
        kind = spec.get("kind", "ok")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        if kind == "status" and "status" not in spec:
            raise ValueError("a status fault needs a 'status'")
        status = int(spec.get("status", _DEFAULT_FAULT_STATUSES.get(kind, 200)))
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status (100-599), got {status}")
        seconds = float(spec.get("seconds", 0.0))
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        retry_after = spec.get("retry_after")
        items = int(spec.get("items", DEFAULT_SHORT_ITEMS))
        if items < 1:
            raise ValueError(f"items must be >= 1, got {items}")
        return cls(
            kind=kind,
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
            body=spec.get("body", _DEFAULT_FAULT_BODIES.get(kind)),
            seconds=seconds,
            process=bool(spec.get("process", True)),
            headers=tuple((str(name), str(value)) for name, value in dict(spec.get("headers") or {}).items()),
            items=items,
        )

    @classmethod
    def from_random_key(cls, key: str) -> Fault:
        """A fault named by a key of the ``random`` table: an HTTP status ("503") or a kind."""
        if key.isdigit():
            status = int(key)
            return cls(kind="status", status=status, retry_after="0" if status == 429 else None)
        if key in _RANDOM_KINDS:
            return cls.from_spec({"kind": key})
        raise ValueError(f"a random fault key is an HTTP status or one of {_RANDOM_KINDS}, not {key!r}")

    @property
    def label(self) -> str | None:
        """How the request log names this fault; None for a normal answer."""
        return None if self.kind == "ok" else self.kind


NO_FAULT = Fault()


class FaultPlan:
    """The faults still to come. Not thread-safe by itself: `FaultPlans` calls `draw` under its lock."""

    def __init__(
        self,
        script: Sequence[Mapping[str, Any]] = (),
        random: Mapping[str, float] | None = None,
        seed: int = 0,
        latency_s: float = 0.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.script = deque(Fault.from_spec(spec) for spec in script)
        self.table: list[tuple[float, Fault]] = []
        cumulative = 0.0
        for key, probability in (random or {}).items():
            if not 0.0 <= float(probability) <= 1.0:
                raise ValueError(f"probability of {key!r} must be within [0, 1], got {probability!r}")
            cumulative += float(probability)
            self.table.append((cumulative, Fault.from_random_key(str(key))))
        if cumulative > 1.0 + 1e-9:
            raise ValueError(f"random fault probabilities add up to {cumulative:.3f} > 1")
        self.rng = Random(seed)
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self.latency_s = float(latency_s)
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be > 0")
        self.max_body_bytes = int(max_body_bytes)

    def draw(self) -> Fault:
        """The fault for the next data request: the script first, then one random draw per request."""
        if self.script:
            return self.script.popleft()
        if not self.table:
            return NO_FAULT
        roll = self.rng.random()
        for threshold, fault in self.table:
            if roll < threshold:
                return fault
        return NO_FAULT


class FaultPlans:
    """Each API's fault plan, and the baseline (latency, body limit) that `reset` returns them to.

    Thread-safe: the request threads draw faults while a test replaces a plan.
    """

    def __init__(self, latency_s: float, main_api_latency_s: float, max_body_bytes: int) -> None:
        self._baseline_latency_s = {ANALYTICS_API: latency_s, MAIN_API: main_api_latency_s}
        self._baseline_max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._plans = self._baseline_plans()

    def _baseline_plans(self) -> dict[str, FaultPlan]:
        return {
            api: FaultPlan(latency_s=self._baseline_latency_s[api], max_body_bytes=self._baseline_max_body_bytes)
            for api in APIS
        }

    def reset(self) -> None:
        """No faults on either API, and the baseline latency and body limit."""
        plans = self._baseline_plans()
        with self._lock:
            self._plans = plans

    def replace(
        self,
        api: str,
        script: Sequence[Mapping[str, Any]],
        random: Mapping[str, float] | None,
        seed: int,
        latency_s: float | None,
        max_body_bytes: int | None,
    ) -> None:
        """Replace the plan of one API (`PlanhatSandbox.set_faults` says what each argument means);
        raises ValueError on an unknown kind, field or api, before changing anything."""
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {api!r}")
        plan = FaultPlan(
            script=script,
            random=random,
            seed=seed,
            latency_s=self._baseline_latency_s[api] if latency_s is None else latency_s,
            max_body_bytes=self._baseline_max_body_bytes if max_body_bytes is None else max_body_bytes,
        )
        with self._lock:
            self._plans[api] = plan

    def draw(self, api: str) -> Fault:
        """The fault for the next request of `api`."""
        with self._lock:
            return self._plans[api].draw()

    def latency_s(self, api: str) -> float:
        return self._plans[api].latency_s

    def max_body_bytes(self, api: str) -> int:
        return self._plans[api].max_body_bytes


def short_count(body: bytes, undone: int, process: Callable[[bytes], Outcome]) -> tuple[Outcome, list[Any]]:
    """A short count: Planhat does every item of the request but the last `undone` and answers, with
    its usual body, for those it did only. The request log counts every item sent (`items`), so that
    the items nobody answered for are `items - processed - errors`; returns them too."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        return process(body), []
    if not isinstance(items, list):
        return process(body), []
    kept = max(0, len(items) - undone)
    outcome = process(orjson.dumps(items[:kept]))
    counted = Outcome(outcome.status, outcome.payload, len(items), outcome.processed, outcome.errors, outcome.headers)
    return counted, items[kept:]
