"""Reads a cluster file into a ClusterSpec; every problem becomes a SpecError at file:line:column.

ruamel.yaml's round-trip loader keeps the line and column of every key and value, which is
what lets a pydantic error (a path of keys) be reported where the user can find it.
"""

from __future__ import annotations

import datetime
import difflib
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from ruamel.yaml.reader import ReaderError

from dlvm_cluster.errors import SourceLocation, SpecError
from dlvm_cluster.spec.model import UNION_TAGS, ClusterSpec, FileSync, LoadedSpec, semantic_problems

MAX_FILE_BYTES = 1_000_000
Loc = tuple[str | int, ...]
# Explicit tags a cluster file may use (`!!str 0123`). Others (`!!python/object`, `!custom`)
# would reach validation as opaque objects, so they are refused where they are written.
CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
)
# Fields whose type is a union: one message for the field instead of one per member.
UNION_MESSAGES: dict[Loc, str] = {
    ("job", "procs_per_node"): "must be 'auto' or a whole number of at least 1",
}
MAPPING_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type"})


def load_spec(path: Path) -> LoadedSpec:
    """Load and validate the cluster file at `path`, checking that its `files` sources exist."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise SpecError(
            f"no such file: {path}", hint="give the path of a cluster YAML file"
        ) from exc
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
    loaded = load_spec_text(raw, path)
    _check_sources(loaded)
    return loaded


def load_spec_text(raw: bytes | str, path: Path) -> LoadedSpec:
    """Validate cluster-file content; `path` names it in messages and anchors relative paths."""
    name = str(path)
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise SpecError(
            f"the file is larger than {MAX_FILE_BYTES} bytes",
            location=SourceLocation(name, 1, 1),
            hint="a cluster file is a few dozen lines; is this the right file?",
        )
    text = _decode(raw, name) if isinstance(raw, bytes) else raw
    if not text.strip():
        raise SpecError(
            "the file is empty",
            location=SourceLocation(name, 1, 1),
            hint="start from examples/local.yaml",
        )
    data = _parse(text, name)
    if data is None:
        raise SpecError(
            "the file has no content, only comments",
            location=SourceLocation(name, 1, 1),
            hint="start from examples/local.yaml",
        )
    if not isinstance(data, CommentedMap):
        raise SpecError(
            "the top level must be a mapping of keys (name, provider, nodes, ...), "
            f"not {_kind(data)}",
            location=SourceLocation(name, _first_content_line(text), 1),
        )
    _check_keys(data, name)
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, data, name) from exc
    for loc, message in semantic_problems(spec):
        raise SpecError(message, location=_locate(data, loc, name), field=_dotted(loc))
    return LoadedSpec(spec=spec, path=path.resolve(), text=text)


def _decode(raw: bytes, name: str) -> str:
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


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character `index` of `text`."""
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _first_content_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%", "---")):
            return number
    return 1


def _parse(text: str, name: str) -> Any:
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
        line, column = _position(text, exc.position)
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


def _check_keys(data: CommentedMap, name: str) -> None:
    """Every key must be text (`5: x` or `~: x` would get a confusing message otherwise), and a
    value tagged `!!str`, which the round-trip loader keeps wrapped, becomes plain text."""
    pending: list[tuple[Any, Loc]] = [(data, ())]
    while pending:
        node, loc = pending.pop()
        if isinstance(node, CommentedMap):
            for key, value in node.items():
                if not isinstance(key, str):
                    line, column = node.lc.key(key)
                    shown = "a tagged value" if isinstance(key, TaggedScalar) else _kind(key)
                    raise SpecError(
                        f"keys must be plain text, not {shown}",
                        location=SourceLocation(name, line + 1, column + 1),
                        field=_dotted(loc),
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


def _translate(exc: ValidationError, data: CommentedMap, name: str) -> SpecError:
    errors = exc.errors(include_url=False)
    # A misspelt key also makes the right one "missing": report the misspelling first.
    errors.sort(key=lambda error: error["type"] != "extra_forbidden")
    # Group by field: a union reports one error per member, which is one problem for the user.
    groups: dict[tuple[Loc, bool], list[Any]] = {}
    for error in errors:
        groups.setdefault(_clean_loc(data, tuple(error["loc"])), []).append(error)
    (loc, on_key), group = next(iter(groups.items()))
    first = group[0]
    kind = first["type"]
    more = f" (and {len(groups) - 1} more problem(s))" if len(groups) > 1 else ""
    hint = ""
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _fields_at(loc[:-1], data)
        guess = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        message = f"unknown key {key!r}"
        if guess:
            hint = f"did you mean {guess[0]!r}?"
            message += f"; did you mean {guess[0]!r}?"
        elif known:
            hint = "known keys here: " + ", ".join(known)
        return SpecError(
            message + more,
            location=_locate(data, loc, name, key=True),
            field=_dotted(loc),
            hint=hint,
        )
    if kind == "missing":
        return SpecError(
            "this required key is missing" + more,
            location=_locate(data, loc[:-1], name, key=True),
            field=_dotted(loc),
            hint=f"add {loc[-1]}: under {_dotted(loc[:-1])}" if len(loc) > 1 else "",
        )
    got = first.get("input")
    shown = _shown(got)
    text = str(first["msg"]).removeprefix("Value error, ")
    if len(group) > 1:
        text = UNION_MESSAGES.get(loc) or " or ".join(
            dict.fromkeys(str(error["msg"]).removeprefix("Value error, ") for error in group)
        )
    message = f"{text} (got {shown})"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "kind")
        tag = _child(_child(data, loc[0]), "kind")
        message = "must be one of local, gcp, ssh" + (
            f" (got {_shown(tag)})" if tag is not None else ""
        )
        hint = _suggest(tag, ["local", "gcp", "ssh"]) or "add kind: local, gcp or ssh"
    elif kind == "string_pattern_mismatch" and loc == ("name",):
        message = f"must start with a lowercase letter and use only a-z, 0-9 and - (got {shown})"
    elif kind in MAPPING_ERRORS:
        message = f"must be a mapping of keys (got {shown})"
        known = _fields_at(loc, data)
        hint = "known keys here: " + ", ".join(known) if known else ""
        if loc == ("provider",):
            hint = "write it as provider: {kind: local} (or gcp, ssh)"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(first.get("ctx", {}).get("expected", "")))
        hint = _suggest(got, choices)
    elif kind == "string_type" and got is not None and not isinstance(got, dict | list):
        hint = "put the value in quotes to make it text"
    return SpecError(
        message + more,
        location=_locate(data, loc, name, key=on_key),
        field=_dotted(loc),
        hint=hint,
    )


def _suggest(value: Any, choices: list[str]) -> str:
    if not isinstance(value, str) or not choices:
        return ""
    guess = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"did you mean {guess[0]!r}?" if guess else "choose one of " + ", ".join(choices)


def _shown(value: Any) -> str:
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


def _clean_loc(data: Any, loc: Loc) -> tuple[Loc, bool]:
    """The error's path in the user's data, and whether it names a key rather than a value.

    Pydantic puts type tags in its paths: the discriminator (provider.local.region), a union
    member (procs_per_node.int) or `[key]` for a bad mapping key; none of them is in the file.
    """
    kept: list[str | int] = []
    node = data
    on_key = False
    for part in loc:
        if part == "[key]":
            on_key = True
            continue
        if part in UNION_TAGS:
            continue
        if isinstance(node, dict):
            if part not in node and node.get("kind") == part:
                continue
        elif isinstance(part, str) and not isinstance(node, list):
            continue  # a union member's tag below a scalar
        kept.append(part)
        node = _child(node, part)
    return tuple(kept), on_key


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _locate(data: CommentedMap, loc: Loc, name: str, *, key: bool = False) -> SourceLocation:
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


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part or not part.isprintable() or part.strip() != part:
            text += f"[{part!r}]"  # keep a key with spaces or newlines visible on one line
        else:
            text += f".{part}" if text else part
    return text


def _kind(value: Any) -> str:
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


def _fields_at(loc: Loc, data: Any) -> list[str]:
    """The keys the model accepts at `loc`, for "did you mean" hints."""
    current: Any = ClusterSpec
    node = data
    for part in loc:
        current = _field_type(current, part, node)
        node = _child(node, part)
        if current is None:
            return []
    model = _as_model(current, node)
    return list(model.model_fields) if model else []


def _field_type(current: Any, part: str | int, node: Any) -> Any:
    model = _as_model(current, node)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    origin = typing.get_origin(current)
    if origin in (list, dict):
        return typing.get_args(current)[-1]
    return None


def _as_model(annotation: Any, node: Any) -> type[BaseModel] | None:
    """Resolve an annotation to a model class, picking a union member by the data's `kind`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _as_model(typing.get_args(annotation)[0], node)
    if origin in (typing.Union, types.UnionType):
        members = [
            model
            for model in (_as_model(a, node) for a in typing.get_args(annotation))
            if model is not None
        ]
        kind = node.get("kind") if isinstance(node, dict) else None
        for member in members:
            kind_field = member.model_fields.get("kind")
            if kind_field is not None and kind in typing.get_args(kind_field.annotation):
                return member
        return members[0] if len(members) == 1 else None
    return None


def _check_sources(loaded: LoadedSpec) -> None:
    for index, entry in enumerate(loaded.spec.files):
        problem = ""
        try:
            source = resolve_source(loaded, entry)
            if not source.exists():
                problem = f"{_shown(entry.src)} does not exist (looked for {source})"
        except (OSError, ValueError, RuntimeError) as exc:
            # An embedded NUL, a name too long for the filesystem, `~nosuchuser/...`.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problem = f"{_shown(entry.src)} is not a usable path ({reason})"
        if problem:
            data = _parse(loaded.text, str(loaded.path))
            raise SpecError(
                problem,
                location=_locate(data, ("files", index, "src"), str(loaded.path)),
                field=f"files[{index}].src",
                hint="paths in files are relative to the cluster file",
            )


def resolve_source(loaded: LoadedSpec, entry: FileSync) -> Path:
    """A `files` source as an absolute path: relative paths start at the cluster file."""
    source = Path(entry.src).expanduser()
    return source if source.is_absolute() else (loaded.base_dir / source).resolve()
