"""What `plan` and `status` say of an aws cluster besides Terraform's work: warnings, how the
instances are provided (and when a Capacity Block ends), the EFA network, the price, and each
instance's state from EC2."""

from __future__ import annotations

import ipaddress

from dlvm_cluster.errors import StateError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.providers.aws import gpu_network
from dlvm_cluster.providers.aws.api import AwsClients
from dlvm_cluster.providers.aws.config import (
    ANY_RESERVATION,
    NO_RESERVATION,
    aws_config,
    aws_nodes,
)
from dlvm_cluster.providers.aws.instances import Instance, cluster_instances
from dlvm_cluster.providers.aws.preflight import reserved_capacity
from dlvm_cluster.providers.aws.pricing import hourly_rates, node_price, price_line
from dlvm_cluster.providers.aws.tfvars import (
    DEFAULT_DISK_TYPE,
    instance_type,
    placement_group,
    reservation_preference,
)
from dlvm_cluster.providers.base import CapacityFacts, HourlyRates
from dlvm_cluster.providers.terraformed import applied_tfvars
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState


def spec_warnings(spec: ClusterSpec) -> list[str]:
    """What the spec allows that is worth a second look, SSH open to everyone first."""
    provider = aws_config(spec)
    warnings = []
    for cidr in provider.allowed_ssh_cidrs:
        if ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
            warnings.append(
                f"WARNING: SSH is open to the whole internet ({cidr}): narrow "
                "provider.allowed_ssh_cidrs to your own address"
            )
    if provider.public_ip and aws_nodes(spec).count > 5:
        warnings.append(
            "warning: each node gets an Elastic IP; a region allows 5 by default (quota "
            "L-0263D0A3): ask for more, or set provider.public_ip to false and reach the "
            "nodes through your VPC"
        )
    return warnings


def capacity_facts(spec: ClusterSpec, clients: AwsClients | None = None) -> CapacityFacts:
    """How the instances are provided, in the words of the cluster file; with `clients`, also
    when the named reservation or Capacity Block ends, as EC2 says it now."""
    nodes = aws_nodes(spec)
    model: str = nodes.provisioning_model
    preference, reservation_id = reservation_preference(spec)
    if reservation_id:
        reservation, shown = reservation_id, reservation_id
    elif preference == "none":
        reservation, shown = NO_RESERVATION, "none"
    else:
        reservation, shown = ANY_RESERVATION, "any open one that matches (EC2's default)"
    shown_model = {
        "standard": "on-demand",
        "spot": "spot (EC2 may take the instances back; the job resumes on new ones)",
        "capacity-block": "capacity block (the instances end when the block ends)",
    }[model]
    summary = f"capacity: {shown_model}; reservation: {shown}"
    if reservation_id and clients is not None:
        summary += f"; {reservation_end(clients, reservation_id)}"
    return CapacityFacts(
        provisioning=model, reservation=reservation, max_run_hours=None, summary=summary
    )


def reservation_end(clients: AwsClients, reservation_id: str) -> str:
    """When the reservation or block ends, as EC2 says; why not, when it cannot be read."""
    try:
        reserved, _ = reserved_capacity(clients, reservation_id)
    except Exception as exc:
        return f"cannot read {reservation_id} ({exc})"
    return reserved.ends_line()


def price_text(spec: ClusterSpec, clients: AwsClients | None, nodes: int, zone: str) -> str:
    kind = instance_type(spec)
    model = aws_nodes(spec).provisioning_model
    if clients is None:
        return f"price: unknown for {kind} (AWS could not be asked)"
    try:
        price = node_price(clients, model, kind, zone)
    except Exception as exc:
        return f"price: unknown for {kind} (AWS did not answer: {exc})"
    return price_line(price, nodes, kind, model)


def node_rates(spec: ClusterSpec, clients: AwsClients | None, zone: str) -> HourlyRates | None:
    """One node's hourly price running and stopped, asked of AWS; None where it cannot be
    asked or gave none (what `status` then says instead of a total)."""
    nodes = aws_nodes(spec)
    if clients is None:
        return None
    try:
        return hourly_rates(
            clients,
            nodes.provisioning_model,
            instance_type(spec),
            zone,
            nodes.disk_gb,
            nodes.disk_type or DEFAULT_DISK_TYPE,
        )
    except Exception:
        return None


def plan_notes(spec: ClusterSpec, clients: AwsClients | None) -> list[str]:
    """What `dlvm plan` adds for aws: warnings, how the instances are provided (and until
    when), the EFA network, the price, and what autostop's `down` is allowed."""
    provider = aws_config(spec)
    notes = [*spec_warnings(spec), capacity_facts(spec, clients).summary]
    network = gpu_network.plan_line(instance_type(spec), placement_group(spec))
    if network:
        notes.append(network)
    notes.append(price_text(spec, clients, aws_nodes(spec).count, provider.zones[0]))
    if spec.autostop is not None and spec.autostop.action == "down":
        notes.append(
            "autostop action down: the nodes' role may terminate this cluster's instances "
            "(by their dlvm-cluster tag) and nothing else"
        )
    return notes


def node_instances(
    state: ClusterState, inventory: Inventory, clients: AwsClients
) -> dict[str, Instance]:
    """node name -> its instance, found by the cluster's tags in the region of the last
    apply."""
    tfvars = applied_tfvars(state)
    if not tfvars.get("region"):
        raise StateError(
            f"cluster {state.name!r} has no AWS region recorded",
            hint="run `dlvm up FILE` to create it, or `dlvm down` to forget it",
        )
    return cluster_instances(clients, inventory.cluster, [node.name for node in inventory.nodes])
