"""A stand-in for PlanhatWriter behind the input pipeline (pipeline.MessageTarget) that records, in
order, everything the pipeline hands it: a test then compares the whole list, so a call it did not
expect fails it too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn, Optional

# A plan that maps no stream in the decode step: every line goes the general way (pipeline.parse_lines).
NO_STREAMS_PLAN: dict[str, Any] = {"streams": [], "max_part_bytes": 1 << 20}


class RecordingTarget:
    def __init__(self, plan: Optional[dict[str, Any]] = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._plan = NO_STREAMS_PLAN if plan is None else plan

    def record(self, stream: Any, namespace: Any, data: Any) -> None:
        self.calls.append(("record", stream, namespace, data))

    def take_encoded(self, index: int, encoded: bytes, ends: Sequence[int]) -> None:
        self.calls.append(("encoded", index, bytes(encoded), list(ends)))

    def state(self, message: dict[str, Any]) -> None:
        self.calls.append(("state", message))

    def stream_status(self, namespace: Any, stream: Any, status: Any) -> None:
        self.calls.append(("stream_status", namespace, stream, status))

    def source_changes(self, namespace: Any, stream: Any, changes: Any) -> None:
        self.calls.append(("source_changes", namespace, stream, changes))

    def unparseable_line(
        self, line_number: int, line: bytes, why: str, stream_guess: tuple[Optional[str], Optional[str]] = (None, None)
    ) -> None:
        self.calls.append(("bad", line_number, line, why))

    def other_message(self, kind: Any) -> None:
        self.calls.append(("other", kind))

    def flush_overdue(self) -> None:
        """Not recorded: the pipeline calls it between pieces of input, as often as the input is cut."""

    def parallel_plan(self) -> dict[str, Any]:
        return self._plan

    def fail(self, error: BaseException) -> NoReturn:
        raise error
