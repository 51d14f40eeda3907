"""Commands that run on the nodes or reach them: exec, sync, ssh, ssh-config."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dlvm_cluster.cli.common import (
    ClusterArg,
    JsonOption,
    QuietOption,
    load,
    print_json,
)
from dlvm_cluster.cli.display import console_progress, stdout

NodesOption = Annotated[
    str | None, typer.Option("--nodes", "-n", help="Ranks like 0,2-3, or node names.")
]


def exec_(
    cluster: ClusterArg,
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    nodes: NodesOption = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Kill nodes still running after S seconds.")
    ] = None,
    quiet: QuietOption = False,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print each node's result (exit code, error, seconds, last lines) as one JSON "
            "document on stdout; the nodes' output goes to stderr.",
        ),
    ] = False,
) -> None:
    """Run CMD on the nodes at once; exit 0 only if every node exits 0."""
    from dlvm_cluster.cli.summaries import exec_summary
    from dlvm_cluster.orchestrate.nodes import exec_command
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    progress = console_progress(quiet=quiet, json_output=json_output)
    result = exec_command(state, " ".join(command), progress, selector=nodes, timeout=timeout)
    if json_output:
        print_json(result.to_json())
    code = exec_summary(result, quiet=quiet or json_output)
    if code:
        raise typer.Exit(code)


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
    nodes: NodesOption = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete remote files that are not in the source.")
    ] = False,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    """Push the spec's files to every node (only what changed), or pull results back."""
    from dlvm_cluster.cli.summaries import sync_summary
    from dlvm_cluster.orchestrate.nodes import sync_down, sync_up
    from dlvm_cluster.orchestrate.records import applied_spec
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    if down:
        spec = applied_spec(state).spec
        default = spec.job.workdir if spec.job else (spec.files[0].dst if spec.files else "~")
        results = sync_down(state, remote or default, local, selector=nodes)
        if json_output:
            print_json([dataclasses.asdict(result) for result in results])
        elif not quiet:
            for result in results:
                stdout.print(
                    f"{result.node}: {result.sent_files} file(s), {result.sent_bytes} bytes "
                    f"-> {local / result.node}"
                )
        return
    loaded = load(Path(cluster)) if cluster.endswith((".yaml", ".yml")) else None
    with console_progress(quiet=quiet, json_output=json_output) as progress:
        results = sync_up(state, progress, loaded=loaded, selector=nodes, delete=delete)
    if json_output:
        print_json([dataclasses.asdict(result) for result in results])
    else:
        sync_summary(results)


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
