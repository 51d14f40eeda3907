"""What the providers that make machines with Terraform (local, gcp) do alike: apply the
rendered module in the state dir, plan from a scratch copy, destroy."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
