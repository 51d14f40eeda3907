"""pydantic's validation errors, explained in the user's terms: the first problem at its
file:line:column, with the field path and a "did you mean" where one fits."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml.comments import CommentedMap

from dlvm_cluster.errors import SpecError
from dlvm_cluster.spec.kinds import SpecKinds
from dlvm_cluster.spec.locate import Loc, child, dotted, locate, show_value
from dlvm_cluster.spec.model import UNION_TAGS, ClusterSpec

# Fields whose type is a union: one message for the field instead of one per member.
UNION_MESSAGES: dict[Loc, str] = {
    ("job", "procs_per_node"): "must be 'auto' or a whole number of at least 1",
}
MAPPING_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type"})


def translate(
    exc: ValidationError,
    data: CommentedMap,
    name: str,
    model: type[ClusterSpec],
    kinds: SpecKinds,
) -> SpecError:
    """The first of `exc`'s problems, found validating `data` with `model` (its kind's)."""
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
        takers = kinds.takers(loc[:-1], loc[-1])
        if takers:
            return _key_of_another_kind(data, loc, name, takers, more)
        known = _fields_at(model, loc[:-1], data)
        guess = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        message = f"unknown key {key!r}"
        if guess:
            hint = f"did you mean {guess[0]!r}?"
            message += f"; did you mean {guess[0]!r}?"
        elif known:
            hint = "known keys here: " + ", ".join(known)
        return SpecError(
            message + more,
            location=locate(data, loc, name, key=True),
            field=dotted(loc),
            hint=hint,
        )
    if kind == "missing":
        return SpecError(
            "this required key is missing" + more,
            location=locate(data, loc[:-1], name, key=True),
            field=dotted(loc),
            hint=f"add {loc[-1]}: under {dotted(loc[:-1])}" if len(loc) > 1 else "",
        )
    got = first.get("input")
    shown = "a value kept secret" if _under_secret(data, loc) else show_value(got)
    text = str(first["msg"]).removeprefix("Value error, ")
    if len(group) > 1:
        text = UNION_MESSAGES.get(loc) or " or ".join(
            dict.fromkeys(str(error["msg"]).removeprefix("Value error, ") for error in group)
        )
    message = f"{text} (got {shown})"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "kind")
        tag = child(child(data, loc[0]), "kind")
        names = kinds.names
        message = f"must be one of {', '.join(names)}" + (
            f" (got {show_value(tag)})" if tag is not None else ""
        )
        hint = _suggest(tag, names) or f"add kind: {_either(names)}"
    elif kind == "string_pattern_mismatch" and loc == ("name",):
        message = (
            "must start with a lowercase letter, use only a-z, 0-9 and -, and end with a "
            f"letter or digit (got {shown})"
        )
    elif kind in MAPPING_ERRORS:
        message = f"must be a mapping of keys (got {shown})"
        known = _fields_at(model, loc, data)
        hint = "known keys here: " + ", ".join(known) if known else ""
        if loc == ("provider",):
            first_kind, *others = kinds.names
            hint = f"write it as provider: {{kind: {first_kind}}} (or {', '.join(others)})"
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(first.get("ctx", {}).get("expected", "")))
        hint = _suggest(got, choices)
    elif kind == "string_type" and got is not None and not isinstance(got, dict | list):
        hint = "put the value in quotes to make it text"
    return SpecError(
        message + more,
        location=locate(data, loc, name, key=on_key),
        field=dotted(loc),
        hint=hint,
    )


def _key_of_another_kind(
    data: CommentedMap, loc: Loc, name: str, takers: list[str], more: str
) -> SpecError:
    """A key the file's provider kind does not take, but another kind does (`provisioning`
    under a local cluster's nodes): refused, naming the kinds that take it."""
    key, section = loc[-1], dotted(loc[:-1])
    kind = child(child(data, "provider"), "kind")
    which = f"kind {takers[0]} takes" if len(takers) == 1 else f"kinds {', '.join(takers)} take"
    return SpecError(
        f"{key!r} is not a {section} key of kind {kind}: only {which} it{more}",
        location=locate(data, loc, name, key=True),
        field=dotted(loc),
        hint=f"remove it, or use provider kind {_either(takers)}",
    )


def _either(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _under_secret(data: CommentedMap, loc: Loc) -> bool:
    """Whether `loc` is inside an env value written as a mapping (`{value: ..., secret: true}`,
    `{from_env: NAME}`): the form secrets take, whose values an error must never repeat."""
    if len(loc) < 3 or loc[0] != "env":
        return False
    return isinstance(child(child(data, "env"), loc[1]), dict)


def _suggest(value: Any, choices: list[str]) -> str:
    if not isinstance(value, str) or not choices:
        return ""
    guess = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"did you mean {guess[0]!r}?" if guess else "choose one of " + ", ".join(choices)


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
        node = child(node, part)
    return tuple(kept), on_key


def _fields_at(model: type[ClusterSpec], loc: Loc, data: Any) -> list[str]:
    """The keys `model` accepts at `loc`, for "did you mean" hints."""
    current: Any = model
    node = data
    for part in loc:
        current = _field_type(current, part, node)
        node = child(node, part)
        if current is None:
            return []
    found = _as_model(current, node)
    return list(found.model_fields) if found else []


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
