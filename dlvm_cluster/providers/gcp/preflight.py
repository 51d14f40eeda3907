"""Checks before Terraform runs, so a wrong zone, GPU type, quota, image or storage bucket
fails in seconds with the fix, instead of minutes into an apply with a half-made cluster.

Each failed check raises one ProvisionError whose hint says what to change. Problems that do
not stop the cluster (a zone that is down, a quota dlvm cannot read) come back as warnings.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.gcp import gpu_network, shapes
from dlvm_cluster.providers.gcp.buckets import check_buckets, check_node_identity
from dlvm_cluster.providers.gcp.config import GcpConfig
from dlvm_cluster.providers.gcp.credentials import REQUEST_TIMEOUT, ComputeClients, call_api
from dlvm_cluster.providers.gcp.identity import IAP_SOURCE_RANGE, firewall_rules_needed
from dlvm_cluster.providers.gcp.orgpolicy import read_policies
from dlvm_cluster.providers.gcp.plan import GcpPlan, ReservedCapacity, gcp_plan
from dlvm_cluster.providers.gcp.reservations import reservation_ref, reservation_zones
from dlvm_cluster.providers.gcp.shape_warnings import shape_warnings
from dlvm_cluster.providers.gcp.tfvars import (
    DLVM_IMAGE_PROJECT,
    ImageRef,
    node_image,
)
from dlvm_cluster.spec.model import ClusterSpec

GLOBAL_GPU_METRIC = "GPUS_ALL_REGIONS"
PREEMPTIBLE_QUOTA_MODELS = frozenset({"spot", "flex-start"})
# CPU quota metrics of the families that have their own; the others count against CPUS.
FAMILY_CPU_METRICS = {
    "a2": "A2_CPUS",
    "a3": "A3_CPUS",
    "c2": "C2_CPUS",
    "c2d": "C2D_CPUS",
    "c3": "C3_CPUS",
    "g2": "G2_CPUS",
    "m1": "M1_CPUS",
    "n2": "N2_CPUS",
    "n2d": "N2D_CPUS",
}
# Boot disk types and the regional quota their size counts against.
DISK_QUOTA_METRICS = {
    "pd-standard": "DISKS_TOTAL_GB",
    "pd-balanced": "SSD_TOTAL_GB",
    "pd-ssd": "SSD_TOTAL_GB",
}
FAMILY_LIST_HINT = (
    "list the families with: gcloud compute images list --project deeplearning-platform-release "
    "--no-standard-images --format='value(family)' | sort -u"
)


@dataclass(frozen=True)
class PreflightReport:
    """What preflight found: the zones worth trying (in the spec's order) and the node shape."""

    zones: tuple[str, ...]
    image: str
    image_disk_gb: int
    gpus_per_node: int
    warnings: tuple[str, ...]
    os_login_required: bool = False  # an organization policy requires OS Login
    # zone -> what the VMs must carry there to consume the named reservation
    reserved: Mapping[str, ReservedCapacity] = field(default_factory=dict)


def spec_warnings(plan: GcpPlan) -> list[str]:
    """Things `plan` and `up` should say loudly, found from the spec alone (no API calls)."""
    provider = plan.config
    warnings = []
    open_ranges = [cidr for cidr in provider.allowed_ssh_cidrs if _is_everywhere(cidr)]
    if open_ranges:
        warnings.append(
            f"SSH is open to the whole internet ({', '.join(open_ranges)} in "
            "provider.allowed_ssh_cidrs): list only your own address ranges"
        )
    machine = plan.shape.machine_type
    if provider.compact_placement and shapes.family(machine) not in (
        shapes.COMPACT_PLACEMENT_FAMILIES
    ):
        warnings.append(
            f"compact placement may not be available for {machine}: dlvm knows it for "
            + ", ".join(shapes.COMPACT_PLACEMENT_FAMILIES)
        )
    image = node_image(plan)
    if shapes.arm(machine) and image.project == DLVM_IMAGE_PROJECT:
        warnings.append(
            f"{machine} has Arm CPUs, but the image ({image.name}) is a Deep Learning VM "
            "family, built for x86: set nodes.image to an Arm64 image"
        )
    if not provider.public_ip and provider.network is not None:
        network = plan.network
        plugin = f"; their boot script downloads the {network.title} NCCL plugin" if network else ""
        warnings.append(
            "public_ip is false on a network dlvm did not make: dlvm adds no Cloud NAT there, so "
            f"the nodes reach the internet only if {provider.network} has one{plugin}"
        )
    if not provider.public_ip and provider.allowed_ssh_cidrs:
        warnings.append(
            "allowed_ssh_cidrs is not used with public_ip: false: SSH comes in through IAP "
            "only, for accounts IAM lets through"
        )
    if not provider.manage_firewall:
        warnings.append(
            "manage_firewall is false: dlvm makes no firewall rules; the network needs these "
            "(ask its administrator): " + "; ".join(firewall_rules_needed(plan))
        )
    warnings.extend(shape_warnings(plan))
    return warnings


def _is_everywhere(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def preflight(
    spec: ClusterSpec,
    clients: ComputeClients,
    *,
    count: int | None = None,
    existing_nodes: int = 0,
) -> PreflightReport:
    """Check `spec` against the live project; `existing_nodes` already hold their GPUs."""
    plan = gcp_plan(spec)
    provider = plan.config
    warnings = spec_warnings(plan)
    project = _get_project(clients, provider)
    if not provider.public_ip:
        check_tunnel_tool()
    policies = read_policies(clients.rest, plan, node_image(plan).project)
    warnings.extend(policies.warnings)
    if not (provider.os_login or policies.os_login_required):
        warnings.extend(_os_login_warnings(project, provider))
    warnings.extend(check_node_identity(clients.rest, plan))
    if spec.storage:
        warnings.extend(check_buckets(clients.rest, plan))
    region = _get_region(clients, provider)
    image = _check_image(clients, plan)
    warnings.extend(_image_warnings(image, plan))
    zones, offer = _offering_zones(
        clients, plan, _usable_zones(clients, provider, region, warnings), region, warnings
    )
    wanted = (spec.nodes.count if count is None else count) - existing_nodes
    reservation = reservation_ref(plan)
    reserved: dict[str, ReservedCapacity] = {}
    if reservation is not None:
        reserved = reservation_zones(clients, plan, reservation, zones, wanted, warnings)
        zones = list(reserved)
    # A reservation took its quota when it was made: the VMs that consume it take none more.
    if wanted > 0 and reservation is None:
        _check_quotas(plan, region, project, offer, wanted, warnings)
    return PreflightReport(
        zones=tuple(zones),
        image=str(image.name),
        image_disk_gb=int(image.disk_size_gb),
        gpus_per_node=offer.gpus,
        warnings=tuple(warnings),
        os_login_required=policies.os_login_required,
        reserved=reserved,
    )


TUNNEL_TOOL = "gcloud"


def check_tunnel_tool() -> str:
    """The Google Cloud CLI, whose `compute start-iap-tunnel` carries SSH to private nodes."""
    found = shutil.which(TUNNEL_TOOL)
    if found is None:
        raise ProvisionError(
            "provider.public_ip is false: dlvm reaches the nodes through IAP TCP forwarding "
            f"with `{TUNNEL_TOOL} compute start-iap-tunnel`, and {TUNNEL_TOOL} is not on PATH",
            hint="install the Google Cloud CLI and log in (gcloud auth login); your account "
            f"needs roles/iap.tunnelResourceAccessor, and SSH is let in from {IAP_SOURCE_RANGE}",
        )
    return found


@dataclass(frozen=True)
class ZoneOffer:
    """What one node of the machine type holds, as the API describes it."""

    gpus: int
    cpus: int


class _NotOfferedHere(ProvisionError):
    """The zone lacks the machine type, the GPU type or the RoCE profile: the zone is skipped
    while another listed zone has them."""


def _offering_zones(
    clients: ComputeClients,
    plan: GcpPlan,
    zones: list[str],
    region: Any,
    warnings: list[str],
) -> tuple[list[str], ZoneOffer]:
    """The zones that offer the nodes' shape (and, for RDMA shapes, have the RoCE profile);
    the others are dropped with a warning, as failover would only fail there. Refused when
    none is left."""
    offering: list[str] = []
    offer = ZoneOffer(0, 0)
    missing: list[_NotOfferedHere] = []
    for zone in zones:
        try:
            offer = _check_zone_offers(clients, plan, region, zone)
            _check_roce_profile(clients, plan, zone)
        except _NotOfferedHere as lacking:
            missing.append(lacking)
            continue
        offering.append(zone)
    if not offering:
        raise missing[0]
    for problem in missing:
        warnings.append(f"{problem.message}: that zone is skipped")
    return offering, offer


def _not_found() -> type[Exception]:
    from google.api_core import exceptions

    result: type[Exception] = exceptions.NotFound
    return result


def _get_project(clients: ComputeClients, provider: GcpConfig) -> Any:
    try:
        return call_api(
            f"project {provider.project}",
            provider.project,
            lambda: clients.projects.get(project=provider.project, timeout=REQUEST_TIMEOUT),
        )
    except _not_found() as exc:
        raise ProvisionError(
            f"project {provider.project!r} does not exist, or your account cannot see it",
            hint="set provider.project to the project ID (not its display name): "
            "gcloud projects list",
        ) from exc


def _get_region(clients: ComputeClients, provider: GcpConfig) -> Any:
    try:
        region = call_api(
            f"region {provider.region}",
            provider.project,
            lambda: clients.regions.get(
                project=provider.project, region=provider.region, timeout=REQUEST_TIMEOUT
            ),
        )
    except _not_found() as exc:
        raise ProvisionError(
            f"region {provider.region!r} does not exist",
            hint="set provider.region to a region such as us-central1: gcloud compute regions list",
        ) from exc
    if region.status != "UP":
        raise ProvisionError(
            f"region {provider.region} is {region.status}",
            hint="use another region, or try again later",
        )
    return region


def _check_image(clients: ComputeClients, plan: GcpPlan) -> Any:
    provider, nodes = plan.config, plan.nodes
    ref = node_image(plan)
    try:
        image = call_api(f"image {ref.path}", provider.project, lambda: _fetch_image(clients, ref))
    except _not_found() as exc:
        what = "image family" if ref.is_family else "image"
        hint = f"list them with: gcloud compute images list --project {ref.project}"
        raise ProvisionError(
            f"{what} {ref.name!r} does not exist in project {ref.project}",
            hint=FAMILY_LIST_HINT if ref.project == DLVM_IMAGE_PROJECT else hint,
        ) from exc
    if _deprecation(image) in ("OBSOLETE", "DELETED"):
        raise ProvisionError(
            f"image {image.name} is {_deprecation(image)}: Compute Engine creates no VMs from it",
            hint=_replacement_advice(image) + "; " + FAMILY_LIST_HINT,
        )
    if nodes.disk_gb < int(image.disk_size_gb):
        raise ProvisionError(
            f"nodes.disk_gb is {nodes.disk_gb} but image {image.name} needs "
            f"{image.disk_size_gb} GB",
            hint=f"set nodes.disk_gb to at least {image.disk_size_gb}",
        )
    return image


def _fetch_image(clients: ComputeClients, ref: ImageRef) -> Any:
    if ref.is_family:
        return clients.images.get_from_family(
            project=ref.project, family=ref.name, timeout=REQUEST_TIMEOUT
        )
    return clients.images.get(project=ref.project, image=ref.name, timeout=REQUEST_TIMEOUT)


def _deprecation(image: Any) -> str:
    """ACTIVE, DEPRECATED, OBSOLETE or DELETED (Image.deprecated.state); "" when not set."""
    return str(image.deprecated.state) if "deprecated" in image else ""


def _replacement_advice(image: Any) -> str:
    """What to use instead of a deprecated image: the successor Google names
    (Image.deprecated.replacement, a URL), as a nodes.image value, or a current family."""
    url = str(image.deprecated.replacement) if "deprecated" in image else ""
    if not url:
        return "set nodes.image to a current family"
    successor = url[url.find("projects/") :] if "projects/" in url else url
    return f"its successor is {successor}: set nodes.image to it, or to a current family"


def _image_warnings(image: Any, plan: GcpPlan) -> list[str]:
    """A deprecated image still boots, an image without gVNIC support may boot without a
    network, and an x86 image on Arm hosts does not boot: all worth saying before the VMs
    exist."""
    warnings = []
    if _deprecation(image) == "DEPRECATED":
        warnings.append(
            f"image {image.name} is DEPRECATED: it gets no more updates and will become "
            f"obsolete (unusable); {_replacement_advice(image)}"
        )
    machine = plan.shape.machine_type
    features = {str(feature.type_) for feature in image.guest_os_features}
    if shapes.arm(machine) and str(image.architecture) != "ARM64":
        warnings.append(
            f"image {image.name} is not an Arm64 image ({image.architecture or 'no architecture'}"
            f"), but {machine} has Arm CPUs: the VMs would not boot; set nodes.image to an Arm64 "
            "image"
        )
    if shapes.gvnic(machine) and "GVNIC" not in features:
        warnings.append(
            f"image {image.name} does not list the GVNIC guest OS feature, but {machine} nodes "
            "get a gVNIC network interface: the VMs may come up without a network; use a Deep "
            "Learning VM image (they support gVNIC) or another image built with GVNIC"
        )
    return warnings


def _os_login_warnings(project: Any, provider: GcpConfig) -> list[str]:
    """The project asks for OS Login, no organization policy requires it, and the spec leaves
    it off: dlvm's ssh-keys metadata and `enable-oslogin: FALSE` on each VM win."""
    metadata = {str(item.key): str(item.value) for item in project.common_instance_metadata.items}
    if metadata.get("enable-oslogin", "").strip().upper() != "TRUE":
        return []
    return [
        f"project {provider.project} sets enable-oslogin=TRUE in its metadata: dlvm turns OS "
        "Login off on its VMs and logs in with a key of its own; set provider.os_login: true "
        "to log in through OS Login instead"
    ]


def _region_zones(region: Any) -> list[str]:
    return [str(url).rsplit("/", 1)[-1] for url in region.zones]


def _usable_zones(
    clients: ComputeClients, provider: GcpConfig, region: Any, warnings: list[str]
) -> list[str]:
    known = _region_zones(region)
    usable = []
    for zone in provider.zones:
        if zone not in known:
            raise ProvisionError(
                f"zone {zone} does not exist in region {provider.region}",
                hint=f"zones of {provider.region}: {', '.join(sorted(known))}",
            )
        status = _zone_status(clients, provider, zone)
        if status == "UP":
            usable.append(zone)
        else:
            warnings.append(f"zone {zone} is {status}: it is skipped")
    if not usable:
        raise ProvisionError(
            f"none of the zones in provider.zones is up ({', '.join(provider.zones)})",
            hint=f"add other zones of {provider.region}: {', '.join(sorted(known))}",
        )
    return usable


def _zone_status(clients: ComputeClients, provider: GcpConfig, zone: str) -> str:
    found = call_api(
        f"zone {zone}",
        provider.project,
        lambda: clients.zones.get(project=provider.project, zone=zone, timeout=REQUEST_TIMEOUT),
    )
    return str(found.status)


def _check_zone_offers(clients: ComputeClients, plan: GcpPlan, region: Any, zone: str) -> ZoneOffer:
    """The machine type and GPUs exist in `zone`; returns what a node holds there."""
    provider, shape = plan.config, plan.shape
    machine = _machine_type(clients, provider, zone, shape.machine_type)
    if machine is None:
        offering = _other_zones(
            region,
            zone,
            lambda z: _machine_type(clients, provider, z, shape.machine_type) is not None,
        )
        raise _NotOfferedHere(
            f"machine type {shape.machine_type} is not offered in zone {zone}",
            hint=_offering_hint(provider, zone, offering, "it"),
        )
    cpus = int(machine.guest_cpus)
    built_in = [
        (str(a.guest_accelerator_type), int(a.guest_accelerator_count))
        for a in machine.accelerators
    ]
    if built_in and not shape.has_gpus:
        kind, n = built_in[0]
        raise ProvisionError(
            f"{shape.machine_type} carries {n} x {kind} (Compute Engine API), but dlvm does "
            f"not know the {shapes.family(shape.machine_type)} family as a GPU family and would "
            "make CPU nodes (no GPU driver, live migration, which GPU VMs cannot do)",
            hint="use a machine type of a family dlvm knows ("
            + ", ".join(prefix.rstrip("-") for prefix in shapes.BUILT_IN_GPU_PREFIXES)
            + ", or n1 with nodes.accelerator), or a dlvm release that knows this family",
        )
    if built_in:
        wanted = plan.nodes.accelerator
        if wanted and (wanted.type, wanted.count) not in built_in:
            kind, n = built_in[0]
            raise ProvisionError(
                f"{shape.machine_type} carries {n} x {kind}, but nodes.accelerator asks for "
                f"{wanted.count} x {wanted.type}",
                hint="remove nodes.accelerator (the machine type decides) or make it match",
            )
        return ZoneOffer(sum(n for _, n in built_in), cpus)
    if not shape.attached:
        return ZoneOffer(0, cpus)
    kind, count = shape.attached[0]
    offered = _accelerators(clients, provider, zone)
    if kind not in offered:
        elsewhere = _other_zones(
            region, zone, lambda z: kind in _accelerators(clients, provider, z)
        )
        here = ", ".join(sorted(offered)) or "none"
        raise _NotOfferedHere(
            f"GPU type {kind} is not offered in zone {zone} (offered there: {here})",
            hint=_offering_hint(provider, zone, elsewhere, kind),
        )
    if count > offered[kind]:
        raise ProvisionError(
            f"{zone} allows at most {offered[kind]} x {kind} per VM; nodes.accelerator.count "
            f"is {count}",
            hint=f"set nodes.accelerator.count to {offered[kind]} or less and add nodes instead",
        )
    return ZoneOffer(count, cpus)


def _check_roce_profile(clients: ComputeClients, plan: GcpPlan, zone: str) -> None:
    """A3 Ultra and A4 RDMA NICs need the zone's RoCE network profile for their VPC; a zone
    without one would fail only once the other networks exist."""
    provider, network = plan.config, plan.network
    if network is None or not network.rdma_nics:
        return
    name = gpu_network.roce_profile(zone)
    try:
        call_api(
            f"network profile {name}",
            provider.project,
            lambda: clients.network_profiles.get(
                project=provider.project, network_profile=name, timeout=REQUEST_TIMEOUT
            ),
        )
    except _not_found():
        raise _NotOfferedHere(
            f"zone {zone} has no RoCE network profile ({name}): the RDMA NICs of "
            f"{plan.shape.machine_type} cannot be attached there",
            hint="list zones that have one with `gcloud compute network-profiles list "
            "--filter=name~vpc-roce` and put them in provider.zones",
        ) from None


def _machine_type(clients: ComputeClients, provider: GcpConfig, zone: str, name: str) -> Any:
    try:
        return call_api(
            f"machine type {name} in {zone}",
            provider.project,
            lambda: clients.machine_types.get(
                project=provider.project, zone=zone, machine_type=name, timeout=REQUEST_TIMEOUT
            ),
        )
    except _not_found():
        return None


def _accelerators(clients: ComputeClients, provider: GcpConfig, zone: str) -> dict[str, int]:
    """GPU types offered in `zone`, with the most of each one VM may have."""
    items = call_api(
        f"GPU types in {zone}",
        provider.project,
        lambda: list(
            clients.accelerator_types.list(
                project=provider.project, zone=zone, timeout=REQUEST_TIMEOUT
            )
        ),
    )
    return {str(item.name): int(item.maximum_cards_per_instance) for item in items}


def _other_zones(region: Any, zone: str, offers: Callable[[str], bool]) -> list[str]:
    return [other for other in sorted(_region_zones(region)) if other != zone and offers(other)]


def _offering_hint(provider: GcpConfig, zone: str, offering: Iterable[str], what: str) -> str:
    zones = list(offering)
    if zones:
        return (
            f"remove {zone} from provider.zones; zones of {provider.region} that offer {what}: "
            + ", ".join(zones)
        )
    return (
        f"no zone of {provider.region} offers {what}: choose another region or type "
        "(gcloud compute accelerator-types list / gcloud compute machine-types list)"
    )


def _check_quotas(
    plan: GcpPlan,
    region: Any,
    project: Any,
    offer: ZoneOffer,
    wanted: int,
    warnings: list[str],
) -> None:
    """The regional quotas `wanted` more nodes take: their GPUs (Spot's and flex-start's
    PREEMPTIBLE_ form) and the all-regions GPU quota, their family's vCPUs, their external
    addresses and their boot disks. New projects often hold a GPU grant but little CPU quota,
    which Compute Engine reports only once the networks exist."""
    provider = plan.config
    regional = {str(q.metric): q for q in region.quotas}
    model = plan.nodes.provisioning_model
    if offer.gpus:
        kind = plan.shape.gpu_type
        metric = _quota_metric(
            shapes.gpu_quota_metric(kind, spot=False) if kind else None, model, regional
        )
        needed = offer.gpus * wanted
        if metric and metric in regional:
            _require(regional[metric], needed, f"in {provider.region}", provider, "GPUs")
        else:
            warnings.append(
                f"cannot check the GPU quota for {kind or 'these GPUs'} in {provider.region} "
                f"(no {metric or 'known'} quota listed): a quota error would show at creation"
            )
        global_quota = {str(q.metric): q for q in project.quotas}.get(GLOBAL_GPU_METRIC)
        if global_quota is not None:
            _require(global_quota, needed, "across all regions", provider, "GPUs")
        else:
            warnings.append(f"cannot check the {GLOBAL_GPU_METRIC} quota of {provider.project}")
    machine = plan.shape.machine_type
    family_metric = FAMILY_CPU_METRICS.get(shapes.family(machine), "CPUS")
    cpu_metric = _quota_metric(family_metric, model, regional)
    if cpu_metric not in regional and cpu_metric != family_metric:
        cpu_metric = family_metric  # no preemptible CPU quota listed: the family's counts
    if offer.cpus and cpu_metric in regional:
        _require(
            regional[cpu_metric], offer.cpus * wanted, f"in {provider.region}", provider, "vCPUs"
        )
    elif offer.cpus:
        warnings.append(
            f"cannot check the vCPU quota of {machine} in {provider.region} (no {cpu_metric} "
            "quota listed): a quota error would show at creation"
        )
    if provider.public_ip and "IN_USE_ADDRESSES" in regional:
        _require(
            regional["IN_USE_ADDRESSES"], wanted, f"in {provider.region}", provider, "addresses"
        )
    disk_type = plan.nodes.disk_type or shapes.default_disk_type(machine)
    disk_metric = DISK_QUOTA_METRICS.get(disk_type)
    if disk_metric in regional:
        _require(
            regional[disk_metric],
            plan.nodes.disk_gb * wanted,
            f"in {provider.region}",
            provider,
            "GB",
        )


def _quota_metric(metric: str | None, model: str, regional: Mapping[str, Any]) -> str | None:
    """The metric the nodes consume: flex-start VMs always take preemptible quota (Google:
    they consume it); Spot VMs take it when the project has some, standard quota otherwise."""
    if metric is None or model not in PREEMPTIBLE_QUOTA_MODELS:
        return metric
    preemptible = f"PREEMPTIBLE_{metric}"
    if model == "flex-start":
        return preemptible
    found = regional.get(preemptible)
    return preemptible if found is not None and found.limit > 0 else metric


def _require(quota: Any, needed: int, where: str, provider: GcpConfig, unit: str) -> None:
    free = float(quota.limit) - float(quota.usage)
    if needed > free:
        raise ProvisionError(
            f"quota {quota.metric} {where} is {quota.limit:g} {unit} with {quota.usage:g} in "
            f"use; this cluster needs {needed} more",
            hint=f"request more {quota.metric} quota at "
            f"https://console.cloud.google.com/iam-admin/quotas?project={provider.project} "
            "(approval can take a while), or use fewer or smaller nodes",
        )
