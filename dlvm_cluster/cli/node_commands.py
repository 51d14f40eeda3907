"""Commands that run on the nodes or reach them: exec, sync, ssh, ssh-config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dlvm_cluster.cli.common import ClusterArg, load
from dlvm_cluster.cli.display import ConsoleProgress, stderr, stdout


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
    loaded = load(Path(cluster)) if cluster.endswith((".yaml", ".yml")) else None
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


def ssh(
    cluster: ClusterArg,
    node: Annotated[str | None, typer.Argument(help="Node name or rank (default: node-0).")] = None,
) -> None:
    """Open an interactive shell on a node."""
    from dlvm_cluster.orchestrate.nodes import ssh_argv
    from dlvm_cluster.state import resolve_cluster

    argv = ssh_argv(resolve_cluster(cluster), node)
    os.execvp(argv[0], argv)


def ssh_config(cluster: ClusterArg) -> None:
    """Print an OpenSSH config (one Host per node) for plain ssh, scp, rsync, pdsh, editors."""
    from dlvm_cluster.orchestrate.nodes import ssh_config as render_ssh_config
    from dlvm_cluster.state import resolve_cluster

    sys.stdout.write(render_ssh_config(resolve_cluster(cluster)))
