"""`dlvm`: the typer app. Commands parse arguments, call the orchestrator, render results."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from dlvm_cluster.cli.display import ConsoleProgress, print_error, stderr, stdout
from dlvm_cluster.errors import DlvmError

app = typer.Typer(
    name="dlvm",
    help="One YAML file becomes a cluster of GPU VMs: create it, run on it, tear it down.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)

ClusterArg = Annotated[
    str, typer.Argument(help="The cluster's name, or the path of its YAML file.")
]
FileArg = Annotated[Path, typer.Argument(help="The cluster YAML file.")]
_debug = False


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    global _debug
    _debug = debug


def _load(path: Path):  # type: ignore[no-untyped-def]
    from dlvm_cluster.spec import load_spec

    return load_spec(path)


@app.command()
def up(
    file: FileArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    rerun_setup: Annotated[
        bool, typer.Option("--rerun-setup", help="Run setup again even if it did not change.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
) -> None:
    """Create or converge the cluster; wait for SSH; push files; run setup. Safe to run again."""
    from dlvm_cluster.orchestrate.lifecycle import up as run_up

    loaded = _load(file)
    progress = ConsoleProgress(quiet=quiet)
    try:
        result = run_up(loaded, progress, rerun_setup=rerun_setup)
    finally:
        progress.done()
    nodes = len(result.inventory.nodes)
    name = loaded.spec.name
    if not result.changed:
        stdout.print(
            f"cluster {name} is up to date ({nodes} node(s)); nothing to do ({result.seconds:.1f}s)"
        )
        return
    parts = [f"{nodes} node(s)"]
    if result.files_sent:
        parts.append(f"{result.files_sent} file(s) pushed")
    if result.setup.ran:
        parts.append(f"setup ran on {len(result.setup.ran)}")
    stdout.print(f"cluster {name} is up: {', '.join(parts)} in {result.seconds:.1f}s")


@app.command()
def plan(file: FileArg) -> None:
    """Show what `up` would create, change or destroy; changes nothing."""
    from dlvm_cluster.orchestrate.lifecycle import plan as run_plan
    from dlvm_cluster.progress import SilentProgress

    loaded = _load(file)
    result = run_plan(loaded, SilentProgress())
    state = "exists" if result.exists else "does not exist yet"
    stdout.print(f"cluster {result.cluster} ({state}): {result.summary}")
    symbols = {"create": "+", "delete": "-", "update": "~", "replace": "-/+"}
    for action, address in result.changes:
        stdout.print(f"  {symbols.get(action, action)} {address}")


@app.command()
def render(
    file: FileArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write into.")],
) -> None:
    """Write the Terraform root module and tfvars that `up` would apply (offline)."""
    from dlvm_cluster.orchestrate.lifecycle import render_to

    loaded = _load(file)
    module = render_to(loaded, output)
    stdout.print(f"wrote the {module.provider} module and terraform.tfvars.json to {output}")


@app.command()
def status(
    cluster: Annotated[str | None, typer.Argument(help="Cluster name or YAML file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Nodes, addresses and reachability; with no CLUSTER, every cluster."""
    import json

    from rich.table import Table

    from dlvm_cluster.orchestrate.nodes import status as node_status
    from dlvm_cluster.orchestrate.nodes import status_json
    from dlvm_cluster.state import list_clusters, resolve_cluster

    states = [resolve_cluster(cluster)] if cluster else list_clusters()
    reports = [node_status(state) for state in states]
    if json_output:
        data = [status_json(inventory, rows) for inventory, rows in reports]
        print(json.dumps(data[0] if cluster else data, indent=2))
        return
    if not reports:
        stdout.print("no clusters")
        return
    for inventory, rows in reports:
        table = Table(title=f"cluster {inventory.cluster}", title_justify="left")
        for column in ("node", "rank", "address", "ssh"):
            table.add_column(column)
        for row in rows:
            reach = "[green]ok[/green]" if row.reachable else f"[red]unreachable[/red] {row.error}"
            table.add_row(row.name, str(row.rank), f"{row.ip}:{row.port}", reach)
        stdout.print(table)


@app.command(name="exec")
def exec_(
    cluster: ClusterArg,
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    nodes: Annotated[
        str | None, typer.Option("--nodes", "-n", help="Ranks like 0,2-3, or node names.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Kill nodes still running after S seconds.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
) -> None:
    """Run CMD on the nodes at once; exit 0 only if every node exits 0."""
    from dlvm_cluster.orchestrate.nodes import exec_command
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    progress = ConsoleProgress(quiet=quiet, show_output=not quiet)
    result = exec_command(state, " ".join(command), progress, selector=nodes, timeout=timeout)
    if result.failed:
        for failed in result.failed:
            stderr.print(f"[red]✗[/red] {failed.node}: {failed.describe()}")
        stderr.print(f"{len(result.failed)} of {len(result.results)} node(s) failed")
        raise typer.Exit(1)
    if quiet:
        stdout.print(f"{len(result.results)} node(s) ok")


@app.command()
def sync(
    cluster: ClusterArg,
    down: Annotated[
        bool, typer.Option("--down", help="Pull REMOTE from the nodes instead of pushing.")
    ] = False,
    remote: Annotated[
        str | None,
        typer.Option("--remote", help="With --down: remote path (default: workdir)."),
    ] = None,
    local: Annotated[
        Path, typer.Option("--local", help="With --down: where to put one folder per node.")
    ] = Path("results"),
    nodes: Annotated[
        str | None, typer.Option("--nodes", "-n", help="Ranks like 0,2-3, or node names.")
    ] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete remote files that are not in the source.")
    ] = False,
) -> None:
    """Push the spec's files to every node (only what changed), or pull results back."""
    from dlvm_cluster.orchestrate.nodes import sync_down, sync_up
    from dlvm_cluster.orchestrate.records import applied_spec
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    if down:
        spec = applied_spec(state).spec
        default = spec.job.workdir if spec.job else (spec.files[0].dst if spec.files else "~")
        results = sync_down(state, remote or default, local, selector=nodes)
        for result in results:
            stdout.print(
                f"{result.node}: {result.sent_files} file(s), {result.sent_bytes} bytes "
                f"-> {local / result.node}"
            )
        return
    loaded = _load(Path(cluster)) if cluster.endswith((".yaml", ".yml")) else None
    progress = ConsoleProgress()
    try:
        results = sync_up(state, progress, loaded=loaded, selector=nodes, delete=delete)
    finally:
        progress.done()
    sent = sum(r.sent_files for r in results)
    size = sum(r.sent_bytes for r in results)
    deleted = sum(r.deleted for r in results)
    stdout.print(
        f"synced {len({r.node for r in results})} node(s): {sent} file(s) sent ({size} bytes), "
        f"{deleted} deleted"
    )


@app.command()
def ssh(
    cluster: ClusterArg,
    node: Annotated[str | None, typer.Argument(help="Node name or rank (default: node-0).")] = None,
) -> None:
    """Open an interactive shell on a node."""
    from dlvm_cluster.orchestrate.nodes import ssh_argv
    from dlvm_cluster.state import resolve_cluster

    argv = ssh_argv(resolve_cluster(cluster), node)
    os.execvp(argv[0], argv)


@app.command(name="ssh-config")
def ssh_config(cluster: ClusterArg) -> None:
    """Print an OpenSSH config (one Host per node) for plain ssh, scp, rsync, pdsh, editors."""
    from dlvm_cluster.orchestrate.nodes import ssh_config as render_ssh_config
    from dlvm_cluster.state import resolve_cluster

    sys.stdout.write(render_ssh_config(resolve_cluster(cluster)))


@app.command()
def down(
    cluster: ClusterArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Destroy everything `up` made and remove the cluster's state dir."""
    from dlvm_cluster.orchestrate.lifecycle import down as run_down
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    if not yes and sys.stdin.isatty():
        typer.confirm(f"destroy cluster {state.name} and everything on its nodes?", abort=True)
    progress = ConsoleProgress()
    try:
        seconds = run_down(state, progress)
    finally:
        progress.done()
    stdout.print(f"cluster {state.name} is gone ({seconds:.1f}s)")


def _interrupts() -> None:
    """First Ctrl-C (or SIGTERM): stop cleanly; the second: leave at once."""
    count = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count > 1:
            os._exit(130)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main() -> NoReturn:
    _interrupts()
    try:
        code = app(standalone_mode=False)
    except DlvmError as error:
        if _debug:
            raise
        print_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        stderr.print("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors (missing argument, bad option)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            stderr.print(f"error: {exc}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    sys.exit(code if isinstance(code, int) else 0)
