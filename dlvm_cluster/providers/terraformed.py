"""What the providers that make machines with Terraform (local, gcp, aws) do alike: apply the
rendered module in the state dir, plan from a scratch copy, destroy; read what the last apply
was given (its tfvars, the zone it chose); put the host keys read from the cloud into
Terraform's outputs."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.base import ProviderPlan
from dlvm_cluster.provision.render import TFVARS, RenderedModule
from dlvm_cluster.provision.terraform import (
    RunResult,
    Terraform,
    init_if_needed,
    parallelism_for,
)
from dlvm_cluster.state import ClusterState

TFSTATE = "terraform.tfstate"
T = TypeVar("T")


def apply_module(
    module: RenderedModule,
    state: ClusterState,
    progress: Progress,
    *,
    replace: Sequence[str] = (),
) -> RunResult:
    """Apply `module` (already written to the state dir), recreating the `replace` addresses."""
    terraform = Terraform(
        state.terraform_dir, progress.terraform, parallelism=_parallelism(module.tfvars)
    )
    progress.stage("terraform")
    init_if_needed(terraform, module.source, state.terraform_dir)
    return terraform.apply(replace=list(replace))


def plan_module(module: RenderedModule, state: ClusterState, progress: Progress) -> ProviderPlan:
    """What applying `module` would change, planned in a scratch copy of the module and the
    cluster's Terraform state: the state dir is left as it is."""
    existing = state.terraform_dir / TFSTATE
    with tempfile.TemporaryDirectory(prefix="dlvm-plan-") as scratch:
        workdir = Path(scratch)
        module.write(workdir)
        if existing.exists():
            shutil.copy2(existing, workdir / TFSTATE)
        terraform = Terraform(workdir, progress.terraform)
        terraform.init()
        result = terraform.plan(lock=False)
    summary = result.summary
    text = (
        f"{summary.get('add', 0)} to add, {summary.get('change', 0)} to change, "
        f"{summary.get('remove', 0)} to destroy"
    )
    changes = tuple((event.action, event.address) for event in result.planned)
    return ProviderPlan(changes=changes, summary=text, exists=existing.exists())


def _parallelism(tfvars: object) -> int:
    """One resource at a time per node (Terraform's default 10 at least): the module's
    `nodes` variable, where it has one."""
    nodes = tfvars.get("nodes") if isinstance(tfvars, dict) else None
    return parallelism_for(len(nodes) if isinstance(nodes, dict | list) else 0)


def destroy_module(state: ClusterState, progress: Progress) -> None:
    """Destroy what the state dir's module made; nothing when it was never rendered."""
    if not (state.terraform_dir / TFVARS).exists():
        return
    try:
        tfvars = json.loads((state.terraform_dir / TFVARS).read_text())
    except (OSError, ValueError):
        tfvars = {}
    terraform = Terraform(state.terraform_dir, progress.terraform, parallelism=_parallelism(tfvars))
    progress.stage("terraform destroy")
    terraform.init()
    terraform.destroy()


def applied_tfvars(state: ClusterState) -> dict[str, Any]:
    """The tfvars of the last apply: where the cluster lives (project or region, zone)."""
    return read_tfvars(state.terraform_dir / TFVARS)


def read_tfvars(tfvars_path: Path) -> dict[str, Any]:
    """The tfvars written at `tfvars_path`; {} when missing or not a JSON object."""
    try:
        data = json.loads(tfvars_path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def zone_in_use(tfvars_path: Path, zones: Sequence[str]) -> str | None:
    """The zone the last render chose, if still allowed: a cluster stays where its nodes are."""
    zone = read_tfvars(tfvars_path).get("zone")
    return zone if isinstance(zone, str) and zone in zones else None


def with_host_keys(outputs: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    """Terraform outputs with each node's host_key filled in, ready for the inventory."""
    nodes = {
        name: {**item, "host_key": keys.get(name, item.get("host_key", ""))}
        for name, item in dict(outputs.get("nodes") or {}).items()
    }
    return {**outputs, "nodes": nodes}


def poll_host_keys(
    pending: Mapping[str, T],
    fetch: Callable[[T], str | None],
    *,
    attempts: int,
    interval: float,
    sleep: Callable[[float], None],
) -> tuple[dict[str, str], list[str]]:
    """Ask the cloud for each node's host key (`fetch`: the key, or None while the machine
    has not shown one yet) until every node has one or `attempts` rounds `interval` apart
    are spent: the keys found, and the nodes still without one."""
    waiting = dict(pending)
    keys: dict[str, str] = {}
    for attempt in range(attempts):
        for name, node in list(waiting.items()):
            key = fetch(node)
            if key is not None:
                keys[name] = key
                del waiting[name]
        if not waiting:
            break
        if attempt + 1 < attempts:
            sleep(interval)
    return keys, sorted(waiting)
