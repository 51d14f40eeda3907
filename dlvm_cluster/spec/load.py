"""Reads a cluster file into a ClusterSpec; every problem becomes a SpecError at file:line:column.

ruamel.yaml's round-trip loader keeps the line and column of every key and value, which is
what lets a pydantic error (a path of keys) be reported where the user can find it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from dlvm_cluster.errors import SourceLocation, SpecError
from dlvm_cluster.spec.explain import translate
from dlvm_cluster.spec.kinds import SpecKinds
from dlvm_cluster.spec.locate import describe, dotted, locate, show_value
from dlvm_cluster.spec.model import LoadedSpec
from dlvm_cluster.spec.parse import check_keys, decode, first_content_line, parse_yaml

MAX_FILE_BYTES = 1_000_000


def load_spec(path: Path, kinds: SpecKinds) -> LoadedSpec:
    """Load and validate the cluster file at `path`, checking that its `files` sources exist;
    `kinds`: the provider kinds it may name, with their keys and rules."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise SpecError(
            f"no such file: {path}", hint="give the path of a cluster YAML file"
        ) from exc
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
    loaded = load_spec_text(raw, path, kinds)
    _check_sources(loaded)
    return loaded


def load_spec_text(raw: bytes | str, path: Path, kinds: SpecKinds) -> LoadedSpec:
    """Validate cluster-file content; `path` names it in messages and anchors relative paths."""
    name = str(path)
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise SpecError(
            f"the file is larger than {MAX_FILE_BYTES} bytes",
            location=SourceLocation(name, 1, 1),
            hint="a cluster file is a few dozen lines; is this the right file?",
        )
    text = decode(raw, name) if isinstance(raw, bytes) else raw
    if not text.strip():
        raise SpecError(
            "the file is empty",
            location=SourceLocation(name, 1, 1),
            hint="start from examples/local.yaml",
        )
    data = parse_yaml(text, name)
    if data is None:
        raise SpecError(
            "the file has no content, only comments",
            location=SourceLocation(name, 1, 1),
            hint="start from examples/local.yaml",
        )
    if not isinstance(data, CommentedMap):
        raise SpecError(
            "the top level must be a mapping of keys (name, provider, nodes, ...), "
            f"not {describe(data)}",
            location=SourceLocation(name, first_content_line(text), 1),
        )
    check_keys(data, name)
    model = kinds.model_for(data)
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise translate(exc, data, name, model, kinds) from exc
    for loc, message in kinds.problems(spec):
        raise SpecError(message, location=locate(data, loc, name), field=dotted(loc))
    return LoadedSpec(spec=spec, path=path.resolve(), text=text)


def _check_sources(loaded: LoadedSpec) -> None:
    for index, entry in enumerate(loaded.spec.files):
        problem = ""
        try:
            source = loaded.source_path(entry)
            if not source.exists():
                problem = f"{show_value(entry.src)} does not exist (looked for {source})"
        except (OSError, ValueError, RuntimeError) as exc:
            # An embedded NUL, a name too long for the filesystem, `~nosuchuser/...`.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problem = f"{show_value(entry.src)} is not a usable path ({reason})"
        if problem:
            data = parse_yaml(loaded.text, str(loaded.path))
            raise SpecError(
                problem,
                location=locate(data, ("files", index, "src"), str(loaded.path)),
                field=f"files[{index}].src",
                hint="paths in files are relative to the cluster file",
            )
