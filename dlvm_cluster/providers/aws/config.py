"""The keys of an aws cluster file: `provider:` (AwsConfig) and the `nodes:` keys EC2 takes
(AwsNodes), with the values EC2 accepts for them. Registered with the loader by
providers/aws/kind.py; the rules that span several keys are in rules.py.

Key names follow the gcp provider's where the meaning is the same (region, zones,
allowed_ssh_cidrs, public_ip, machine_type, spot, provisioning, reservation, disk_gb,
disk_type, image).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.spec.model import ClusterSpec, Nodes, ProviderConfig, WholeNumber

# An EC2 region (us-east-1, ap-southeast-2, us-gov-west-1).
REGION_PATTERN = r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d"
VPC_PATTERN = r"vpc-[0-9a-f]{8,17}"
SUBNET_PATTERN = r"subnet-[0-9a-f]{8,17}"
# A named profile of the AWS config and credentials files: what the CLI's --profile takes.
PROFILE_PATTERN = r"[A-Za-z0-9_.@+=,-]{1,64}"
# The default user of Ubuntu AMIs (the Deep Learning AMIs dlvm defaults to are Ubuntu).
DEFAULT_SSH_USER = "ubuntu"
# How EC2 provides each instance: On-Demand, Spot (one-time requests, ended on interruption),
# or in a Capacity Block for ML (GPU capacity bought ahead for a fixed window).
Provisioning = Literal["standard", "spot", "capacity-block"]
ANY_RESERVATION = "any"
NO_RESERVATION = "none"
# An On-Demand Capacity Reservation or a Capacity Block (both are capacity reservations).
CAPACITY_RESERVATION_PATTERN = r"cr-[0-9a-f]{8,17}"
# A boot image: an AMI id, or the name of an SSM parameter holding one (AWS publishes the Deep
# Learning AMIs' ids as public parameters under /aws/service/deeplearning/ami/...).
AMI_PATTERN = r"ami-[0-9a-f]{8,17}"
SSM_PARAMETER_PATTERN = r"(/[A-Za-z0-9_.-]+)+"
# EBS volume types a root volume can be.
DiskType = Literal["gp3", "gp2", "io1", "io2"]


def _matching(pattern: str, what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


def _reservation(value: str) -> str:
    if value not in (ANY_RESERVATION, NO_RESERVATION) and not re.fullmatch(
        CAPACITY_RESERVATION_PATTERN, value
    ):
        raise ValueError(
            "must be a capacity reservation's id (cr-0123456789abcdef0: an On-Demand Capacity "
            f"Reservation or a Capacity Block), {ANY_RESERVATION!r} (any open one that "
            f"matches) or {NO_RESERVATION!r}"
        )
    return value


class AwsConfig(ProviderConfig):
    """EC2 instances in one region; `zones` is the order in which Availability Zones are
    tried (a cluster lives in one: EFA and cluster placement groups do not span zones)."""

    kind: Literal["aws"]
    region: Annotated[str, _matching(REGION_PATTERN, "an AWS region like us-east-1")]
    zones: list[str] = Field(min_length=1)
    allowed_ssh_cidrs: list[str] = Field(min_length=1)
    public_ip: bool = True
    # An existing VPC and a subnet of it; None: dlvm makes a VPC for the cluster.
    vpc: Annotated[str, _matching(VPC_PATTERN, "a VPC id like vpc-0a1b2c3d")] | None = None
    subnet: Annotated[str, _matching(SUBNET_PATTERN, "a subnet id like subnet-0a1b2c3d")] | None = (
        None
    )
    # A named profile of ~/.aws/config; None: the SDK's default chain (AWS_PROFILE, env, SSO).
    profile: (
        Annotated[str, _matching(PROFILE_PATTERN, "a profile name of your AWS config")] | None
    ) = None
    ssh_user: str = Field(default=DEFAULT_SSH_USER, pattern=r"^[a-z_][a-z0-9_-]*$", max_length=32)


class AwsNodes(Nodes):
    """The nodes of an aws cluster: the generic keys, the instance type and how EC2 provides
    it."""

    machine_type: str | None = None  # an EC2 instance type; None: g6.xlarge
    spot: bool = False  # the same as provisioning: spot
    provisioning: Provisioning | None = None  # None: spot if `spot`, else standard
    reservation: Annotated[str, AfterValidator(_reservation)] | None = None
    disk_gb: WholeNumber = Field(default=200, ge=8, le=65536)
    image: str | None = None  # an AMI id or an SSM parameter holding one
    disk_type: DiskType | None = None  # gp3 unless given

    @property
    def provisioning_model(self) -> Provisioning:
        """The provisioning the nodes get: `provisioning`, else `spot: true` as its synonym."""
        if self.provisioning is not None:
            return self.provisioning
        return "spot" if self.spot else "standard"


def aws_config(spec: ClusterSpec) -> AwsConfig:
    """The `provider:` of an aws cluster's spec."""
    if not isinstance(spec.provider, AwsConfig):
        raise ProvisionError(f"cluster {spec.name!r} does not use the aws provider")
    return spec.provider


def aws_nodes(spec: ClusterSpec) -> AwsNodes:
    """The `nodes:` of an aws cluster's spec."""
    if not isinstance(spec.nodes, AwsNodes):
        raise ProvisionError(f"cluster {spec.name!r} does not use the aws provider")
    return spec.nodes
