"""Compute Engine's rules for a cluster file, checked at load (the loader gets them through
the gcp registry entry, providers/gcp/kind.py): what Google would refuse later, often only
once the network and firewall exist, caught while the file position is still known. Beside
shapes.py, which holds what Compute Engine's machine types are."""

from __future__ import annotations

import re

from dlvm_cluster.providers.gcp.config import (
    ANY_RESERVATION,
    FLEX_START_MAX_RUN_HOURS,
    GCP_IMAGE_PATTERN,
    NO_RESERVATION,
    NO_SERVICE_ACCOUNT,
    GcpConfig,
    GcpNodes,
    gcp_config,
    gcp_nodes,
)
from dlvm_cluster.spec.kinds import Problem
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.spec.rules import bucket_scheme_problems, spot_problems, ssh_range_problems

# GPUs attached to N1 VMs (the only family that takes them), with the counts a VM may have
# (Compute Engine's GPU table: 1, 2 or 4; V100 also 8). Other types on N1 follow the common rule.
N1_GPU_COUNTS: dict[str, tuple[int, ...]] = {
    "nvidia-tesla-t4": (1, 2, 4),
    "nvidia-tesla-v100": (1, 2, 4, 8),
    "nvidia-tesla-p100": (1, 2, 4),
    "nvidia-tesla-p4": (1, 2, 4),
}
N1_DEFAULT_GPU_COUNTS = (1, 2, 4)

# Flex-start (Dynamic Workload Scheduler) VMs exist for the accelerator-optimized families except
# A4X and G4, and for H4D (Compute Engine's "About Flex-start VMs"); N1 with attached GPUs and
# general-purpose types are not among them, and the create would fail at apply time.
FLEX_START_FAMILIES = ("a2", "a3", "a4", "g2", "h4d")
# GPUs whose machine types are of a family without flex-start, for a spec that names only its
# GPUs (the machine type then defaults to that family).
_NO_FLEX_START_GPUS = {**dict.fromkeys(N1_GPU_COUNTS, "n1"), "nvidia-rtx-pro-6000": "g4"}
# A3 High with fewer than 8 GPUs is offered only as Spot or flex-start VMs: Compute Engine has no
# on-demand capacity of these shapes (its table of consumption options by machine type).
SPOT_OR_FLEX_START_ONLY = ("a3-highgpu-1g", "a3-highgpu-2g", "a3-highgpu-4g")
# Families Google sells with no on-demand capacity at all: a reservation (future or calendar
# mode), flex-start or Spot (AI Hypercomputer's consumption options list no on-demand column for
# A4X, A4 and A3 Ultra). A standard VM needs a reservation to consume.
RESERVED_OR_QUEUED_ONLY = ("a4-", "a4x-", "a3-ultragpu-")
# Their GPUs, for a spec that names only its GPUs (the machine type then defaults to them).
_RESERVED_OR_QUEUED_GPUS = {
    "nvidia-h200-141gb": "a3-ultragpu-8g",
    "nvidia-b200": "a4-highgpu-8g",
    "nvidia-gb200": "a4x-highgpu-4g",
}
_H100 = "nvidia-h100-80gb"


def gcp_rules(spec: ClusterSpec) -> list[Problem]:
    """Every Compute Engine rule that spans several keys of `spec` (a gcp cluster file)."""
    provider = gcp_config(spec)
    nodes = gcp_nodes(spec)
    problems = _gcp_problems(spec, provider)
    problems.extend(_capacity_problems(nodes))
    autostop = spec.autostop
    if nodes.provisioning_model == "flex-start" and autostop and autostop.action == "stop":
        written = "action" in autostop.model_fields_set
        problems.append(
            (
                ("autostop", "action") if written else ("autostop",),
                "flex-start VMs cannot be stopped (Compute Engine keeps no capacity for them "
                "while stopped): set autostop.action to down",
            )
        )
    problems.extend(bucket_scheme_problems(spec, "gs", "Cloud Storage"))
    if spec.storage and provider.service_account == NO_SERVICE_ACCOUNT:
        problems.append(
            (
                ("provider", "service_account"),
                "nodes without a service account cannot mount Cloud Storage: remove "
                f"`service_account: {NO_SERVICE_ACCOUNT}`, or name an account that holds "
                "roles/storage.objectUser on the buckets",
            )
        )
    if nodes.min_count is not None and nodes.min_count > nodes.count:
        problems.append((("nodes", "min_count"), f"{nodes.min_count} is more than nodes.count"))
    elif nodes.min_count is not None and nodes.provisioning_model == "flex-start":
        # Several flex-start nodes come in one request, all or none (providers/gcp/gang.py).
        problems.append(
            (
                ("nodes", "min_count"),
                "flex-start nodes are created all at once or not at all: remove min_count",
            )
        )
    return problems


def _gcp_problems(spec: ClusterSpec, provider: GcpConfig) -> list[Problem]:
    """What Google Cloud would reject later, caught while the file position is still known."""
    problems: list[Problem] = []
    nodes = gcp_nodes(spec)
    seen: set[str] = set()
    for index, zone in enumerate(provider.zones):
        if not zone.startswith(provider.region + "-"):
            problems.append(
                (("provider", "zones", index), f"{zone} is not a zone of {provider.region}")
            )
        elif zone in seen:
            problems.append((("provider", "zones", index), f"{zone} is listed twice"))
        seen.add(zone)
    problems.extend(ssh_range_problems(provider.allowed_ssh_cidrs))
    if provider.public_ip and not provider.allowed_ssh_cidrs:
        problems.append(
            (
                ("provider", "allowed_ssh_cidrs"),
                "list the address ranges that may reach the nodes over SSH (like "
                "203.0.113.7/32), or set public_ip: false to reach them through IAP instead",
            )
        )
    if provider.subnetwork and not provider.network:
        problems.append(
            (
                ("provider", "subnetwork"),
                "also name its network under provider.network (the firewall rules go there)",
            )
        )
    problems.extend(_n1_problems(spec, provider))
    problems.extend(_offered_capacity_problems(nodes))
    if nodes.image is not None and not re.fullmatch(GCP_IMAGE_PATTERN, nodes.image):
        problems.append(
            (
                ("nodes", "image"),
                "must be a Deep Learning VM image family (e.g. "
                "pytorch-2-9-cu129-ubuntu-2204-nvidia-580), family/NAME, or "
                "projects/PROJECT/global/images/[family/]NAME",
            )
        )
    return problems


def _capacity_problems(nodes: GcpNodes) -> list[Problem]:
    """Provisioning, run time and reservation that contradict each other or Compute Engine."""
    model = nodes.provisioning_model
    problems = spot_problems("spot" in nodes.model_fields_set, nodes.spot, nodes.provisioning)
    if model == "flex-start":
        if nodes.max_run_hours is None:
            problems.append(
                (
                    ("nodes", "provisioning"),
                    "flex-start needs nodes.max_run_hours (at most "
                    f"{FLEX_START_MAX_RUN_HOURS}): how long each VM may run before Compute "
                    "Engine deletes it",
                )
            )
        elif nodes.max_run_hours > FLEX_START_MAX_RUN_HOURS:
            problems.append(
                (
                    ("nodes", "max_run_hours"),
                    f"{nodes.max_run_hours} is more than flex-start's limit of "
                    f"{FLEX_START_MAX_RUN_HOURS} hours (7 days)",
                )
            )
        if nodes.reservation not in (None, NO_RESERVATION):
            problems.append(
                (
                    ("nodes", "reservation"),
                    "flex-start VMs consume no reservation: remove nodes.reservation or set it "
                    f"to {NO_RESERVATION}",
                )
            )
    if model == "reservation-bound" and nodes.max_run_hours is not None:
        problems.append(
            (
                ("nodes", "max_run_hours"),
                "reservation-bound VMs run until their reservation ends: Compute Engine takes "
                "no maximum run time for them (autostop's max_hours powers the cluster off)",
            )
        )
    if model == "reservation-bound" and nodes.reservation in (
        None,
        ANY_RESERVATION,
        NO_RESERVATION,
    ):
        problems.append(
            (
                ("nodes", "provisioning" if nodes.reservation is None else "reservation"),
                "reservation-bound VMs need nodes.reservation: the NAME of the reservation "
                "(or projects/PROJECT/reservations/NAME for a shared one)",
            )
        )
    return problems


def _gpu_field(nodes: GcpNodes) -> tuple[str, ...]:
    """The key that chose the machine: machine_type, else the GPUs it defaults from."""
    return ("nodes", "machine_type" if nodes.machine_type else "accelerator")


def _offered_capacity_problems(nodes: GcpNodes) -> list[Problem]:
    """Provisioning models Compute Engine does not offer for the machine type, and Spot VMs
    named to a reservation (Compute Engine: a reservation cannot be consumed by Spot or
    preemptible VMs), each of which only fails once the network and firewall exist."""
    problems: list[Problem] = []
    model = nodes.provisioning_model
    accelerator = nodes.accelerator
    machine = nodes.machine_type
    if machine is not None:
        family = machine.split("-", 1)[0]
        shape = machine.removesuffix("-nolssd")
    elif accelerator is not None:
        family = _NO_FLEX_START_GPUS.get(accelerator.type, "")
        shape = f"a3-highgpu-{accelerator.count}g" if accelerator.type == _H100 else ""
    else:
        family, shape = "n2", ""  # a CPU node's default machine type
    if model == "flex-start" and family and family not in FLEX_START_FAMILIES:
        what = machine or f"{family.upper()} machine types"
        problems.append(
            (
                ("nodes", "provisioning"),
                f"flex-start VMs are not offered for {what}: Compute Engine has them for the "
                "accelerator-optimized A2, A3, A4 and G2 types and H4D (not N1 with attached "
                "GPUs, A4X or G4); use one of those, or provisioning: spot or standard",
            )
        )
    if model == "standard" and shape in SPOT_OR_FLEX_START_ONLY:
        field = ("nodes", "provisioning") if nodes.provisioning else _gpu_field(nodes)
        problems.append(
            (
                field,
                f"{shape} is offered only as Spot or flex-start VMs, not standard (on-demand): "
                "set nodes.provisioning to spot, or to flex-start with max_run_hours; or use "
                "a3-highgpu-8g",
            )
        )
    reserved_only = (
        machine
        if machine is not None
        else _RESERVED_OR_QUEUED_GPUS.get(accelerator.type if accelerator else "", "")
    )
    if (
        model == "standard"
        and reserved_only.startswith(RESERVED_OR_QUEUED_ONLY)
        and nodes.reservation in (None, NO_RESERVATION)
    ):
        field = ("nodes", "provisioning") if nodes.provisioning else _gpu_field(nodes)
        problems.append(
            (
                field,
                f"Google offers no on-demand capacity for {reserved_only}: consume a "
                "reservation (nodes.reservation: NAME, or any), or set nodes.provisioning to "
                "flex-start (with max_run_hours) or spot",
            )
        )
    if model == "spot" and nodes.reservation not in (None, ANY_RESERVATION, NO_RESERVATION):
        problems.append(
            (
                ("nodes", "reservation"),
                "Spot VMs cannot consume a reservation: remove nodes.reservation, or use "
                "provisioning: standard (or reservation-bound) to run on the reserved VMs",
            )
        )
    return problems


def _runs_on_n1(nodes: GcpNodes) -> bool:
    """An n1-* machine type, or none with a GPU that only N1 takes (the default is then N1)."""
    if nodes.machine_type is not None:
        return nodes.machine_type.startswith("n1-")
    return nodes.accelerator is not None and nodes.accelerator.type in N1_GPU_COUNTS


def _n1_problems(spec: ClusterSpec, provider: GcpConfig) -> list[Problem]:
    """N1's limits, which Google reports only once the network and firewall already exist."""
    nodes = gcp_nodes(spec)
    if not _runs_on_n1(nodes):
        return []
    machine = nodes.machine_type or "an N1 machine type"
    problems: list[Problem] = []
    if provider.compact_placement:
        problems.append(
            (
                ("provider", "compact_placement"),
                f"compact placement is not available for {machine} (N1): use an "
                "accelerator-optimized type (a2, a3, g2, ...) or set it to false",
            )
        )
    accelerator = nodes.accelerator
    if accelerator is not None:
        allowed = N1_GPU_COUNTS.get(accelerator.type, N1_DEFAULT_GPU_COUNTS)
        if accelerator.count not in allowed:
            counts = ", ".join(str(count) for count in allowed[:-1]) + f" or {allowed[-1]}"
            problems.append(
                (
                    ("nodes", "accelerator", "count"),
                    f"an N1 VM takes {counts} x {accelerator.type}, not {accelerator.count}",
                )
            )
    return problems
