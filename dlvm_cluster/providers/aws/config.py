"""The `aws` provider's part of the cluster file: `provider: {kind: aws, ...}`, and which
`nodes` keys mean something on EC2.

Key names follow the gcp provider's where the meaning is the same (region, zones,
allowed_ssh_cidrs, public_ip, provisioning, reservation, disk_gb, disk_type, image); the
`nodes` keys that only Compute Engine has are refused for aws by rules.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# An EC2 region (us-east-1, ap-southeast-2, us-gov-west-1) and its Availability Zones
# (us-east-1a; Local Zones such as us-east-1-dfw-2a are named after their parent region too).
REGION_PATTERN = r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d"
VPC_PATTERN = r"vpc-[0-9a-f]{8,17}"
SUBNET_PATTERN = r"subnet-[0-9a-f]{8,17}"
# A named profile of the AWS config and credentials files: what the CLI's --profile takes.
PROFILE_PATTERN = r"[A-Za-z0-9_.@+=,-]{1,64}"
# The default user of Ubuntu AMIs (the Deep Learning AMIs dlvm defaults to are Ubuntu).
DEFAULT_SSH_USER = "ubuntu"

# The `nodes` values that mean something on EC2.
AWS_PROVISIONING = ("standard", "spot", "capacity-block")
# An On-Demand Capacity Reservation or a Capacity Block (both are capacity reservations).
CAPACITY_RESERVATION_PATTERN = r"cr-[0-9a-f]{8,17}"
# A boot image: an AMI id, or the name of an SSM parameter holding one (AWS publishes the Deep
# Learning AMIs' ids as public parameters under /aws/service/deeplearning/ami/...).
AMI_PATTERN = r"ami-[0-9a-f]{8,17}"
SSM_PARAMETER_PATTERN = r"(/[A-Za-z0-9_.-]+)+"
# EBS volume types a root volume can be.
DISK_TYPES = ("gp3", "gp2", "io1", "io2")


def _fullmatch(pattern: str, what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


class AwsProvider(BaseModel):
    """EC2 instances in one region; `zones` is the order in which Availability Zones are
    tried (a cluster lives in one: EFA and cluster placement groups do not span zones)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    kind: Literal["aws"]
    region: Annotated[str, _fullmatch(REGION_PATTERN, "an AWS region like us-east-1")]
    zones: list[str] = Field(min_length=1)
    allowed_ssh_cidrs: list[str] = Field(min_length=1)
    public_ip: bool = True
    # An existing VPC and subnet; None: dlvm makes a VPC for the cluster.
    vpc: Annotated[str, _fullmatch(VPC_PATTERN, "a VPC id like vpc-0a1b2c3d")] | None = None
    subnet: (
        Annotated[str, _fullmatch(SUBNET_PATTERN, "a subnet id like subnet-0a1b2c3d")] | None
    ) = None
    # A named profile of ~/.aws/config; None: the SDK's default chain (AWS_PROFILE, env, SSO...).
    profile: (
        Annotated[str, _fullmatch(PROFILE_PATTERN, "a profile name of your AWS config")] | None
    ) = None
    ssh_user: str = Field(
        default=DEFAULT_SSH_USER, pattern=r"^[a-z_][a-z0-9_-]*$", max_length=32
    )
