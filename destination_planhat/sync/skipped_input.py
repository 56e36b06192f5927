"""Input the writer cannot use: records of streams not in the catalog, lines that cannot be read, and
messages a destination has nothing to do with (LOG, CONTROL, other TRACEs...).

Why together: each is counted in the ledger, so that the summary accounts for every line of the input,
and warned about once per stream or message type rather than once per message (a source that sends a
million records of a stream missing from the catalog must not write a million warnings). A record or
a line that names a stream is also counted towards that stream's next state, and kept in the store
of rejected records when there is one, so per-stream counts still add up.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from destination_planhat.mapping.routing import StreamKey, stream_label
from destination_planhat.rejected.records import RejectedRecords
from destination_planhat.sync.ledger import Ledger
from destination_planhat.sync.sink_registry import Sinks
from destination_planhat.sync.state_stats import StateCounts

logger = logging.getLogger("airbyte")

# Message types of the Airbyte protocol that a destination may receive and has nothing to do with.
KNOWN_MESSAGE_TYPES = frozenset(
    {"RECORD", "STATE", "LOG", "TRACE", "CONTROL", "SPEC", "CONNECTION_STATUS", "CATALOG", "DESTINATION_CATALOG"}
)
NOT_IN_CATALOG = "the stream is not in the configured catalog"


class SkippedInput:
    def __init__(
        self, sinks: Sinks, ledger: Ledger, counts: StateCounts, rejected: Optional[RejectedRecords] = None
    ) -> None:
        self._sinks = sinks
        self._ledger = ledger
        self._counts = counts
        self._rejected = rejected
        self._unknown_streams: dict[StreamKey, int] = {}
        self._warned_types: set[str] = set()  # message types already warned about

    def close(self) -> None:
        """The writer closed the store of rejected records (at the end of the sync): nothing more goes to it."""
        self._rejected = None

    def unknown_stream(self, namespace: Any, stream: Any, data: Any = None) -> None:
        """A RECORD of a stream that is not in the catalog (or whose name is not even a string)."""
        if isinstance(stream, str) and (namespace is None or isinstance(namespace, str)):
            key: StreamKey = (namespace or None, stream)
            label = stream_label(key)
        else:
            label = repr(stream) if namespace is None else f"{namespace!r}.{stream!r}"
            key = (None, label)
        count = self._unknown_streams.get(key, 0) + 1
        self._unknown_streams[key] = count
        stats = self._ledger.stats(label)
        self._ledger.skip(label, NOT_IN_CATALOG)
        self._counts.reject(label, stats.read - 1)
        if self._rejected is not None:
            self._rejected.add_by_connector(key, None, stats.read, NOT_IN_CATALOG, record=data)
        if count == 1:
            logger.warning(f"records of stream '{label}' are skipped: {NOT_IN_CATALOG}")

    def unparseable_line(
        self, line_number: int, line: bytes, why: str, stream_guess: tuple[Optional[str], Optional[str]]
    ) -> None:
        """A line that cannot be read. When it names a stream of the catalog, it counts as a skipped
        record of that stream (and towards that stream's next state), so per-stream counts still add up."""
        preview = line[:120].decode("utf-8", "replace").rstrip()
        namespace, name = stream_guess
        sink = self._sinks.find(namespace, name) if name is not None else None
        if sink is None:
            self._ledger.unparseable_lines += 1
            hint = f" (it seems to belong to stream '{name}', which is not in the catalog)" if name else ""
            logger.warning(f"input line {line_number} skipped: {why}{hint} (starts with: {preview!r})")
            return
        sink.skip_unreadable(line_number, why, preview, line)

    def other_message(self, kind: Any) -> None:
        """A message a destination may receive but has nothing to do with: counted, and one warning per
        message type, not per message."""
        self._ledger.ignored_messages += 1
        known = kind in KNOWN_MESSAGE_TYPES
        if not known:
            self._ledger.unknown_messages += 1
        key = repr(kind)
        if key in self._warned_types:
            return
        self._warned_types.add(key)
        if known:
            logger.warning(
                f"ignoring input messages of type {kind!r}: the connector does not use them (counted in the summary)"
            )
        else:
            logger.warning(
                f"ignoring input messages of type {kind!r}, which is not an Airbyte message type (counted in the summary)"
            )
