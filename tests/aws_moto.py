"""AWS for tests: boto3 clients against moto (the AWS mock), with credentials that exist only
in the test, and botocore's Stubber where moto does not answer an API (Service Quotas for EC2,
capacity reservations, the Price List): a stubbed call is still checked against the SDK's own
model of the request and the response."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest
from moto import mock_aws

from dlvm_cluster.providers.aws.api import AwsClients, aws_clients

REGION = "us-east-1"


@contextmanager
def moto_clients(monkeypatch: pytest.MonkeyPatch, region: str = REGION) -> Iterator[AwsClients]:
    """The clients dlvm makes, answered by moto."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": region,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield aws_clients(region)


def run_node(
    clients: AwsClients, cluster: str, node: str, kind: str = "g6.xlarge", *, spot: bool = False
) -> str:
    """An instance tagged as dlvm tags a node's, as terraform/aws makes it (a Spot one with
    `spot`); its id."""
    image = clients.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    market: dict[str, object] = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    answer = clients.ec2.run_instances(
        **market,  # type: ignore[arg-type]
        ImageId=image,
        InstanceType=kind,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "dlvm-cluster", "Value": cluster},
                    {"Key": "dlvm-node", "Value": node},
                ],
            }
        ],
    )
    return str(answer["Instances"][0]["InstanceId"])


def interrupt_spot(clients: AwsClients, instance_id: str) -> None:
    """EC2 takes a Spot instance back: terminated, with the state reason EC2 gives a Spot
    interruption (moto's API has no way to cause one; its model of the instance is set)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    clients.ec2.terminate_instances(InstanceIds=[instance_id])
    instance = ec2_backends[DEFAULT_ACCOUNT_ID][clients.region].get_instance(instance_id)
    code = "Server.SpotInstanceTermination"
    instance.state_reason = StateReason(f"{code}: Spot instance termination", code)


def ec2_client(region: str = REGION) -> object:
    return boto3.client("ec2", region_name=region)


class AnsweredBy:
    """An EC2 client that is moto's for every call except `names`, which `stubbed` (a
    botocore Stubber's client, checked against the SDK's model) answers: for the calls moto
    does not implement, or answers without what the test needs (a console with host keys)."""

    def __init__(self, moto: object, stubbed: object, *names: str) -> None:
        self._moto, self._stubbed, self._names = moto, stubbed, frozenset(names)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stubbed if name in self._names else self._moto, name)
