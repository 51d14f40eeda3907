"""Commands that run on the nodes or reach them: exec, sync, check, ssh, ssh-config (registered in
cli/app.py under those names; the `_cmd` suffix keeps them apart from orchestrate's)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dlvm_cluster.cli import documents
from dlvm_cluster.cli.common import ClusterArg, JsonOption, QuietOption, YesOption, confirm
from dlvm_cluster.cli.resolve import resolve

NodesOption = Annotated[
    str | None, typer.Option("--nodes", "-n", help="Ranks like 0,2-3, or node names.")
]


def exec_cmd(
    cluster: ClusterArg,
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    selector: NodesOption = None,
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
    from dlvm_cluster.cli.display import console_progress
    from dlvm_cluster.cli.summaries import exec_summary
    from dlvm_cluster.orchestrate.nodes import commands as nodes

    progress = console_progress(quiet=quiet, json_output=json_output)
    with resolve(cluster) as resolved:
        result = nodes.exec_command(
            resolved, " ".join(command), progress, selector=selector, timeout=timeout
        )
    if json_output:
        documents.print_json(documents.exec_(result))
    code = exec_summary(result, quiet=quiet and not json_output)  # stdout: the document only
    if code:
        raise typer.Exit(code)


def sync_cmd(
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
    selector: NodesOption = None,
    delete: Annotated[
        bool,
        typer.Option(
            "--delete",
            help="Delete remote files that are not in the source; more than "
            f"{FEW_DELETIONS} on a node are listed and asked about first (or --yes).",
        ),
    ] = False,
    yes: YesOption = False,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    """Push the spec's files to every node (only what changed), or pull results back."""
    from dlvm_cluster.cli.display import console_progress, stdout
    from dlvm_cluster.cli.summaries import sync_summary
    from dlvm_cluster.orchestrate.nodes import commands as nodes

    with resolve(cluster) as resolved:
        if down:
            spec = resolved.require_applied().spec
            default = spec.job.workdir if spec.job else (spec.files[0].dst if spec.files else "~")
            results = nodes.sync_down(resolved, remote or default, local, selector=selector)
            if json_output:
                documents.print_json(documents.sync(results))
            elif not quiet:
                for result in results:
                    stdout.print(
                        f"{result.node}: {result.sent_files} file(s), {result.sent_bytes} bytes "
                        f"-> {local / result.node}"
                    )
            return
        at_most = None if yes else FEW_DELETIONS
        with console_progress(quiet=quiet, json_output=json_output) as progress:
            results = nodes.sync_up(
                resolved,
                progress,
                selector=selector,
                delete=delete,
                delete_at_most=at_most,
            )
        held = {result.node: result.held_back for result in results if result.held_back}
        if held:
            # The files were sent; what --delete would remove waits for a yes (a checkpoint the
            # job wrote into its workdir is not in the source either).
            _list_deletions(held)
            total = sum(len(paths) for paths in held.values())
            confirm(
                f"delete these {total} file(s) on {len(held)} node(s)?",
                yes,
                otherwise="sync without --delete to keep them",
            )
            with console_progress(quiet=quiet, json_output=json_output) as progress:
                again = nodes.sync_up(
                    resolved,
                    progress,
                    selector=",".join(held),
                    delete=True,
                )
            deleted = {result.node: result for result in again}
            results = [deleted.get(result.node, result) for result in results]
        if json_output:
            documents.print_json(documents.sync(results))
        else:
            sync_summary(results)


FEW_DELETIONS = 5
"""`sync --delete` deletes up to this many files on a node without asking."""
SHOWN_DELETIONS = 20


def _list_deletions(held: dict[str, list[str]]) -> None:
    from dlvm_cluster.cli.display import stderr
    from dlvm_cluster.progress import show_controls

    for node, paths in held.items():
        stderr.print(f"{node}: --delete would delete {len(paths)} file(s):", markup=False)
        for path in paths[:SHOWN_DELETIONS]:
            stderr.print(f"  {show_controls(path)}", markup=False, highlight=False)
        if len(paths) > SHOWN_DELETIONS:
            stderr.print(f"  ... and {len(paths) - SHOWN_DELETIONS} more", markup=False)


def check_cmd(
    cluster: ClusterArg,
    selector: NodesOption = None,
    json_output: JsonOption = False,
) -> None:
    """GPU health and collective bandwidth on every node; name a slow or broken node; exit 1
    if any."""
    from rich.markup import escape
    from rich.table import Table

    from dlvm_cluster.cli.display import console_progress, stdout
    from dlvm_cluster.orchestrate.check import run as check
    from dlvm_cluster.progress import show_controls

    with console_progress(json_output=json_output) as progress, resolve(cluster) as context:
        report = check.run_check(context, progress, selector=selector)
    if json_output:
        documents.print_json(documents.check_report(report))
        if not report.ok:
            raise typer.Exit(1)
        return

    def shown(text: str) -> str:  # nodes' words: never markup, controls as escapes
        return escape(show_controls(text))

    def speed(value: float | None) -> str:
        return "-" if value is None else f"{value:.3g}"

    table = Table(title=f"cluster {report.cluster}", title_justify="left")
    for column in ["node", "python", "GPUs", "names", "send GB/s", "recv GB/s", "verdict"]:
        table.add_column(column)
    for node in report.nodes:
        verdict = "[green]ok[/green]" if node.ok else "[red]FAIL[/red]"
        table.add_row(
            node.name,
            shown(node.python),
            shown(node.gpus),
            shown(node.names),
            speed(node.send_gbs),
            speed(node.receive_gbs),
            verdict,
        )
    stdout.print(table)
    if report.bus_gbs is not None:
        stdout.print(
            f"  all_reduce ({report.backend}): bus bandwidth {report.bus_gbs:.3g} GB/s; "
            f"median node {speed(report.median_gbs)} GB/s",
            markup=False,
        )
    if report.transport:
        stdout.print(f"  transport: {report.transport}", markup=False)
    for note in report.notes:
        stdout.print(f"  {note}", markup=False)
    for node in report.failed:
        for problem in node.problems:
            stdout.print(f"[red]✗[/red] {node.name}: {shown(problem)}")
    if not report.ok:
        stdout.print(f"{len(report.failed)} of {len(report.nodes)} node(s) failed")
        raise typer.Exit(1)
    stdout.print(f"all {len(report.nodes)} node(s) passed")


def ssh_cmd(
    cluster: ClusterArg,
    node: Annotated[str | None, typer.Argument(help="Node name or rank (default: node-0).")] = None,
) -> None:
    """Open an interactive shell on a node."""
    from dlvm_cluster.orchestrate.nodes import commands as nodes

    with resolve(cluster) as resolved:
        argv = nodes.ssh_argv(resolved, node)
    os.execvp(argv[0], argv)


def ssh_config_cmd(cluster: ClusterArg) -> None:
    """Print an OpenSSH config (one Host per node) for plain ssh, scp, rsync, pdsh, editors."""
    from dlvm_cluster.orchestrate.nodes import commands as nodes

    with resolve(cluster) as resolved:
        sys.stdout.write(nodes.ssh_config(resolved))
