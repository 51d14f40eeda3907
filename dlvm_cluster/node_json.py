"""JSON that a node printed, read as hostile input: bounded in size and depth before it is
parsed, and read back field by field with the type checked, so that a node (or whatever
took it over) can neither exhaust this machine nor hand dlvm a value of the wrong kind."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_BYTES = 256 * 1024  # one document: far above what any node program prints
MAX_DEPTH = 8


class NodeJsonError(ValueError):
    """The node's text is not the document expected; the message says why (never the text)."""


def parse(text: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A JSON object from a node: refused when larger than `max_bytes`, nested deeper than
    `max_depth` (checked on the text before json builds anything), or not an object."""
    if len(text) > max_bytes:
        raise NodeJsonError(f"{len(text)} characters, more than {max_bytes}")
    depth = deepest = 0
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
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise NodeJsonError(f"nested deeper than {max_depth}")
        elif char in "]}":
            depth -= 1
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise NodeJsonError(f"not JSON ({str(error)[:80]})") from None
    if not isinstance(value, dict):
        raise NodeJsonError(f"a {type(value).__name__}, not an object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def number(
    data: dict[str, Any], key: str, *, low: float = 0.0, high: float = math.inf
) -> float | None:
    """data[key] as a finite number within [low, high]; None when absent or null. Anything
    else (a string, a bool, out of range) is refused: a node that lies is not believed."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NodeJsonError(f"{key}: {type(value).__name__}, not a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise NodeJsonError(f"{key}: {value!r} outside {low:g}..{high:g}")
    return float(value)


def integer(data: dict[str, Any], key: str, *, low: int = 0, high: int = 1 << 62) -> int | None:
    """data[key] as an int within [low, high]; None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise NodeJsonError(f"{key}: {type(value).__name__}, not an integer")
    if not low <= value <= high:
        raise NodeJsonError(f"{key}: {value} outside {low}..{high}")
    return value


def text(data: dict[str, Any], key: str, *, limit: int = 300) -> str:
    """data[key] as a string cut to `limit` characters; '' when absent."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NodeJsonError(f"{key}: {type(value).__name__}, not a string")
    return value[:limit]


def objects(data: dict[str, Any], key: str, *, limit: int) -> list[dict[str, Any]]:
    """data[key] as a list of at most `limit` objects; [] when absent."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise NodeJsonError(f"{key}: not a list of objects")
    if len(value) > limit:
        raise NodeJsonError(f"{key}: {len(value)} entries, more than {limit}")
    return value


def numbers(data: dict[str, Any], key: str, *, limit: int) -> list[float]:
    """data[key] as a list of at most `limit` finite non-negative numbers; [] when absent."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise NodeJsonError(f"{key}: not a list of at most {limit} numbers")
    return [number({key: item}, key) or 0.0 for item in value]


def obj(data: dict[str, Any], key: str) -> dict[str, Any]:
    """data[key] as an object; {} when absent."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NodeJsonError(f"{key}: {type(value).__name__}, not an object")
    return value
