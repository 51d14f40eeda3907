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


def _confirm(question: str, yes: bool) -> None:
    """Ask before something destructive; without a terminal, only --yes may say yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        from dlvm_cluster.errors import UsageError

        raise UsageError(f"{question} (no terminal to ask on)", hint="pass --yes to go ahead")
    typer.confirm(question, abort=True)


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
    from dlvm_cluster.orchestrate.lifecycle import NeedsConfirmation
    from dlvm_cluster.orchestrate.lifecycle import up as run_up

    loaded = _load(file)
    progress = ConsoleProgress(quiet=quiet)
    try:
        try:
            result = run_up(loaded, progress, rerun_setup=rerun_setup, assume_yes=yes)
        except NeedsConfirmation as question:
            progress.done()
            _confirm(f"{question.message}. Go ahead?", yes)
            result = run_up(loaded, progress, rerun_setup=rerun_setup, assume_yes=True)
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
def plan(
    file: FileArg,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show what `up` would create, change or destroy; changes nothing."""
    import json

    from dlvm_cluster.orchestrate.lifecycle import plan as run_plan
    from dlvm_cluster.progress import SilentProgress
    from dlvm_cluster.spec.model import GcpProvider

    loaded = _load(file)
    notes: list[str] = []
    if isinstance(loaded.spec.provider, GcpProvider):
        from dlvm_cluster.orchestrate.gcp import gcp_plan_notes

        notes = gcp_plan_notes(loaded.spec)
    if not json_output:
        for line in notes:
            stdout.print(line, markup=False)
    result = run_plan(loaded, SilentProgress())
    if json_output:
        changes = [{"action": action, "address": address} for action, address in result.changes]
        data = {"cluster": result.cluster, "exists": result.exists, "changes": changes}
        print(json.dumps({**data, "summary": result.summary, "notes": notes}, indent=2))
        return
    state = "exists" if result.exists else "does not exist yet"
    stdout.print(f"cluster {result.cluster} ({state}): {result.summary}")
    symbols = {"create": "+", "delete": "-", "update": "~", "replace": "-/+"}
    for action, address in result.changes:
        stdout.print(f"  {symbols.get(action, action)} {address}", markup=False)


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
    """Nodes, addresses, reachability and jobs; with no CLUSTER, every cluster."""
    import json

    from rich.table import Table

    from dlvm_cluster.orchestrate.report import report
    from dlvm_cluster.state import list_clusters, resolve_cluster

    states = [resolve_cluster(cluster)] if cluster else list_clusters()
    reports = [report(state) for state in states]
    if json_output:
        data = [r.to_json() for r in reports]
        print(json.dumps(data[0] if cluster else data, indent=2))
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
            reach = "[green]ok[/green]" if row.reachable else f"[red]unreachable[/red] {row.error}"
            cells = [row.name, str(row.rank), f"{row.ip}:{row.port}", reach]
            table.add_row(*cells, *([row.vm] if r.has_vm_states else []))
        stdout.print(table)
        if r.price:
            stdout.print(f"  {r.price}", markup=False)
        for job in r.jobs:
            stdout.print(
                f"  job {job.id}  {job.framework:<10} {job.state:<10} {job.command}", markup=False
            )


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
def launch(
    cluster: ClusterArg,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start the job and return; it keeps running.")
    ] = False,
    no_sync: Annotated[
        bool, typer.Option("--no-sync", help="Do not push the spec's files first.")
    ] = False,
) -> None:
    """Run the spec's job with its framework's launcher on every node."""
    from dlvm_cluster.orchestrate.jobs import launch as run_launch
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    loaded = _load(Path(cluster)) if cluster.endswith((".yaml", ".yml")) else None
    progress = ConsoleProgress()
    try:
        record = run_launch(state, progress, loaded=loaded, detach=detach, sync=not no_sync)
    finally:
        progress.done()
    if detach:
        stdout.print(f"job {record.id} started on {len(record.nodes)} node(s)")
        stdout.print(f"  follow it: dlvm logs {state.name} {record.id} --follow")
        stdout.print(f"  stop it:   dlvm cancel {state.name} {record.id}")
        return
    seconds = (record.ended or record.started) - record.started
    stdout.print(f"job {record.id} succeeded on {len(record.nodes)} node(s) in {seconds:.1f}s")


@app.command()
def logs(
    cluster: ClusterArg,
    job: Annotated[str | None, typer.Argument(help="Job id (default: the latest).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
) -> None:
    """A job's output, per node."""
    from dlvm_cluster.orchestrate.jobs import find_job
    from dlvm_cluster.orchestrate.jobs import logs as show_logs
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    record = find_job(state, job)
    stderr.print(f"job {record.id} ({record.state}) on {', '.join(record.nodes)}", markup=False)
    show_logs(state, record.id, ConsoleProgress(), follow=follow)


@app.command()
def cancel(
    cluster: ClusterArg,
    job: Annotated[str | None, typer.Argument(help="Job id (default: the latest).")] = None,
) -> None:
    """Stop a job on every node, its whole process tree, and check none of it is left."""
    from dlvm_cluster.errors import RemoteError
    from dlvm_cluster.orchestrate.jobs import cancel as cancel_job
    from dlvm_cluster.state import resolve_cluster

    record, problems = cancel_job(resolve_cluster(cluster), job)
    left = {node: problem for node, problem in problems.items() if problem}
    if left:
        raise RemoteError(
            f"job {record.id} could not be stopped everywhere: "
            + "; ".join(f"{node}: {problem}" for node, problem in left.items())
        )
    stdout.print(f"job {record.id} stopped; no process of it is left on {len(problems)} node(s)")


@app.command()
def scale(
    cluster: ClusterArg,
    count: Annotated[int, typer.Argument(help="The number of nodes to have.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Grow or shrink to COUNT nodes; new nodes get keys, files and setup."""
    from dlvm_cluster.orchestrate.scale import preview
    from dlvm_cluster.orchestrate.scale import scale as run_scale
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    plan = preview(state, count)
    if not plan.add and not plan.remove:
        stdout.print(f"cluster {state.name} already has {count} node(s); nothing to do")
        return
    stdout.print(f"cluster {state.name}: {plan.current} -> {plan.target} node(s)")
    for name in plan.add:
        stdout.print(f"  + {name}")
    for name in plan.remove:
        stdout.print(f"  - {name} (its jobs are stopped first, logs kept)")
    _confirm(f"scale {state.name} to {count} node(s)?", yes)
    progress = ConsoleProgress()
    try:
        result = run_scale(state, count, progress)
    finally:
        progress.done()
    extra = ""
    if result.jobs_joined:
        extra += f"; new nodes joined job(s) {', '.join(result.jobs_joined)}"
    if result.jobs_stopped:
        extra += f"; stopped job(s) {', '.join(result.jobs_stopped)} on removed nodes"
    stdout.print(
        f"cluster {state.name} has {len(result.inventory.nodes)} node(s) "
        f"({result.seconds:.1f}s){extra}"
    )


@app.command()
def schema() -> None:
    """Print the JSON Schema of the cluster file (for editors and checks)."""
    import json

    from dlvm_cluster.spec.model import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
def doctor(
    file: Annotated[Path | None, typer.Argument(help="A cluster file (default: local).")] = None,
) -> None:
    """Check what the provider needs: root, tools, credentials, quota, reachable hosts."""
    from dlvm_cluster.orchestrate.doctor import doctor as run_doctor

    checks = run_doctor(_load(file).spec if file else None)
    for check in checks:
        mark = "[green]ok[/green]     " if check.ok else "[red]problem[/red]"
        stdout.print(f"{mark} {check.name}: ", end="")
        stdout.print(check.detail, markup=False)
        if not check.ok:
            stdout.print(f"        fix: {check.fix}", markup=False)
    failed = [check for check in checks if not check.ok]
    if failed:
        stderr.print(f"{len(failed)} problem(s) found")
        raise typer.Exit(1)


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
    _confirm(f"destroy cluster {state.name} and everything on its nodes?", yes)
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
