"""JSON that a node sent: a `dlvm check` result line, the autostop watcher's heartbeat and
config on the head. A node is the node's to control, so what it sends is parsed here only:
bounded in size and in nesting before the parser sees it (a line of 2,000 `[` makes
Python's parser raise RecursionError), any exception of the parser caught, NaN and
Infinity refused, and every field a caller uses checked for its type and range. A caller
gets a value it can use or `NodeJsonError`, never another exception.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MAX_BYTES = 64 << 10
MAX_DEPTH = 16
MAX_TEXT = 1000
MAX_ITEMS = 1000


class NodeJsonError(ValueError):
    """What a node sent is not what was asked for (the message says how)."""


def loads(text: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The value of `text`, at most `max_bytes` characters and `max_depth` levels deep."""
    if len(text) > max_bytes:
        raise NodeJsonError(f"{len(text)} characters, more than {max_bytes}")
    if _deeper_than(text, max_depth):
        raise NodeJsonError(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except Exception as exc:  # whatever the parser raises on whatever came
        raise NodeJsonError(f"not JSON ({type(exc).__name__})") from None


def loads_object(text: str, **bounds: int) -> dict[str, Any]:
    """`loads`, and the value must be an object."""
    data = loads(text, **bounds)
    if not isinstance(data, dict):
        raise NodeJsonError(f"a {type(data).__name__}, not an object")
    return data


_MISSING: Any = object()


def number(
    data: Mapping[str, Any],
    key: str,
    *,
    low: float,
    high: float,
    default: Any = _MISSING,
) -> float:
    """data[key] as a finite number within [low, high] (a bool is no number); `default`
    where the key is absent or null, if one is given."""
    value = data.get(key)
    if value is None and default is not _MISSING:
        return default  # type: ignore[no-any-return]
    checked = finite(value)
    if checked is None or not low <= checked <= high:
        raise NodeJsonError(f"{key} is {_shown(value)}, not a number from {low:g} to {high:g}")
    return checked


def text(
    data: Mapping[str, Any], key: str, *, max_len: int = MAX_TEXT, default: Any = _MISSING
) -> str:
    """data[key] as a string of at most `max_len` characters."""
    value = data.get(key)
    if value is None and default is not _MISSING:
        return default  # type: ignore[no-any-return]
    if not isinstance(value, str) or len(value) > max_len:
        raise NodeJsonError(f"{key} is {_shown(value)}, not a string of at most {max_len}")
    return value


def texts(
    data: Mapping[str, Any],
    key: str,
    *,
    max_items: int = MAX_ITEMS,
    max_len: int = MAX_TEXT,
    default: Any = _MISSING,
) -> tuple[str, ...]:
    """data[key] as a list of at most `max_items` strings of at most `max_len` each."""
    value = data.get(key)
    if value is None and default is not _MISSING:
        return default  # type: ignore[no-any-return]
    if (
        not isinstance(value, list)
        or len(value) > max_items
        or not all(isinstance(item, str) and len(item) <= max_len for item in value)
    ):
        raise NodeJsonError(f"{key} is {_shown(value)}, not a list of strings")
    return tuple(value)


def finite(value: object) -> float | None:
    """`value` as a float if it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        converted = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return converted if math.isfinite(converted) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is no number")


def _deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects in `text` nest deeper than `limit` (brackets inside strings
    do not count): known before the parser recurses."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
