"""Commands for jobs: launch, logs, cancel (registered in cli/app.py under those names; the
`_cmd` suffix keeps them apart from orchestrate's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dlvm_cluster.cli import documents
from dlvm_cluster.cli.common import ClusterArg, JsonOption, JsonRunOption, QuietOption
from dlvm_cluster.cli.resolve import resolve

if TYPE_CHECKING:
    from dlvm_cluster.state import ClusterState


def launch_cmd(
    cluster: ClusterArg,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            "-d",
            help="Start the job and return; a supervisor process keeps watching and recovering it.",
        ),
    ] = False,
    no_sync: Annotated[
        bool, typer.Option("--no-sync", help="Do not push the spec's files first.")
    ] = False,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="While another job runs, queue this one: it starts, detached, once the "
            "cluster is free (without it, launch refuses).",
        ),
    ] = False,
    quiet: QuietOption = False,
    json_output: JsonRunOption = False,
) -> None:
    """Run the spec's job with its framework's launcher on every node; one job at a time."""
    # --quiet hides the nodes' output (the job's logs keep it); --json sends it to stderr, and
    # stdout is the job's record once it started (--detach) or ended.
    from dlvm_cluster.cli.display import console_progress, stdout
    from dlvm_cluster.orchestrate.jobs import verbs as jobs

    context = resolve(cluster)  # a cluster file is parsed here, once
    state = context.state
    if context.loaded is None:
        _warn_if_file_changed(state)
    with context, console_progress(quiet=quiet, json_output=json_output) as progress:
        record = jobs.launch(
            context, progress, loaded=context.loaded, detach=detach, sync=not no_sync, queue=queue
        )
    if json_output:
        documents.print_json(documents.launch(record))
        return
    if record.state == "queued":
        stdout.print(f"job {record.id} queued: it starts once the cluster is free")
        stdout.print(f"  see the queue: dlvm status {state.name}")
        stdout.print(f"  take it off:   dlvm cancel {state.name} {record.id}")
        return
    if detach:
        stdout.print(f"job {record.id} started on {record.size()}")
        if quiet:
            return
        stdout.print(f"  follow it: dlvm logs {state.name} {record.id} --follow")
        stdout.print(f"  stop it:   dlvm cancel {state.name} {record.id}")
        return
    seconds = (record.ended or record.started) - record.started
    after = (
        f" after {record.restarts} restart(s), {record.recoveries} of them replacing lost nodes"
        if record.restarts
        else ""
    )
    stdout.print(f"job {record.id} succeeded on {record.size()} in {seconds:.1f}s{after}")


def _warn_if_file_changed(state: ClusterState) -> None:
    """`launch NAME` runs the spec applied at `up`: an edit of the file since is not in it."""
    from dlvm_cluster.cli.display import stderr
    from dlvm_cluster.orchestrate.cluster.records import drift_since_applied

    drift = drift_since_applied(state)
    if drift is None:
        return
    what = drift.problem or "changed: " + ", ".join(drift.changed)
    stderr.print(
        f"warning: {drift.path} changed since `dlvm up` ({what}); this job runs as the "
        f"cluster was set up.\n  apply the file: dlvm up {drift.path}\n  or run the file's "
        f"job and env as they are now: dlvm launch {drift.path}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def logs_cmd(
    cluster: ClusterArg,
    job: Annotated[str | None, typer.Argument(help="Job id (default: the latest).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
) -> None:
    """A job's output, per node."""
    from dlvm_cluster.cli.display import ConsoleProgress, stderr
    from dlvm_cluster.orchestrate.jobs import verbs as jobs

    with resolve(cluster) as context:
        record = context.jobs.find(job)
        stderr.print(f"job {record.id} ({record.state}) on {', '.join(record.nodes)}", markup=False)
        jobs.logs(context, record.id, ConsoleProgress(), follow=follow)


def cancel_cmd(
    cluster: ClusterArg,
    job: Annotated[str | None, typer.Argument(help="Job id (default: the running job).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Stop a job on every node, its whole process tree, and check none of it is left; a
    queued job is taken off the queue."""
    from dlvm_cluster.cli.display import stdout
    from dlvm_cluster.errors import RemoteError
    from dlvm_cluster.orchestrate.jobs import verbs as jobs

    with resolve(cluster) as context:
        record, problems = jobs.cancel(context, job)
    if json_output:  # printed even when a node failed: it says which, the error says so too
        documents.print_json(documents.cancel(record, problems))
    left = {node: problem for node, problem in problems.items() if problem}
    if left:
        raise RemoteError(
            f"job {record.id} could not be stopped everywhere: "
            + "; ".join(f"{node}: {problem}" for node, problem in left.items())
        )
    if json_output:
        return
    if not problems:
        stdout.print(f"job {record.id} taken off the queue")
        return
    stdout.print(f"job {record.id} stopped; no process of it is left on {len(problems)} node(s)")
