"""What `up` checks against the AWS APIs before Terraform creates anything: credentials, the
zones, the instance type (offered where, with how many EFA interfaces), the capacity
reservation or Capacity Block (its zone, state, start and end), the vCPU quota, the AMI, the
subnet and the buckets. A problem stops `up` in seconds with what to do, instead of minutes
into an apply with half a VPC made.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.aws import shapes
from dlvm_cluster.providers.aws.api import AwsClients, call, error_code
from dlvm_cluster.providers.aws.config import aws_config, aws_nodes
from dlvm_cluster.providers.aws.tfvars import image, instance_type, reservation_preference
from dlvm_cluster.spec.model import ClusterSpec

QUOTA_HINT = (
    "ask for more in the Service Quotas console (Amazon EC2, quota {code}: {name}), or use "
    "fewer or smaller nodes"
)
# Capacity reservation states in which instances can launch into it now, and soon.
ACTIVE = "active"
UPCOMING = ("scheduled", "pending", "payment-pending", "assessing")


@dataclass(frozen=True)
class ReservedCapacity:
    """A capacity reservation the nodes launch into, as EC2 describes it."""

    reservation_id: str
    capacity_block: bool  # ReservationType capacity-block, else an On-Demand one
    zone: str
    state: str
    start: datetime | None
    end: datetime | None
    total: int
    available: int

    def ends_line(self) -> str:
        """When the capacity ends, as `plan` and `status` say it."""
        what = "Capacity Block" if self.capacity_block else "capacity reservation"
        if self.end is None:
            return f"{what} {self.reservation_id} in {self.zone}: no end date"
        left = self.end - datetime.now(UTC)
        hours = left.total_seconds() / 3600
        when = f"in {hours:.1f}h" if hours > 0 else "already"
        return (
            f"{what} {self.reservation_id} in {self.zone} ends {self.end:%Y-%m-%d %H:%M} UTC "
            f"({when}); EC2 ends its instances then"
        )


@dataclass(frozen=True)
class InstanceFacts:
    """One instance type as DescribeInstanceTypes gives it."""

    vcpus: int
    gpus: int
    efa_interfaces: int
    usage_classes: tuple[str, ...]
    architectures: tuple[str, ...]


@dataclass
class PreflightReport:
    zones: list[str]  # the zones to try, in the spec's order
    gpus_per_node: int
    reserved: ReservedCapacity | None = None
    warnings: list[str] = field(default_factory=list)


def instance_facts(clients: AwsClients, kind: str) -> InstanceFacts:
    try:
        answer = call(
            "describing the instance type",
            lambda: clients.ec2.describe_instance_types(InstanceTypes=[kind]),
        )
    except Exception as exc:
        if error_code(exc) == "InvalidInstanceType":
            raise ProvisionError(
                f"EC2 in {clients.region} has no instance type {kind}",
                hint="pick a type this region offers (nodes.machine_type)",
            ) from exc
        raise
    (item,) = answer["InstanceTypes"]
    network = item.get("NetworkInfo", {})
    gpus = sum(int(gpu.get("Count", 0)) for gpu in item.get("GpuInfo", {}).get("Gpus", []))
    return InstanceFacts(
        vcpus=int(item["VCpuInfo"]["DefaultVCpus"]),
        gpus=gpus,
        efa_interfaces=int((network.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0)),
        usage_classes=tuple(item.get("SupportedUsageClasses", [])),
        architectures=tuple(item.get("ProcessorInfo", {}).get("SupportedArchitectures", [])),
    )


def offered_zones(clients: AwsClients, kind: str, zones: Sequence[str]) -> list[str]:
    """Those of `zones` where EC2 offers `kind`, in their order."""
    answer = call(
        "listing where the instance type is offered",
        lambda: clients.ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[
                {"Name": "instance-type", "Values": [kind]},
                {"Name": "location", "Values": list(zones)},
            ],
        ),
    )
    offered = {item["Location"] for item in answer.get("InstanceTypeOfferings", [])}
    return [zone for zone in zones if zone in offered]


def check_zones(clients: AwsClients, zones: Sequence[str]) -> None:
    try:
        answer = call(
            "describing the zones",
            lambda: clients.ec2.describe_availability_zones(ZoneNames=list(zones)),
        )
    except Exception as exc:
        if error_code(exc) == "InvalidParameterValue":
            raise ProvisionError(
                f"{clients.region} does not have all of the zones {', '.join(zones)}",
                hint="list zones of provider.region (aws ec2 describe-availability-zones)",
            ) from exc
        raise
    down = [
        str(item["ZoneName"])
        for item in answer.get("AvailabilityZones", [])
        if item.get("State") != "available"
    ]
    if down:
        raise ProvisionError(
            f"zone {', '.join(down)} is not available now", hint="remove it from provider.zones"
        )


def reserved_capacity(clients: AwsClients, reservation_id: str) -> tuple[ReservedCapacity, str]:
    """The capacity reservation or Capacity Block `reservation_id`, as EC2 describes it, and
    the instance type it holds."""
    try:
        answer = call(
            "describing the capacity reservation",
            lambda: clients.ec2.describe_capacity_reservations(
                CapacityReservationIds=[reservation_id]
            ),
        )
    except Exception as exc:
        if error_code(exc) in (
            "InvalidCapacityReservationId.NotFound",
            "InvalidCapacityReservationId.Malformed",
        ):
            raise ProvisionError(
                f"no capacity reservation {reservation_id} in {clients.region}",
                hint="check nodes.reservation and provider.region (the reservation's region)",
            ) from exc
        raise
    (item,) = answer["CapacityReservations"]
    return ReservedCapacity(
        reservation_id=reservation_id,
        capacity_block=item.get("ReservationType") == "capacity-block",
        zone=str(item["AvailabilityZone"]),
        state=str(item.get("State", "")),
        start=item.get("StartDate"),
        end=item.get("EndDate"),
        total=int(item.get("TotalInstanceCount", 0)),
        available=int(item.get("AvailableInstanceCount", 0)),
    ), str(item.get("InstanceType", ""))


def _reservation_problems(
    spec: ClusterSpec, reserved: ReservedCapacity, reserved_type: str, new_nodes: int
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of launching the spec's nodes into `reserved`."""
    nodes = aws_nodes(spec)
    kind = instance_type(spec)
    errors: list[str] = []
    warnings: list[str] = []
    wants_block = nodes.provisioning_model == "capacity-block"
    if wants_block and not reserved.capacity_block:
        errors.append(
            f"{reserved.reservation_id} is an On-Demand Capacity Reservation, not a Capacity "
            "Block: use provisioning: standard with it"
        )
    if reserved.capacity_block and not wants_block:
        errors.append(
            f"{reserved.reservation_id} is a Capacity Block: set nodes.provisioning to "
            "capacity-block"
        )
    if reserved_type and reserved_type != kind:
        errors.append(f"{reserved.reservation_id} holds {reserved_type}, not {kind}")
    if reserved.zone not in aws_config(spec).zones:
        errors.append(
            f"{reserved.reservation_id} is in {reserved.zone}, which provider.zones does not list"
        )
    if reserved.state in UPCOMING:
        start = f" at {reserved.start:%Y-%m-%d %H:%M} UTC" if reserved.start else ""
        errors.append(f"{reserved.reservation_id} has not started yet ({reserved.state}){start}")
    elif reserved.state != ACTIVE:
        errors.append(f"{reserved.reservation_id} is {reserved.state}: nothing can launch into it")
    if nodes.count > reserved.total:
        errors.append(
            f"{reserved.reservation_id} holds {reserved.total} instances; nodes.count is "
            f"{nodes.count}"
        )
    elif new_nodes > reserved.available:
        warnings.append(
            f"{reserved.reservation_id} has {reserved.available} instances free for "
            f"{new_nodes} new nodes (others of yours use it)"
        )
    return errors, warnings


# Instances that count against the On-Demand vCPU quotas: any but Spot's and those of a
# Capacity Block (paid up front, outside the quotas).
_NOT_ON_DEMAND = ("spot", "capacity-block")


def running_vcpus(
    clients: AwsClients, quota_class: str, spot: bool, cluster: str, known: dict[str, int]
) -> int:
    """The vCPUs the region's running instances already count against one quota (the class
    `quota_class`, Spot or On-Demand), this cluster's own instances left out (the caller
    counts them at their new size): each type's default vCPUs, as the quotas count them
    (`known`: type -> vCPUs already read)."""
    paginator = clients.ec2.get_paginator("describe_instances")
    pages = call(
        "listing the running instances for the vCPU quota",
        lambda: list(
            paginator.paginate(
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
            )
        ),
    )
    counted: dict[str, int] = {}
    for page in pages:
        for reservation in page.get("Reservations", []):
            for item in reservation.get("Instances", []):
                tags = {tag["Key"]: tag["Value"] for tag in item.get("Tags", [])}
                lifecycle = item.get("InstanceLifecycle", "")
                is_spot = lifecycle == "spot"
                counts = is_spot if spot else lifecycle not in _NOT_ON_DEMAND
                kind = str(item.get("InstanceType", ""))
                if tags.get("dlvm-cluster") == cluster or not counts:
                    continue
                if shapes.quota_class(kind) == quota_class:
                    counted[kind] = counted.get(kind, 0) + 1
    vcpus = dict(known)
    unknown = sorted(kind for kind in counted if kind not in vcpus)
    for start in range(0, len(unknown), 100):  # DescribeInstanceTypes takes 100 at a time
        chunk = unknown[start : start + 100]
        answer = call(
            "describing the running instance types",
            functools.partial(clients.ec2.describe_instance_types, InstanceTypes=chunk),
        )
        for item in answer.get("InstanceTypes", []):
            vcpus[str(item["InstanceType"])] = int(item["VCpuInfo"]["DefaultVCpus"])
    return sum(vcpus.get(kind, 0) * count for kind, count in counted.items())


def check_quota(clients: AwsClients, spec: ClusterSpec, facts: InstanceFacts) -> list[str]:
    """Warnings; raises when the cluster's nodes with the instances already running in the
    region need more vCPUs than the family's quota. Instances in a reservation or Capacity
    Block are not checked: the reservation holds their capacity."""
    nodes = aws_nodes(spec)
    kind = instance_type(spec)
    if nodes.provisioning_model == "capacity-block" or reservation_preference(spec)[1]:
        return []
    quota_class = shapes.quota_class(kind)
    if quota_class is None:
        return [f"dlvm does not know which vCPU quota {kind} counts against; not checked"]
    spot = nodes.provisioning_model == "spot"
    code, name = (shapes.SPOT_QUOTAS if spot else shapes.ON_DEMAND_QUOTAS)[quota_class]
    try:
        answer = call(
            "reading the vCPU quota",
            lambda: clients.quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code),
        )
    except Exception as exc:
        if error_code(exc) in ("NoSuchResourceException", "ServiceException"):
            return [f"could not read quota {code} ({name}); not checked"]
        raise
    limit = float(answer["Quota"]["Value"])
    others = running_vcpus(clients, quota_class, spot, spec.name, {kind: facts.vcpus})
    needed = facts.vcpus * nodes.count
    if others + needed > limit:
        running = f", and {others} already run in {clients.region}" if others else ""
        raise ProvisionError(
            f"{nodes.count} x {kind} need {needed} vCPUs{running}; your quota {name} allows "
            f"{limit:.0f} in {clients.region}",
            hint=QUOTA_HINT.format(code=code, name=name),
        )
    return []


def check_image(clients: AwsClients, spec: ClusterSpec, facts: InstanceFacts) -> None:
    ami, parameter = image(spec)
    if parameter:
        try:
            answer = call(
                "reading the AMI parameter", lambda: clients.ssm.get_parameter(Name=parameter)
            )
        except Exception as exc:
            if error_code(exc) in ("ParameterNotFound", "ValidationException"):
                raise ProvisionError(
                    f"no SSM parameter {parameter} in {clients.region}",
                    hint="name a Deep Learning AMI parameter that exists (see the DLAMI release "
                    "notes) or an AMI id in nodes.image",
                ) from exc
            raise
        ami = str(answer["Parameter"]["Value"])
    try:
        found = call("describing the AMI", lambda: clients.ec2.describe_images(ImageIds=[ami]))
    except Exception as exc:
        if error_code(exc).startswith("InvalidAMIID"):
            raise ProvisionError(
                f"no AMI {ami} in {clients.region}", hint="check nodes.image and provider.region"
            ) from exc
        raise
    images = found.get("Images", [])
    if not images:
        raise ProvisionError(f"no AMI {ami} in {clients.region}", hint="check nodes.image")
    architecture = images[0].get("Architecture")
    if architecture and facts.architectures and architecture not in facts.architectures:
        raise ProvisionError(
            f"AMI {ami} is for {architecture}; {instance_type(spec)} runs "
            f"{', '.join(facts.architectures)}",
            hint="pick an AMI of the instance type's architecture",
        )


def check_subnet(clients: AwsClients, spec: ClusterSpec) -> None:
    provider = aws_config(spec)
    if provider.subnet is None:
        return
    try:
        answer = call(
            "describing the subnet",
            lambda: clients.ec2.describe_subnets(SubnetIds=[provider.subnet]),
        )
    except Exception as exc:
        if error_code(exc).startswith("InvalidSubnetID"):
            raise ProvisionError(
                f"no subnet {provider.subnet} in {clients.region}", hint="check provider.subnet"
            ) from exc
        raise
    (subnet,) = answer["Subnets"]
    if subnet["VpcId"] != provider.vpc:
        raise ProvisionError(
            f"subnet {provider.subnet} is in {subnet['VpcId']}, not {provider.vpc}",
            hint="give the subnet's own VPC as provider.vpc",
        )
    if subnet["AvailabilityZone"] not in provider.zones:
        raise ProvisionError(
            f"subnet {provider.subnet} is in {subnet['AvailabilityZone']}, which "
            "provider.zones does not list",
            hint=f"set provider.zones to [{subnet['AvailabilityZone']}]",
        )


def check_buckets(clients: AwsClients, spec: ClusterSpec) -> list[str]:
    """Each bucket exists (raises when one does not); warnings for those this identity cannot
    see into (the nodes' role is given access by the module, a bucket policy may still deny)."""
    warnings = []
    for entry in spec.storage:
        bucket = entry.bucket_name
        try:
            call(
                f"reading bucket {bucket}", functools.partial(clients.s3.head_bucket, Bucket=bucket)
            )
        except ProvisionError:
            warnings.append(
                f"cannot check s3://{bucket} with your credentials; the nodes' role is given "
                "access to it, unless a bucket policy denies it"
            )
        except Exception as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ProvisionError(
                    f"no S3 bucket {bucket}",
                    hint="create it (aws s3 mb s3://BUCKET) or fix storage[].bucket",
                ) from exc
            if code in ("403", "Forbidden"):
                warnings.append(
                    f"s3://{bucket} belongs to another account or denies your credentials; "
                    "its policy must allow the nodes' role"
                )
            else:
                raise
    return warnings


def preflight(
    spec: ClusterSpec, clients: AwsClients, *, existing_nodes: int = 0
) -> PreflightReport:
    """Check what can be checked before `up` applies; the zones to try, in order."""
    provider = aws_config(spec)
    nodes = aws_nodes(spec)
    kind = instance_type(spec)
    call("checking the credentials", lambda: clients.sts.get_caller_identity())
    check_zones(clients, provider.zones)
    facts = instance_facts(clients, kind)
    warnings: list[str] = []
    planned = shapes.efa_interfaces(kind)
    if planned > facts.efa_interfaces:
        raise ProvisionError(
            f"{kind} takes {facts.efa_interfaces} EFA interfaces; dlvm would attach {planned}",
            hint="this dlvm's table of instance types is out of date for this type",
        )
    if facts.efa_interfaces > planned:
        warnings.append(
            f"{kind} takes {facts.efa_interfaces} EFA interfaces; dlvm attaches {planned}"
        )
    usage = {"standard": "on-demand", "spot": "spot", "capacity-block": "capacity-block"}
    wanted = usage[nodes.provisioning_model]
    if facts.usage_classes and wanted not in facts.usage_classes:
        raise ProvisionError(
            f"{kind} is not sold as {wanted} (EC2 offers it as {', '.join(facts.usage_classes)})",
            hint="change nodes.provisioning or nodes.machine_type",
        )
    zones = offered_zones(clients, kind, provider.zones)
    if not zones:
        raise ProvisionError(
            f"{kind} is not offered in {', '.join(provider.zones)}",
            hint=f"list zones of {provider.region} that have it (aws ec2 "
            "describe-instance-type-offerings --location-type availability-zone)",
        )
    reserved = None
    reservation_id = reservation_preference(spec)[1]
    new_nodes = max(0, nodes.count - existing_nodes)
    if reservation_id:
        reserved, reserved_type = reserved_capacity(clients, reservation_id)
        errors, more = _reservation_problems(spec, reserved, reserved_type, new_nodes)
        if errors:
            raise ProvisionError(
                "; ".join(errors), hint="fix nodes.reservation, nodes.provisioning or the zones"
            )
        warnings += more
        zones = [reserved.zone]
    warnings += check_quota(clients, spec, facts)
    check_image(clients, spec, facts)
    check_subnet(clients, spec)
    warnings += check_buckets(clients, spec)
    return PreflightReport(
        zones=zones, gpus_per_node=facts.gpus, reserved=reserved, warnings=warnings
    )
