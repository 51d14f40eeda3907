"""Spec -> the variables of terraform/gcp.

`gcp_tfvars` is pure: the same spec, public key and zone always give the same dict, so
`dlvm render` shows exactly what `up` applies. `state_tfvars` adds the two things that live in
the state dir: the cluster's public key and the zone the cluster already lives in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import node_name
from dlvm_cluster.providers.gcp import gpu_network, identity, shapes
from dlvm_cluster.providers.gcp.config import (
    ANY_RESERVATION,
    NO_RESERVATION,
    NO_SERVICE_ACCOUNT,
    GcpConfig,
    GcpNodes,
    gcp_config,
    gcp_nodes,
)
from dlvm_cluster.provision.render import TFVARS
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState

DLVM_IMAGE_PROJECT = "deeplearning-platform-release"
# Resolved at preflight (images.getFromFamily), which also warns when the image is deprecated;
# families come and go, see README "Google Cloud". PyTorch 2.9 with CUDA 12.9 and the 580 driver
# has patch support (the 2.7/570 family lost it; the Debian families are deprecated). Of its two
# siblings, Ubuntu 22.04 is the release the previous default used, so setup steps written for it
# keep working, and Horovod 0.28.1 (which the L4 example builds) is reported not to build on
# Python 3.12, the Python of 24.04.
DEFAULT_IMAGE_FAMILY = "pytorch-2-9-cu129-ubuntu-2204-nvidia-580"
DEFAULT_SUBNET_CIDR = "10.64.0.0/20"
# Cut into a /16 per GPU or RDMA subnetwork; apart from DEFAULT_SUBNET_CIDR, from the
# 10.128.0.0/9 of auto-mode networks (all NICs of a VM must be in different ranges), and from
# the pools Docker takes its bridges from (172.17.0.0/16 to 172.31.0.0/16, 192.168.0.0/16):
# a GPU subnetwork whose gateway is docker0's own address leaves that rail unreachable, and the
# TCPX and TCPXO nodes run docker.
GPU_CIDR_RANGE = "10.96.0.0/11"
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
RESOURCE_ADDRESS = "google_compute_instance.node"
# How long Terraform waits for each VM to be created unless `up` is given a wait: eight-GPU
# shapes can take longer than the google provider's default 20 minutes. A flex-start VM waits
# for capacity within it.
DEFAULT_CREATE_TIMEOUT = "30m"
DEFAULT_CREATE_TIMEOUT_S = 1800.0  # the same, for a flex-start gang's wait


@dataclass(frozen=True)
class ImageRef:
    """A boot image: a family (newest image of it) or one named image, in a project."""

    project: str
    name: str
    is_family: bool

    @property
    def path(self) -> str:
        kind = "images/family" if self.is_family else "images"
        return f"projects/{self.project}/global/{kind}/{self.name}"


def image_ref(image: str | None) -> ImageRef:
    """`nodes.image` as a reference: a bare name or family/NAME is a Deep Learning VM family."""
    if image is None:
        return ImageRef(DLVM_IMAGE_PROJECT, DEFAULT_IMAGE_FAMILY, is_family=True)
    text = image.split("/compute/v1/", 1)[-1] if image.startswith("https://") else image
    parts = text.split("/")
    if len(parts) == 1:
        return ImageRef(DLVM_IMAGE_PROJECT, parts[0], is_family=True)
    if len(parts) == 2 and parts[0] == "family":
        return ImageRef(DLVM_IMAGE_PROJECT, parts[1], is_family=True)
    if len(parts) == 5 and parts[0] == "projects" and parts[2:4] == ["global", "images"]:
        return ImageRef(parts[1], parts[4], is_family=False)
    if len(parts) == 6 and parts[0] == "projects" and parts[2:5] == ["global", "images", "family"]:
        return ImageRef(parts[1], parts[5], is_family=True)
    raise ProvisionError(
        f"nodes.image {image!r} is not an image dlvm can use",
        hint="give a Deep Learning VM family name, or projects/PROJECT/global/images/[family/]NAME",
    )


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


def placement_policy(spec: ClusterSpec, reserved: ReservedCapacity | None) -> str:
    """The existing placement policy the VMs name: the reservation's, so that they may consume
    it (unless the spec turned placement off)."""
    if reserved is None or gcp_config(spec).compact_placement is False:
        return ""
    return reserved.placement_policy


def flex_gang(spec: ClusterSpec, count: int | None = None) -> bool:
    """Whether the nodes are one flex-start gang (gang.py): flex-start with more than one
    node, so that none runs while another still waits for capacity."""
    nodes = spec.nodes.count if count is None else count
    return gcp_nodes(spec).provisioning_model == "flex-start" and nodes > 1


def compact_placement(spec: ClusterSpec) -> bool:
    """The spec's choice, else on for the A3/A4 shapes whose GPU network dlvm builds.

    Their NICs are only as fast as the fabric between the VMs, so Google places such VMs
    close together. Not by default for flex-start VMs (Dynamic Workload Scheduler places them
    itself) or VMs consuming a reservation (a VM with a placement policy consumes only a
    reservation made with that same policy).
    """
    chosen = gcp_config(spec).compact_placement
    if chosen is not None:
        return chosen
    machine = node_shape(gcp_nodes(spec)).machine_type
    return (
        shapes.base_machine_type(machine) in gpu_network.COMPACT_BY_DEFAULT
        and gcp_nodes(spec).provisioning_model in ("standard", "spot")
        and gcp_nodes(spec).reservation is None
    )


def gpus_per_node(spec: ClusterSpec) -> int:
    """GPUs on each node as far as known offline (for DLVM_GPUS_PER_NODE and procs_per_node)."""
    return node_shape(gcp_nodes(spec)).gpus or 0


def instance_name(cluster: str, node: str) -> str:
    """The VM's name: node names repeat across clusters, VM names must not within a project."""
    return f"{cluster}-{node}"


def instance_address(node: str) -> str:
    """The Terraform address of a node's VM, for `terraform apply -replace=...`."""
    return f'{RESOURCE_ADDRESS}["{node}"]'


def duration(seconds: float) -> str:
    """Seconds as a Terraform duration: 2h, 1h30m, 90s."""
    whole = max(1, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{value}{unit}" for value, unit in parts if value)


def gcp_tfvars(
    spec: ClusterSpec,
    *,
    public_key: str,
    zone: str | None = None,
    count: int | None = None,
    names: Sequence[str] | None = None,
    wait: float | None = None,
    login: Login | None = None,
    reserved: ReservedCapacity | None = None,
) -> dict[str, Any]:
    """The tfvars for `spec` in `zone` (default: the first of provider.zones).

    `names` picks the node set explicitly (ranks follow their order), e.g. to keep the nodes a
    partial apply created; otherwise the nodes are node-0 .. node-(count-1). `wait`: how long
    each VM may take to be created, in seconds (default DEFAULT_CREATE_TIMEOUT). `login`: OS
    Login and its user as found for this cluster (default: the spec's choice and ssh_user).
    `reserved`: what preflight read of the named reservation in `zone`.
    """
    provider = gcp_config(spec)
    chosen_zone = zone or provider.zones[0]
    if chosen_zone not in provider.zones:
        raise ProvisionError(
            f"zone {chosen_zone} is not in provider.zones",
            hint="zones: " + ", ".join(provider.zones),
        )
    shape = node_shape(gcp_nodes(spec))
    provided = capacity(gcp_nodes(spec), reserved)
    policy = placement_policy(spec, reserved)
    if names is None:
        names = [node_name(rank) for rank in range(spec.nodes.count if count is None else count)]
    network = gpu_network.gpu_network(shape.machine_type)
    login = login or Login(os_login=bool(provider.os_login), user=provider.ssh_user)
    return {
        "cluster_name": spec.name,
        "project": provider.project,
        "region": provider.region,
        "zone": chosen_zone,
        "nodes": {name: {"rank": rank} for rank, name in enumerate(names)},
        "machine_type": shape.machine_type,
        "guest_accelerators": [{"type": kind, "count": n} for kind, n in shape.attached],
        "install_nvidia_driver": shape.has_gpus,
        "image": image_ref(gcp_nodes(spec).image).path,
        "disk_gb": gcp_nodes(spec).disk_gb,
        "disk_type": gcp_nodes(spec).disk_type or shapes.default_disk_type(shape.machine_type),
        "provisioning_model": provided.provisioning_model,
        "termination_action": provided.termination_action,
        "max_run_hours": provided.max_run_hours,
        "reservation_affinity": provided.reservation_affinity,
        "reservation_name": provided.reservation_name,
        "create_timeout": DEFAULT_CREATE_TIMEOUT if wait is None else duration(wait),
        "flex_gang": flex_gang(spec, count),
        "compact_placement": compact_placement(spec) and not policy,
        "placement_policy": policy,
        "nic_type": "GVNIC" if shapes.gvnic(shape.machine_type) else "",
        "network": provider.network or "",
        "subnetwork": provider.subnetwork or "",
        "subnet_cidr": DEFAULT_SUBNET_CIDR,
        "gpu_vpc_nics": network.gpu_vpc_nics if network else 0,
        "gpu_vpc_mtu": network.gpu_vpc_mtu if network else gpu_network.GPU_VPC_MTU,
        "rdma_nics": network.rdma_nics if network else 0,
        "gpu_cidr_range": GPU_CIDR_RANGE,
        "startup_script": gpu_network.setup_script(network) if network else "",
        "public_ip": provider.public_ip,
        "allowed_ssh_cidrs": list(provider.allowed_ssh_cidrs),
        "iap_source_range": identity.IAP_SOURCE_RANGE,
        "manage_firewall": provider.manage_firewall,
        "network_project": identity.network_project(provider),
        "os_login": login.os_login,
        "ssh_user": login.user,
        "ssh_public_key": public_key,
        "attach_service_account": provider.service_account != NO_SERVICE_ACCOUNT,
        "service_account_email": identity.nodes_service_account(spec, provider),
        "create_service_account": identity.creates_service_account(provider),
        "service_account_id": (
            identity.service_account_id(spec.name)
            if identity.creates_service_account(provider)
            else ""
        ),
        # An existing account's grants are its owner's: preflight checks them, dlvm makes none.
        "bucket_grants": (
            identity.bucket_grants(spec) if identity.creates_service_account(provider) else {}
        ),
        "node_project_roles": list(identity.NODE_PROJECT_ROLES),
        "self_delete": identity.self_delete(spec, provider),
        "self_delete_role_id": identity.self_delete_role_id(spec.name),
    }


def _last_tfvars(tfvars_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(tfvars_path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Login:
    """How dlvm logs in to the nodes: OS Login or ssh-keys metadata, and as which user (with
    OS Login, the POSIX name of the user's OS Login profile)."""

    os_login: bool
    user: str


def login_in_use(tfvars_path: Path, provider: GcpConfig) -> Login:
    """The login the last apply used, where the spec leaves OS Login to dlvm (it is turned on
    when an organization policy requires it): a render must not undo what `up` found."""
    default = Login(os_login=bool(provider.os_login), user=provider.ssh_user)
    if provider.os_login is False:
        return default
    applied = _last_tfvars(tfvars_path)
    if applied.get("os_login") is not True:
        return default
    user = applied.get("ssh_user")
    return Login(True, user if isinstance(user, str) and user else provider.ssh_user)


def zone_in_use(tfvars_path: Path, zones: Sequence[str]) -> str | None:
    """The zone the last render chose, if still allowed: a cluster stays where its nodes are."""
    zone = _last_tfvars(tfvars_path).get("zone")
    return zone if isinstance(zone, str) and zone in zones else None


def reserved_in_use(
    tfvars_path: Path, nodes: GcpNodes, zone: str | None
) -> ReservedCapacity | None:
    """What the last apply's preflight read of the reservation the nodes still consume in the
    same zone: a render without the API (scale, a node's replacement) keeps the VMs
    reservation-bound and in the reservation's placement policy, rather than recreating them."""
    last = _last_tfvars(tfvars_path)
    wanted = capacity(nodes).reservation_name
    if not wanted or zone is None or last.get("zone") != zone:
        return None
    if last.get("reservation_name") != wanted:
        return None
    policy = last.get("placement_policy")
    return ReservedCapacity(
        dense=last.get("provisioning_model") == PROVISIONING_MODELS["reservation-bound"]
        and nodes.provisioning_model == "standard",
        placement_policy=policy if isinstance(policy, str) else "",
    )


def state_tfvars(
    spec: ClusterSpec,
    state: ClusterState,
    count: int | None = None,
    wait: float | None = None,
    login: Login | None = None,
) -> dict[str, Any]:
    """`gcp_tfvars` with the cluster's public key, current zone, the reservation it consumes
    there and its login (unless `login` is given) read from its state dir."""
    public_path = state.key_path.with_suffix(".pub")
    public_key = public_path.read_text().strip() if public_path.exists() else ""
    provider = gcp_config(spec)
    tfvars_path = state.terraform_dir / TFVARS
    zone = zone_in_use(tfvars_path, provider.zones)
    reserved = reserved_in_use(tfvars_path, gcp_nodes(spec), zone)
    login = login or login_in_use(tfvars_path, provider)
    return gcp_tfvars(
        spec,
        public_key=public_key,
        zone=zone,
        count=count,
        wait=wait,
        login=login,
        reserved=reserved,
    )
