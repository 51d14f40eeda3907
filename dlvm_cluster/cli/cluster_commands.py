"""Commands that make, change, resize and remove a cluster (`up`, `plan`, `render`, `scale`,
`down`) and describe its file (`schema`); looking at clusters is status_commands.py,
powering their nodes off and on power_commands.py.

Each function is registered in cli/app.py under its command's name (`up_cmd` is `dlvm up`):
the suffix keeps them apart from the orchestrate functions they call (`lifecycle.up`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dlvm_cluster.cli import documents
from dlvm_cluster.cli.common import (
    ClusterArg,
    FileArg,
    JsonOption,
    JsonRunOption,
    QuietOption,
    WaitOption,
    YesOption,
    confirm,
    trust_host_keys,
)
from dlvm_cluster.cli.resolve import of_file, resolve

# The rendering modules (rich, the progress protocol) are imported by the commands that use
# them, not here: `dlvm --help` imports this module and shows none of it.
if TYPE_CHECKING:
    from rich.console import Console

    from dlvm_cluster.orchestrate.cluster.lifecycle import UpResult
    from dlvm_cluster.orchestrate.cluster.scale import ScalePlan


def up_cmd(
    file: FileArg,
    yes: YesOption = False,
    rerun_setup: Annotated[
        bool, typer.Option("--rerun-setup", help="Run setup again even if it did not change.")
    ] = False,
    quiet: QuietOption = False,
    json_output: JsonRunOption = False,
    wait: WaitOption = None,
) -> None:
    """Create or converge the cluster; wait for SSH; push files; run setup. Safe to run again."""
    from dlvm_cluster.cli.display import console_progress
    from dlvm_cluster.orchestrate.cluster import lifecycle
    from dlvm_cluster.providers.base import KeyTrust, UnpinnedHostKeys

    cluster = of_file(file)
    assert cluster.loaded is not None
    loaded = cluster.loaded
    # --yes also says yes to undoing a `dlvm scale` and to host keys seen for the first time.
    undo_scale = yes
    trust = KeyTrust(any_key=yes)
    with cluster, console_progress(quiet=quiet, json_output=json_output) as progress:
        while True:
            try:
                result = lifecycle.up(
                    cluster,
                    loaded,
                    progress,
                    rerun_setup=rerun_setup,
                    undo_scale=undo_scale,
                    trust=trust,
                    wait=wait,
                )
                break
            except lifecycle.WouldUndoScale as refused:
                progress.done()  # the spinner off while the question is asked
                undo = refused.undo
                confirm(
                    f"{undo.describe()}. Go ahead?",
                    yes,
                    otherwise=f"set nodes.count to {undo.scaled} in {undo.file_name}",
                )
                undo_scale = True
            except UnpinnedHostKeys as unseen:
                progress.done()
                trust_host_keys(unseen, json_output=json_output)
                trust = trust.adding(unseen.nodes)  # exactly the keys shown
    if json_output:
        documents.print_json(documents.up(result))
        return
    _print_up_summary(result)


def _print_up_summary(result: UpResult) -> None:
    from dlvm_cluster.cli.display import stdout
    from dlvm_cluster.launch.frameworks import FRAMEWORKS

    nodes = len(result.inventory.nodes)
    name = result.inventory.cluster
    if not result.changed:
        stdout.print(
            f"cluster {name} is up to date ({nodes} node(s)); nothing to do ({result.seconds:.1f}s)"
        )
        return
    parts = [f"{nodes} node(s)"]
    if result.started:
        parts.append(f"{len(result.started)} started on their disks")
    if result.files_sent:
        parts.append(f"{result.files_sent} file(s) pushed")
    if result.setup.ran:
        parts.append(f"setup ran on {len(result.setup.ran)}")
    for name, installed in result.setup.frameworks.items():
        setup = FRAMEWORKS[name].node_setup
        parts.append(f"{setup.shown if setup else name} installed on {len(installed)}")
    stdout.print(f"cluster {name} is up: {', '.join(parts)} in {result.seconds:.1f}s")


def plan_cmd(file: FileArg, json_output: JsonOption = False) -> None:
    """Show what `up` would create, change or destroy; changes nothing."""
    from dlvm_cluster.cli.display import stdout
    from dlvm_cluster.orchestrate.cluster import lifecycle
    from dlvm_cluster.progress import SilentProgress

    with of_file(file) as cluster:
        assert cluster.loaded is not None
        result = lifecycle.plan(cluster, cluster.loaded, SilentProgress())
    if json_output:
        documents.print_json(documents.plan(result))
        return
    for line in result.notes:
        stdout.print(line, markup=False)
    state = "exists" if result.exists else "does not exist yet"
    stdout.print(f"cluster {result.cluster} ({state}): {result.summary}")
    symbols = {
        **{"create": "+", "delete": "-", "update": "~", "replace": "-/+"},  # Terraform's
        **{"adopt": "+", "keep": "=", "forget": "-"},  # the ssh provider's hosts
    }
    for action, address in result.changes:
        stdout.print(f"  {symbols.get(action, action)} {address}", markup=False)
    for entry in result.storage:
        access = "read-only" if entry.read_only else "read-write"
        marked = ", DLVM_CHECKPOINT_DIR" if entry.mount == result.checkpoint_mount else ""
        stdout.print(
            f"storage: {entry.mount} <- {entry.bucket} ({access}{marked}; kept by down)",
            markup=False,
        )


def render_cmd(
    file: FileArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write into.")],
) -> None:
    """Write the Terraform root module and tfvars that `up` would apply (offline)."""
    from dlvm_cluster.cli.display import stdout
    from dlvm_cluster.orchestrate.cluster import lifecycle

    cluster = of_file(file)
    assert cluster.loaded is not None
    module = lifecycle.render_to(cluster, cluster.loaded, output)
    stdout.print(f"wrote the {module.provider} module and terraform.tfvars.json to {output}")


def scale_cmd(
    cluster: ClusterArg,
    count: Annotated[int, typer.Argument(help="The number of nodes to have.")],
    yes: YesOption = False,
    quiet: QuietOption = False,
    json_output: JsonRunOption = False,
) -> None:
    """Grow or shrink to COUNT nodes; new nodes get keys, files and setup."""
    from dlvm_cluster.cli.display import console_progress, stderr, stdout
    from dlvm_cluster.orchestrate.cluster import scale
    from dlvm_cluster.providers.base import KeyTrust, UnpinnedHostKeys

    context = resolve(cluster)
    state = context.state
    plan = scale.preview(context, count)
    if not plan.add and not plan.remove:
        if json_output:
            unchanged = scale.ScaleResult(plan, context.require_inventory(), (), (), 0.0)
            documents.print_json(documents.scale(unchanged))
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
    trust = KeyTrust(any_key=yes)  # ssh-provider machines seen for the first time
    with context, console_progress(quiet=quiet, json_output=json_output) as progress:
        while True:
            try:
                result = scale.scale(context, count, progress, trust=trust)
                break
            except UnpinnedHostKeys as unseen:
                progress.done()
                trust_host_keys(unseen, json_output=json_output)
                trust = trust.adding(unseen.nodes)  # exactly the keys shown
    if json_output:
        documents.print_json(documents.scale(result))
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


def schema_cmd() -> None:
    """Print the JSON Schema of the cluster file (for editors and checks)."""
    import json

    from dlvm_cluster.providers import spec_kinds

    print(json.dumps(spec_kinds().json_schema(), indent=2))


def down_cmd(
    cluster: ClusterArg,
    yes: YesOption = False,
    quiet: QuietOption = False,
    json_output: JsonOption = False,
) -> None:
    """Destroy everything `up` made and remove the cluster's state dir."""
    from dlvm_cluster.cli.display import console_progress, stdout
    from dlvm_cluster.orchestrate.cluster import lifecycle

    context = resolve(cluster)
    state = context.state
    confirm(f"destroy cluster {state.name} and everything on its nodes?", yes)
    with context, console_progress(quiet=quiet, json_output=json_output) as progress:
        seconds = lifecycle.down(context, progress)
    if json_output:
        documents.print_json(documents.down(state.name, seconds))
        return
    stdout.print(f"cluster {state.name} is gone ({seconds:.1f}s)")
