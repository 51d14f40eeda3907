"""What a node runs to apply autostop to its own instance, and how a stop it made is told.

A guest `shutdown` stops the instance (the module sets instance-initiated shutdown to stop;
a one-time Spot instance can only be terminated), which needs no AWS permission at all.
Taking the cluster down from a node terminates the instance through the EC2 API with the
nodes' role, which the module gives ec2:TerminateInstances on instances tagged with this
cluster's name and nothing else (only when autostop's action is down).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from dlvm_cluster.providers.aws.instances import Instance
from dlvm_cluster.providers.base import StopMark

SELF_STOP = "sudo -n shutdown -h now || shutdown -h now"
_IMDS = "http://169.254.169.254/latest"
# IMDSv2 (the only version the module allows): a session token first, then the instance's
# id and region, then TerminateInstances with the role's credentials (the AWS CLI of the Deep
# Learning AMIs). Where that fails the instance powers off instead: a cluster told to go down
# must not run (and bill) on.
SELF_DELETE = (
    f"( t=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' {_IMDS}/api/token) "
    f'&& id=$(curl -sf -H "X-aws-ec2-metadata-token: $t" {_IMDS}/meta-data/instance-id) '
    f'&& region=$(curl -sf -H "X-aws-ec2-metadata-token: $t" '
    f"{_IMDS}/meta-data/placement/region) "
    '&& aws ec2 terminate-instances --region "$region" --instance-ids "$id" >/dev/null '
    ") || { echo 'cannot terminate this instance (the AWS CLI or the role's "
    "ec2:TerminateInstances is missing): powering it off instead' >&2; "
    f"{SELF_STOP}; }}"
)
# EC2's state reason when the guest itself shut down, and the time in the transition reason:
# "User initiated (2026-12-05 18:00:00 GMT)".
INSTANCE_INITIATED = "Client.InstanceInitiatedShutdown"
_WHEN = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) GMT\)")


def self_stop_command(action: str) -> str:
    return SELF_DELETE if action == "down" else SELF_STOP


def self_stop_marks(instances: Mapping[str, Instance]) -> dict[str, StopMark]:
    """The nodes whose instance shut itself down (autostop), with when: EC2 keeps that in the
    instance's state reason and transition reason."""
    marks = {}
    for name, instance in instances.items():
        if instance.reason != INSTANCE_INITIATED:
            continue
        found = _WHEN.search(instance.transition)
        if not found:
            continue
        at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        action = "down" if instance.state in ("terminated", "shutting-down") else "stop"
        marks[name] = StopMark(by="autostop", at=at.timestamp(), action=action)
    return marks
