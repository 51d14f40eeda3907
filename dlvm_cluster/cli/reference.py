"""The README's CLI and cluster-file references, generated from the typer app and the spec's
JSON Schema so they cannot drift; a test compares them with the README.

    python -m dlvm_cluster.cli.reference --write README.md
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from dlvm_cluster.cli.app import app
from dlvm_cluster.providers import spec_kinds

MARKERS = {
    "cli": ("<!-- cli-reference:start -->", "<!-- cli-reference:end -->"),
    "yaml": ("<!-- yaml-reference:start -->", "<!-- yaml-reference:end -->"),
}


def cli_reference() -> str:
    group = typer.main.get_command(app)
    lines = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        arguments = " ".join(
            _argument(p) for p in command.params if not getattr(p, "opts", [""])[0].startswith("-")
        )
        lines.append(f"### `dlvm {name}{' ' + arguments if arguments else ''}`\n")
        lines.append(f"{(command.help or '').strip()}\n")
        for param in command.params:
            opts = getattr(param, "opts", [])
            if not opts or not opts[0].startswith("-") or opts[0] == "--help":
                continue
            help_text = getattr(param, "help", "") or ""
            lines.append(f"- `{', '.join(opts)}`: {help_text}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _argument(param: Any) -> str:
    text = (param.name or "").upper() + ("..." if getattr(param, "nargs", 1) == -1 else "")
    return text if param.required else f"[{text}]"


def _type_of(node: dict[str, Any]) -> str:
    if "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[-1]
    if "const" in node:
        return repr(node["const"])
    if "enum" in node:
        return " | ".join(repr(v) for v in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " | ".join(_type_of(option) for option in node[key])
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        extra = node["additionalProperties"]
        return f"map of {_type_of(extra) if isinstance(extra, dict) else 'any'}"
    return " | ".join(kind) if isinstance(kind, list) else str(kind)


def _table(title: str, node: dict[str, Any]) -> list[str]:
    required = set(node.get("required", []))
    lines = [f"**{title}**", "", "| key | type | default |", "|---|---|---|"]
    for key, field in node.get("properties", {}).items():
        default = "required" if key in required else repr(field.get("default", None))
        lines.append(f"| `{key}` | {_type_of(field)} | {default} |")
    return [*lines, ""]


def yaml_reference() -> str:
    schema = spec_kinds().json_schema()
    lines = _table("cluster file (top level)", schema)
    for name, definition in schema.get("$defs", {}).items():
        if definition.get("type") == "object":
            lines += _table(name, definition)
    return "\n".join(lines).rstrip() + "\n"


def _replace(text: str, which: str, body: str) -> str:
    start, end = MARKERS[which]
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}{end}{tail}"


def render_readme(text: str) -> str:
    return _replace(_replace(text, "cli", cli_reference()), "yaml", yaml_reference())


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = Path(sys.argv[2])
        path.write_text(render_readme(path.read_text()))
    else:
        sys.stdout.write(cli_reference() + "\n" + yaml_reference())


if __name__ == "__main__":
    main()
