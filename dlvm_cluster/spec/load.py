"""Reads a cluster file into a ClusterSpec; every problem becomes a SpecError at file:line:column.

ruamel.yaml's round-trip loader keeps the line and column of every key and value, which is
what lets a pydantic error (a path of keys) be reported where the user can find it.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from dlvm_cluster.errors import SourceLocation, SpecError
from dlvm_cluster.spec.model import ClusterSpec, FileSync, LoadedSpec, semantic_problems

MAX_FILE_BYTES = 1_000_000
Loc = tuple[str | int, ...]


def load_spec(path: Path) -> LoadedSpec:
    """Load and validate the cluster file at `path`, checking that its `files` sources exist."""
    try:
        raw = path.read_bytes()
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
    text = _decode(raw, name) if isinstance(raw, bytes) else raw
    if len(text) > MAX_FILE_BYTES:
        raise SpecError(
            f"file is larger than {MAX_FILE_BYTES} bytes", location=SourceLocation(name, 1, 1)
        )
    if not text.strip():
        raise SpecError(
            "the file is empty",
            location=SourceLocation(name, 1, 1),
            hint="start from examples/local.yaml",
        )
    data = _parse(text, name)
    if not isinstance(data, CommentedMap):
        raise SpecError(
            "the top level must be a mapping of keys (name, provider, nodes, ...), "
            f"not {_kind(data)}",
            location=SourceLocation(name, 1, 1),
        )
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


def _parse(text: str, name: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        # Aliases let a few lines expand into gigabytes ("billion laughs"); a cluster file never
        # needs them, so they are refused before anything is built.
        for event in yaml.parse(text):
            if isinstance(event, AliasEvent):
                mark = event.start_mark
                raise SpecError(
                    "YAML aliases (*name) are not supported in cluster files",
                    location=SourceLocation(name, mark.line + 1, mark.column + 1),
                    hint="write the value out in full",
                )
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if "found character '\\t'" in str(exc):
            problem = "a tab character; YAML indentation must use spaces"
        location = SourceLocation(name, mark.line + 1, mark.column + 1) if mark else None
        raise SpecError(f"YAML syntax error: {problem}", location=location) from exc
    except YAMLError as exc:
        raise SpecError(f"YAML syntax error: {exc}", location=SourceLocation(name, 1, 1)) from exc
    except RecursionError as exc:
        raise SpecError(
            "the file is nested too deeply", location=SourceLocation(name, 1, 1)
        ) from exc


def _translate(exc: ValidationError, data: CommentedMap, name: str) -> SpecError:
    errors = exc.errors(include_url=False)
    # A misspelt key also makes the right one "missing": report the misspelling first.
    errors.sort(key=lambda error: error["type"] != "extra_forbidden")
    first = errors[0]
    loc = _strip_tags(data, tuple(first["loc"]))
    kind = first["type"]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
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
        )
    got = first.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else _kind(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    message = f"{first['msg']} (got {shown})"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "kind")
        tag = _child(_child(data, loc[0]), "kind")
        message = "must be one of local, gcp, ssh" + (f" (got {tag!r})" if tag is not None else "")
    elif kind == "string_pattern_mismatch" and loc == ("name",):
        message = f"must start with a lowercase letter and use only a-z, 0-9 and - (got {shown})"
    return SpecError(message + more, location=_locate(data, loc, name), field=_dotted(loc))


def _strip_tags(data: Any, loc: Loc) -> Loc:
    """Drop the discriminator tags pydantic puts in error paths (provider.local.x -> provider.x)."""
    kept: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        kept.append(part)
        node = _child(node, part)
    return tuple(kept)


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _locate(data: CommentedMap, loc: Loc, name: str, *, key: bool = False) -> SourceLocation:
    """The position of the value at `loc` (or of its key), falling back to the nearest parent."""
    line, column = data.lc.line, data.lc.col
    node: Any = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            position = node.lc.key(part) if (key and last) else node.lc.value(part)
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
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"the {type(value).__name__} {value!r}"


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
            a
            for a in typing.get_args(annotation)
            if isinstance(a, type) and issubclass(a, BaseModel)
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
        source = resolve_source(loaded, entry)
        if not source.exists():
            data = _parse(loaded.text, str(loaded.path))
            raise SpecError(
                f"{entry.src!r} does not exist (looked for {source})",
                location=_locate(data, ("files", index, "src"), str(loaded.path)),
                field=f"files[{index}].src",
                hint="paths in files are relative to the cluster file",
            )


def resolve_source(loaded: LoadedSpec, entry: FileSync) -> Path:
    """A `files` source as an absolute path: relative paths start at the cluster file."""
    source = Path(entry.src).expanduser()
    return source if source.is_absolute() else (loaded.base_dir / source).resolve()
