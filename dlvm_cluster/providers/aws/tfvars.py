"""Spec -> the variables of terraform/aws.

`aws_tfvars` is pure: the same spec, public key and zone always give the same dict, so `dlvm
render` shows exactly what `up` applies. `state_tfvars` adds what lives in the state dir: the
cluster's public key and the zone the cluster already lives in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import node_name
from dlvm_cluster.providers.aws import shapes
from dlvm_cluster.providers.aws.config import (
    AMI_PATTERN,
    ANY_RESERVATION,
    NO_RESERVATION,
    aws_config,
    aws_nodes,
)
from dlvm_cluster.providers.terraformed import zone_in_use
from dlvm_cluster.provision.render import TFVARS
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.state import ClusterState

# The AMI a node boots when the spec names none: the newest "Deep Learning OSS Nvidia Driver
# AMI GPU PyTorch 2.11 (Ubuntu 24.04)", read by Terraform from the public SSM parameter AWS
# keeps pointing at it (the AMI's name less "deep", "learning" and "ami", as the DLAMI guide
# names its parameters). Made for G4dn to P6-B200; it carries the EFA software, aws-ofi-nccl,
# GDRCopy and the AWS CLI, and PyTorch at /opt/pytorch/bin/python.
DEFAULT_IMAGE_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.11-ubuntu-24.04/"
    "latest/ami-id"
)
DEFAULT_VPC_CIDR = "10.72.0.0/16"
DEFAULT_DISK_TYPE = "gp3"
RESOURCE_ADDRESS = "aws_instance.node"
# What the nodes' instances run on: EC2's market for each provisioning.
MARKETS = {"standard": "on-demand", "spot": "spot", "capacity-block": "capacity-block"}


def instance_type(spec: ClusterSpec) -> str:
    return aws_nodes(spec).machine_type or shapes.DEFAULT_INSTANCE_TYPE


def gpus_per_node(spec: ClusterSpec) -> int:
    return shapes.gpus(instance_type(spec))


def reservation_preference(spec: ClusterSpec) -> tuple[str, str]:
    """(capacity_reservation_preference, capacity reservation id) of each instance: `open`
    lets EC2 use any matching open reservation (its default), `none` keeps the instance off
    reservations, an id targets that reservation (a capacity block is always targeted)."""
    nodes = aws_nodes(spec)
    reservation = nodes.reservation
    if reservation in (None, ANY_RESERVATION):
        return ("none" if nodes.provisioning_model == "spot" else "open"), ""
    if reservation == NO_RESERVATION:
        return "none", ""
    return "", reservation


def image(spec: ClusterSpec) -> tuple[str, str]:
    """(AMI id, SSM parameter name): exactly one is set."""
    chosen = aws_nodes(spec).image or DEFAULT_IMAGE_PARAMETER
    if re.fullmatch(AMI_PATTERN, chosen):
        return chosen, ""
    return "", chosen


def placement_group(spec: ClusterSpec) -> bool:
    """A cluster placement group for types with EFA: their fabric is only as fast as the
    distance between the instances. Not with a capacity reservation, whose instances are
    placed where the reservation is (a capacity block is placed close together already)."""
    return (
        shapes.efa_interfaces(instance_type(spec)) > 0
        and spec.nodes.count > 1
        and reservation_preference(spec)[1] == ""
    )


def instance_name(cluster: str, node: str) -> str:
    """The Name tag of a node's instance."""
    return f"{cluster}-{node}"


def instance_address(node: str) -> str:
    """The Terraform address of a node's instance, for `terraform apply -replace=...`."""
    return f'{RESOURCE_ADDRESS}["{node}"]'


def aws_tfvars(
    spec: ClusterSpec,
    *,
    public_key: str,
    zone: str | None = None,
    count: int | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The tfvars for `spec` in `zone` (default: the first of provider.zones)."""
    provider = aws_config(spec)
    nodes = aws_nodes(spec)
    chosen_zone = zone or provider.zones[0]
    if chosen_zone not in provider.zones:
        raise ProvisionError(
            f"zone {chosen_zone} is not in provider.zones",
            hint="zones: " + ", ".join(provider.zones),
        )
    if names is None:
        names = [node_name(rank) for rank in range(nodes.count if count is None else count)]
    kind = instance_type(spec)
    preference, reservation_id = reservation_preference(spec)
    ami, parameter = image(spec)
    efa = shapes.efa_interfaces(kind)
    return {
        "cluster_name": spec.name,
        "region": provider.region,
        "zone": chosen_zone,
        "profile": provider.profile or "",
        "nodes": {name: {"rank": rank} for rank, name in enumerate(names)},
        "instance_type": kind,
        "ami": ami,
        "ami_parameter": parameter,
        "disk_gb": nodes.disk_gb,
        "disk_type": nodes.disk_type or DEFAULT_DISK_TYPE,
        "market": MARKETS[nodes.provisioning_model],
        "reservation_preference": preference,
        "reservation_id": reservation_id,
        "efa_interfaces": [
            {"network_card": slot.network_card, "device_index": slot.device_index}
            for slot in shapes.efa_layout(efa)
        ],
        "placement_group": placement_group(spec),
        "public_ip": provider.public_ip,
        "allowed_ssh_cidrs": list(provider.allowed_ssh_cidrs),
        "vpc_id": provider.vpc or "",
        "subnet_id": provider.subnet or "",
        "vpc_cidr": DEFAULT_VPC_CIDR,
        "ssh_user": provider.ssh_user,
        "ssh_public_key": public_key,
        "self_delete": spec.autostop is not None and spec.autostop.action == "down",
        "buckets": buckets(spec),
    }


def buckets(spec: ClusterSpec) -> dict[str, dict[str, bool]]:
    """The S3 buckets the nodes' role may reach: writable where any mount of it is."""
    found: dict[str, dict[str, bool]] = {}
    for entry in spec.storage:
        writable = found.get(entry.bucket_name, {}).get("writable", False)
        found[entry.bucket_name] = {"writable": writable or not entry.read_only}
    return dict(sorted(found.items()))


def state_tfvars(
    spec: ClusterSpec, state: ClusterState, zone: str | None = None, count: int | None = None
) -> dict[str, Any]:
    """`aws_tfvars` with the cluster's public key and current zone read from its state dir."""
    public_path = state.key_path.with_suffix(".pub")
    public_key = public_path.read_text().strip() if public_path.exists() else ""
    chosen = zone or zone_in_use(state.terraform_dir / TFVARS, aws_config(spec).zones)
    return aws_tfvars(spec, public_key=public_key, zone=chosen, count=count)
