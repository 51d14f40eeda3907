"""The layer rule of docs/ARCHITECTURE.md, enforced: every import in dlvm_cluster (top level
or inside a function, `import x` or `from x import y`, relative ones resolved) goes to the
module's own package, a layer below, or the foundation; never up, never sideways.

    cli, agent, dashboard           top: programs (cli starts the dashboard)
    orchestrate
    launch | remote | providers     siblings: none imports another
    nodeside                        programs shipped to the nodes: import nothing of dlvm
    provision                       the Terraform engine: for providers and orchestrate only
    foundation                      spec, state, inventory, progress, errors, secret_env,
                                    shell, and the package's own __init__ and __main__

Inside a package, modules may import each other, but never in a circle (a -> b -> a, at any
length, deferred imports included): the test names the files of every circle. The node
programs of nodeside/ run under `python3 -S -I` (no site-packages, where dlvm is installed),
so an import of dlvm in one of them fails here as it would on a node.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "dlvm_cluster"
SOURCE = Path(__file__).resolve().parents[2] / PACKAGE

FOUNDATION = frozenset(
    {"spec", "state", "inventory", "progress", "errors", "secret_env", "shell", "__init__"}
)
SIBLINGS = frozenset({"launch", "remote", "providers"})
BELOW_TOP = frozenset({"orchestrate", *SIBLINGS}) | FOUNDATION

# What each part of dlvm_cluster may import besides itself, and the rule that says so.
ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "cli": (
        BELOW_TOP | {"dashboard"},
        "cli is a program on top: it may import anything but provision and agent",
    ),
    "agent": (BELOW_TOP, "agent is a program on top: it may import anything but provision and cli"),
    "dashboard": (
        BELOW_TOP,
        "dashboard is a program on top (the cli starts it): it may import anything but "
        "provision, cli and agent",
    ),
    "orchestrate": (
        frozenset({*SIBLINGS, "provision", "nodeside"}) | FOUNDATION,
        "orchestrate imports only launch, remote, providers, provision, nodeside and the "
        "foundation",
    ),
    "nodeside": (
        frozenset(),
        "nodeside holds programs that run on the nodes, where dlvm is not installed: they "
        "import nothing of dlvm",
    ),
    "launch": (
        FOUNDATION,
        "launch imports only the foundation (not its siblings remote and "
        "providers, not provision, nothing above)",
    ),
    "remote": (
        FOUNDATION,
        "remote imports only the foundation (not its siblings launch and "
        "providers, not provision, nothing above)",
    ),
    "providers": (
        frozenset({"provision"}) | FOUNDATION,
        "providers imports only provision and the foundation (not its siblings launch and "
        "remote, nothing above)",
    ),
    "provision": (FOUNDATION, "provision (the Terraform engine) imports only the foundation"),
    **{
        name: (FOUNDATION, f"{name} is foundation: it imports only the foundation")
        for name in FOUNDATION
    },
    "__main__": (
        frozenset({"cli"}) | FOUNDATION,
        "__main__ imports only cli and the foundation",
    ),
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.imported}: {self.rule}"


def part_of(module: str) -> str:
    """The layer unit a dlvm_cluster module belongs to: `dlvm_cluster.remote.pool` -> remote,
    `dlvm_cluster.state` -> state, `dlvm_cluster` -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import anywhere in the tree. For `from X import
    y`, y is counted as X.y, since y may be a submodule (`from dlvm_cluster import cli`)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations_in(
    source: str, *, module: str, path: str, is_package: bool = False
) -> list[Violation]:
    """The imports in `source` (the code of `module`) that break the layer rule."""
    own = part_of(module)
    if own not in ALLOWED:
        return [Violation(path, 1, module, f"{own} has no place in the layer table of this test")]
    allowed, rule = ALLOWED[own]
    found = []
    for line, imported in imported_modules(ast.parse(source, path), module, is_package):
        if imported != PACKAGE and not imported.startswith(PACKAGE + "."):
            continue
        target = part_of(imported)
        if target == own or target in allowed:
            continue
        if target not in ALLOWED:  # `from dlvm_cluster import NAME` of a name, not a module
            target_rule = f"{imported} is not a part of {PACKAGE} the layer table knows"
            found.append(Violation(path, line, imported, target_rule))
            continue
        found.append(Violation(path, line, imported, rule))
    return found


def module_name(path: Path) -> tuple[str, bool]:
    relative = path.relative_to(SOURCE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def all_violations() -> list[Violation]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        module, is_package = module_name(path)
        shown = str(path.relative_to(SOURCE.parent))
        found += violations_in(
            path.read_text(encoding="utf-8"), module=module, path=shown, is_package=is_package
        )
    return found


def test_every_import_goes_down_or_stays_in_its_package() -> None:
    assert SOURCE.is_dir()
    broken = all_violations()
    assert not broken, "imports that break the layer rule:\n" + "\n".join(map(str, broken))


def test_the_checker_catches_an_upward_import_at_any_depth() -> None:
    source = (
        "import os\n"
        "from dlvm_cluster.errors import DlvmError\n"
        "from dlvm_cluster.remote.pool import SshPool\n"
        "from . import sync\n"
        "def later():\n"
        "    from dlvm_cluster.orchestrate.cluster.records import open_pool\n"
        "    from ..launch import plan\n"
        "    import dlvm_cluster.provision.terraform\n"
        "    from .. import cli\n"
    )
    found = violations_in(source, module="dlvm_cluster.remote.planted", path="remote/planted.py")
    assert [(v.line, v.imported) for v in found] == [
        (6, "dlvm_cluster.orchestrate.cluster.records.open_pool"),
        (7, "dlvm_cluster.launch.plan"),
        (8, "dlvm_cluster.provision.terraform"),
        (9, "dlvm_cluster.cli"),
    ]
    assert str(found[0]).startswith("remote/planted.py:6: imports dlvm_cluster.orchestrate")
    assert "remote imports only the foundation" in found[0].rule


def test_the_checker_resolves_relative_imports_in_a_package_init() -> None:
    source = "from .plan import LaunchPlan\nfrom ..remote import command\n"
    found = violations_in(
        source, module="dlvm_cluster.launch", path="launch/__init__.py", is_package=True
    )
    assert [(v.line, v.imported) for v in found] == [(2, "dlvm_cluster.remote.command")]


def test_the_checker_places_every_part_it_is_told_of() -> None:
    """A new package must be given its layer here before it can import anything."""
    found = violations_in("", module="dlvm_cluster.newpart.x", path="newpart/x.py")
    assert [v.rule for v in found] == ["newpart has no place in the layer table of this test"]


def module_files() -> dict[str, Path]:
    """Every dlvm_cluster module by its dotted name."""
    return {module_name(path)[0]: path for path in sorted(SOURCE.rglob("*.py"))}


def import_graph(files: Mapping[str, Path]) -> dict[str, set[str]]:
    """module -> the dlvm_cluster modules it imports (`from a.b import c` counts as a.b.c when
    that is a module, else as a.b)."""
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set()
        for _, imported in imported_modules(tree, module, is_package):
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != module:
                targets.add(imported)
        graph[module] = targets
    return graph


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected parts of more than one module
    (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == module:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_no_import_circle_inside_any_package() -> None:
    files = module_files()
    found = circles(import_graph(files))
    named = [" <-> ".join(str(files[m].relative_to(SOURCE.parent)) for m in part) for part in found]
    assert not found, "import circles (break them by moving code):\n" + "\n".join(named)


def test_the_circle_check_finds_a_circle_and_names_its_files() -> None:
    graph = {
        "pkg.jobs": {"pkg.check", "pkg.records"},
        "pkg.check": {"pkg.lifecycle"},
        "pkg.lifecycle": {"pkg.jobs", "pkg.records"},
        "pkg.records": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.a"},
    }
    assert circles(graph) == [["pkg.a", "pkg.b"], ["pkg.check", "pkg.jobs", "pkg.lifecycle"]]
    assert circles({"x": {"y"}, "y": set()}) == []


# nodeside/'s programs, and those a provider keeps beside the node script that runs them.
NODE_PROGRAMS = [
    *sorted(path for path in (SOURCE / "nodeside").glob("*.py") if path.name != "__init__.py"),
    SOURCE / "providers" / "gcp" / "nccl_net_probe.py",
]


def run_standalone(program: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Load `program` as a node does: a bare python3 with no site-packages (-S) and no
    environment or user paths (-I), so nothing of dlvm can be found. Its main guard is not
    run (run_name is not __main__): every top-level import is."""
    loader = f"import runpy; runpy.run_path({str(program)!r}, run_name='node_program')"
    return subprocess.run(
        [sys.executable, "-S", "-I", "-c", loader],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("program", NODE_PROGRAMS, ids=lambda path: path.name)
def test_every_node_program_loads_without_dlvm(program: Path, tmp_path: Path) -> None:
    result = run_standalone(program, tmp_path)
    assert result.returncode == 0, f"{program.name} needs more than a bare python3:\n" + (
        result.stderr
    )


def test_the_standalone_run_catches_a_planted_dlvm_import(tmp_path: Path) -> None:
    planted = tmp_path / "watcher.py"
    source = (SOURCE / "nodeside" / "watcher.py").read_text(encoding="utf-8")
    future = "from __future__ import annotations\n"
    assert future in source
    source = source.replace(future, future + "from dlvm_cluster.errors import DlvmError\n", 1)
    planted.write_text(source, encoding="utf-8")
    result = run_standalone(planted, tmp_path)
    assert result.returncode != 0
    assert "No module named 'dlvm_cluster'" in result.stderr


def test_the_node_programs_are_found() -> None:
    assert {path.name for path in NODE_PROGRAMS} >= {"netcheck.py", "watcher.py"}


def test_the_check_never_reaches_into_jobs() -> None:
    """`dlvm check` runs before a job (job.check) and after a recovery: the jobs package calls
    it, never the other way, so orchestrate/check/ imports nothing of orchestrate/jobs/."""
    files = module_files()
    graph = import_graph(files)
    check = f"{PACKAGE}.orchestrate.check"
    jobs = f"{PACKAGE}.orchestrate.jobs"
    reaching = sorted(
        f"{files[module].relative_to(SOURCE.parent)} imports {target}"
        for module, targets in graph.items()
        if module.startswith(check)
        for target in targets
        if target == jobs or target.startswith(jobs + ".")
    )
    assert any(module.startswith(check) for module in graph)
    assert not reaching, "\n".join(reaching)
