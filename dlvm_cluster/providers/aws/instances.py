"""The cluster's instances as EC2 sees them (`status`, the supervisor's watcher, `up` on a
cluster that exists), and stopping and starting them.

Instances are found by their tags (dlvm-cluster, dlvm-node), not only by the ids Terraform
recorded: a node whose instance is gone shows as missing either way. A Spot instance EC2 took
back (its state reason Server.SpotInstanceTermination or ...Shutdown) is `preempted`, as a
Compute Engine Spot VM is: the supervisor replaces the node alone and resumes the job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.providers.aws.api import AwsClients, call, error_code
from dlvm_cluster.providers.base import NodeState

# EC2 state -> dlvm's word (pending counts as running: it is on its way up).
_STATES = {
    "pending": NodeState.RUNNING,
    "running": NodeState.RUNNING,
    "stopping": NodeState.STOPPED,
    "stopped": NodeState.STOPPED,
    "shutting-down": NodeState.MISSING,
    "terminated": NodeState.MISSING,
}
# Why EC2 ended an instance on its own: Spot interruption (terminate or stop behaviour) and the
# end of a Capacity Block (EC2 ends its instances when the block ends).
PREEMPTION_REASONS = (
    "Server.SpotInstanceTermination",
    "Server.SpotInstanceShutdown",
    "Server.ScheduledStop",
)


@dataclass(frozen=True)
class Instance:
    """One node's instance: its id, EC2 state and the reason EC2 gives for it."""

    instance_id: str
    state: str
    reason: str = ""  # StateReason.Code
    transition: str = ""  # StateTransitionReason: "User initiated (2026-12-05 18:00:00 GMT)"

    @property
    def node_state(self) -> NodeState:
        if self.state in ("shutting-down", "terminated", "stopping", "stopped") and (
            self.reason in PREEMPTION_REASONS
        ):
            return NodeState.PREEMPTED
        return _STATES.get(self.state, NodeState.MISSING)


MISSING = Instance(instance_id="", state="missing")


def cluster_instances(
    clients: AwsClients, cluster: str, names: Iterable[str]
) -> dict[str, Instance]:
    """node name -> its instance (the newest, if several carry its tag); MISSING for none."""
    wanted = list(names)
    paginator = clients.ec2.get_paginator("describe_instances")
    pages = call(
        "listing the cluster's instances",
        lambda: list(
            paginator.paginate(
                Filters=[
                    {"Name": "tag:dlvm-cluster", "Values": [cluster]},
                    {"Name": "tag:dlvm-node", "Values": wanted},
                ]
            )
        ),
    )
    found: dict[str, tuple[tuple[bool, str], Instance]] = {}
    for page in pages:
        for reservation in page.get("Reservations", []):
            for item in reservation.get("Instances", []):
                tags = {tag["Key"]: tag["Value"] for tag in item.get("Tags", [])}
                name = tags.get("dlvm-node", "")
                if name not in wanted:
                    continue
                instance = Instance(
                    instance_id=str(item["InstanceId"]),
                    state=str(item["State"]["Name"]),
                    reason=str(item.get("StateReason", {}).get("Code", "")),
                    transition=str(item.get("StateTransitionReason", "")),
                )
                launched = item.get("LaunchTime")
                earlier = found.get(name)
                # A live instance beats a terminated one; then the newest.
                rank = (instance.state != "terminated", str(launched))
                if earlier is None or rank > earlier[0]:
                    found[name] = (rank, instance)
    return {name: found[name][1] if name in found else MISSING for name in wanted}


def stop(clients: AwsClients, instances: Mapping[str, Instance]) -> None:
    """Stop the running instances (EBS root volumes kept) and wait until they are stopped."""
    ids = [i.instance_id for i in instances.values() if i.state in ("pending", "running")]
    if not ids:
        return
    call("stopping the instances", lambda: clients.ec2.stop_instances(InstanceIds=ids))
    call(
        "waiting for the instances to stop",
        lambda: clients.ec2.get_waiter("instance_stopped").wait(InstanceIds=ids),
    )


def start(clients: AwsClients, instances: Mapping[str, Instance]) -> None:
    """Start the stopped instances on their volumes; a gone one cannot be (run `up`)."""
    gone = [name for name, i in instances.items() if i.state in ("missing", "terminated")]
    if gone:
        raise ProvisionError(
            f"{', '.join(sorted(gone))} has no instance to start",
            hint="run `dlvm up`: it recreates the missing nodes",
        )
    ids = [i.instance_id for i in instances.values() if i.state in ("stopping", "stopped")]
    if not ids:
        return
    call(
        "waiting for the instances to finish stopping",
        lambda: clients.ec2.get_waiter("instance_stopped").wait(InstanceIds=ids),
    )
    try:
        call("starting the instances", lambda: clients.ec2.start_instances(InstanceIds=ids))
    except Exception as exc:
        if error_code(exc) != "InsufficientInstanceCapacity":
            raise
        raise ProvisionError(
            "EC2 has no capacity to start the stopped instances in their zone now; their "
            "volumes are kept",
            hint="run `dlvm start` (or `dlvm up`) again later; GPU capacity comes and goes",
        ) from exc
    call(
        "waiting for the instances to run",
        lambda: clients.ec2.get_waiter("instance_running").wait(InstanceIds=ids),
    )
