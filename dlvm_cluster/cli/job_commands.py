"""Commands for jobs: launch, logs, cancel (registered in cli/app.py under those names; the
`_cmd` suffix keeps them apart from orchestrate's)."""

from __future__ import annotations

from typing import Annotated

import typer

from dlvm_cluster.cli import documents
from dlvm_cluster.cli.common import ClusterArg, JsonOption, JsonRunOption, QuietOption
from dlvm_cluster.cli.resolve import resolve


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
    quiet: QuietOption = False,
    json_output: JsonRunOption = False,
) -> None:
    """Run the spec's job with its framework's launcher on every node."""
    # --quiet hides the nodes' output (the job's logs keep it); --json sends it to stderr, and
    # stdout is the job's record once it started (--detach) or ended.
    from dlvm_cluster.cli.display import console_progress, stdout
    from dlvm_cluster.orchestrate.jobs import verbs as jobs

    context = resolve(cluster)  # a cluster file is parsed here, once
    state = context.state
    with context, console_progress(quiet=quiet, json_output=json_output) as progress:
        record = jobs.launch(
            context, progress, loaded=context.loaded, detach=detach, sync=not no_sync
        )
    if json_output:
        documents.print_json(documents.launch(record))
        return
    if detach:
        stdout.print(f"job {record.id} started on {len(record.nodes)} node(s)")
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
    stdout.print(
        f"job {record.id} succeeded on {len(record.nodes)} node(s) in {seconds:.1f}s{after}"
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
    job: Annotated[str | None, typer.Argument(help="Job id (default: the latest).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Stop a job on every node, its whole process tree, and check none of it is left."""
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
    stdout.print(f"job {record.id} stopped; no process of it is left on {len(problems)} node(s)")
