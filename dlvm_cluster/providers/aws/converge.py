"""The aws provider in `up`: stopped nodes started again, preflight, Availability Zone
failover, host keys from the console.

`provision_aws` answers Provider.provision (the inventory, and whether Terraform changed
anything):

    healthy and unchanged?  instance states from EC2; all running and the same spec: done
    stopped nodes           started again on their volumes (host keys kept)
    preflight               zones, type, reservation or block, quota, AMI, subnet, buckets
    zone failover           apply in one zone; EC2 out of capacity there
                            (InsufficientInstanceCapacity) -> the next zone of provider.zones,
                            whose subnet, interfaces and instances replace the failed zone's
    host keys               read from each new instance's console and pinned

A node whose instance EC2 ended (a Spot interruption, the end of a Capacity Block) has no
instance left: Terraform's refresh sees it gone and the apply makes it again, on the node's
own network interfaces (kept apart from the instance), so it keeps its addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import Inventory, from_terraform_outputs
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers.aws import gpu_network
from dlvm_cluster.providers.aws.api import AwsClients, aws_clients
from dlvm_cluster.providers.aws.config import aws_config, aws_nodes
from dlvm_cluster.providers.aws.hostkeys import instance_ids, read_host_keys
from dlvm_cluster.providers.aws.instances import Instance, cluster_instances, start
from dlvm_cluster.providers.aws.preflight import preflight
from dlvm_cluster.providers.aws.tfvars import (
    gpus_per_node,
    instance_address,
    instance_type,
    state_tfvars,
)
from dlvm_cluster.providers.base import CAPACITY_ENDS_ENV, Converge
from dlvm_cluster.providers.terraformed import with_host_keys, zone_in_use
from dlvm_cluster.provision.modules import module_dir
from dlvm_cluster.provision.render import TFVARS, RenderedModule
from dlvm_cluster.provision.terraform import RunResult, Terraform, init_if_needed
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


def render_aws(
    spec: ClusterSpec, state: ClusterState, zone: str | None = None, count: int | None = None
) -> RenderedModule:
    """terraform/aws with the spec's tfvars (and the key and zone the state dir holds)."""
    return RenderedModule("aws", module_dir("aws"), state_tfvars(spec, state, zone, count))


def clients_for(spec: ClusterSpec) -> AwsClients:
    provider = aws_config(spec)
    return aws_clients(provider.region, provider.profile)


def _zone_order(state: ClusterState, zones: Sequence[str]) -> list[str]:
    """The zones to try: the one the cluster lives in first, then the others in order."""
    home = zone_in_use(state.terraform_dir / TFVARS, zones)
    return [home, *(z for z in zones if z != home)] if home else list(zones)


def _out_of_capacity(error: ProvisionError) -> bool:
    """EC2 has no capacity for the type in the zone right now (another zone may)."""
    text = f"{error} {error.hint}"
    return "InsufficientInstanceCapacity" in text or "InsufficientCapacityOnHost" in text


def apply_in_zones(
    spec: ClusterSpec,
    state: ClusterState,
    terraform: Terraform,
    progress: Progress,
    zones: Sequence[str],
    *,
    replace: Sequence[str] = (),
) -> RunResult:
    """Apply in the first zone of `zones`; on EC2 having no capacity there, in the next."""
    for index, zone in enumerate(zones):
        render_aws(spec, state, zone=zone).write(state.terraform_dir)
        try:
            return terraform.apply(replace=list(replace))
        except ProvisionError as exc:
            if not _out_of_capacity(exc) or index + 1 == len(zones):
                if _out_of_capacity(exc):
                    raise ProvisionError(
                        f"EC2 has no capacity for {instance_type(spec)} in {', '.join(zones)} now",
                        hint="run `dlvm up` again later, add zones to provider.zones, or use "
                        "a capacity reservation or Capacity Block (nodes.reservation)",
                    ) from exc
                raise
            progress.note(
                f"EC2 has no capacity for {instance_type(spec)} in {zone} now: trying "
                f"{zones[index + 1]} (the nodes move there)"
            )
    raise ProvisionError("provider.zones is empty")  # the spec requires at least one


def provision_aws(
    request: Converge,
    *,
    clients: AwsClients | None = None,
    terraform_factory: Callable[[Path, object], Terraform] | None = None,
) -> tuple[Inventory, bool]:
    """Create or converge the cluster's instances; the inventory and whether Terraform ran
    changes. Terraform is skipped when every node runs and the spec is unchanged."""
    spec, state, progress = request.spec, request.state, request.progress
    api = clients if clients is not None else clients_for(spec)
    module_changed = render_aws(spec, state).write(state.terraform_dir)
    previous = request.previous
    before: dict[str, Instance] = {}
    if previous is not None:
        progress.stage("checking nodes")
        before = cluster_instances(api, spec.name, [node.name for node in previous.nodes])
        unchanged = (
            not module_changed and request.applied and len(previous.nodes) == aws_nodes(spec).count
        )
        if unchanged and all(i.state == "running" for i in before.values()):
            return previous, False
        stopped = {n: i for n, i in before.items() if i.state in ("stopped", "stopping")}
        if stopped:
            progress.note(
                f"{', '.join(sorted(stopped))}: stopped; starting (volumes and host keys kept)"
            )
            start(api, stopped)
    progress.stage("preflight")
    report = preflight(spec, api, existing_nodes=len(previous.nodes) if previous else 0)
    for line in report.warnings:
        progress.note(f"warning: {line}")
    if report.reserved is not None:
        progress.note(report.reserved.ends_line())
    make = terraform_factory or Terraform
    terraform = make(state.terraform_dir, progress.terraform)
    progress.stage("terraform")
    init_if_needed(terraform, module_dir("aws"), state.terraform_dir)
    result = apply_in_zones(spec, state, terraform, progress, _zone_order(state, report.zones))
    pinned = {
        node.name: (node.host_key, before[node.name].instance_id)
        for node in (previous.nodes if previous else ())
        if node.name in before and before[node.name].instance_id
    }
    # Jobs are told when a Capacity Block ends (EC2 ends the instances then).
    ends = report.reserved.end if report.reserved is not None else None
    extra = {CAPACITY_ENDS_ENV: ends.isoformat()} if ends is not None else {}
    return _inventory(request, api, result, report.gpus_per_node, pinned, extra), True


def replace_aws_nodes(
    request: Converge,
    names: Sequence[str],
    *,
    clients: AwsClients | None = None,
    terraform_factory: Callable[[Path, object], Terraform] | None = None,
) -> Inventory:
    """Recreate the named nodes' instances (`apply -replace`), the others untouched, on the
    nodes' own interfaces, and pin the new instances' host keys."""
    spec, state, progress = request.spec, request.state, request.progress
    api = clients if clients is not None else clients_for(spec)
    module = render_aws(spec, state)
    module.write(state.terraform_dir)
    make = terraform_factory or Terraform
    terraform = make(state.terraform_dir, progress.terraform)
    progress.stage(f"terraform: replacing {', '.join(names)}")
    init_if_needed(terraform, module.source, state.terraform_dir)
    result = terraform.apply(replace=[instance_address(name) for name in names])
    gpus = request.previous.gpus_per_node if request.previous else gpus_per_node(spec)
    pinned = {
        node.name: (node.host_key, "")
        for node in (request.previous.nodes if request.previous else ())
        if node.name not in names
    }
    previous_env = request.previous.env if request.previous else {}
    extra = {k: v for k, v in previous_env.items() if k == CAPACITY_ENDS_ENV}
    return _inventory(request, api, result, gpus, pinned, extra)


def _inventory(
    request: Converge,
    api: AwsClients,
    result: RunResult,
    gpus: int,
    pinned: Mapping[str, tuple[str, str]],
    extra_env: Mapping[str, str],
) -> Inventory:
    """The nodes Terraform reports, with the host keys their consoles show.

    `pinned`: node -> (host key, instance id) known before this apply. The same instance id
    means the same root volume and so the same keys: kept unread ("" : kept for any id, for
    nodes a replacement did not touch). A new id means a new instance, whose keys are read."""
    request.progress.stage("reading host keys")
    outputs = result.outputs
    ids = instance_ids(outputs)
    keys: dict[str, str] = {}
    unknown: dict[str, str] = {}
    for name, instance in ids.items():
        key, known_id = pinned.get(name, ("", ""))
        if key and known_id in ("", instance):
            keys[name] = key
        else:
            unknown[name] = instance
    keys.update(read_host_keys(api, unknown))
    env = {**gpu_network.job_environment(instance_type(request.spec)), **extra_env}
    return from_terraform_outputs(
        request.spec.name, with_host_keys(outputs, keys), env=env, gpus_per_node=gpus
    )
