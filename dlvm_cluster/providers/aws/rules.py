"""What EC2 would refuse later, caught while the cluster file's positions are known: checks
that span several keys of an aws cluster file, as (field path, message) for the loader."""

from __future__ import annotations

import functools
import re

from dlvm_cluster.providers.aws import shapes
from dlvm_cluster.providers.aws.config import (
    AMI_PATTERN,
    ANY_RESERVATION,
    CAPACITY_RESERVATION_PATTERN,
    NO_RESERVATION,
    SSM_PARAMETER_PATTERN,
    AwsConfig,
    AwsNodes,
)
from dlvm_cluster.spec.model import ClusterSpec
from dlvm_cluster.spec.rules import bucket_scheme_problems, spot_problems, ssh_range_problems

Problem = tuple[tuple[str | int, ...], str]
# An S3 general purpose bucket's name: 3 to 63 lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit.
S3_BUCKET_NAME = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


@functools.cache
def ec2_instance_types() -> frozenset[str]:
    """Every instance type the EC2 API knows, from the SDK's own model of it (botocore's
    InstanceType enum), so a misspelt type fails at load, not at apply."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    return frozenset(model.shape_for("InstanceType").enum)


def _zone_problems(provider: AwsConfig) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, zone in enumerate(provider.zones):
        where: tuple[str | int, ...] = ("provider", "zones", index)
        if not re.fullmatch(rf"{re.escape(provider.region)}(-[a-z0-9]+-\d+)?[a-z]", zone):
            problems.append((where, f"{zone} is not an Availability Zone of {provider.region}"))
        elif zone in seen:
            problems.append((where, f"{zone} is listed twice"))
        seen.add(zone)
    return problems


def _network_problems(provider: AwsConfig) -> list[Problem]:
    problems: list[Problem] = []
    problems.extend(ssh_range_problems(provider.allowed_ssh_cidrs))
    if (provider.vpc is None) != (provider.subnet is None):
        missing = "subnet" if provider.subnet is None else "vpc"
        problems.append(
            (
                ("provider", missing),
                "give both provider.vpc and provider.subnet (a subnet of that VPC), or neither "
                "for a VPC made for the cluster",
            )
        )
    if provider.subnet is not None and len(provider.zones) > 1:
        problems.append(
            (
                ("provider", "zones"),
                "a subnet lives in one Availability Zone: list only the subnet's zone",
            )
        )
    return problems


def _node_problems(spec: ClusterSpec, nodes: AwsNodes) -> list[Problem]:
    problems: list[Problem] = []
    if nodes.accelerator is not None:
        problems.append(
            (
                ("nodes", "accelerator"),
                "EC2 instance types carry their GPUs: remove nodes.accelerator and name the "
                "type in nodes.machine_type (g6.xlarge, p5.48xlarge, ...)",
            )
        )
    if nodes.machine_type is not None and nodes.machine_type not in ec2_instance_types():
        problems.append(
            (
                ("nodes", "machine_type"),
                f"{nodes.machine_type!r} is not an EC2 instance type (like g6.xlarge or "
                "p5.48xlarge)",
            )
        )
    if nodes.image is not None and not (
        re.fullmatch(AMI_PATTERN, nodes.image) or re.fullmatch(SSM_PARAMETER_PATTERN, nodes.image)
    ):
        problems.append(
            (
                ("nodes", "image"),
                "must be an AMI id (ami-0123456789abcdef0) or the name of an SSM parameter "
                "holding one (/aws/service/deeplearning/ami/x86_64/.../latest/ami-id)",
            )
        )
    problems += spot_problems("spot" in nodes.model_fields_set, nodes.spot, nodes.provisioning)
    problems.extend(_capacity_problems(spec, nodes))
    return problems


def _capacity_problems(spec: ClusterSpec, nodes: AwsNodes) -> list[Problem]:
    """Spot, reservations and Capacity Blocks that contradict each other or EC2."""
    model = nodes.provisioning_model
    named = nodes.reservation is not None and re.fullmatch(
        CAPACITY_RESERVATION_PATTERN, nodes.reservation
    )
    field = ("nodes", "provisioning" if nodes.provisioning else "spot")
    problems: list[Problem] = []
    if model == "spot" and named:
        problems.append(
            (
                ("nodes", "reservation"),
                "Spot instances cannot launch into a capacity reservation: remove "
                "nodes.reservation, or use provisioning: standard to run on the reserved "
                "capacity",
            )
        )
    if model == "capacity-block" and not named:
        problems.append(
            (
                ("nodes", "reservation" if nodes.reservation else "provisioning"),
                "capacity-block needs nodes.reservation: the id of the Capacity Block "
                f"(cr-...), not {nodes.reservation or 'none'!r}",
            )
        )
    kind = nodes.machine_type or shapes.DEFAULT_INSTANCE_TYPE
    known = shapes.shape(kind)
    if model == "capacity-block" and known is not None and not known.capacity_blocks:
        problems.append(
            (
                ("nodes", "machine_type"),
                f"Capacity Blocks are not sold for {kind}: use a P type (p4d, p5, p5e, p5en, "
                "p6-b200) or another provisioning",
            )
        )
    if model == "spot" and spec.autostop is not None and spec.autostop.action == "stop":
        problems.append(
            (
                ("autostop", "action") if "action" in spec.autostop.model_fields_set else field,
                "Spot instances cannot be stopped, only terminated (their disks with them): "
                "set autostop.action to down, or use provisioning: standard",
            )
        )
    if model == "spot" and nodes.reservation == ANY_RESERVATION:
        problems.append(
            (
                ("nodes", "reservation"),
                f"Spot instances use no reservation: remove nodes.reservation or set it to "
                f"{NO_RESERVATION}",
            )
        )
    return problems


def _storage_problems(spec: ClusterSpec) -> list[Problem]:
    problems = bucket_scheme_problems(spec, "s3", "S3")
    for index, entry in enumerate(spec.storage):
        if not entry.bucket.startswith("s3://"):
            continue
        if not re.fullmatch(S3_BUCKET_NAME, entry.bucket_name) or ".." in entry.bucket_name:
            problems.append(
                (
                    ("storage", index, "bucket"),
                    f"{entry.bucket_name!r} is not an S3 bucket name (3 to 63 lowercase "
                    "letters, digits, dots and hyphens, starting and ending with a letter or "
                    "digit)",
                )
            )
    return problems


def aws_rules(spec: ClusterSpec) -> list[Problem]:
    """The aws kind's load-time rules (its registry entry hands them to the loader)."""
    provider, nodes = spec.provider, spec.nodes
    if not isinstance(provider, AwsConfig) or not isinstance(nodes, AwsNodes):
        return []
    return [
        *_zone_problems(provider),
        *_network_problems(provider),
        *_node_problems(spec, nodes),
        *_storage_problems(spec),
    ]
