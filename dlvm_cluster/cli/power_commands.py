"""Commands that power a cluster's nodes off and on, keeping their disks, and change its
idle guard: `stop`, `start`, `autostop`.

Registered in cli/app.py like every command module's (`stop_cmd` is `dlvm stop`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from dlvm_cluster.cli import documents
from dlvm_cluster.cli.common import ClusterArg, JsonOption, QuietOption
from dlvm_cluster.cli.resolve import resolve

if TYPE_CHECKING:
    from dlvm_cluster.orchestrate.cluster.context import Cluster
    from dlvm_cluster.progress import Progress

Result = TypeVar("Result")


def stop_cmd(
    cluster: ClusterArg,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    """Power the nodes off, keeping their disks; `dlvm start` or `up` starts them again."""
    from dlvm_cluster.orchestrate.cluster import power

    _power(
        cluster,
        power.stop,
        documents.stop,
        lambda name, result: (
            f"cluster {name} is stopped: {len(result.stopped)} node(s) powered off, disks "
            f"kept ({result.seconds:.1f}s)"
        ),
        quiet=quiet,
        json_output=json_output,
    )


def start_cmd(
    cluster: ClusterArg,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    """Start a stopped cluster's nodes on their disks and wait for SSH."""
    from dlvm_cluster.orchestrate.cluster import lifecycle

    _power(
        cluster,
        lifecycle.start,
        documents.start,
        lambda name, result: (
            f"cluster {name} is running: {len(result.started)} node(s) started "
            f"({result.seconds:.1f}s)"
        ),
        quiet=quiet,
        json_output=json_output,
    )


def _power(
    cluster: str,
    act: Callable[[Cluster, Progress], Result],
    document: Callable[[Result], dict[str, object]],
    said: Callable[[str, Result], str],
    *,
    quiet: bool,
    json_output: bool,
) -> None:
    """One power verb: run it with progress, then its JSON document or its one line."""
    from dlvm_cluster.cli.display import console_progress, stdout

    context = resolve(cluster)
    with context, console_progress(quiet=quiet, json_output=json_output) as progress:
        result = act(context, progress)
    if json_output:
        documents.print_json(document(result))
        return
    stdout.print(said(context.state.name, result))


def autostop_cmd(
    cluster: ClusterArg,
    idle: Annotated[
        int | None,
        typer.Option("--idle", min=1, help="Stop after this many idle minutes.", metavar="M"),
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Turn autostop off.")] = False,
    action: Annotated[
        str | None,
        typer.Option("--action", help="stop (keep the disks) or down (delete everything)."),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Change the idle guard of a live cluster (until the next `up`, which applies the file's)."""
    from dlvm_cluster.cli.display import console_progress, stdout
    from dlvm_cluster.errors import UsageError
    from dlvm_cluster.orchestrate.cluster import autostop

    if action not in (None, "stop", "down"):
        raise UsageError(f"--action {action!r} is neither stop nor down", hint="--action stop")
    context = resolve(cluster)
    state = context.state
    with context, console_progress(quiet=quiet, json_output=False) as progress:
        settings = autostop.change(context, progress, idle=idle, off=off, action=action)
    shown = "off" if settings is None else autostop.describe(settings)
    stdout.print(f"cluster {state.name}: autostop {shown}", markup=False)
