"""The aws provider's registry entry: its keys and rules for the loader, its features (all of
them) and its implementation, imported only for an aws cluster (boto3 with it)."""

from __future__ import annotations

from dlvm_cluster.providers.aws.config import AwsConfig, AwsNodes
from dlvm_cluster.providers.aws.rules import aws_rules
from dlvm_cluster.providers.kind import ProviderKind
from dlvm_cluster.spec.kinds import SpecKind

KIND = ProviderKind(
    spec=SpecKind("aws", AwsConfig, AwsNodes, aws_rules),
    implementation="dlvm_cluster.providers.aws.provider:Ec2",
)
