"""Input that is not clean JSON: recover what can be recovered, and say which stream and field is bad.

The fast path (orjson) is strict: it refuses NaN and Infinity, lone surrogates and invalid UTF-8,
and nesting deeper than 1024 levels. A source can still emit such lines. Rather than drop the
whole line with a vague message, a line orjson refuses is parsed a second time, leniently:

- NaN / Infinity become `NonFiniteNumber` markers, and bytes that are not UTF-8 or lone surrogates
  stay in their strings as surrogate code points. Neither can be encoded into a request, so a
  record carrying one in a field that is sent is rejected locally, naming that field; the same
  value in a column that is not sent does no harm and the record goes through.
- A line that still cannot be read is skipped and counted; `guess_stream` names the stream it
  most likely belonged to, so the log line and the per-stream counts still say where it came from.

Only lines orjson refused come here, so none of this costs anything on clean input.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

import orjson

MAX_PATH_DEPTH = 20
# orjson refuses to encode containers nested deeper than this.
ORJSON_MAX_DEPTH = 255


class NonFiniteNumber:
    """NaN, Infinity or -Infinity read from the input. JSON cannot carry it; orjson refuses to encode it."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def parse_leniently(line: bytes) -> Optional[Any]:
    """The line parsed by the standard library, which tolerates what orjson refuses; None if it cannot."""
    try:
        return json.loads(line.decode("utf-8", "surrogateescape"), parse_constant=NonFiniteNumber)
    except (ValueError, RecursionError):
        return None


def is_clean_text(value: Any) -> bool:
    """A str that is valid Unicode (no surrogates left by invalid bytes or lone \\uD8xx escapes)."""
    if type(value) is not str:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_STREAM = re.compile(rb'"stream"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_NAMESPACE = re.compile(rb'"namespace"\s*:\s*"((?:[^"\\]|\\.){1,200})"')


def guess_stream(line: bytes) -> tuple[Optional[str], Optional[str]]:
    """(namespace, stream) named in a line that could not be parsed, as far as a pattern can tell."""
    return _first_string(_NAMESPACE, line), _first_string(_STREAM, line)


def _first_string(pattern: re.Pattern[bytes], line: bytes) -> Optional[str]:
    match = pattern.search(line)
    if match is None:
        return None
    try:
        value = json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None
    return value if is_clean_text(value) else None


def why_not_encodable(item: Any, error: Exception) -> str:
    """Why orjson refused to encode an item, naming the field: for the log and the summary."""
    found = _find_problem(item, "", 0)
    if found is not None:
        path, problem = found
        return f"field '{path}' {problem}" if path else problem
    return f"cannot be encoded as JSON ({error})"


def _find_problem(value: Any, path: str, depth: int) -> Optional[tuple[str, str]]:
    if isinstance(value, NonFiniteNumber):
        return path, f"is {value.literal}, which JSON cannot carry"
    if type(value) is str:
        return None if is_clean_text(value) else (path, "is not valid UTF-8 text (invalid bytes or a lone surrogate)")
    if isinstance(value, (dict, list)):
        if depth >= ORJSON_MAX_DEPTH:
            return path, f"is nested deeper than {ORJSON_MAX_DEPTH} levels"
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            if isinstance(key, str) and not is_clean_text(key):
                return path, "has a key that is not valid UTF-8 text"
            child_path = _join(path, key, depth)
            found = _find_problem(child, child_path, depth + 1)
            if found is not None:
                return found
        return None
    try:
        orjson.dumps(value)
    except TypeError:
        return path, f"holds a value of type {type(value).__name__}, which JSON cannot carry"
    return None


def _join(path: str, key: Any, depth: int) -> str:
    if depth >= MAX_PATH_DEPTH:
        return path if path.endswith("...") else path + "..."
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)
