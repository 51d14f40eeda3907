"""Provider kinds are told apart only in dlvm_cluster/providers/: anywhere else, code asks
the provider (docs/ARCHITECTURE.md, "The layer rule"). The kinds and their config models are
read from the registry, so a kind added there is checked with no change here."""

from __future__ import annotations

import ast
from pathlib import Path

from dlvm_cluster.providers import registry

PACKAGE = Path(__file__).resolve().parents[2] / "dlvm_cluster"
ALLOWED = ("providers",)
SPEC_MODELS = {entry.spec.config.__name__ for entry in registry.KINDS.values()} | {
    entry.spec.nodes.__name__ for entry in registry.KINDS.values() if entry.spec.node_keys
}
KINDS = set(registry.KINDS)


def kind_checks(source: str) -> list[tuple[int, str]]:
    """(line, what) for each place `source` tells provider kinds apart: a spec model named
    (imported, or in isinstance), or `.kind` compared with a provider kind."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            named = SPEC_MODELS & {alias.name for alias in node.names}
            if named:
                found.append((node.lineno, f"imports {', '.join(sorted(named))}"))
        elif isinstance(node, ast.Name) and node.id in SPEC_MODELS:
            found.append((node.lineno, f"uses {node.id}"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            on_kind = any(isinstance(side, ast.Attribute) and side.attr == "kind" for side in sides)
            constants = {side.value for side in sides if isinstance(side, ast.Constant)}
            if on_kind and constants & KINDS:
                found.append((node.lineno, "compares .kind with a provider kind"))
    return found


def test_no_code_outside_providers_asks_which_provider_it_has() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ALLOWED:
            continue
        for line, what in kind_checks(path.read_text()):
            problems.append(f"dlvm_cluster/{relative}:{line}: {what}")
    assert problems == [], "ask the provider instead (providers.for_spec):\n" + "\n".join(problems)


def test_the_checker_finds_each_form() -> None:
    source = (
        "from dlvm_cluster.providers.gcp.config import GcpConfig\n"
        "ok = isinstance(spec.provider, GcpConfig)\n"
        "local = spec.provider.kind == 'local'\n"
        "fine = spec.nodes.count == 3\n"
    )
    assert sorted(line for line, _ in kind_checks(source)) == [1, 2, 3]


def test_the_kinds_and_models_checked_are_the_registrys() -> None:
    assert {"local", "ssh", "gcp"} <= KINDS
    assert {"LocalConfig", "SshConfig", "GcpConfig", "GcpNodes"} <= SPEC_MODELS
