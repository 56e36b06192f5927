"""The counts on each emitted STATE: `destinationStats.recordCount` and `rejectedRecordCount`.

Airbyte (protocol 0.18) compares, for every state, the source's count of the records before it with
the destination's: `sourceStats.recordCount == recordCount + rejectedRecordCount`. So for every state
this module gives, over the records of the state's scope read since the previous state of that scope:
`recordCount`, the records Planhat acknowledged, and `rejectedRecordCount`, the records that did not
reach Planhat (rejected by the connector's checks, rejected by Planhat, or skipped). The scope of a
STREAM state is its stream; of a GLOBAL or LEGACY state, every stream.

How: every record of a stream has an ordinal (the stream's `read` count before it). A state cuts each
stream of its scope at its current ordinal, which closes that stream's current *window*. A record
rejected here is counted in its window at once; a record Planhat rejects is counted when the answer
comes, in the window its ordinal falls in. A state is emitted only after every batch opened before
it is acknowledged (sync/state_barrier.py), so by then every record of its windows has been judged, and its
counts are final.

A record that unpivot turns into several items counts once: as rejected if at least one of its items
was rejected (here or by Planhat), else as written. A record that makes no item at all (every
unpivot column null) counts as written: nothing of it was lost.

Thread safety: the reading thread cuts windows and counts local rejections, sender threads count
Planhat's rejections, and whichever thread releases a state reads its counts; one lock serves all.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Windows:
    """One stream's windows: window k holds the records with ordinals cuts[k] <= ordinal < cuts[k+1]."""

    cuts: list[int] = field(default_factory=lambda: [0])
    rejected: list[int] = field(default_factory=lambda: [0])
    # Records with several items (unpivot) already counted as rejected, so a second rejected item of
    # the same record is not counted again. Forgotten when the record's window is closed and read.
    rejected_multi: set[int] = field(default_factory=set)

    def window_of(self, ordinal: int) -> int:
        return bisect.bisect_right(self.cuts, ordinal) - 1


@dataclass(frozen=True)
class StateCut:
    """What one state covers: per stream of its scope, the window it closed."""

    global_scope: bool
    windows: tuple[tuple[str, int], ...]


class _Stream:
    """A stream's windows twice over: between its STREAM states, and between GLOBAL (or LEGACY) states.
    A source sends one kind or the other; kept apart, each state counts "since the previous state of
    the same scope" even when a sync mixes them."""

    __slots__ = ("by_stream", "by_global")

    def __init__(self) -> None:
        self.by_stream = _Windows()
        self.by_global = _Windows()

    def scope(self, global_scope: bool) -> _Windows:
        return self.by_global if global_scope else self.by_stream


class StateCounts:
    def __init__(self, streams: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {stream: _Stream() for stream in streams}

    def _stream(self, stream: str) -> _Stream:
        found = self._streams.get(stream)
        if found is None:
            found = self._streams[stream] = _Stream()
        return found

    def reject(self, stream: str, ordinal: int, *, several_items: bool = False) -> None:
        """The record with this ordinal did not reach Planhat (or one of its items did not, with `several_items`)."""
        with self._lock:
            found = self._stream(stream)
            for windows in (found.by_stream, found.by_global):
                _reject(windows, ordinal, several_items)

    def reject_all(self, stream: str, ordinals: Iterable[tuple[int, bool]]) -> None:
        """Several records (ordinal, several_items) Planhat rejected, from one answer."""
        with self._lock:
            found = self._stream(stream)
            for ordinal, several_items in ordinals:
                for windows in (found.by_stream, found.by_global):
                    _reject(windows, ordinal, several_items)

    def reject_run(self, stream: str, first_ordinal: int, records: int) -> None:
        """`records` single-item records rejected, all in the windows of `first_ordinal` (one answer)."""
        with self._lock:
            found = self._stream(stream)
            for windows in (found.by_stream, found.by_global):
                windows.rejected[windows.window_of(first_ordinal)] += records

    def same_windows(self, stream: str, first_ordinal: int, last_ordinal: int) -> bool:
        """Whether records from `first_ordinal` to `last_ordinal` fall in one window of each scope."""
        with self._lock:
            found = self._stream(stream)
            return all(
                windows.window_of(first_ordinal) == windows.window_of(last_ordinal)
                for windows in (found.by_stream, found.by_global)
            )

    def cut(self, read: Mapping[str, int], *, global_scope: bool) -> StateCut:
        """A state arrived: close the current window of each stream in `read` (its records read so far)."""
        closed = []
        with self._lock:
            for stream, count in read.items():
                windows = self._stream(stream).scope(global_scope)
                closed.append((stream, len(windows.cuts) - 1))
                windows.cuts.append(count)
                windows.rejected.append(0)
        return StateCut(global_scope, tuple(closed))

    def counts(self, cut: StateCut) -> tuple[int, int]:
        """(written, rejected) over the windows the state closed. Final once the state may be released."""
        written = rejected = 0
        with self._lock:
            for stream, window in cut.windows:
                windows = self._streams[stream].scope(cut.global_scope)
                end = windows.cuts[window + 1]
                rejected_here = windows.rejected[window]
                written += end - windows.cuts[window] - rejected_here
                rejected += rejected_here
                if windows.rejected_multi:
                    windows.rejected_multi = {o for o in windows.rejected_multi if o >= end}
        return written, rejected


def _reject(windows: _Windows, ordinal: int, several_items: bool) -> None:
    if several_items:
        if ordinal in windows.rejected_multi:
            return
        windows.rejected_multi.add(ordinal)
    windows.rejected[windows.window_of(ordinal)] += 1


def match_rejected(items: Sequence[Any], rejected: Sequence[Any]) -> list[int]:
    """The positions in `items` (a batch as sent) of the items Planhat's answer rejected.

    Planhat's answer repeats each rejected item but not its position, so each is looked up by value
    (numbers compared as numbers: 1 and 1.0 are the same value, whatever key order or number format
    the answer has). Several equal items are matched in order. A rejected item found nowhere in the
    batch (an answer that changed it) takes the first position not yet matched: the count per batch
    stays exact, only which record it is charged to is a guess."""
    return [position for position, _, _ in pair_rejected(items, rejected)]


def pair_rejected(items: Sequence[Any], rejected: Sequence[Any]) -> list[tuple[int, int, bool]]:
    """`match_rejected` with each position's rejected entry: (position in `items`, index in `rejected`,
    whether the item was found by value rather than guessed). Matched pairs first, in answer order."""
    where: dict[Any, deque[int]] = {}
    for position, item in enumerate(items):
        where.setdefault(frozen_json(item), deque()).append(position)
    taken: set[int] = set()
    pairs: list[tuple[int, int, bool]] = []
    unmatched: list[int] = []
    for index, item in enumerate(rejected):
        try:
            candidates = where.get(frozen_json(item))
        except TypeError:
            candidates = None
        if candidates:
            position = candidates.popleft()
            taken.add(position)
            pairs.append((position, index, True))
        else:
            unmatched.append(index)
    free = (position for position in range(len(items)) if position not in taken)
    for index, position in zip(unmatched, free):
        pairs.append((position, index, False))
    return pairs


def frozen_json(value: Any) -> Any:
    """A hashable form of a JSON value, equal for equal values."""
    if type(value) is dict:
        return frozenset((key, frozen_json(item)) for key, item in value.items())
    if type(value) is list:
        return tuple(frozen_json(item) for item in value)
    return value
