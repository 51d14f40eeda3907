"""Preflight against moto (zones, instance types and where they are offered, AMIs, buckets)
and, where moto does not answer, botocore's Stubber checked against the SDK's model (Service
Quotas for EC2, capacity reservations and Capacity Blocks)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_moto import AnsweredBy, moto_clients
from botocore.stub import Stubber

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.aws.api import AwsClients
from dlvm_cluster.providers.aws.preflight import preflight, reserved_capacity
from dlvm_cluster.providers.aws.report import capacity_facts
from dlvm_cluster.spec.model import ClusterSpec


def spec_of(nodes: str, zones: str = "[us-east-1a, us-east-1b]", tail: str = "") -> ClusterSpec:
    text = (
        "name: t\nprovider:\n  kind: aws\n  region: us-east-1\n"
        f"  zones: {zones}\n  allowed_ssh_cidrs: [198.51.100.0/24]\nnodes:\n{nodes}{tail}"
    )
    return load_spec_text(text, Path("/nowhere/t.yaml")).spec


@pytest.fixture(scope="module")
def aws() -> Iterator[tuple[AwsClients, str]]:
    """moto's AWS (one for the module: the tests only read, but for a bucket of their own)
    and the id of one of its x86_64 AMIs."""
    with pytest.MonkeyPatch.context() as monkeypatch, moto_clients(monkeypatch) as clients:
        images = clients.ec2.describe_images(
            Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}]
        )["Images"]
        yield clients, images[0]["ImageId"]


def with_quota(clients: AwsClients, code: str, value: float) -> tuple[AwsClients, Stubber]:
    stub = Stubber(boto3.client("service-quotas", region_name="us-east-1"))
    stub.add_response(
        "get_service_quota",
        {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": value}},
        {"ServiceCode": "ec2", "QuotaCode": code},
    )
    stub.activate()
    return dataclasses.replace(clients, quotas=stub.client), stub


def test_a_spot_cluster_passes_with_its_quota_and_bucket(aws: tuple[AwsClients, str]) -> None:
    clients, ami = aws
    clients.s3.create_bucket(Bucket="ckpts")
    spec = spec_of(
        f"  count: 2\n  machine_type: g6.12xlarge\n  spot: true\n  image: {ami}\n",
        tail="storage: [{mount: /ckpt, bucket: s3://ckpts/run}]\nautostop: {action: down}\n",
    )
    checked, stub = with_quota(clients, "L-3819A6DF", 96)  # All G and VT Spot: 2 x 48 vCPUs
    report = preflight(spec, checked)
    stub.assert_no_pending_responses()
    assert report.zones == ["us-east-1a", "us-east-1b"]
    assert report.gpus_per_node == 4
    assert report.reserved is None


def test_more_vcpus_than_the_quota_stop_before_terraform(aws: tuple[AwsClients, str]) -> None:
    clients, ami = aws
    spec = spec_of(f"  count: 3\n  machine_type: p5.48xlarge\n  image: {ami}\n")
    checked, _ = with_quota(clients, "L-417A185B", 384)  # On-Demand P: two p5.48xlarge
    with pytest.raises(ProvisionError, match=r"3 x p5\.48xlarge need 576 vCPUs") as caught:
        preflight(spec, checked)
    assert "L-417A185B" in caught.value.hint


def launched(clients: AwsClients, ami: str, kind: str, *tags: str, spot: bool = False) -> str:
    """One running instance of `kind` (tagged as a node of cluster tags[0], if given)."""
    extra: dict[str, Any] = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    if tags:
        extra["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": "dlvm-cluster", "Value": tags[0]}]}
        ]
    answer = clients.ec2.run_instances(
        ImageId=ami, InstanceType=kind, MinCount=1, MaxCount=1, **extra
    )
    return str(answer["Instances"][0]["InstanceId"])


def test_the_quota_counts_what_already_runs_in_the_region(aws: tuple[AwsClients, str]) -> None:
    """EC2 refuses a launch past the quota counting every running instance of the class:
    preflight counts them too (other On-Demand P instances; not Spot ones, which count
    against the Spot quota, nor other classes, nor this cluster's own, counted at its size)."""
    clients, ami = aws
    running = [
        launched(clients, ami, "p4d.24xlarge"),  # 96 vCPUs, On-Demand P
        launched(clients, ami, "p5.48xlarge", spot=True),  # Spot P: another quota
        launched(clients, ami, "g6.12xlarge"),  # G: another class
        launched(clients, ami, "p5.48xlarge", "t"),  # this cluster's node-0
    ]
    stopped = launched(clients, ami, "p5.48xlarge")
    clients.ec2.stop_instances(InstanceIds=[stopped])  # stopped: counts for nothing
    try:
        spec = spec_of(f"  count: 2\n  machine_type: p5.48xlarge\n  image: {ami}\n")
        checked, stub = with_quota(clients, "L-417A185B", 480)  # 96 + 2 x 192
        preflight(spec, checked, existing_nodes=1)
        stub.assert_no_pending_responses()
        checked, _ = with_quota(clients, "L-417A185B", 479)
        with pytest.raises(
            ProvisionError,
            match=r"2 x p5\.48xlarge need 384 vCPUs, and 96 already run in us-east-1; "
            r"your quota Running On-Demand P instances allows 479",
        ):
            preflight(spec, checked, existing_nodes=1)
        spot = spec_of(f"  count: 1\n  machine_type: p5.48xlarge\n  spot: true\n  image: {ami}\n")
        checked, _ = with_quota(clients, "L-7212CCBC", 383)  # All P Spot: 192 running + 192
        with pytest.raises(ProvisionError, match=r"need 192 vCPUs, and 192 already run"):
            preflight(spot, checked)
    finally:
        clients.ec2.terminate_instances(InstanceIds=[*running, stopped])


def test_a_type_no_listed_zone_offers(aws: tuple[AwsClients, str]) -> None:
    clients, ami = aws
    spec = spec_of(f"  count: 1\n  machine_type: p6-b200.48xlarge\n  image: {ami}\n")
    with pytest.raises(
        ProvisionError, match=r"p6-b200\.48xlarge is not offered in us-east-1a, us-east-1b"
    ):
        preflight(spec, clients)


def test_a_missing_bucket_and_a_missing_ami(aws: tuple[AwsClients, str]) -> None:
    clients, ami = aws
    spec = spec_of(
        f"  count: 1\n  image: {ami}\n", tail="storage: [{mount: /ckpt, bucket: s3://nowhere}]\n"
    )
    checked, _ = with_quota(clients, "L-DB2E81BA", 64)
    with pytest.raises(ProvisionError, match="no S3 bucket nowhere"):
        preflight(spec, checked)
    checked, _ = with_quota(clients, "L-DB2E81BA", 64)
    with pytest.raises(ProvisionError, match="no AMI ami-0000000000000000f"):
        preflight(spec_of("  count: 1\n  image: ami-0000000000000000f\n"), checked)


def block(**overrides: Any) -> dict[str, Any]:
    """A Capacity Block as DescribeCapacityReservations describes one."""
    now = datetime.now(UTC)
    item = {
        "CapacityReservationId": "cr-0123456789abcdef0",
        "InstanceType": "p5.48xlarge",
        "InstancePlatform": "Linux/UNIX",
        "AvailabilityZone": "us-east-1b",
        "TotalInstanceCount": 2,
        "AvailableInstanceCount": 2,
        "State": "active",
        "StartDate": now - timedelta(hours=1),
        "EndDate": now + timedelta(days=2),
        "ReservationType": "capacity-block",
    }
    return {**item, **overrides}


BLOCK_SPEC = (
    "  count: 2\n  machine_type: p5.48xlarge\n  provisioning: capacity-block\n"
    "  reservation: cr-0123456789abcdef0\n"
)


def stubbed_ec2(clients: AwsClients, *reservations: dict[str, Any]) -> AwsClients:
    stub = Stubber(boto3.client("ec2", region_name="us-east-1"))
    for item in reservations:
        stub.add_response(
            "describe_capacity_reservations",
            {"CapacityReservations": [item]},
            {"CapacityReservationIds": ["cr-0123456789abcdef0"]},
        )
    stub.activate()
    return dataclasses.replace(clients, ec2=stub.client)


def test_a_capacity_block_is_read_with_its_zone_and_end(aws: tuple[AwsClients, str]) -> None:
    clients, _ = aws
    reserved, kind = reserved_capacity(stubbed_ec2(clients, block()), "cr-0123456789abcdef0")
    assert (kind, reserved.zone, reserved.capacity_block, reserved.total) == (
        "p5.48xlarge",
        "us-east-1b",
        True,
        2,
    )
    assert "Capacity Block cr-0123456789abcdef0 in us-east-1b ends" in reserved.ends_line()
    assert re.search(r"\(in 4[78]\.\dh\); EC2 ends its instances then", reserved.ends_line())


@pytest.mark.parametrize(
    ("overrides", "zones", "message"),
    [
        ({"State": "scheduled"}, "[us-east-1a, us-east-1b]", "has not started yet (scheduled)"),
        ({}, "[us-east-1a]", "is in us-east-1b, which provider.zones does not list"),
        ({"InstanceType": "p5e.48xlarge"}, "[us-east-1b]", "holds p5e.48xlarge, not p5.48xlarge"),
        ({"ReservationType": "default"}, "[us-east-1b]", "not a Capacity Block"),
        ({"TotalInstanceCount": 1}, "[us-east-1b]", "holds 1 instances; nodes.count is 2"),
        ({"State": "expired"}, "[us-east-1b]", "is expired: nothing can launch into it"),
    ],
)
def test_a_block_that_cannot_take_the_nodes_stops_preflight(
    aws: tuple[AwsClients, str], overrides: dict[str, Any], zones: str, message: str
) -> None:
    """Everything before the reservation (zones, type, offerings) answered by moto; the
    reservation by the stub; the block's own fields decide."""
    clients, _ = aws
    stubbed = stubbed_ec2(clients, block(**overrides)).ec2
    ec2 = AnsweredBy(clients.ec2, stubbed, "describe_capacity_reservations")
    with pytest.raises(ProvisionError, match=re.escape(message)):
        preflight(spec_of(BLOCK_SPEC, zones), dataclasses.replace(clients, ec2=ec2))


def test_plan_and_status_say_when_the_block_ends(aws: tuple[AwsClients, str]) -> None:
    clients, _ = aws
    spec = spec_of(BLOCK_SPEC, "[us-east-1b]")
    facts = capacity_facts(spec, stubbed_ec2(clients, block()))
    assert (facts.provisioning, facts.reservation) == ("capacity-block", "cr-0123456789abcdef0")
    assert "; Capacity Block cr-0123456789abcdef0 in us-east-1b ends " in facts.summary
    stub = Stubber(boto3.client("ec2", region_name="us-east-1"))
    stub.add_client_error(
        "describe_capacity_reservations", service_error_code="InvalidCapacityReservationId.NotFound"
    )
    stub.activate()
    gone = capacity_facts(spec, dataclasses.replace(clients, ec2=stub.client))
    assert "cannot read cr-0123456789abcdef0 (no capacity reservation" in gone.summary
    assert capacity_facts(spec).summary == (
        "capacity: capacity block (the instances end when the block ends); "
        "reservation: cr-0123456789abcdef0"
    )
