"""Commands that make, show, resize and remove a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dlvm_cluster.cli.common import (
    ClusterArg,
    FileArg,
    JsonOption,
    JsonRunOption,
    QuietOption,
    confirm,
    load,
    print_json,
)
from dlvm_cluster.cli.display import console_progress, stderr, stdout
from dlvm_cluster.progress import show_controls

if TYPE_CHECKING:
    from rich.console import Console

    from dlvm_cluster.orchestrate.lifecycle import UpResult
    from dlvm_cluster.orchestrate.scale import ScalePlan


def up(
    file: FileArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    rerun_setup: Annotated[
        bool, typer.Option("--rerun-setup", help="Run setup again even if it did not change.")
    ] = False,
    quiet: QuietOption = False,
    json_output: JsonRunOption = False,
) -> None:
    """Create or converge the cluster; wait for SSH; push files; run setup. Safe to run again."""
    from dlvm_cluster.orchestrate.lifecycle import NeedsConfirmation
    from dlvm_cluster.orchestrate.lifecycle import up as run_up

    loaded = load(file)
    with console_progress(quiet=quiet, json_output=json_output) as progress:
        try:
            result = run_up(loaded, progress, rerun_setup=rerun_setup, assume_yes=yes)
        except NeedsConfirmation as question:
            progress.done()  # the spinner off while the question is asked
            confirm(f"{question.message}. Go ahead?", yes)
            result = run_up(loaded, progress, rerun_setup=rerun_setup, assume_yes=True)
    if json_output:
        print_json(result.to_json())
        return
    _print_up_summary(result)


def _print_up_summary(result: UpResult) -> None:
    nodes = len(result.inventory.nodes)
    name = result.inventory.cluster
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


def plan(file: FileArg, json_output: JsonOption = False) -> None:
    """Show what `up` would create, change or destroy; changes nothing."""
    from dlvm_cluster.orchestrate.lifecycle import plan as run_plan
    from dlvm_cluster.progress import SilentProgress
    from dlvm_cluster.spec.model import GcpProvider

    loaded = load(file)
    notes: list[str] = []
    if isinstance(loaded.spec.provider, GcpProvider):
        from dlvm_cluster.orchestrate.gcp_report import gcp_plan_notes

        notes = gcp_plan_notes(loaded.spec)
    if not json_output:
        for line in notes:
            stdout.print(line, markup=False)
    result = run_plan(loaded, SilentProgress())
    if json_output:
        changes = [{"action": action, "address": address} for action, address in result.changes]
        data = {"cluster": result.cluster, "exists": result.exists, "changes": changes}
        print_json({**data, "summary": result.summary, "notes": notes})
        return
    state = "exists" if result.exists else "does not exist yet"
    stdout.print(f"cluster {result.cluster} ({state}): {result.summary}")
    symbols = {"create": "+", "delete": "-", "update": "~", "replace": "-/+"}
    for action, address in result.changes:
        stdout.print(f"  {symbols.get(action, action)} {address}", markup=False)


def render(
    file: FileArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write into.")],
) -> None:
    """Write the Terraform root module and tfvars that `up` would apply (offline)."""
    from dlvm_cluster.orchestrate.lifecycle import render_to

    loaded = load(file)
    module = render_to(loaded, output)
    stdout.print(f"wrote the {module.provider} module and terraform.tfvars.json to {output}")


def status(
    cluster: Annotated[str | None, typer.Argument(help="Cluster name or YAML file.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Nodes, addresses, reachability and jobs; with no CLUSTER, every cluster."""
    from rich.markup import escape
    from rich.table import Table

    from dlvm_cluster.orchestrate.report import report
    from dlvm_cluster.state import list_clusters, resolve_cluster

    states = [resolve_cluster(cluster)] if cluster else list_clusters()
    reports = [report(state) for state in states]
    if json_output:
        data = [r.to_json() for r in reports]
        print_json(data[0] if cluster else data)
        return
    if not reports:
        stdout.print("no clusters")
        return
    for r in reports:
        table = Table(title=f"cluster {r.cluster}", title_justify="left")
        columns = ["node", "rank", "address", "ssh"] + (["vm"] if r.has_vm_states else [])
        for column in columns:
            table.add_column(column)
        for row in r.nodes:
            why = escape(show_controls(row.error))  # an SSH error may quote the node
            reach = "[green]ok[/green]" if row.reachable else f"[red]unreachable[/red] {why}"
            cells = [row.name, str(row.rank), f"{row.ip}:{row.port}", reach]
            table.add_row(*cells, *([row.vm] if r.has_vm_states else []))
        stdout.print(table)
        if r.price:
            stdout.print(f"  {r.price}", markup=False)
        for job in r.jobs:
            stdout.print(
                f"  job {job.id}  {job.framework:<10} {job.state:<10} {job.command}", markup=False
            )


def scale(
    cluster: ClusterArg,
    count: Annotated[int, typer.Argument(help="The number of nodes to have.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    quiet: QuietOption = False,
    json_output: JsonRunOption = False,
) -> None:
    """Grow or shrink to COUNT nodes; new nodes get keys, files and setup."""
    from dlvm_cluster.orchestrate.records import require_inventory
    from dlvm_cluster.orchestrate.scale import ScaleResult, preview
    from dlvm_cluster.orchestrate.scale import scale as run_scale
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    plan = preview(state, count)
    if not plan.add and not plan.remove:
        if json_output:
            print_json(ScaleResult(plan, require_inventory(state), (), (), 0.0).to_json())
        else:
            stdout.print(f"cluster {state.name} already has {count} node(s); nothing to do")
        return
    # The plan is the context of the question: shown on stdout, or on stderr when stdout
    # is only the summary or the JSON document (and then only if there is a question).
    if not (quiet or json_output):
        _print_scale_plan(plan, stdout)
    elif not yes:
        _print_scale_plan(plan, stderr)
    confirm(f"scale {state.name} to {count} node(s)?", yes)
    with console_progress(quiet=quiet, json_output=json_output) as progress:
        result = run_scale(state, count, progress)
    if json_output:
        print_json(result.to_json())
        return
    extra = ""
    if result.jobs_joined:
        extra += f"; new nodes joined job(s) {', '.join(result.jobs_joined)}"
    if result.jobs_stopped:
        extra += f"; stopped job(s) {', '.join(result.jobs_stopped)} on removed nodes"
    stdout.print(
        f"cluster {state.name} has {len(result.inventory.nodes)} node(s) "
        f"({result.seconds:.1f}s){extra}"
    )


def _print_scale_plan(plan: ScalePlan, console: Console) -> None:
    console.print(f"cluster {plan.cluster}: {plan.current} -> {plan.target} node(s)")
    for name in plan.add:
        console.print(f"  + {name}")
    for name in plan.remove:
        console.print(f"  - {name} (its jobs are stopped first, logs kept)")


def schema() -> None:
    """Print the JSON Schema of the cluster file (for editors and checks)."""
    import json

    from dlvm_cluster.spec.model import json_schema

    print(json.dumps(json_schema(), indent=2))


def doctor(
    file: Annotated[Path | None, typer.Argument(help="A cluster file (default: local).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Check what the provider needs: root, tools, credentials, quota, reachable hosts."""
    from dlvm_cluster.orchestrate.doctor import doctor as run_doctor

    spec = load(file).spec if file else None
    checks = run_doctor(spec)
    failed = [check for check in checks if not check.ok]
    if json_output:
        print_json(
            {
                "provider": spec.provider.kind if spec else "local",
                "ok": not failed,
                "checks": [check.to_json() for check in checks],
            }
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


def down(
    cluster: ClusterArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    """Destroy everything `up` made and remove the cluster's state dir."""
    from dlvm_cluster.orchestrate.lifecycle import down as run_down
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    confirm(f"destroy cluster {state.name} and everything on its nodes?", yes)
    with console_progress(quiet=quiet, json_output=json_output) as progress:
        seconds = run_down(state, progress)
    if json_output:
        print_json({"cluster": state.name, "seconds": round(seconds, 3)})
        return
    stdout.print(f"cluster {state.name} is gone ({seconds:.1f}s)")
