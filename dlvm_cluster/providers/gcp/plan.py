"""A gcp cluster file resolved once: its own keys typed, what each node is (machine type and
GPUs, with the combinations Compute Engine rejects refused), how its VMs are provided, and
the GPU network its shape gets. Everything in this package that needs one of these takes the
plan, so the spec is narrowed and the shape resolved once per entry point (tfvars,
preflight, prices, status), not in each helper."""

from __future__ import annotations

from dataclasses import dataclass

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp import gpu_network, shapes
from dlvm_cluster.providers.gcp.config import (
    ANY_RESERVATION,
    NO_RESERVATION,
    GcpConfig,
    GcpNodes,
    gcp_config,
    gcp_nodes,
)
from dlvm_cluster.spec.model import ClusterSpec

# What Compute Engine does to a VM it ends: a preempted Spot VM, a flex-start or
# reservation-bound VM at the end of its run, any VM past nodes.max_run_hours. Deleted, so the
# next `up` recreates it with a plain apply rather than finding a stopped VM to start.
TERMINATION_ACTION = "DELETE"
PROVISIONING_MODELS = {
    "standard": "STANDARD",
    "spot": "SPOT",
    "flex-start": "FLEX_START",
    "reservation-bound": "RESERVATION_BOUND",
}


@dataclass(frozen=True)
class NodeShape:
    """What one node is: its machine type and GPUs, and which GPUs Terraform must attach."""

    machine_type: str
    gpu_type: str | None
    gpus: int | None  # None: a GPU machine type whose count dlvm does not know offline
    attached: tuple[tuple[str, int], ...]  # guest_accelerator blocks (N1 only)

    @property
    def has_gpus(self) -> bool:
        return self.gpus != 0


def node_shape(nodes: GcpNodes) -> NodeShape:
    """Resolve machine type and GPUs, refusing combinations Compute Engine would reject."""
    accelerator = nodes.accelerator
    machine = nodes.machine_type or shapes.default_machine_type(
        accelerator.type if accelerator else None, accelerator.count if accelerator else 0
    )
    if machine is None:
        assert accelerator is not None
        raise ProvisionError(
            f"dlvm has no default machine type for {accelerator.count} x {accelerator.type}",
            hint="set nodes.machine_type (e.g. a2-highgpu-1g, g2-standard-12, n1-standard-8)",
        )
    if shapes.carries_gpus(machine):
        built_in = shapes.built_in_gpus(machine)
        if accelerator and built_in and (accelerator.type, accelerator.count) != built_in:
            raise ProvisionError(
                f"{machine} carries {built_in[1]} x {built_in[0]}, but nodes.accelerator asks "
                f"for {accelerator.count} x {accelerator.type}",
                hint="remove nodes.accelerator (the machine type decides) or make it match",
            )
        if built_in:
            return NodeShape(machine, built_in[0], built_in[1], ())
        if accelerator:
            return NodeShape(machine, accelerator.type, accelerator.count, ())
        return NodeShape(machine, None, None, ())
    if accelerator is None:
        return NodeShape(machine, None, 0, ())
    if not shapes.takes_attached_gpus(machine):
        raise ProvisionError(
            f"GPUs cannot be attached to {machine}",
            hint="use an n1-* machine type for T4, V100, P100 or P4, or a type that carries its "
            "GPUs (a2-* for A100, a3-* for H100, g2-* for L4, g4-* for RTX PRO 6000) without "
            "nodes.accelerator",
        )
    return NodeShape(
        machine, accelerator.type, accelerator.count, ((accelerator.type, accelerator.count),)
    )


@dataclass(frozen=True)
class Capacity:
    """How the nodes are provided: the provisioning model and the reservation they consume."""

    provisioning_model: str  # Compute Engine's name: STANDARD, SPOT, FLEX_START, ...
    termination_action: str  # "" when Compute Engine never ends the VM itself
    max_run_hours: int | None
    reservation_affinity: str  # "": Compute Engine's default (any matching reservation)
    reservation_name: str  # for SPECIFIC_RESERVATION only


@dataclass(frozen=True)
class ReservedCapacity:
    """What preflight read of the specific reservation the nodes consume in one zone."""

    dense: bool  # a DENSE reservation: its VMs must be RESERVATION_BOUND
    placement_policy: str  # the reservation's compact placement policy, "" when none


def capacity(nodes: GcpNodes, reserved: ReservedCapacity | None = None) -> Capacity:
    """The scheduling and reservation_affinity of each VM, from the spec's capacity keys (and
    the reservation they consume, where preflight read it): standard VMs consuming a dense
    reservation are reservation-bound, which is the only way Compute Engine lets them in."""
    model = nodes.provisioning_model
    if reserved is not None and reserved.dense and model == "standard":
        model = "reservation-bound"
    reservation = nodes.reservation
    if reservation is None and model == "flex-start":
        # Flex-start VMs take capacity from the queue, never from a reservation.
        reservation = NO_RESERVATION
    affinity, name = {
        None: ("", ""),
        ANY_RESERVATION: ("ANY_RESERVATION", ""),
        NO_RESERVATION: ("NO_RESERVATION", ""),
    }.get(reservation, ("SPECIFIC_RESERVATION", reservation or ""))
    ends = model != "standard" or nodes.max_run_hours is not None
    return Capacity(
        provisioning_model=PROVISIONING_MODELS[model],
        termination_action=TERMINATION_ACTION if ends else "",
        max_run_hours=nodes.max_run_hours,
        reservation_affinity=affinity,
        reservation_name=name,
    )


@dataclass(frozen=True)
class GcpPlan:
    """`spec` resolved: `config` and `nodes` are its gcp keys, typed; `shape` each node's
    machine and GPUs; `capacity` how Compute Engine provides the VMs; `network` the GPU
    network of A3/A4 shapes (None for others)."""

    spec: ClusterSpec
    config: GcpConfig
    nodes: GcpNodes
    shape: NodeShape
    capacity: Capacity
    network: gpu_network.GpuNetwork | None


def gcp_plan(spec: ClusterSpec) -> GcpPlan:
    """Resolve a gcp cluster's spec (ProvisionError for a shape Compute Engine rejects)."""
    nodes = gcp_nodes(spec)
    shape = node_shape(nodes)
    return GcpPlan(
        spec=spec,
        config=gcp_config(spec),
        nodes=nodes,
        shape=shape,
        capacity=capacity(nodes),
        network=gpu_network.gpu_network(shape.machine_type),
    )
