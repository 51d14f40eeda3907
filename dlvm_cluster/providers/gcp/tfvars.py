"""Spec -> the variables of terraform/gcp.

`gcp_tfvars` is pure: the same spec, public key and zone always give the same dict, so
`dlvm render` shows exactly what `up` applies. `state_tfvars` adds the two things that live in
the state dir: the cluster's public key and the zone the cluster already lives in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import node_name
from dlvm_cluster.providers.gcp import gpu_network, identity, shapes
from dlvm_cluster.providers.gcp.config import (
    NO_SERVICE_ACCOUNT,
    GcpConfig,
    GcpNodes,
    gcp_config,
    gcp_nodes,
)
from dlvm_cluster.providers.gcp.plan import (
    PROVISIONING_MODELS,
    GcpPlan,
    ReservedCapacity,
    capacity,
    gcp_plan,
)
from dlvm_cluster.providers.terraformed import read_tfvars, zone_in_use
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
# The RDMA shapes boot Google's accelerator images instead (Ubuntu 24.04 with NVIDIA's 580
# driver and the RDMA stack), the images Google's Cluster Toolkit builds its A3 Ultra, A4 and
# A4X clusters from: gIB is qualified there, and A4X's Arm hosts need the arm64 one. They
# carry no PyTorch: `plan` says so (shape_warnings.py).
ACCELERATOR_IMAGE_PROJECT = "ubuntu-os-accelerator-images"
ACCELERATOR_IMAGE_FAMILIES = {
    "a3-ultragpu-8g": "ubuntu-accelerator-2404-amd64-with-nvidia-580",
    "a4-highgpu-8g": "ubuntu-accelerator-2404-amd64-with-nvidia-580",
    "a4x-highgpu-4g": "ubuntu-accelerator-2404-arm64-with-nvidia-580",
}
DEFAULT_SUBNET_CIDR = "10.64.0.0/20"
# Cut into a /16 per GPU or RDMA subnetwork; apart from DEFAULT_SUBNET_CIDR, from the
# 10.128.0.0/9 of auto-mode networks (all NICs of a VM must be in different ranges), and from
# the pools Docker takes its bridges from (172.17.0.0/16 to 172.31.0.0/16, 192.168.0.0/16):
# a GPU subnetwork whose gateway is docker0's own address leaves that rail unreachable, and the
# TCPX and TCPXO nodes run docker.
GPU_CIDR_RANGE = "10.96.0.0/11"
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


def node_image(plan: GcpPlan) -> ImageRef:
    """The image the nodes boot: `nodes.image`, else the shape's default."""
    return image_ref(plan.nodes.image, plan.shape.machine_type)


def resolved_image(ref: ImageRef, name: str) -> str:
    """The path of the image `name` that preflight found `ref` to be (a family's current
    image): what the VMs are created from, so that every node of the cluster boots the same
    image however the family moves later."""
    return ImageRef(ref.project, name, is_family=False).path if ref.is_family else ref.path


def image_in_use(state: ClusterState, ref: ImageRef) -> str | None:
    """The image `ref`'s family resolved to when the cluster's nodes were made, if they were
    (state.boot_image_path): later renders keep it, so that a newer image of the family
    replaces no VM (Compute Engine recreates a VM whose boot image changes) and nodes added
    later boot what the others boot. None once the spec names another image."""
    if not ref.is_family or not state.inventory_path.exists():
        return None
    record = state.read_json(state.boot_image_path)
    if record is None and read_tfvars(state.terraform_dir / TFVARS).get("image") == ref.path:
        # Nodes made before the cluster kept its image were created from the family itself,
        # which Terraform matches with any image of it: naming the family's newest image now
        # would recreate every node whose image the family has moved past.
        return ref.path
    if not isinstance(record, dict) or record.get("family") != ref.path:
        return None
    image = record.get("image")
    return image if isinstance(image, str) and image else None


def record_image(state: ClusterState, ref: ImageRef, image: str) -> None:
    """Remember what `ref` resolved to for this cluster (see image_in_use)."""
    if ref.is_family:
        state.write_json(state.boot_image_path, {"family": ref.path, "image": image})


def image_ref(image: str | None, machine_type: str = "") -> ImageRef:
    """`nodes.image` as a reference: a bare name or family/NAME is a Deep Learning VM family;
    none is the default of `machine_type`'s shape."""
    if image is None:
        accelerator = ACCELERATOR_IMAGE_FAMILIES.get(shapes.base_machine_type(machine_type))
        if accelerator is not None:
            return ImageRef(ACCELERATOR_IMAGE_PROJECT, accelerator, is_family=True)
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


def placement_policy(plan: GcpPlan, reserved: ReservedCapacity | None) -> str:
    """The existing placement policy the VMs name: the reservation's, so that they may consume
    it (unless the spec turned placement off)."""
    if reserved is None or plan.config.compact_placement is False:
        return ""
    return reserved.placement_policy


def flex_gang(plan: GcpPlan, count: int | None = None) -> bool:
    """Whether the nodes are one flex-start gang (gang.py): flex-start with more than one
    node, so that none runs while another still waits for capacity."""
    nodes = plan.spec.nodes.count if count is None else count
    return plan.nodes.provisioning_model == "flex-start" and nodes > 1


def compact_placement(plan: GcpPlan) -> bool:
    """The spec's choice, else on for the A3/A4 shapes whose GPU network dlvm builds.

    Their NICs are only as fast as the fabric between the VMs, so Google places such VMs
    close together. Not by default for flex-start VMs (Dynamic Workload Scheduler places them
    itself) or VMs consuming a reservation (a VM with a placement policy consumes only a
    reservation made with that same policy).
    """
    chosen = plan.config.compact_placement
    if chosen is not None:
        return chosen
    return (
        shapes.base_machine_type(plan.shape.machine_type) in gpu_network.COMPACT_BY_DEFAULT
        and plan.nodes.provisioning_model in ("standard", "spot")
        and plan.nodes.reservation is None
    )


def gpus_per_node(plan: GcpPlan) -> int:
    """GPUs on each node as far as known offline (for DLVM_GPUS_PER_NODE and procs_per_node)."""
    return plan.shape.gpus or 0


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
    image: str | None = None,
) -> dict[str, Any]:
    """The tfvars for `spec` in `zone` (default: the first of provider.zones).

    `names` picks the node set explicitly (ranks follow their order), e.g. to keep the nodes a
    partial apply created; otherwise the nodes are node-0 .. node-(count-1). `wait`: how long
    each VM may take to be created, in seconds (default DEFAULT_CREATE_TIMEOUT). `login`: OS
    Login and its user as found for this cluster (default: the spec's choice and ssh_user).
    `reserved`: what preflight read of the named reservation in `zone`. `image`: the image
    the nodes' family resolved to (default: the family itself, as `render` shows it before
    preflight).
    """
    plan = gcp_plan(spec)
    provider, shape, network = plan.config, plan.shape, plan.network
    chosen_zone = zone or provider.zones[0]
    if chosen_zone not in provider.zones:
        raise ProvisionError(
            f"zone {chosen_zone} is not in provider.zones",
            hint="zones: " + ", ".join(provider.zones),
        )
    provided = capacity(plan.nodes, reserved)
    policy = placement_policy(plan, reserved)
    if names is None:
        names = [node_name(rank) for rank in range(spec.nodes.count if count is None else count)]
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
        "image": image or node_image(plan).path,
        "disk_gb": plan.nodes.disk_gb,
        "disk_type": plan.nodes.disk_type or shapes.default_disk_type(shape.machine_type),
        "provisioning_model": provided.provisioning_model,
        "termination_action": provided.termination_action,
        "max_run_hours": provided.max_run_hours,
        "reservation_affinity": provided.reservation_affinity,
        "reservation_name": provided.reservation_name,
        "create_timeout": DEFAULT_CREATE_TIMEOUT if wait is None else duration(wait),
        "flex_gang": flex_gang(plan, count),
        "compact_placement": compact_placement(plan) and not policy,
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
        "service_account_email": identity.nodes_service_account(plan),
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
        "self_delete": identity.self_delete(plan),
        "self_delete_role_id": identity.self_delete_role_id(spec.name),
    }


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
    applied = read_tfvars(tfvars_path)
    if applied.get("os_login") is not True:
        return default
    user = applied.get("ssh_user")
    return Login(True, user if isinstance(user, str) and user else provider.ssh_user)


def reserved_in_use(
    tfvars_path: Path, nodes: GcpNodes, zone: str | None
) -> ReservedCapacity | None:
    """What the last apply's preflight read of the reservation the nodes still consume in the
    same zone: a render without the API (scale, a node's replacement) keeps the VMs
    reservation-bound and in the reservation's placement policy, rather than recreating them."""
    last = read_tfvars(tfvars_path)
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
    image: str | None = None,
) -> dict[str, Any]:
    """`gcp_tfvars` with the cluster's public key, current zone, the reservation it consumes
    there, its login (unless `login` is given) and the image its VMs were created from
    (unless `image` is given) read from its state dir."""
    public_path = state.key_path.with_suffix(".pub")
    public_key = public_path.read_text().strip() if public_path.exists() else ""
    provider = gcp_config(spec)
    tfvars_path = state.terraform_dir / TFVARS
    zone = zone_in_use(tfvars_path, provider.zones)
    reserved = reserved_in_use(tfvars_path, gcp_nodes(spec), zone)
    login = login or login_in_use(tfvars_path, provider)
    image = image or image_in_use(state, node_image(gcp_plan(spec)))
    return gcp_tfvars(
        spec,
        public_key=public_key,
        zone=zone,
        count=count,
        wait=wait,
        login=login,
        reserved=reserved,
        image=image,
    )
