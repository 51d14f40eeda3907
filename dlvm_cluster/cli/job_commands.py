"""Commands for jobs: launch, logs, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlvm_cluster.cli.common import (
    ClusterArg,
    JsonOption,
    JsonRunOption,
    QuietOption,
    load,
    print_json,
)
from dlvm_cluster.cli.display import ConsoleProgress, console_progress, stderr, stdout


def launch(
    cluster: ClusterArg,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start the job and return; it keeps running.")
    ] = False,
    no_sync: Annotated[
        bool, typer.Option("--no-sync", help="Do not push the spec's files first.")
    ] = False,
    quiet: QuietOption = False,
    json_output: JsonRunOption = False,
) -> None:
    """Run the spec's job with its framework's launcher on every node."""
    # --quiet hides the nodes' output (the job's logs keep it); --json sends it to stderr, and
    # stdout is the job's record once it started (--detach) or ended.
    from dlvm_cluster.orchestrate.jobs import launch as run_launch
    from dlvm_cluster.state import resolve_cluster

    state = resolve_cluster(cluster)
    loaded = load(Path(cluster)) if cluster.endswith((".yaml", ".yml")) else None
    with console_progress(quiet=quiet, json_output=json_output) as progress:
        record = run_launch(state, progress, loaded=loaded, detach=detach, sync=not no_sync)
    if json_output:
        print_json(record.to_json())
        return
    if detach:
        stdout.print(f"job {record.id} started on {len(record.nodes)} node(s)")
        if quiet:
            return
        stdout.print(f"  follow it: dlvm logs {state.name} {record.id} --follow")
        stdout.print(f"  stop it:   dlvm cancel {state.name} {record.id}")
        return
    seconds = (record.ended or record.started) - record.started
    stdout.print(f"job {record.id} succeeded on {len(record.nodes)} node(s) in {seconds:.1f}s")


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


def cancel(
    cluster: ClusterArg,
    job: Annotated[str | None, typer.Argument(help="Job id (default: the latest).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Stop a job on every node, its whole process tree, and check none of it is left."""
    from dlvm_cluster.errors import RemoteError
    from dlvm_cluster.orchestrate.jobs import cancel as cancel_job
    from dlvm_cluster.orchestrate.jobs import cancel_json
    from dlvm_cluster.state import resolve_cluster

    record, problems = cancel_job(resolve_cluster(cluster), job)
    if json_output:  # printed even when a node failed: it says which, the error says so too
        print_json(cancel_json(record, problems))
    left = {node: problem for node, problem in problems.items() if problem}
    if left:
        raise RemoteError(
            f"job {record.id} could not be stopped everywhere: "
            + "; ".join(f"{node}: {problem}" for node, problem in left.items())
        )
    if json_output:
        return
    stdout.print(f"job {record.id} stopped; no process of it is left on {len(problems)} node(s)")
