"""Commands that look at clusters, and at the machine that drives them: `status` (nodes,
states, reachability, spend, autostop and jobs) and `doctor` (what a provider needs here).

Registered in cli/app.py like every command module's (`status_cmd` is `dlvm status`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlvm_cluster.cli import documents
from dlvm_cluster.cli.common import JsonOption
from dlvm_cluster.cli.resolve import load_file, resolve


def status_cmd(
    cluster: Annotated[str | None, typer.Argument(help="Cluster name or YAML file.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Nodes, addresses, reachability and jobs; with no CLUSTER, every cluster."""
    from rich.markup import escape
    from rich.table import Table

    from dlvm_cluster.cli.display import stdout
    from dlvm_cluster.orchestrate.cluster import report
    from dlvm_cluster.orchestrate.cluster.context import Cluster
    from dlvm_cluster.progress import show_controls
    from dlvm_cluster.state import list_clusters

    clusters = [resolve(cluster)] if cluster else [Cluster(s) for s in list_clusters()]
    reports = []
    for one in clusters:
        with one:
            reports.append(report.report(one))
    if json_output:
        data = [documents.status(r) for r in reports]
        documents.print_json(data[0] if cluster else data)
        return
    if not reports:
        stdout.print("no clusters")
        return

    def say(text: str) -> None:
        """A line of the status: node text may reach any of them (SSH errors, heartbeats)."""
        stdout.print(show_controls(text), markup=False)

    def cell(text: str) -> str:
        return escape(show_controls(text))

    for r in reports:
        if r.taken_down:
            say(
                f"cluster {r.cluster} was taken down by {r.taken_down}: its machines and "
                "state are gone"
            )
            continue
        table = Table(title=cell(f"cluster {r.cluster}"), title_justify="left")
        for column in ["node", "rank", "address", "state", "ssh"]:
            table.add_column(column)
        for row in r.nodes:
            why = cell(row.error)  # an SSH error may quote the node
            reach = "[green]ok[/green]" if row.reachable else f"[red]unreachable[/red] {why}"
            if row.state == "stopped":
                reach = "-"  # powered off: SSH is not expected to answer
            shown = row.state
            if row.stopped_by:
                shown += f" ({report.stopped_why(row.stopped_by, row.stopped_at)})"
            address = f"{row.ip}:{row.port}"
            table.add_row(cell(row.name), str(row.rank), cell(address), cell(shown), reach)
        stdout.print(table)
        if r.provider_problem:
            say(f"  machine states unknown: {r.provider_problem}")
        for line in (r.capacity.summary if r.capacity else "", r.price, r.usage):
            if line:
                say(f"  {line}")
        if r.stopped_by:
            say(f"  stopped by {r.stopped_by}")
        if r.autostop:
            say(f"  autostop: {r.autostop}")
        if r.autostop_problem:
            say(f"  warning: {r.autostop_problem}")
        for job in r.jobs:
            say(f"  job {job.id}  {job.framework:<10} {job.state:<10} {job.command}")
            if job.restarts or job.active:
                last = job.events[-1]["text"] if job.events else ""
                say(
                    f"      restarts {job.restarts}, recoveries {job.recoveries}"
                    + (f"; last: {last}" if last else "")
                )


def doctor_cmd(
    file: Annotated[Path | None, typer.Argument(help="A cluster file (default: local).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Check what the provider needs: root, tools, credentials, quota, reachable hosts."""
    from dlvm_cluster import providers
    from dlvm_cluster.cli.display import stderr, stdout
    from dlvm_cluster.orchestrate.cluster import doctor
    from dlvm_cluster.progress import show_controls

    spec = load_file(file).spec if file else None
    checks = doctor.doctor(spec)
    failed = [check for check in checks if not check.ok]
    if json_output:
        documents.print_json(
            documents.doctor(spec.provider.kind if spec else providers.DEFAULT_KIND, checks)
        )
    else:
        for check in checks:
            mark = "[green]ok[/green]     " if check.ok else "[red]problem[/red]"
            stdout.print(f"{mark} {check.name}: ", end="")
            stdout.print(show_controls(check.detail), markup=False)
            if not check.ok:
                stdout.print(f"        fix: {check.fix}", markup=False)
    if failed:
        stderr.print(f"{len(failed)} problem(s) found")
        raise typer.Exit(1)
