"""Where in a cluster file a value is: paths of keys and indexes, mapped to line and column
through ruamel.yaml's round-trip data, and values described for messages."""

from __future__ import annotations

import datetime
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from dlvm_cluster.errors import SourceLocation

Loc = tuple[str | int, ...]


def child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def locate(data: CommentedMap, loc: Loc, name: str, *, key: bool = False) -> SourceLocation:
    """The position of the value at `loc` (or of its key), falling back to the nearest parent.

    An empty value (`nodes:` with nothing after it) has no position of its own worth showing
    (ruamel puts it on the next line), so its key is shown instead.
    """
    line, column = data.lc.line, data.lc.col
    node: Any = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            empty = node[part] is None
            position = node.lc.key(part) if ((key or empty) and last) else node.lc.value(part)
            line, column = position
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line, column = node.lc.item(part)
            node = node[part]
        else:
            break
    return SourceLocation(name, line + 1, column + 1)


def dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part or not part.isprintable() or part.strip() != part:
            text += f"[{part!r}]"  # keep a key with spaces or newlines visible on one line
        else:
            text += f".{part}" if text else part
    return text


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, tuple):
        return "a list"
    shown = repr(value)
    return f"the {type(value).__name__} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def show_value(value: Any) -> str:
    if value is None:
        shown = "nothing"
    elif isinstance(value, bool):
        shown = str(value).lower()
    elif isinstance(value, dict):
        shown = "a mapping" if value else "an empty mapping"
    elif isinstance(value, list):
        shown = "a list" if value else "an empty list"
    elif isinstance(value, datetime.date):
        shown = f"the date {value.isoformat()}"
    elif isinstance(value, str | int | float | bool):
        shown = repr(value)
    else:
        shown = type(value).__name__
    return shown if len(shown) <= 60 else shown[:57] + "..."
