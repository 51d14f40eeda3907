"""What `plan`, `up` and `status` say of a gcp cluster besides Terraform's work: the spec's
warnings (SSH open to the internet first), the hourly price from dlvm's dated table, and each
VM's state from the Compute Engine API (running, preempted, ...).

Google's client library is imported only inside the functions that call the API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dlvm_cluster.errors import StateError
from dlvm_cluster.inventory import Inventory
from dlvm_cluster.providers.base import CapacityFacts
from dlvm_cluster.providers.gcp import gpu_network, identity
from dlvm_cluster.providers.gcp.config import (
    ANY_RESERVATION,
    NO_RESERVATION,
    NO_SERVICE_ACCOUNT,
    GcpConfig,
)
from dlvm_cluster.providers.gcp.credentials import ComputeClients, compute_clients
from dlvm_cluster.providers.gcp.hostkeys import node_refs_for
from dlvm_cluster.providers.gcp.instances import InstanceState, instance_states
from dlvm_cluster.providers.gcp.plan import GcpPlan
from dlvm_cluster.providers.gcp.preflight import spec_warnings
from dlvm_cluster.providers.gcp.pricing import (
    PRICE_SOURCE,
    PRICED_MODELS,
    PRICES_AS_OF,
    cluster_price,
)
from dlvm_cluster.providers.gcp.tfvars import compact_placement, flex_gang
from dlvm_cluster.providers.terraformed import applied_tfvars
from dlvm_cluster.state import ClusterState

PRICING_PAGE = "https://cloud.google.com/compute/gpus-pricing"


def node_states(
    clients: ComputeClients, project: str, zone: str, inventory: Inventory
) -> dict[str, InstanceState]:
    """node name -> its VM's state, from the API (also the failover loop's health check)."""
    refs = node_refs_for(inventory.cluster, zone, [node.name for node in inventory.nodes])
    return instance_states(clients, project, refs)


# -- warnings and prices (plan, up, status) ------------------------------------------------


def _open_ssh_ranges(provider: GcpConfig) -> list[str]:
    ranges = []
    for cidr in provider.allowed_ssh_cidrs:
        try:
            if ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
                ranges.append(cidr)
        except ValueError:
            continue
    return ranges


def warning_lines(provider: GcpConfig, warnings: Sequence[str]) -> list[str]:
    """Each warning as a line; SSH open to the whole internet first, and in capitals."""
    open_ranges = _open_ssh_ranges(provider)
    loud = [w for w in warnings if open_ranges and any(r in w for r in open_ranges)]
    quiet = [w for w in warnings if w not in loud]
    return [f"WARNING: {w}" for w in loud] + [f"warning: {w}" for w in quiet]


def price_line(plan: GcpPlan, count: int | None = None) -> str:
    """The hourly price of the cluster with `count` nodes (default: the spec's), or why not."""
    estimate = cluster_price(plan, count)
    if estimate is not None:
        return f"price: {estimate.summary()}"
    model = plan.nodes.provisioning_model
    if model not in PRICED_MODELS:
        why = (
            "they have a price of their own, neither on-demand nor Spot"
            if model == "flex-start"
            else "the reservation is billed, not the VMs"
        )
        return f"price: not in dlvm's table for {model} VMs ({why}); see {PRICING_PAGE}"
    shape = plan.shape
    gpus = f" with {shape.gpus} x {shape.gpu_type}" if shape.gpu_type else ""
    return (
        f"price: not in dlvm's table for {shape.machine_type}{gpus} in "
        f"{plan.config.region} ({PRICE_SOURCE}, {PRICES_AS_OF}); see {PRICING_PAGE}"
    )


def capacity_facts(plan: GcpPlan) -> CapacityFacts:
    """How the VMs are provided: provisioning model, reservation and run-time limit, in the
    words of the cluster file, and as the line `plan` and `status` print."""
    provided = plan.capacity
    model: str = plan.nodes.provisioning_model
    shown_model = model
    if model == "flex-start" and flex_gang(plan):
        shown_model += (
            " (all nodes in one request, created together when Dynamic Workload Scheduler "
            "finds capacity for all)"
        )
    elif model == "flex-start":
        shown_model += " (the VMs are created when Dynamic Workload Scheduler finds capacity)"
    reservation, shown_reservation = {
        "": (ANY_RESERVATION, "any matching one (Compute Engine's default)"),
        "ANY_RESERVATION": (ANY_RESERVATION, "any matching one"),
        "NO_RESERVATION": (NO_RESERVATION, "none"),
    }.get(provided.reservation_affinity, (provided.reservation_name,) * 2)
    if provided.max_run_hours is None:
        limit = "none"
    else:
        action = provided.termination_action.lower()
        limit = f"{provided.max_run_hours}h, then Compute Engine {action}s each VM"
    return CapacityFacts(
        provisioning=model,
        reservation=reservation,
        max_run_hours=provided.max_run_hours,
        summary=(
            f"capacity: {shown_model}; reservation: {shown_reservation}; max run time: {limit}"
        ),
    )


def network_lines(plan: GcpPlan) -> list[str]:
    """The GPU network of the shape (NIC layout, bandwidth) and whether the nodes are placed
    close together; nothing for shapes with only their primary NIC."""
    line = gpu_network.plan_line(plan.shape.machine_type)
    if line is None:
        return []
    chosen = plan.config.compact_placement
    placement = "compact" if compact_placement(plan) else "not compact"
    why = "provider.compact_placement" if chosen is not None else "dlvm's default for the shape"
    return [line, f"placement: {placement} ({why})"]


def gcp_plan_notes(plan: GcpPlan) -> list[str]:
    """What `dlvm plan` adds for gcp: the spec's warnings, how the VMs are provided, the GPU
    network, the price, and the role autostop's `down` needs."""
    return [
        *warning_lines(plan.config, spec_warnings(plan)),
        *identity_lines(plan),
        capacity_facts(plan).summary,
        *network_lines(plan),
        price_line(plan),
    ]


def identity_lines(plan: GcpPlan) -> list[str]:
    """Who the nodes act as, what they are granted, and how dlvm reaches them."""
    spec, provider = plan.spec, plan.config
    account = identity.nodes_service_account(plan)
    lines = []
    if identity.creates_service_account(provider):
        lines.append(
            f"service account: {account}, made for this cluster; granted "
            + ", ".join(identity.NODE_PROJECT_ROLES)
            + " on the project"
        )
    elif provider.service_account == NO_SERVICE_ACCOUNT:
        lines.append("service account: none (nothing on the nodes can call Google APIs)")
    else:
        lines.append(f"service account: {account} (existing)")
    grants = identity.bucket_grants(spec)
    if identity.creates_service_account(provider):
        lines.extend(
            f"bucket gs://{bucket}: {role} for {account}" for bucket, role in grants.items()
        )
    elif grants and account:
        lines.append(
            f"buckets: {account} needs "
            + ", ".join(f"{role} on gs://{bucket}" for bucket, role in grants.items())
            + " (preflight checks the buckets' policies)"
        )
    if spec.autostop is not None and spec.autostop.action == "down":
        if identity.self_delete(plan) and flex_gang(plan):
            lines.append(
                "autostop action down: each node leaves its flex-start group, which deletes its "
                "VM and disk; the nodes' account gets a custom role of only "
                "compute.instanceGroupManagers.update, on this cluster's group alone"
            )
        elif identity.self_delete(plan):
            lines.append(
                "autostop action down: each node deletes its own VM; the nodes' account gets "
                "a custom role of only compute.instances.delete and compute.disks.delete, on "
                "this cluster's VMs and boot disks alone"
            )
        else:
            lines.append(
                "autostop action down: the nodes have no service account, so they power off "
                "instead of deleting themselves (the disks stay billed)"
            )
    if not provider.public_ip:
        lines.append(
            "private nodes: no external IPs; SSH through IAP TCP forwarding "
            f"(gcloud compute start-iap-tunnel, from {identity.IAP_SOURCE_RANGE})"
            + (", egress through Cloud NAT" if provider.network is None else "")
        )
    return lines


# -- status --------------------------------------------------------------------------------


def cluster_instances(
    state: ClusterState, inventory: Inventory, *, clients: ComputeClients | None = None
) -> dict[str, InstanceState]:
    """node name -> its VM's state, in the project and zone of the last apply."""
    tfvars = applied_tfvars(state)
    project, zone = tfvars.get("project"), tfvars.get("zone")
    if not isinstance(project, str) or not isinstance(zone, str) or not project or not zone:
        raise StateError(
            f"cluster {state.name!r} has no Google Cloud project and zone recorded",
            hint="run `dlvm up FILE` to create it, or `dlvm down` to forget it",
        )
    api = clients if clients is not None else compute_clients()
    return node_states(api, project, zone, inventory)
