"""Reading a cluster file's text into round-trip YAML data, refusing what a cluster file must
never hold (aliases, foreign tags, non-text keys) where it is written."""

from __future__ import annotations

import re
import warnings
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from ruamel.yaml.reader import ReaderError

from dlvm_cluster.errors import SourceLocation, SpecError
from dlvm_cluster.spec.locate import Loc, describe, dotted

# Explicit tags a cluster file may use (`!!str 0123`). Others (`!!python/object`, `!custom`)
# would reach validation as opaque objects, so they are refused where they are written.
CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
)


def decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError(
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})",
            location=SourceLocation(name, line, column),
            hint="save the file as UTF-8",
        ) from exc


def position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character `index` of `text`."""
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def first_content_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%", "---")):
            return number
    return 1


def parse_yaml(text: str, name: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():
            # ruamel warns (on stderr) about reused anchors; aliases are refused below anyway.
            warnings.simplefilter("ignore")
            for event in yaml.parse(text):
                _check_event(event, name)
            return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        start = exc.context_mark
        hint = ""
        if exc.context and problem.startswith("but "):
            problem = f"{exc.context} {problem}"
        elif isinstance(exc, ConstructorError | DuplicateKeyError):
            duplicate = re.match(r'found duplicate key "(.*?)" with value', problem, re.DOTALL)
            if duplicate:
                problem = f"the key {duplicate.group(1)!r} appears twice in one mapping"
            hint = "each key may appear only once in a mapping"
        elif exc.context and start and mark and start.line != mark.line:
            # An unclosed bracket or quote is found lines later: say where it began.
            problem += f" ({exc.context} that starts at line {start.line + 1})"
        if "found character '\\t'" in str(exc):
            problem = "a tab character; YAML indentation must use spaces"
        if "<block" in problem:
            hint = "keys at the same level must line up"
        location = SourceLocation(name, mark.line + 1, mark.column + 1) if mark else None
        problem = " ".join(problem.split())  # one line, whatever text the problem quotes
        raise SpecError(f"YAML syntax error: {problem}", location=location, hint=hint) from exc
    except ReaderError as exc:
        line, column = position(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1])
        raise SpecError(
            f"the character U+{code:04X} is not allowed in YAML text",
            location=SourceLocation(name, line, column),
            hint="remove control characters from the file",
        ) from exc
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise SpecError(f"YAML syntax error: {first}", location=SourceLocation(name, 1, 1)) from exc
    except RecursionError as exc:
        raise SpecError(
            "the file is nested too deeply", location=SourceLocation(name, 1, 1)
        ) from exc


def _check_event(event: Any, name: str) -> None:
    # Aliases let a few lines expand into gigabytes ("billion laughs"); a cluster file never
    # needs them, so they are refused before anything is built.
    mark = event.start_mark
    if isinstance(event, AliasEvent):
        raise SpecError(
            "YAML aliases (*name) are not supported in cluster files",
            location=SourceLocation(name, mark.line + 1, mark.column + 1),
            hint="write the value out in full",
        )
    if isinstance(event, ScalarEvent | CollectionStartEvent):
        tag = event.tag
        if tag is not None and str(tag) not in CORE_TAGS and str(tag) != "!":
            shown = str(tag).replace("tag:yaml.org,2002:", "!!")
            raise SpecError(
                f"the YAML tag {shown} is not supported in cluster files",
                location=SourceLocation(name, mark.line + 1, mark.column + 1),
                hint="remove the tag; quote the value if it must be text",
            )


def check_keys(data: CommentedMap, name: str) -> None:
    """Every key must be text (`5: x` or `~: x` would get a confusing message otherwise), and a
    value tagged `!!str`, which the round-trip loader keeps wrapped, becomes plain text."""
    pending: list[tuple[Any, Loc]] = [(data, ())]
    while pending:
        node, loc = pending.pop()
        if isinstance(node, CommentedMap):
            for key, value in node.items():
                if not isinstance(key, str):
                    line, column = node.lc.key(key)
                    shown = "a tagged value" if isinstance(key, TaggedScalar) else describe(key)
                    raise SpecError(
                        f"keys must be plain text, not {shown}",
                        location=SourceLocation(name, line + 1, column + 1),
                        field=dotted(loc),
                        hint="put the key in quotes",
                    )
                if isinstance(value, TaggedScalar):
                    node[key] = str(value.value)
                pending.append((node[key], (*loc, key)))
        elif isinstance(node, CommentedSeq):
            for index, item in enumerate(node):
                if isinstance(item, TaggedScalar):
                    node[index] = str(item.value)
                pending.append((node[index], (*loc, index)))
